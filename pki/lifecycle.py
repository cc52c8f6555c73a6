"""The renewal sweep: find the certificates due, ask ACME CAs for renewal information, renew.

Renewal is a new issuance from the same subscriber through ``services.issue`` (policy checked again), linked
``renewed_from``. Each certificate is handled under its subscriber's row lock, taken with SKIP LOCKED: a
subscriber someone else is issuing for right now (a manual trigger, another sweep) is left to them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from certmgr.actors import Actor
from certmgr.errors import ServiceError
from certmgr.jobs import JobReport
from pki import renewal, services
from pki.models import Certificate, CertificateAuthority, Subscriber

log = logging.getLogger(__name__)
SWEEP = Actor.system("renewal sweep")
_UNFINISHED_ORDER_STEPS = ["queued", "authorizing", "waiting_manual", "finalizing"]


def due_for_renewal(at: datetime, *, retry_at: datetime | None = None) -> QuerySet[Certificate]:
    """Active certificates whose renewal time has come by ``at``, of subscribers with auto-renew on, no
    running order, and no retry delay pending at ``retry_at`` (default ``at``; the sweep passes the real
    time, so renewing early never skips a backoff). Served by the partial index ``cert_renewal_due``."""
    retry_at = retry_at or at
    return (
        Certificate.objects.filter(
            status=Certificate.Status.ACTIVE,
            next_renewal_at__lte=at,
            subscriber__auto_renew=True,
        )
        .filter(Q(subscriber__next_attempt_at__isnull=True) | Q(subscriber__next_attempt_at__lte=retry_at))
        .exclude(subscriber__acme_orders__step__in=_UNFINISHED_ORDER_STEPS)
        .order_by("next_renewal_at", "id")
    )


@dataclass(frozen=True)
class Planned:
    certificate_id: int
    subscriber_id: int
    names: str
    renew_at: datetime
    not_after: datetime


def plan(at: datetime, *, limit: int | None = None, retry_at: datetime | None = None) -> list[Planned]:
    rows = due_for_renewal(at, retry_at=retry_at).values_list(
        "pk", "subscriber_id", "common_name", "names_text", "next_renewal_at", "not_after"
    )
    return [
        Planned(pk, sub, cn or names, when, not_after)
        for pk, sub, cn, names, when, not_after in (rows[:limit] if limit else rows)
    ]


def refresh_renewal_info(report: JobReport, *, now: datetime, limit: int = 1000) -> None:
    """Ask each ACME CA's renewalInfo about its certificates whose next check has come (RFC 9773): a random
    time inside the suggested window becomes ``next_renewal_at``, the CA's Retry-After the next check."""
    from acmeca import ari
    from acmeca.models import AcmeSettings

    candidates = (
        Certificate.objects.filter(
            status=Certificate.Status.ACTIVE,
            ca__kind=CertificateAuthority.Kind.ACME,
            next_renewal_at__isnull=False,
            subscriber__auto_renew=True,
        )
        .filter(Q(ari_next_check_at__isnull=True) | Q(ari_next_check_at__lte=now))
        .select_related("subscriber")
        .order_by("ca_id", "next_renewal_at")[:limit]
    )
    clients: dict[int, ari.AriClient | None] = {}
    try:
        for cert in candidates:
            if cert.ca_id not in clients:
                try:
                    settings_row = AcmeSettings.objects.select_related("account").get(ca_id=cert.ca_id)
                    clients[cert.ca_id] = ari.AriClient(settings_row)
                except Exception as exc:  # one unreachable CA must not stop the sweep
                    report.error(f"ARI: CA {cert.ca_id} unreachable: {exc}")
                    clients[cert.ca_id] = None
            client = clients[cert.ca_id]
            if client is None:
                continue
            try:
                info = client.renewal_info(cert)
            except ari.AriUnavailable as exc:
                # Keep the fallback time; ask again when the CA said (RFC 9773 §4.3.3), not every sweep.
                Certificate.objects.filter(pk=cert.pk).update(ari_next_check_at=exc.retry_at)
                report.error(f"ARI for certificate {cert.pk}: {exc}")
                continue
            when = renewal.next_renewal_at(
                cert.not_before,
                cert.not_after,
                renew_before_days=cert.subscriber.renew_before_days if cert.subscriber else None,
                ari_time=info.renew_at,
            )
            Certificate.objects.filter(pk=cert.pk).update(
                next_renewal_at=when, ari_checked_at=now, ari_next_check_at=info.next_check
            )
            report.add("ari_checked")
            if info.renew_at is not None:
                report.add("ari_windows")
    finally:
        for client in clients.values():
            if client is not None:
                client.close()


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
    refresh_renewal_info(report, now=now)
    for item in plan(at, limit=limit, retry_at=now):
        outcome = renew_one(item.certificate_id, at=at)
        report.add(outcome)
        say(
            f"{outcome}: certificate {item.certificate_id} ({item.names}), due {item.renew_at:%Y-%m-%d %H:%M}"
        )
        if outcome == "failed":
            sub = Subscriber.objects.filter(pk=item.subscriber_id).values_list(
                "last_operation_message", flat=True
            )
            report.error(f"certificate {item.certificate_id}: {sub.first() or 'failed'}")


def renew_one(certificate_id: int, *, at: datetime, actor=SWEEP) -> str:
    """Renew one certificate if it is still due: "renewed" (internal CA), "ordered" (ACME order started),
    "skipped" (no longer due, or its subscriber is busy), "failed" (shown on the subscriber)."""
    from acmeca.models import AcmeOrder

    with transaction.atomic():
        due = due_for_renewal(at, retry_at=timezone.now())
        cert = due.filter(pk=certificate_id).select_related("subscriber").first()
        if cert is None:
            return "skipped"
        locked = Subscriber.objects.select_for_update(skip_locked=True).filter(pk=cert.subscriber_id).first()
        if locked is None:
            return "skipped"  # someone is issuing for this subscriber right now
        try:
            result = services.issue(locked, actor=actor, renewal_of=cert)
        except (ServiceError, ValidationError) as exc:
            log.info("renewal of certificate %s failed: %s", certificate_id, exc)
            return "failed"
        return "ordered" if isinstance(result, AcmeOrder) else "renewed"
