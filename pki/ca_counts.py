"""Certificates counted per CA for the hierarchy page and each CA's page: one GROUP BY over the viewer's
certificates, whatever their number."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q, QuerySet

EXPIRING_DAYS = 30
RECENT_DAYS = 30


@dataclass(frozen=True)
class CaCounts:
    total: int = 0
    active: int = 0
    expiring: int = 0  # active and ending within EXPIRING_DAYS
    expired: int = 0
    revoked: int = 0
    issued_recently: int = 0  # issued (not_before) within the last RECENT_DAYS


def counts_by_ca(certificates: QuerySet, *, now: datetime) -> dict[int, CaCounts]:
    """``{ca_id: CaCounts}`` for the given (already tenant-restricted) certificates."""
    soon = now + timedelta(days=EXPIRING_DAYS)
    rows = (
        certificates.filter(ca__isnull=False)
        .order_by()
        .values("ca_id")
        .annotate(
            total=Count("id"),
            active=Count("id", filter=Q(status="active")),
            expiring=Count("id", filter=Q(status="active", not_after__lte=soon)),
            expired=Count("id", filter=Q(status="expired")),
            revoked=Count("id", filter=Q(status="revoked")),
            issued_recently=Count("id", filter=Q(not_before__gte=now - timedelta(days=RECENT_DAYS))),
        )
    )
    return {row.pop("ca_id"): CaCounts(**row) for row in rows}
