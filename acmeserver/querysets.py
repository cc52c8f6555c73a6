"""Reads named for what they mean; every one that serves a user goes through ``restrict``."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from certmgr.querysets import TenantQuerySet


class AcmeProfileQuerySet(TenantQuerySet):
    def enabled(self) -> Self:
        return self.filter(enabled=True)


class AcmeOrderProfileQuerySet(TenantQuerySet):
    organization_path = "profile__organization"


class AcmeEarlyRenewalQuerySet(TenantQuerySet):
    organization_path = "certificate__organization"


class AcmeServerAccountQuerySet(TenantQuerySet):
    organization_path = "profile__organization"


class AcmeServerOrderQuerySet(TenantQuerySet):
    organization_path = "account__profile__organization"


class AcmeServerAuthorizationQuerySet(TenantQuerySet):
    organization_path = "account__profile__organization"

    def unexpired(self, now: datetime) -> Self:
        return self.filter(expires_at__gt=now)


class AcmeEabKeyQuerySet(TenantQuerySet):
    organization_path = "profile__organization"

    def usable(self) -> Self:
        return self.filter(revoked_at__isnull=True, account__isnull=True)
