"""Reads named for what they mean; the admin, the API, the sweep and the dashboard share them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Self

from django.db.models import BooleanField, ExpressionWrapper, Q
from django.utils import timezone

from certmgr.querysets import TenantQuerySet

# Whether certmgr holds a row's private key, without reading (or decrypting) the key column.
HAS_PRIVATE_KEY = ExpressionWrapper(~Q(private_key=""), output_field=BooleanField())


class CertificateAuthorityQuerySet(TenantQuerySet):
    def active(self) -> Self:
        return self.filter(status="active")

    def internal(self) -> Self:
        return self.filter(kind__in=["internal-root", "internal-intermediate"])


class PolicyQuerySet(TenantQuerySet):
    pass


class SubscriberQuerySet(TenantQuerySet):
    pass


class CertificateRequestQuerySet(TenantQuerySet):
    pass


class CertificateQuerySet(TenantQuerySet):
    def undeployed_renewals(self) -> Self:
        """Active renewals some destination has not confirmed yet (deploying, or failed there): a renewal is
        done only when every destination has the new certificate (the dashboard's count)."""
        return self.filter(
            renewed_from__isnull=False, status="active", deployment_state__in=["deploying", "failed"]
        )

    def active(self, *, now: datetime | None = None) -> Self:
        return self.filter(status="active", not_after__gt=now or timezone.now())

    def expiring_within(self, days: int, *, now: datetime | None = None) -> Self:
        now = now or timezone.now()
        return self.active(now=now).filter(not_after__lte=now + timedelta(days=days))

    def revoked(self) -> Self:
        return self.filter(status="revoked")

    def matching_name(self, text: str) -> Self:
        """Partial domain / CN search. ``names_text`` is stored lower-case, so a plain LIKE serves
        (and the trigram index of migration pki/0003 answers it on PostgreSQL)."""
        return self.filter(names_text__contains=text.strip().lower())
