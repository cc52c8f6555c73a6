"""A subscriber's last operation and its renewal backoff: the one writer of those columns.

Every door and issuer reports through these functions (pending, succeeded, failed, cleared), so the
subscriber page, the sweep's backoff and the ``renewal_failed`` alert always agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from certmgr import sql
from pki import alerts, renewal
from pki.models import Subscriber

OperationStatus = Subscriber.OperationStatus

# What a success writes: the last operation, and the failures are over.
SUCCEEDED_FIELDS = [
    "last_operation_status",
    "last_operation_message",
    "last_operation_at",
    "renewal_failures",
    "last_error_category",
    "next_attempt_at",
]


def pending(subscriber_id: int, message: str) -> None:
    """Issuance is under way elsewhere (an order a worker runs)."""
    Subscriber.objects.filter(pk=subscriber_id).update(
        last_operation_status=OperationStatus.PENDING,
        last_operation_message=message[:2000],
        last_operation_at=timezone.now(),
    )


def set_succeeded(subscriber: Subscriber, message: str) -> None:
    """On a row the caller holds (locked): the last operation succeeded; saved by the caller's write."""
    subscriber.last_operation_status = OperationStatus.SUCCESS
    subscriber.last_operation_message = message[:2000]
    subscriber.last_operation_at = timezone.now()
    subscriber.renewal_failures, subscriber.last_error_category, subscriber.next_attempt_at = 0, "", None


def succeeded(subscribers: Iterable[Subscriber]) -> None:
    """Store the success that ``set_succeeded`` put on each (locked) row: one statement for many."""
    rows = list(subscribers)
    if len(rows) == 1:
        rows[0].save(update_fields=SUCCEEDED_FIELDS)
    elif rows:
        Subscriber.objects.bulk_update(rows, SUCCEEDED_FIELDS)


def succeeded_statement(subscriber: Subscriber) -> sql.Statement:
    """The write of ``succeeded`` for one row, to send together with other writes (``certmgr.sql``)."""
    return sql.update_row(subscriber, SUCCEEDED_FIELDS)


def failed(subscriber_id: int, category: str, message: str, *, retry_after: float | None = None) -> None:
    """Show a failed issuance or renewal on the subscriber and push its next automatic attempt out
    (exponential backoff with jitter; never before the CA's Retry-After); raises the renewal_failed alert."""
    now = timezone.now()
    failures = (
        Subscriber.objects.filter(pk=subscriber_id).values_list("renewal_failures", flat=True).first() or 0
    ) + 1
    delay = renewal.retry_delay(
        failures,
        base=settings.CERTMGR_RENEWAL_RETRY_BASE_SECONDS,
        cap=settings.CERTMGR_RENEWAL_RETRY_MAX_SECONDS,
    )
    delay = max(delay, retry_after or 0.0)
    Subscriber.objects.filter(pk=subscriber_id).update(
        last_operation_status=OperationStatus.FAILED,
        last_operation_message=message[:2000],
        last_operation_at=now,
        renewal_failures=failures,
        last_error_category=category[:100],
        next_attempt_at=now + timedelta(seconds=delay),
    )
    alerts.notify("renewal_failed", subscriber=subscriber_id, message=message)


def cleared(subscriber_id: int, message: str) -> None:
    """The operation under way was stopped (cancelled): neither success nor failure."""
    Subscriber.objects.filter(pk=subscriber_id).update(
        last_operation_status=OperationStatus.NONE,
        last_operation_message=message[:2000],
        last_operation_at=timezone.now(),
    )


def retry_now(subscriber_id: int) -> None:
    """An operator skips the backoff: the next attempt may run at once."""
    Subscriber.objects.filter(pk=subscriber_id).update(next_attempt_at=None)
