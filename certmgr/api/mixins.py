"""Building blocks every API view uses: tenancy-scoped querysets and organization resolution."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from rest_framework import serializers

from certmgr.actors import Actor, as_actor
from certmgr.models import Organization
from certmgr.permissions import Action

if TYPE_CHECKING:
    from rest_framework.generics import GenericAPIView

    from certmgr.querysets import TenantQuerySet

    # The mixins below go in front of a DRF generic view; the type checker reads them as one.
    _GenericView = GenericAPIView[Any]
else:
    _GenericView = object


class TenantViewMixin(_GenericView):
    """``get_queryset`` goes through ``restrict(actor, read_action)``: other tenants' rows are 404."""

    read_action: Action | str = Action.VIEW
    write_action: Action | str = Action.MANAGE
    base_queryset: TenantQuerySet[Any, Any]  # the rows before tenancy (or override ``get_base_queryset``)

    def get_base_queryset(self) -> TenantQuerySet[Any, Any]:
        return self.base_queryset

    def get_queryset(self) -> TenantQuerySet[Any, Any]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no caller
            return self.get_base_queryset().none()
        return self.get_base_queryset().all().restrict(self.request, self.read_action)

    @property
    def actor(self) -> Actor:
        return as_actor(self.request)


def resolve_organization(request, organization_id, action=Action.MANAGE) -> Organization:
    """The organization a new row goes into: the one named, the token's, or the caller's only one."""
    actor = as_actor(request)
    allowed = actor.organization_ids(action)
    if organization_id in (None, ""):
        if actor.token is not None:
            organization_id = actor.token.organization_id
        elif allowed is not None and len(allowed) == 1:
            organization_id = next(iter(allowed))
        else:
            raise ValidationError(
                {"organization": ["This field is required: you belong to several organizations."]}
            )
    org = Organization.objects.filter(pk=organization_id).first() if str(organization_id).isdigit() else None
    if org is None or (allowed is not None and org.pk not in allowed):
        raise ValidationError(
            {"organization": ["Unknown organization, or your role does not allow this there."]}
        )
    return org


class OrganizationChoiceField(serializers.IntegerField):
    """The target organization of a create; optional when the caller has only one."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**62)
        kwargs.setdefault(
            "help_text", "Organization id; optional when the caller belongs to one organization."
        )
        super().__init__(**kwargs)
