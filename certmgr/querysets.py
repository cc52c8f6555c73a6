"""Querysets that speak the domain, with the one tenancy path: ``restrict(who, action)``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Self

from django.db import models

from certmgr.actors import as_actor
from certmgr.permissions import Action

if TYPE_CHECKING:
    from certmgr.actors import ActorSource


class TenantQuerySet(models.QuerySet):
    """Rows owned by an organization. ``organization_path`` names the lookup to it."""

    organization_path = "organization"

    def restrict(self, who: ActorSource, action: Action | str = Action.VIEW) -> Self:
        org_ids = as_actor(who).organization_ids(action)
        if org_ids is None:
            return self
        if not org_ids:
            return self.none()
        return self.filter(**{f"{self.organization_path}__in": org_ids})


def tenant_rows(model: type[models.Model]) -> TenantQuerySet:
    """Every row of a tenant-owned model, as the queryset that ``restrict``s them."""
    rows = model._default_manager.all()
    if not isinstance(rows, TenantQuerySet):
        raise TypeError(f"{model.__name__}'s manager does not return a TenantQuerySet")
    return rows


class OrganizationQuerySet(TenantQuerySet):
    organization_path = "pk"


class MembershipQuerySet(TenantQuerySet):
    pass


class InvitationQuerySet(TenantQuerySet):
    def restrict(self, who: ActorSource, action: Action | str = Action.VIEW) -> Self:
        """Invitations carry e-mail addresses: only those who manage the members see them."""
        return super().restrict(who, Action.MANAGE_MEMBERS)

    def pending(self, now: datetime) -> Self:
        return self.filter(accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now)


class ApiTokenQuerySet(TenantQuerySet):
    def restrict(self, who: ActorSource, action: Action | str = Action.VIEW) -> Self:
        """Admins see every token of their organizations; everyone else sees their own."""
        actor = as_actor(who)
        if actor.is_superuser:
            return self
        if actor.user is None or not actor.user.is_authenticated:
            return self.none()
        admin_orgs = actor.organization_ids(Action.MANAGE_MEMBERS) or set()
        own_orgs = actor.organization_ids(action) or set()
        return self.filter(
            models.Q(organization__in=admin_orgs) | models.Q(organization__in=own_orgs, user=actor.user)
        )

    def usable(self, *, now: datetime) -> Self:
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class AuditEventQuerySet(TenantQuerySet):
    def restrict(self, who: ActorSource, action: Action | str = Action.VIEW_AUDIT) -> Self:
        return super().restrict(who, action)
