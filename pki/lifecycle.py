"""The renewal sweep: let issuers move renewal times (ACME Renewal Information), find the certificates
due, renew.

Renewal is a new issuance from the same subscriber (policy checked again), linked ``renewed_from``. Each
certificate is handled under its subscriber's row lock, taken with SKIP LOCKED: a subscriber someone else is
issuing for right now (a manual trigger, another sweep) is left to them. Certificates of CAs that sign here
are renewed in batches (``services.issue_batch``: one transaction, one audit lock per batch); a batch that
is refused falls back to one renewal at a time, so one failing subscriber costs only its own renewal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from certmgr.actors import Actor
from certmgr.errors import ServiceError
from certmgr.jobs import JobReport
from pki import deployment, issuers, services
from pki.choices import IssuerType
from pki.models import Certificate, Subscriber

log = logging.getLogger(__name__)
SWEEP = Actor.system("renewal sweep")
BATCH_SIZE = 200


def due_for_renewal(at: datetime, *, retry_at: datetime | None = None) -> QuerySet[Certificate]:
    """Active certificates whose renewal time has come by ``at``, of subscribers with auto-renew on, no
    issuance under way at their issuer, and no retry delay pending at ``retry_at`` (default ``at``; the
    sweep passes the real time, so renewing early never skips a backoff). Served by the partial index
    ``cert_renewal_due``."""
    retry_at = retry_at or at
    due = (
        Certificate.objects.filter(
            status=Certificate.Status.ACTIVE,
            next_renewal_at__lte=at,
            subscriber__auto_renew=True,
        )
        .filter(Q(subscriber__next_attempt_at__isnull=True) | Q(subscriber__next_attempt_at__lte=retry_at))
        .order_by("next_renewal_at", "id")
    )
    for backend in issuers.backends():
        busy = backend.busy_subscribers()
        if busy is not None:
            due = due.exclude(subscriber_id__in=busy)
    return due


@dataclass(frozen=True)
class Planned:
    certificate_id: int
    subscriber_id: int
    names: str
    renew_at: datetime
    not_after: datetime
    issuer_kind: str  # the CA kind (or "self-signed") whose backend renews it


def plan(at: datetime, *, limit: int | None = None, retry_at: datetime | None = None) -> list[Planned]:
    rows = due_for_renewal(at, retry_at=retry_at).values_list(
        "pk",
        "subscriber_id",
        "common_name",
        "names_text",
        "next_renewal_at",
        "not_after",
        "subscriber__issuer_type",
        "subscriber__ca__kind",
    )
    return [
        Planned(
            pk, sub, cn or names, when, not_after, kind if issuer == IssuerType.CA else issuers.SELF_SIGNED
        )
        for pk, sub, cn, names, when, not_after, issuer, kind in (rows[:limit] if limit else rows)
        if when is not None  # always: due means next_renewal_at <= at
    ]


def run_renewals(
    report: JobReport,
    *,
    at: datetime | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Renew everything due by ``at`` (default now; a later ``at`` renews early)."""
    now = timezone.now()
    at = at or now
    say = progress or (lambda message: None)
    for backend in issuers.backends():
        backend.refresh_renewal_times(report, now=now)
    planned = plan(at, limit=limit, retry_at=now)
    local = [item for item in planned if _signs_locally(item.issuer_kind)]
    one_by_one = [item for item in planned if not _signs_locally(item.issuer_kind)]
    for start in range(0, len(local), BATCH_SIZE):
        chunk = local[start : start + BATCH_SIZE]
        outcomes = renew_batch(chunk, at=at)
        if outcomes is None:
            one_by_one.extend(chunk)  # refused as a batch: each on its own, so failures are its own
            continue
        done = _renewals_of([pk for pk, outcome in outcomes.items() if outcome == "renewed"])
        for item in chunk:
            _report(report, item, outcomes.get(item.certificate_id, "skipped"), say, done)
    for item in one_by_one:
        outcome = renew_one(item.certificate_id, at=at)
        _report(
            report, item, outcome, say, _renewals_of([item.certificate_id] if outcome == "renewed" else [])
        )
    for subscriber_id in first_issues_due(now)[:FIRST_ISSUE_RETRIES]:
        outcome = retry_first_issue(subscriber_id, now=now)
        report.add(f"first_issue_{outcome}")
        say(f"first issuance {outcome}: subscriber {subscriber_id}")


# First issuances retried a sweep at most (a failed first issuance has no certificate to renew, so the due
# query does not see it: without this it would wait for an operator for ever).
FIRST_ISSUE_RETRIES = 200


def first_issues_due(now: datetime) -> QuerySet[Subscriber, int]:
    """Ids of subscribers (auto-renew on) whose first issuance failed and whose retry time has come: no
    current certificate, nothing under way at their issuer."""
    current = Certificate.objects.filter(
        subscriber=OuterRef("pk"), status=Certificate.Status.ACTIVE, next_renewal_at__isnull=False
    )
    due = (
        Subscriber.objects.filter(
            auto_renew=True,
            last_operation_status=Subscriber.OperationStatus.FAILED,
            next_attempt_at__lte=now,
        )
        .exclude(Exists(current))
        .order_by("next_attempt_at", "pk")
    )
    for backend in issuers.backends():
        busy = backend.busy_subscribers()
        if busy is not None:
            due = due.exclude(pk__in=busy)
    return due.values_list("pk", flat=True)


def next_sweep_try(
    *, auto_renew: bool, next_attempt_at: datetime | None, renewal_at: datetime | None
) -> datetime | None:
    """When the sweep really tries a failed subscriber again (None: never by itself, an operator must).

    With auto-renew off, never. With a current certificate (``renewal_at``: its planned renewal), the
    renewal is due at that time, and not before the backoff (``due``). Without one, the first issuance is
    retried at the backoff time (``first_issues_due``), and never without one."""
    if not auto_renew:
        return None
    if renewal_at is not None:
        return max(renewal_at, next_attempt_at) if next_attempt_at is not None else renewal_at
    return next_attempt_at


def current_renewal_at() -> Subquery:
    """For a subscriber queryset: the planned renewal time of its current certificate (the one the sweep
    renews, ``services.current_certificate``), or None."""
    return Subquery(
        Certificate.objects.filter(
            subscriber=OuterRef("pk"), status=Certificate.Status.ACTIVE, next_renewal_at__isnull=False
        )
        .order_by("-not_after")
        .values("next_renewal_at")[:1]
    )


def retry_first_issue(subscriber_id: int, *, now: datetime, actor: Actor = SWEEP) -> str:
    """Try a failed first issuance again: "issued", "ordered", "skipped" (no longer due, or busy) or
    "failed" (shown on the subscriber, with the next retry time)."""
    with transaction.atomic():
        if not first_issues_due(now).filter(pk=subscriber_id).exists():
            return "skipped"
        locked = Subscriber.objects.select_for_update(skip_locked=True).filter(pk=subscriber_id).first()
        if locked is None:
            return "skipped"
        try:
            outcome = services.issue(locked, actor=actor)
        except (ServiceError, ValidationError) as exc:
            log.info("first issuance of subscriber %s failed again: %s", subscriber_id, exc)
            return "failed"
        return "issued" if outcome.certificate is not None else "ordered"


def _signs_locally(kind: str) -> bool:
    try:
        return issuers.backend_for_kind(kind).signs_locally
    except LookupError:
        return False


def _renewals_of(certificate_ids: list[int]) -> dict[int, tuple[str, bool]]:
    """How far the renewals of ``certificate_ids`` got (``deployment.suffixes``), and whether some
    destination has yet to confirm them, by what they renew."""
    if not certificate_ids:
        return {}
    rows = list(Certificate.objects.filter(renewed_from_id__in=certificate_ids).select_related("subscriber"))
    said = deployment.suffixes(rows)
    return {
        row.renewed_from_id: (
            said[row.pk],
            bool(said[row.pk]) and row.deployment_state != deployment.DEPLOYED,
        )
        for row in rows
        if row.renewed_from_id is not None
    }


def _report(
    report: JobReport,
    item: Planned,
    outcome: str,
    say: Callable[[str], None],
    renewals: dict[int, tuple[str, bool]] | None = None,
) -> None:
    report.add(outcome)
    suffix, unconfirmed = (renewals or {}).get(item.certificate_id, ("", False))
    if unconfirmed:
        report.add("deploying")  # renewed, not done: a destination has not confirmed the new serial
    said = outcome + suffix
    say(f"{said}: certificate {item.certificate_id} ({item.names}), due {item.renew_at:%Y-%m-%d %H:%M}")
    if outcome == "failed":
        sub = Subscriber.objects.filter(pk=item.subscriber_id).values_list(
            "last_operation_message", flat=True
        )
        report.error(f"certificate {item.certificate_id}: {sub.first() or 'failed'}")


def renew_batch(items: list[Planned], *, at: datetime, actor: Actor = SWEEP) -> dict[int, str] | None:
    """Renew certificates of CAs that sign here in one transaction: certificate id -> "renewed" or
    "skipped" (no longer due, or its subscriber is busy). None when the batch as a whole was refused."""
    with transaction.atomic():
        due = list(
            due_for_renewal(at, retry_at=timezone.now())
            .filter(pk__in=[item.certificate_id for item in items])
            .select_related("subscriber")
        )
        free = set(
            Subscriber.objects.select_for_update(skip_locked=True)
            .filter(pk__in={cert.subscriber_id for cert in due})
            .values_list("pk", flat=True)
        )
        batch = [
            services.BatchRequest(cert.subscriber, renewal_of=cert)
            for cert in due
            if cert.subscriber is not None and cert.subscriber_id in free
        ]
        if not batch:
            return {}
        try:
            with transaction.atomic():
                services.issue_batch(batch, actor=actor)
        except (ServiceError, ValidationError) as exc:
            log.info("renewal batch of %d refused (%s): renewing one at a time", len(batch), exc)
            return None
        return {request.renewal_of.pk: "renewed" for request in batch if request.renewal_of is not None}


def renew_one(certificate_id: int, *, at: datetime, actor: Actor = SWEEP) -> str:
    """Renew one certificate if it is still due: "renewed" (signed now), "ordered" (its issuer works on it,
    e.g. an ACME order), "skipped" (no longer due, or its subscriber is busy), "failed" (shown on the
    subscriber)."""
    with transaction.atomic():
        due = due_for_renewal(at, retry_at=timezone.now())
        cert = due.filter(pk=certificate_id).select_related("subscriber").first()
        if cert is None or cert.subscriber_id is None:
            return "skipped"
        locked = Subscriber.objects.select_for_update(skip_locked=True).filter(pk=cert.subscriber_id).first()
        if locked is None:
            return "skipped"  # someone is issuing for this subscriber right now
        try:
            outcome = services.issue(locked, actor=actor, renewal_of=cert)
        except (ServiceError, ValidationError) as exc:
            log.info("renewal of certificate %s failed: %s", certificate_id, exc)
            return "failed"
        return "renewed" if outcome.certificate is not None else "ordered"
