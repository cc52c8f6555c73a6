"""The dashboard page in the admin (``/admin/dashboard/``): wiring and the chart's geometry.

The URL is added by wrapping ``admin.site.get_urls`` (imported from ``CertmgrConfig.ready``), so the page
lives under the admin's login, templates and navigation without a custom AdminSite class. The numbers come
from ``reports.dashboard``; this module only turns them into a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats

from certmgr.actors import as_actor
from certmgr.permissions import Action
from reports import dashboard

# The chart's drawing area in SVG user units (the SVG scales to the page width).
BAR_WIDTH = 22
BAR_GAP = 8
PLOT_HEIGHT = 160
TOP = 16
LEFT = 40
LABEL_EVERY = 4  # a date under every fourth bar


@dataclass(frozen=True)
class Bar:
    x: int
    y: float
    width: int
    height: float
    count: int
    label: str  # "Week of 5 Jan 2026: 12 certificates expire"
    tick: str  # the date under the bar, or ""


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_bottom: int
    bars: list[Bar]
    top_value: int


def chart(weeks: list[dashboard.WeekBar]) -> Chart:
    """Bars scaled to the busiest week; each carries its own accessible label."""
    top_value = max((week.count for week in weeks), default=0) or 1
    bars = []
    for i, week in enumerate(weeks):
        height = round(PLOT_HEIGHT * week.count / top_value, 1)
        day = formats.date_format(week.start, "DATE_FORMAT")
        noun = "certificate expires" if week.count == 1 else "certificates expire"
        bars.append(
            Bar(
                x=LEFT + i * (BAR_WIDTH + BAR_GAP),
                y=TOP + PLOT_HEIGHT - height,
                width=BAR_WIDTH,
                height=height,
                count=week.count,
                label=f"Week of {day}: {week.count} {noun}",
                tick=formats.date_format(week.start, "j M") if i % LABEL_EVERY == 0 else "",
            )
        )
    width = LEFT + len(weeks) * (BAR_WIDTH + BAR_GAP)
    return Chart(
        width=width,
        height=TOP + PLOT_HEIGHT + 30,
        plot_bottom=TOP + PLOT_HEIGHT,
        bars=bars,
        top_value=top_value,
    )


def _changelist(model: str, **params: object) -> str:
    url = reverse(f"admin:{model}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


@dataclass(frozen=True)
class Step:
    title: str
    text: str
    url: str
    link: str
    done: bool


def getting_started(request: HttpRequest) -> list[Step]:
    """The checklist an empty dashboard shows: what a new organization does first, each step ticked
    off once it is done (three EXISTS queries, only while there is no certificate)."""
    from dnsproviders.models import AppConnection
    from pki.models import CertificateAuthority, Subscriber

    return [
        Step(
            "Connect a DNS provider",
            "ACME CAs check DNS-01 challenges in your zones: give certmgr a PowerDNS, Cloudflare, Route 53, "
            "RFC 2136 or acme-dns connection (skip this for a private CA only).",
            reverse("admin:dnsproviders_appconnection_add"),
            "Add a DNS connection",
            AppConnection.objects.restrict(request).exists(),
        ),
        Step(
            "Add a certificate authority",
            "Register an ACME CA (Let's Encrypt, ZeroSSL, step-ca, ...) or create a private root and "
            "intermediate.",
            reverse("admin:pki_certificateauthority_changelist"),
            "Certificate authorities",
            CertificateAuthority.objects.restrict(request).exists(),
        ),
        Step(
            "Create a subscriber",
            "A subscriber is the names a certificate is for, the CA that issues it and its renewal rules.",
            reverse("admin:pki_subscriber_add"),
            "Add a subscriber",
            Subscriber.objects.restrict(request).exists(),
        ),
        Step(
            "Issue the first certificate",
            "Open the subscriber and choose Issue certificate; certmgr renews it before it expires.",
            reverse("admin:pki_subscriber_changelist"),
            "Subscribers",
            False,
        ),
    ]


def dashboard_view(request: HttpRequest) -> HttpResponse:
    actor = as_actor(request)
    organizations = actor.organization_ids(Action.VIEW)
    if organizations is not None and not organizations:
        raise PermissionDenied  # a staff user in no organization has nothing to see
    data = dashboard.build(actor)
    certificates = "pki_certificate"
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "dashboard": data,
        "chart": chart(data.weeks),
        "certificates_url": _changelist(certificates),
        "status_links": [
            (row, _changelist(certificates, status__exact=row.status)) for row in data.by_status
        ],
        "ca_links": [
            (row, _changelist(certificates, ca=row.ca_id) if row.ca_id else "") for row in data.by_ca
        ],
        "expiring_links": [
            (row, _changelist(certificates, expiring_within=row.days)) for row in data.expiring
        ],
        "failed_subscribers_url": _changelist("pki_subscriber", last_operation_status__exact="failed"),
        "failed_orders_url": _changelist("acmeca_acmeorder", step__exact="failed"),
        "undeployed_renewals_url": _changelist(certificates, deployment="renewed_undeployed"),
        "getting_started": getting_started(request) if data.total == 0 else [],
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def _install() -> None:
    site = admin.site
    if getattr(site, "_certmgr_dashboard", False):
        return
    original = site.get_urls

    def get_urls():
        return [path("dashboard/", site.admin_view(dashboard_view), name="dashboard"), *original()]

    # A deliberate wrap of the default site's URLs (not a stub problem: mypy refuses any such patch).
    site.get_urls = get_urls  # type: ignore[method-assign]
    site._certmgr_dashboard = True  # type: ignore[attr-defined]  # the marker read above


_install()
