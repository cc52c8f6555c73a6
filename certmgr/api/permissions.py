"""DRF permission that asks the one role table (certmgr.permissions)."""

from __future__ import annotations

from rest_framework import permissions

from certmgr.actors import as_actor
from certmgr.permissions import Action


class RolePermission(permissions.BasePermission):
    """Signed-in users and tokens only. Reads need ``read_action`` somewhere; writes need
    ``write_action`` in the object's organization (views also scope their querysets with restrict)."""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        actor = as_actor(request)
        action = _action_for(request, view)
        org_ids = actor.organization_ids(action)
        return org_ids is None or bool(org_ids)

    def has_object_permission(self, request, view, obj) -> bool:
        actor = as_actor(request)
        org_id = obj.pk if obj.__class__.__name__ == "Organization" else getattr(obj, "organization_id", None)
        return actor.can(_action_for(request, view), org_id)


def _action_for(request, view) -> str:
    extra = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
    if extra:
        return extra
    if request.method in permissions.SAFE_METHODS:
        return getattr(view, "read_action", Action.VIEW)
    return getattr(view, "write_action", Action.MANAGE)
