"""Bearer tokens that name no token (unknown, malformed): counted per client address and minute, throttled,
and audited as one event per address and minute with the count, by the ``certmgr.auth_failures`` job.

A rejected token that *is* a token (expired, revoked) stays one event each, in its organization's chain:
that is a known credential in use, not noise."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from certmgr import audit
from certmgr.actors import Actor
from certmgr.jobs import JobReport, run_job
from certmgr.models import AnonymousAuthFailure

ACTOR = Actor.system("anonymous")
_UPSERT = (
    "INSERT INTO certmgr_anonymousauthfailure (address, minute, count, reason) VALUES (%s, %s, 1, %s) "
    "ON CONFLICT (address, minute) DO UPDATE SET count = certmgr_anonymousauthfailure.count + 1 "
    "RETURNING count"
)


def note(address: str | None, reason: str, now: datetime | None = None) -> int:
    """Count one failure from ``address`` in the current minute; returns the minute's count so far."""
    minute = (now or timezone.now()).replace(second=0, microsecond=0)
    address = address or ""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # One statement, race-free across web processes.
            with connection.cursor() as cursor:
                cursor.execute(_UPSERT, [address, minute, reason[:100]])
                return int(cursor.fetchone()[0])
        row, created = AnonymousAuthFailure.objects.select_for_update().get_or_create(
            address=address, minute=minute, defaults={"count": 1, "reason": reason[:100]}
        )
        if not created:
            AnonymousAuthFailure.objects.filter(pk=row.pk).update(count=F("count") + 1)
            row.refresh_from_db(fields=["count"])
        return row.count


def throttled(count: int) -> bool:
    return count > settings.CERTMGR_ANONYMOUS_AUTH_FAILURES_PER_MINUTE


def flush() -> dict:
    """Scheduled every minute: audit each finished minute's failures, one event per address."""
    return run_job("auth_failures", flush_now).counts


def flush_now(report: JobReport, now: datetime | None = None) -> None:
    current = (now or timezone.now()).replace(second=0, microsecond=0)
    with transaction.atomic():
        rows = list(
            AnonymousAuthFailure.objects.select_for_update(skip_locked=True)
            .filter(minute__lt=current)
            .order_by("minute", "pk")[:5000]
        )
        for row in rows:
            audit.record(
                ACTOR,
                "auth.token_rejected",
                None,
                outcome="failure",
                error=row.reason or "unknown API token",
                address=row.address or None,
                minute=row.minute.isoformat(),
                count=row.count,
            )
        AnonymousAuthFailure.objects.filter(pk__in=[r.pk for r in rows]).delete()
    report.add("addresses", len(rows))
