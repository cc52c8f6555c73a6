"""``/metrics``: the inventory and the lifecycle in Prometheus' text exposition format (version 0.0.4).

Who may read it: a request with a valid API token (``Authorization: Bearer ...``; it sees its organization
only) or one from an address in ``CERTMGR_METRICS_ALLOWED_NETWORKS`` (a Prometheus server inside the network;
it sees every organization). The names follow cert-manager's where one fits
(``..._certificate_expiration_timestamp_seconds``, ``..._certificate_renewal_timestamp_seconds``).

Cardinality stays bounded: no label names a certificate. Per-subscriber series describe the subscriber's
current certificate (its newest active one), for at most ``CERTMGR_METRICS_MAX_SUBSCRIBERS`` subscribers
(lowest ids first, so a scrape's series stay the same from one scrape to the next); everything else is a
count grouped by organization and status, or by CA. Each family is one aggregate query; a scrape runs twelve
(nine, and three for the OCSP responder).

The families are built here and written by ``prometheus_client`` (a custom collector, so the exposition's
escaping and types are the library's). A scrape's body is kept for ``CERTMGR_METRICS_CACHE_SECONDS`` per
scope (one organization, or every one) in Django's cache: at a million certificates the counts and the
per-subscriber series cost about half a second, and Prometheus scrapes every 15-60 s.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db.models import (
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
)
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from rest_framework.exceptions import AuthenticationFailed

from certmgr.actors import Actor
from certmgr.api.authentication import BearerTokenAuthentication
from certmgr.middleware import client_ip
from certmgr.models import Organization
from certmgr.permissions import Action

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Order duration buckets (seconds): an ACME order takes seconds with HTTP-01, minutes with slow DNS.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
FINISHED_STEPS = ("done", "failed", "cancelled")
VALIDATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # seconds: a challenge's validation


# --- the families ---------------------------------------------------------------------------------------
class Exposition:
    """Families in the order they are declared, as ``prometheus_client`` metric families. A family's samples
    are named by the caller (``_bucket``/``_sum``/``_count`` of a histogram, ``_total`` of a counter)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        # A counter's family name has no ``_total``; its samples keep it (the library's rule since 0.4).
        self.families.append(
            Metric(name.removesuffix("_total") if kind == "counter" else name, help_text, kind)
        )

    def sample(self, name: str, labels: Iterable[tuple[str, object]], value: float | int) -> None:
        self.families[-1].add_sample(name, {key: str(val) for key, val in labels}, float(value))

    def text(self) -> str:
        return generate_latest(_Families(self.families)).decode("utf-8")


class _Families(Collector):
    """The collector ``generate_latest`` asks for the families of one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


# --- the numbers ---------------------------------------------------------------------------------------
def _scoped(queryset, org_ids: set[int] | None, path: str = "organization_id"):
    return queryset if org_ids is None else queryset.filter(**{f"{path}__in": org_ids})


def collect(org_ids: set[int] | None, *, limit: int | None = None, now: datetime | None = None) -> str:
    """The whole exposition for the organizations ``org_ids`` (None: every organization)."""
    from acmeca.models import AcmeOrder
    from pki import models as pki_models
    from pki.models import Certificate, CertificateAuthority, Subscriber

    limit = settings.CERTMGR_METRICS_MAX_SUBSCRIBERS if limit is None else limit
    now = now or timezone.now()
    out = Exposition()
    orgs = dict(_scoped(Organization.objects, org_ids, "pk").values_list("pk", "slug"))
    cas, ca_orgs, ocsp_cas = {}, {}, []
    for pk, org, name, ocsp_enabled in _scoped(CertificateAuthority.objects, org_ids).values_list(
        "pk", "organization_id", "name", "ocsp_enabled"
    ):
        cas[pk], ca_orgs[pk] = name, org
        if ocsp_enabled:
            ocsp_cas.append(pk)

    def ca_label(ca_id: int | None) -> str:
        return cas.get(ca_id, "") if ca_id is not None else ""

    # Per subscriber: its current certificate = the newest active one. A correlated subquery probes the index
    # (subscriber, -not_after) once per subscriber; the certificates are then read by primary key.
    newest = (
        Certificate.objects.filter(subscriber=OuterRef("pk"), status=Certificate.Status.ACTIVE)
        .order_by("-not_after")
        .values("pk")[:1]
    )
    subscribers = list(
        _scoped(Subscriber.objects, org_ids)
        .annotate(current=Subquery(newest))
        .order_by("pk")
        .values_list("pk", "organization_id", "name", "current")[: limit + 1]
    )
    truncated = len(subscribers) > limit
    subscribers = subscribers[:limit]
    certificates = {
        pk: rest
        for pk, *rest in Certificate.objects.filter(pk__in=[row[3] for row in subscribers if row[3]])
        .order_by()
        .values_list("pk", "ca_id", "not_after", "next_renewal_at")
    }
    current = [
        (org, name, *certificates[cert_id])
        for _, org, name, cert_id in subscribers
        if cert_id in certificates
    ]
    current = current[:limit]

    out.family(
        "certmgr_metrics_subscriber_limit",
        "gauge",
        "Per-subscriber series are emitted for at most this many subscribers (lowest ids first; setting "
        "CERTMGR_METRICS_MAX_SUBSCRIBERS).",
    )
    out.sample("certmgr_metrics_subscriber_limit", (), limit)
    out.family(
        "certmgr_metrics_subscribers_truncated",
        "gauge",
        "1 when there are more subscribers than the limit, so some are not listed.",
    )
    out.sample("certmgr_metrics_subscribers_truncated", (), truncated)

    out.family(
        "certmgr_certificate_expiration_timestamp_seconds",
        "gauge",
        "notAfter of each subscriber's current (newest active) certificate, seconds since the epoch.",
    )
    for org, name, ca_id, not_after, _ in current:
        labels = (("organization", orgs.get(org, "")), ("subscriber", name), ("ca", ca_label(ca_id)))
        out.sample("certmgr_certificate_expiration_timestamp_seconds", labels, not_after.timestamp())
    out.family(
        "certmgr_certificate_renewal_timestamp_seconds",
        "gauge",
        "When the renewal sweep renews each subscriber's current certificate, seconds since the epoch.",
    )
    for org, name, ca_id, _, renew_at in current:
        if renew_at is not None:
            labels = (("organization", orgs.get(org, "")), ("subscriber", name), ("ca", ca_label(ca_id)))
            out.sample("certmgr_certificate_renewal_timestamp_seconds", labels, renew_at.timestamp())

    out.family(
        "certmgr_certificate_ready_status",
        "gauge",
        "cert-manager's Ready condition per subscriber: True when its current certificate is valid now, "
        "False when it has none (never issued, expired or revoked); 1 on the subscriber's condition.",
    )
    ready = {(org, name): not_after > now for org, name, _, not_after, _ in current}
    for _, org, name, _ in subscribers:
        state = ready.get((org, name), False)
        for condition, value in (("True", state), ("False", not state), ("Unknown", False)):
            labels = (("organization", orgs.get(org, "")), ("subscriber", name), ("condition", condition))
            out.sample("certmgr_certificate_ready_status", labels, int(value))

    # Counts by (organization, status) and by CA: each an index-only scan ((organization, status, not_after)
    # and (ca)). A count by CA *and* status would read the whole table: no index holds both columns.
    out.family(
        "certmgr_certificates",
        "gauge",
        "Certificates in the inventory by organization and stored status (active, expired, revoked).",
    )
    counts = (
        _scoped(Certificate.objects, org_ids)
        .order_by()
        .values_list("organization_id", "status")
        .annotate(n=Count("*"))
    )
    for org, status, n in sorted(counts):
        out.sample("certmgr_certificates", (("organization", orgs.get(org, "")), ("status", status)), n)
    out.family(
        "certmgr_ca_certificates",
        "gauge",
        "Certificates in the inventory by issuing CA (every status).",
    )
    per_ca = (
        Certificate.objects.filter(ca_id__in=list(cas)).order_by().values_list("ca_id").annotate(n=Count("*"))
    )
    for ca_id, n in sorted(per_ca):
        out.sample(
            "certmgr_ca_certificates", (("organization", orgs.get(ca_orgs[ca_id], "")), ("ca", cas[ca_id])), n
        )

    out.family(
        "certmgr_renewal_failures",
        "gauge",
        "Failed issuance or renewal attempts in a row, per subscriber with at least one (reset on success).",
    )
    failing = (
        _scoped(Subscriber.objects, org_ids)
        .filter(renewal_failures__gt=0)
        .order_by("pk")
        .values_list("organization_id", "name", "renewal_failures")[:limit]
    )
    for org, name, failures in failing:
        out.sample(
            "certmgr_renewal_failures", (("organization", orgs.get(org, "")), ("subscriber", name)), failures
        )

    _acme_orders(out, _scoped(AcmeOrder.objects, org_ids), orgs, ca_label)
    _ocsp(out, org_ids, ocsp_cas, lambda ca_id: orgs.get(ca_orgs.get(ca_id), ""), ca_label, now)
    _acme_server_orders(out, org_ids, orgs)

    delivery = getattr(pki_models, "AlertDelivery", None)
    if delivery is not None:
        out.family("certmgr_alert_deliveries", "gauge", "Alert deliveries kept in the history, by status.")
        rows = (
            _scoped(delivery.objects, org_ids)
            .order_by()
            .values_list("organization_id", "status")
            .annotate(n=Count("*"))
        )
        for org, status, n in sorted(rows):
            out.sample(
                "certmgr_alert_deliveries", (("organization", orgs.get(org, "")), ("status", status)), n
            )
    return out.text()


def _acme_server_orders(out: Exposition, org_ids: set[int] | None, orgs: dict[int, str]) -> None:
    """certmgr's own ACME server: orders by directory, order profile (draft-ietf-acme-profiles; empty:
    none named) and RFC 8555 status; challenge validation durations (stored on each challenge, so every
    worker's count); refusals by error type (badNonce, rateLimited..., tallied by the web processes)."""
    from acmeserver.models import AcmeServerChallenge, AcmeServerOrder, AcmeServerProblemCount

    rows = (
        _scoped(AcmeServerOrder.objects, org_ids, "account__profile__organization_id")
        .order_by()
        .values_list("account__profile__organization_id", "account__profile__slug", "profile_name", "status")
        .annotate(n=Count("*"))
    )
    out.family(
        "certmgr_acme_server_orders",
        "gauge",
        "Orders of certmgr's ACME server by profile, order profile and status.",
    )
    for org, profile, order_profile, status, n in sorted(rows):
        out.sample(
            "certmgr_acme_server_orders",
            (
                ("organization", orgs.get(org, "")),
                ("profile", profile),
                ("order_profile", order_profile),
                ("status", status),
            ),
            n,
        )
    buckets = {
        f"le{i}": Count("pk", filter=Q(validation_seconds__lte=bound))
        for i, bound in enumerate(VALIDATION_BUCKETS)
    }
    org_path = "authorization__account__profile__organization_id"
    slug = "authorization__account__profile__slug"
    validations = (
        _scoped(AcmeServerChallenge.objects, org_ids, org_path)
        .filter(validation_seconds__isnull=False)
        .order_by()
        .values(org_path, slug, "type", "status")
        .annotate(n=Count("*"), total=Sum("validation_seconds"), **buckets)
    )
    name = "certmgr_acme_server_validation_duration_seconds"
    out.family(name, "histogram", "How long certmgr's ACME server took to validate a challenge, by outcome.")
    for row in sorted(validations, key=lambda r: (r[org_path], r[slug], r["type"], r["status"])):
        labels: tuple[tuple[str, object], ...] = (
            ("organization", orgs.get(row[org_path], "")),
            ("profile", row[slug]),
            ("type", row["type"]),
            ("outcome", row["status"]),
        )
        for i, bound in enumerate(VALIDATION_BUCKETS):
            out.sample(f"{name}_bucket", (*labels, ("le", f"{float(bound)}")), row[f"le{i}"])
        out.sample(f"{name}_bucket", (*labels, ("le", "+Inf")), row["n"])
        out.sample(f"{name}_sum", labels, row["total"] or 0.0)
        out.sample(f"{name}_count", labels, row["n"])
    problems = (
        _scoped(AcmeServerProblemCount.objects, org_ids, "profile__organization_id")
        .order_by()
        .values_list("profile__organization_id", "profile__slug", "type", "count")
    )
    out.family(
        "certmgr_acme_server_problems_total",
        "counter",
        "Refusals certmgr's ACME server answered by RFC 8555 error type (badNonce, rateLimited...).",
    )
    for org, profile, kind, n in sorted(problems):
        out.sample(
            "certmgr_acme_server_problems_total",
            (("organization", orgs.get(org, "")), ("profile", profile), ("type", kind)),
            n,
        )


def _acme_orders(out: Exposition, orders, orgs: dict[int, str], ca_label) -> None:
    """Finished orders by outcome (the order's final step) and how long they took, one GROUP BY."""
    duration = ExpressionWrapper(F("finished_at") - F("created_at"), output_field=DurationField())
    buckets = {
        f"le{i}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
        for i, bound in enumerate(DURATION_BUCKETS)
    }
    rows = (
        orders.filter(step__in=FINISHED_STEPS, finished_at__isnull=False)
        .order_by()
        .annotate(duration=duration)
        .values("organization_id", "ca_id", "step")
        .annotate(n=Count("*"), total=Sum("duration"), **buckets)
    )
    rows = sorted(rows, key=lambda r: (r["organization_id"], r["ca_id"], r["step"]))
    out.family(
        "certmgr_acme_orders_total", "counter", "Finished ACME orders by outcome (done, failed, cancelled)."
    )
    for row in rows:
        labels: tuple[tuple[str, object], ...] = (
            ("organization", orgs.get(row["organization_id"], "")),
            ("ca", ca_label(row["ca_id"])),
        )
        out.sample("certmgr_acme_orders_total", (*labels, ("outcome", row["step"])), row["n"])
    requests = (
        orders.order_by()
        .values("organization_id", "ca_id")
        .annotate(
            ok=Sum("requests_ok"),
            client=Sum("requests_client_error"),
            server=Sum("requests_server_error"),
            nonces=Sum("bad_nonces"),
        )
    )
    out.family(
        "certmgr_acme_requests_total",
        "counter",
        "ACME requests by the CA's answer (2xx, 4xx, 5xx); badNonce retries are also counted as 4xx.",
    )
    nonce_rows, request_rows = [], []
    for row in sorted(requests, key=lambda r: (r["organization_id"], r["ca_id"])):
        labels = (("organization", orgs.get(row["organization_id"], "")), ("ca", ca_label(row["ca_id"])))
        request_rows.append((labels, row))
        for status, key in (("2xx", "ok"), ("4xx", "client"), ("5xx", "server")):
            out.sample("certmgr_acme_requests_total", (*labels, ("status", status)), row[key] or 0)
        nonce_rows.append((labels, row["nonces"] or 0))
    # cert-manager's certmanager_http_acme_client_request_count, under our prefix: the same numbers as a
    # summary's _count (a bare ..._count counter or gauge is refused by promtool's lint; no durations kept).
    out.family(
        "certmgr_acme_client_request",
        "summary",
        "ACME requests by the CA's answer, as cert-manager's acme_client_request_count (no _sum: not timed).",
    )
    for labels, row in request_rows:
        for status, key in (("2xx", "ok"), ("4xx", "client"), ("5xx", "server")):
            out.sample("certmgr_acme_client_request_count", (*labels, ("status", status)), row[key] or 0)
    out.family("certmgr_acme_bad_nonces_total", "counter", "ACME badNonce answers retried, by CA.")
    for labels, n in nonce_rows:
        out.sample("certmgr_acme_bad_nonces_total", labels, n)
    name = "certmgr_acme_order_duration_seconds"
    out.family(name, "histogram", "Time from an ACME order's creation to its end (finished_at - created_at).")
    for row in rows:
        labels = (
            ("organization", orgs.get(row["organization_id"], "")),
            ("ca", ca_label(row["ca_id"])),
            ("outcome", row["step"]),
        )
        for i, bound in enumerate(DURATION_BUCKETS):
            out.sample(f"{name}_bucket", (*labels, ("le", f"{float(bound)}")), row[f"le{i}"])
        out.sample(f"{name}_bucket", (*labels, ("le", "+Inf")), row["n"])
        total = row["total"] or timedelta(0)
        out.sample(f"{name}_sum", labels, total.total_seconds())
        out.sample(f"{name}_count", labels, row["n"])


def _ocsp(out: Exposition, org_ids: set[int] | None, ocsp_cas: list[int], org_label, ca_label, now) -> None:
    """The OCSP responder: answers by status (counted by every web process, pki.services.ocsp.count_answer),
    and per OCSP CA the certificates that need a pre-signed response, how many have a fresh one, and the age
    of the oldest stored one. Three queries."""
    from pki.models import Certificate, OcspRequestCount, OcspResponse

    def ca_labels(ca_id: int | None) -> tuple[tuple[str, object], ...]:
        return (("organization", org_label(ca_id)), ("ca", ca_label(ca_id)))

    out.family(
        "certmgr_ocsp_responses_total",
        "counter",
        "OCSP answers by status (good, revoked, unknown, unauthorized, malformedRequest) and CA; ca and "
        "organization are empty for a CA id that is not one of ours (seen without an API token only).",
    )
    counts = OcspRequestCount.objects.order_by().values_list("ca_id", "status", "count")
    counts = counts.filter(ca__organization_id__in=org_ids) if org_ids is not None else counts
    for ca_id, status, n in sorted(counts, key=lambda row: (row[0] or 0, row[1])):
        out.sample("certmgr_ocsp_responses_total", (*ca_labels(ca_id), ("status", status)), n)

    # Whose response is pre-signed: the CA's active and revoked-unexpired certificates (pki.services.ocsp
    # .presign), each probed in the unique (ca, serial) index of the stored responses.
    fresh = OcspResponse.objects.filter(
        ca_id=OuterRef("ca_id"), serial=OuterRef("serial"), next_update__gt=now
    )
    coverage = (
        Certificate.objects.filter(
            ca_id__in=ocsp_cas,
            not_after__gt=now,
            status__in=[Certificate.Status.ACTIVE, Certificate.Status.REVOKED],
        )
        .order_by()
        .values("ca_id")
        .annotate(n=Count("*"), presigned=Count("pk", filter=Exists(fresh)))
    )
    by_ca = {row["ca_id"]: (row["n"], row["presigned"]) for row in coverage}
    oldest = dict(
        OcspResponse.objects.filter(ca_id__in=ocsp_cas)
        .order_by()
        .values_list("ca_id")
        .annotate(oldest=Min("this_update"))
    )
    out.family(
        "certmgr_ocsp_certificates",
        "gauge",
        "Certificates of each OCSP CA that get a pre-signed response (active, and revoked but unexpired).",
    )
    for ca_id in sorted(ocsp_cas):
        labels = ca_labels(ca_id)
        out.sample("certmgr_ocsp_certificates", labels, by_ca.get(ca_id, (0, 0))[0])
    out.family(
        "certmgr_ocsp_presigned_certificates",
        "gauge",
        "Of those, how many have a stored response that has not reached its nextUpdate.",
    )
    for ca_id in sorted(ocsp_cas):
        labels = ca_labels(ca_id)
        out.sample("certmgr_ocsp_presigned_certificates", labels, by_ca.get(ca_id, (0, 0))[1])
    out.family(
        "certmgr_ocsp_presigned_ratio",
        "gauge",
        "certmgr_ocsp_presigned_certificates / certmgr_ocsp_certificates (1 for a CA with none to sign).",
    )
    for ca_id in sorted(ocsp_cas):
        labels = ca_labels(ca_id)
        total, presigned = by_ca.get(ca_id, (0, 0))
        out.sample("certmgr_ocsp_presigned_ratio", labels, presigned / total if total else 1)
    out.family(
        "certmgr_ocsp_oldest_response_age_seconds",
        "gauge",
        "Age (now - thisUpdate) of the oldest stored pre-signed response, per OCSP CA with any stored.",
    )
    for ca_id in sorted(oldest):
        labels = ca_labels(ca_id)
        out.sample("certmgr_ocsp_oldest_response_age_seconds", labels, (now - oldest[ca_id]).total_seconds())


def cached_collect(org_ids: set[int] | None) -> str:
    """``collect`` for this scope, reused for ``CERTMGR_METRICS_CACHE_SECONDS`` (0: every scrape computes)."""
    seconds = settings.CERTMGR_METRICS_CACHE_SECONDS
    if seconds <= 0:
        return collect(org_ids)
    scope = "all" if org_ids is None else ",".join(str(pk) for pk in sorted(org_ids))
    key = "certmgr:metrics:" + hashlib.sha256(scope.encode()).hexdigest()
    body = cache.get(key)
    if body is None:
        body = collect(org_ids)
        cache.set(key, body, seconds)
    return body


# --- the door ----------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"CERTMGR_METRICS_ALLOWED_NETWORKS: {exc}") from exc


def ip_allowed(request: HttpRequest) -> bool:
    networks = _networks(tuple(settings.CERTMGR_METRICS_ALLOWED_NETWORKS))
    address = client_ip(request)
    if not networks or not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def _unauthorized(message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=401, content_type="text/plain; charset=utf-8")
    response["WWW-Authenticate"] = 'Bearer realm="certmgr"'
    return response


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    try:
        authenticated = BearerTokenAuthentication().authenticate(request)
    except AuthenticationFailed as exc:
        return _unauthorized(str(exc.detail))
    if authenticated is not None:
        _, token = authenticated
        org_ids = Actor.for_token(token).organization_ids(Action.VIEW)
    elif ip_allowed(request):
        org_ids = None  # the monitoring network: every organization
    else:
        return _unauthorized("An API token or an allow-listed address is required.")
    response = HttpResponse(cached_collect(org_ids), content_type=CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
