"""Refused requests are access attempts: each goes into the audit log of the caller's organizations, from the
API (``auth.permission_denied`` by the exception handler) and from the admin (by the middleware) alike."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import transaction

from certmgr import audit
from certmgr.actors import as_actor
from certmgr.errors import PermissionDenied as ServicePermissionDenied


def record_denied(request, *, view: str, error: str = "your role does not allow this") -> None:
    actor = as_actor(request)
    orgs: list[int | None] = (
        list(sorted(actor.roles())) if actor.token is None else [actor.token.organization_id]
    )
    with transaction.atomic():
        for org_id in orgs or [None]:
            audit.record(
                actor,
                "auth.permission_denied",
                None,
                organization=org_id,
                outcome="failure",
                error=error[:500],
                method=request.method,
                path=request.path[:200],
                view=view,
            )


class DeniedPageAuditMiddleware:
    """A page the viewer may not use (the admin's 403s) is audited like a refused API call; a refusal that a
    service raised was audited by the service already."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if (
            isinstance(exception, DjangoPermissionDenied)
            and not isinstance(exception.__cause__, ServicePermissionDenied)
            and getattr(request, "user", None) is not None
            and request.user.is_authenticated
        ):
            match = getattr(request, "resolver_match", None)
            record_denied(
                request,
                view=match.view_name if match else "",
                error=str(exception) or "your role does not allow this",
            )
        return None
