"""The dashboard's numbers: a handful of aggregate queries over the viewer's organizations.

Each function reads through ``restrict(actor)`` (the one tenancy path) and returns plain dataclasses, so the
admin page only renders. Nothing here reads certificate rows one by one, nor the wide table itself where an
index can answer: the counts by status and by CA, the weekly chart and the 7/30/90-day counts are GROUP BY
queries answered by index-only scans (one scan of the active certificates expiring within the chart's range
serves both the chart and the windows), and the lists are LIMITed queries over indexes (``cert_renewal_due``
for the queue). Nine queries in all (with the viewer's memberships), whatever the number of certificates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from django.db.models import Count, Q
from django.db.models.functions import TruncWeek
from django.utils import timezone

from certmgr.actors import as_actor
from certmgr.permissions import Action

if TYPE_CHECKING:
    from certmgr.actors import ActorSource

CHART_WEEKS = 26
EXPIRY_WINDOWS = (7, 30, 90)
LIST_LIMIT = 10
QUEUE_LIMIT = 15
STATUSES = ("active", "expired", "revoked")
NO_CA = ("(no CA: self-signed or imported)", "")


@dataclass(frozen=True)
class StatusCount:
    status: str
    label: str
    count: int


@dataclass(frozen=True)
class CaCount:
    ca_id: int | None
    name: str
    kind: str
    count: int


@dataclass(frozen=True)
class ExpiryWindow:
    days: int
    count: int


@dataclass(frozen=True)
class WeekBar:
    start: datetime  # Monday 00:00 in the site's time zone
    count: int


@dataclass(frozen=True)
class FailedSubscriber:
    id: int
    name: str
    ca_name: str
    message: str
    category: str
    failures: int
    at: datetime | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class FailedOrder:
    id: int
    names: str
    ca_name: str
    subscriber_id: int | None
    subscriber_name: str
    error_type: str
    error: str
    at: datetime


@dataclass(frozen=True)
class QueuedRenewal:
    certificate_id: int
    name: str
    renew_at: datetime
    not_after: datetime
    subscriber_id: int
    subscriber_name: str
    ca_id: int | None
    ca_name: str
    failures: int


@dataclass
class Dashboard:
    now: datetime
    by_status: list[StatusCount]
    by_ca: list[CaCount]
    expiring: list[ExpiryWindow]
    weeks: list[WeekBar]
    failed_subscribers: list[FailedSubscriber]
    failed_orders: list[FailedOrder]
    renewal_queue: list[QueuedRenewal]
    undeployed_renewals: int = 0  # renewed, but some sync destination does not have it yet

    @property
    def total(self) -> int:
        return sum(row.count for row in self.by_status)

    @property
    def busiest_week(self) -> int:
        return max((bar.count for bar in self.weeks), default=0)


def week_start(moment: datetime) -> datetime:
    """Monday 00:00 of the week holding ``moment``, in the site's time zone (what TruncWeek groups by)."""
    local = timezone.localtime(moment)
    return (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)


def counts_by_status(certificates) -> list[StatusCount]:
    """One GROUP BY status: an index-only scan of (organization, status, not_after)."""
    from pki.models import Certificate

    totals = dict.fromkeys(STATUSES, 0)
    totals.update(certificates.order_by().values_list("status").annotate(n=Count("*")))
    labels = dict(Certificate.Status.choices)
    return [StatusCount(status, labels.get(status, status), n) for status, n in totals.items()]


def counts_by_ca(cas, *, total: int) -> list[CaCount]:
    """Certificates per CA of the viewer's organizations: one GROUP BY ca over the index on ca (an index-only
    scan; a count per CA and status would have to read the table). What no CA issued is the rest."""
    from pki.models import Certificate

    names = {pk: (name, kind) for pk, name, kind in cas.values_list("pk", "name", "kind")}
    counted = dict(
        Certificate.objects.filter(ca_id__in=list(names))
        .order_by()
        .values_list("ca_id")
        .annotate(n=Count("*"))
    )
    labels = dict(cas.model.Kind.choices)  # "Internal intermediate", not the code
    rows = [
        CaCount(pk, name, labels.get(kind, kind), counted[pk])
        for pk, (name, kind) in names.items()
        if counted.get(pk)
    ]
    rest = total - sum(counted.values())
    if rest > 0:
        rows.append(CaCount(None, *NO_CA, rest))
    rows.sort(key=lambda row: (-row.count, row.name))
    return rows


def expirations(certificates, *, now: datetime) -> tuple[list[ExpiryWindow], list[WeekBar]]:
    """Active certificates expiring per week for ``CHART_WEEKS`` weeks and within 7/30/90 days: one scan of
    the active rows in that range (the index on organization, status, not_after), grouped by week, with
    the windows as filtered counts in the same query."""
    first = week_start(now)
    horizon = first + timedelta(weeks=CHART_WEEKS)
    assert horizon > now + timedelta(days=max(EXPIRY_WINDOWS))  # the windows fit inside the scanned range
    windows = {
        f"d{days}": Count("not_after", filter=Q(not_after__lte=now + timedelta(days=days)))
        for days in EXPIRY_WINDOWS
    }
    rows = (
        certificates.filter(status="active", not_after__gt=now, not_after__lt=horizon)
        .order_by()
        .annotate(week=TruncWeek("not_after"))
        .values("week")
        .annotate(n=Count("*"), **windows)
    )
    per_week: dict[date, int] = {}
    window_totals = dict.fromkeys(EXPIRY_WINDOWS, 0)
    for row in rows:
        per_week[timezone.localtime(row["week"]).date()] = row["n"]
        for days in EXPIRY_WINDOWS:
            window_totals[days] += row[f"d{days}"]
    weeks = []
    for i in range(CHART_WEEKS):
        start = first + timedelta(weeks=i)
        weeks.append(WeekBar(start, per_week.get(start.date(), 0)))
    return [ExpiryWindow(days, n) for days, n in window_totals.items()], weeks


def failed_subscribers(subscribers, *, limit: int = LIST_LIMIT) -> list[FailedSubscriber]:
    """Subscribers whose last operation failed; ``next_attempt_at`` is when the sweep really tries again
    (``pki.lifecycle.next_sweep_try``), None when it will not by itself."""
    from pki import lifecycle

    rows = (
        subscribers.filter(last_operation_status="failed")
        .annotate(renewal_at=lifecycle.current_renewal_at())
        .order_by("-last_operation_at", "-id")
        .values_list(
            "pk",
            "name",
            "ca__name",
            "last_operation_message",
            "last_error_category",
            "renewal_failures",
            "last_operation_at",
            "next_attempt_at",
            "auto_renew",
            "renewal_at",
        )[:limit]
    )
    return [
        FailedSubscriber(
            pk,
            name,
            ca or "",
            message[:300],
            category,
            failures,
            at,
            lifecycle.next_sweep_try(auto_renew=auto_renew, next_attempt_at=next_at, renewal_at=renewal_at),
        )
        for pk, name, ca, message, category, failures, at, next_at, auto_renew, renewal_at in rows
    ]


def failed_orders(orders, *, limit: int = LIST_LIMIT) -> list[FailedOrder]:
    rows = (
        orders.filter(step="failed")
        .order_by("-created_at", "-id")
        .values_list(
            "pk",
            "identifiers",
            "ca__name",
            "subscriber_id",
            "subscriber__name",
            "error_type",
            "last_error",
            "finished_at",
            "created_at",
        )[:limit]
    )
    return [
        FailedOrder(
            pk,
            ", ".join(str(i.get("value", "")) for i in (identifiers or [])[:3]),
            ca or "",
            sub_id,
            sub_name or "",
            error_type.rsplit(":", 1)[-1],
            error[:300],
            finished or created,
        )
        for pk, identifiers, ca, sub_id, sub_name, error_type, error, finished, created in rows
    ]


def renewal_queue(certificates, *, limit: int = QUEUE_LIMIT) -> list[QueuedRenewal]:
    """The next certificates the sweep will renew (auto-renew subscribers), soonest first: an ordered walk
    of the partial index ``cert_renewal_due``."""
    rows = (
        certificates.filter(status="active", next_renewal_at__isnull=False, subscriber__auto_renew=True)
        .order_by("next_renewal_at", "id")
        .values_list(
            "pk",
            "common_name",
            "next_renewal_at",
            "not_after",
            "subscriber_id",
            "subscriber__name",
            "ca_id",
            "ca__name",
            "subscriber__renewal_failures",
        )[:limit]
    )
    return [
        QueuedRenewal(pk, cn or f"#{pk}", when, end, sub, sub_name, ca, ca_name or "", failures)
        for pk, cn, when, end, sub, sub_name, ca, ca_name, failures in rows
    ]


def build(who: ActorSource, *, now: datetime | None = None) -> Dashboard:
    """Everything the dashboard shows, for the organizations ``who`` may view."""
    from acmeca.models import AcmeOrder
    from pki.models import Certificate, CertificateAuthority, Subscriber
    from syncs.services import undeployed_renewals

    actor = as_actor(who)
    now = now or timezone.now()
    certificates = Certificate.objects.restrict(actor, Action.VIEW)
    by_status = counts_by_status(certificates)
    by_ca = counts_by_ca(
        CertificateAuthority.objects.restrict(actor, Action.VIEW),
        total=sum(row.count for row in by_status),
    )
    expiring, weeks = expirations(certificates, now=now)
    return Dashboard(
        now=now,
        by_status=by_status,
        by_ca=by_ca,
        expiring=expiring,
        weeks=weeks,
        failed_subscribers=failed_subscribers(Subscriber.objects.restrict(actor, Action.VIEW)),
        failed_orders=failed_orders(AcmeOrder.objects.restrict(actor, Action.VIEW)),
        renewal_queue=renewal_queue(certificates),
        undeployed_renewals=undeployed_renewals(certificates).count(),
    )
