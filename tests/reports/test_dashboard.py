"""The admin dashboard: counts by status and CA, expiring windows, the weekly chart, failures, the renewal
queue; tenant-scoped, readable by auditors, and a fixed handful of queries however many certificates."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from acmeca.models import AcmeOrder
from pki import services
from pki.models import Certificate, CertificateAuthority
from reports import dashboard
from reports.dashboard_admin import chart
from tests.conftest import PASSWORD, SYSTEM
from tests.pki import conftest as pki_fixtures

# The PKI fixtures, shared with tests/pki/ (a conftest there is not seen from here).
hierarchy, subscriber, issued = pki_fixtures.hierarchy, pki_fixtures.subscriber, pki_fixtures.issued
pytestmark = pytest.mark.django_db
DASHBOARD = "/admin/dashboard/"


def make_cert(org, *, ca=None, subscriber=None, days: float = 30, status="active", renew_in=None):
    """An inventory row without cryptography: the dashboard reads columns, never the PEM."""
    now = timezone.now()
    name = f"h{secrets.token_hex(4)}.example.test"
    return Certificate.objects.create(
        organization=org,
        ca=ca,
        subscriber=subscriber,
        source="imported",
        serial=secrets.token_hex(8),
        certificate_pem="-",
        fingerprint_sha256=secrets.token_hex(32),
        fingerprint_sha1=secrets.token_hex(20),
        common_name=name,
        names_text=name,
        key_algorithm="ec-p256",
        not_before=now - timedelta(days=10),
        not_after=now + timedelta(days=days),
        status=status,
        next_renewal_at=now + timedelta(days=renew_in) if renew_in is not None else None,
    )


def acme_order(org, ca, *, step="failed", error="boom") -> AcmeOrder:
    now = timezone.now()
    return AcmeOrder.objects.create(
        organization=org,
        ca=ca,
        identifiers=[{"type": "dns", "value": "shop.acme.test"}],
        challenge_type="dns-01",
        step=step,
        error_type="urn:ietf:params:acme:error:rateLimited",
        last_error=error,
        finished_at=now,
    )


def session(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_counts_by_status_and_ca(tenant, other_tenant, hierarchy):
    inter = hierarchy[1]
    org = tenant.organization
    for _ in range(3):
        make_cert(org, ca=inter)
    make_cert(org, ca=inter, days=-5, status="expired")
    make_cert(org, status="revoked")
    make_cert(other_tenant.organization)  # another tenant's: never counted

    data = dashboard.build(tenant.auditor.user)

    assert {row.status: row.count for row in data.by_status} == {"active": 3, "expired": 1, "revoked": 1}
    assert data.total == 5
    assert [(row.name, row.count) for row in data.by_ca] == [("Issuing", 4), (dashboard.NO_CA[0], 1)]


def test_expiring_windows_and_weekly_chart(tenant):
    org = tenant.organization
    for days in (3, 20, 60, 100, 400):
        make_cert(org, days=days)
    make_cert(org, days=3, status="revoked")  # not active: not expiring
    make_cert(org, days=-1)  # past expiry (the status task has not run yet): not expiring

    now = timezone.now()
    data = dashboard.build(tenant.auditor.user, now=now)

    assert {row.days: row.count for row in data.expiring} == {7: 1, 30: 2, 90: 3}
    assert len(data.weeks) == dashboard.CHART_WEEKS == 26
    assert data.weeks[0].start <= now < data.weeks[1].start
    assert data.weeks[0].start.weekday() == 0
    assert sum(bar.count for bar in data.weeks) == 4  # 400 days lies beyond the chart
    week_of = {bar.start.date(): bar.count for bar in data.weeks}
    for days in (3, 20, 60, 100):
        assert week_of[dashboard.week_start(now + timedelta(days=days)).date()] >= 1


def test_chart_has_a_labelled_bar_per_week():
    start = dashboard.week_start(timezone.now())
    weeks = [dashboard.WeekBar(start + timedelta(weeks=i), i % 3) for i in range(26)]
    drawn = chart(weeks)
    assert len(drawn.bars) == 26
    assert drawn.top_value == 2
    tallest = [bar for bar in drawn.bars if bar.count == 2]
    assert all(bar.height == 160 for bar in tallest)
    assert all(bar.height == 0 for bar in drawn.bars if bar.count == 0)
    assert drawn.bars[1].label.startswith("Week of ") and drawn.bars[1].label.endswith(
        ": 1 certificate expires"
    )
    assert chart([dashboard.WeekBar(start, 0)] * 26).top_value == 1  # an empty chart does not divide by zero


def test_failures_and_renewal_queue(tenant, other_tenant, subscriber, issued):
    org = tenant.organization
    external = CertificateAuthority.objects.create(organization=org, name="ext", kind="acme")
    order = acme_order(org, external, error="too many certificates")
    acme_order(org, external, step="done")
    services.note_issue_failure(subscriber.pk, "policy", "name not allowed by the policy")
    later = make_cert(org, ca=subscriber.ca, subscriber=subscriber, days=50, renew_in=30)
    other_ca = CertificateAuthority.objects.create(
        organization=other_tenant.organization, name="x", kind="acme"
    )
    acme_order(other_tenant.organization, other_ca)

    data = dashboard.build(tenant.auditor.user)

    assert [row.id for row in data.failed_subscribers] == [subscriber.pk]
    assert data.failed_subscribers[0].category == "policy"
    assert data.failed_subscribers[0].failures == 1
    assert [row.id for row in data.failed_orders] == [order.pk]
    assert data.failed_orders[0].error_type == "rateLimited"
    assert data.failed_orders[0].names == "shop.acme.test"
    queue = [row.certificate_id for row in data.renewal_queue]
    assert queue == [issued.pk, later.pk]  # soonest first
    assert data.renewal_queue[0].subscriber_name == "web"
    assert data.renewal_queue[0].ca_name == "Issuing"


def test_build_runs_a_fixed_handful_of_queries(tenant, hierarchy, subscriber, django_assert_num_queries):
    org = tenant.organization
    for days in range(1, 200, 7):
        make_cert(org, ca=hierarchy[1], subscriber=subscriber, days=days, renew_in=days / 2)
    actor_user = tenant.auditor.user
    # memberships, status counts, CAs, CA counts, weekly + windows, failed subscribers, failed orders, queue,
    # renewed but not yet deployed
    with django_assert_num_queries(9):
        dashboard.build(actor_user)
    for days in range(3, 200, 5):
        make_cert(org, ca=hierarchy[0], days=days)
    with django_assert_num_queries(9):
        dashboard.build(actor_user)


def test_auditor_sees_the_page_with_chart_and_links(tenant, other_tenant, issued):
    make_cert(tenant.organization, ca=issued.ca, days=5)
    make_cert(other_tenant.organization, days=5)
    client = session(tenant.auditor.user)

    response = client.get(DASHBOARD)

    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="bar"') == 26
    assert 'aria-labelledby="cm-chart-title cm-chart-desc"' in html
    assert "/admin/pki/certificate/?expiring_within=7" in html
    assert "/admin/pki/certificate/?expiring_within=90" in html
    assert f"/admin/pki/certificate/?ca={issued.ca_id}" in html
    assert f"/admin/pki/certificate/{issued.pk}/change/" in html  # in the renewal queue
    assert {row.days: row.count for row in response.context["dashboard"].expiring} == {7: 1, 30: 2, 90: 2}
    listed = client.get("/admin/pki/certificate/?expiring_within=7")
    assert listed.status_code == 200
    assert listed.context["cl"].result_count == 1


def test_page_query_count_does_not_grow(tenant, hierarchy, django_assert_max_num_queries):
    client = session(tenant.auditor.user)
    client.get(DASHBOARD)  # warm caches (content types, session)
    for days in range(1, 150, 3):
        make_cert(tenant.organization, ca=hierarchy[1], days=days)
    # 13 for the page, plus one per admin page for the second step a session may owe (two-factor)
    with django_assert_max_num_queries(14):
        assert client.get(DASHBOARD).status_code == 200


def test_other_tenant_sees_only_its_own(tenant, other_tenant, issued):
    response = session(other_tenant.admin.user).get(DASHBOARD)
    assert response.status_code == 200
    data = response.context["dashboard"]
    assert data.total == 0
    assert data.renewal_queue == []
    assert issued.common_name not in response.content.decode()


def test_staff_without_organization_is_refused_and_anonymous_sent_to_login(db):
    loner = get_user_model().objects.create_user("loner", password=PASSWORD, is_staff=True)
    assert session(loner).get(DASHBOARD).status_code == 403
    response = Client().get(DASHBOARD)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_superuser_sees_every_organization(tenant, other_tenant):
    make_cert(tenant.organization)
    make_cert(other_tenant.organization)
    root = get_user_model().objects.create_superuser("root", password=PASSWORD)
    response = session(root).get(DASHBOARD)
    assert response.status_code == 200
    assert response.context["dashboard"].total == 2


def test_admin_index_links_to_the_dashboard(tenant):
    response = session(tenant.auditor.user).get("/admin/")
    assert response.status_code == 200
    assert 'href="/admin/dashboard/"' in response.content.decode()


def test_renewal_queue_skips_subscribers_without_auto_renew(tenant, subscriber, issued):
    subscriber.auto_renew = False
    subscriber.save(update_fields=["auto_renew"])
    assert dashboard.build(SYSTEM).renewal_queue == []


def test_next_try_of_a_failed_subscriber_is_when_the_sweep_tries(tenant, subscriber):
    from pki import lifecycle
    from pki.models import Subscriber

    # A failed first issuance: the sweep retries it at the backoff time, the time the dashboard shows.
    services.note_issue_failure(subscriber.pk, "error", "the CA was down")
    subscriber.refresh_from_db()
    (row,) = dashboard.build(tenant.auditor.user).failed_subscribers
    assert row.next_attempt_at == subscriber.next_attempt_at
    assert subscriber.pk not in lifecycle.first_issues_due(row.next_attempt_at - timedelta(seconds=1))
    assert subscriber.pk in lifecycle.first_issues_due(row.next_attempt_at)

    # With auto-renew off the sweep never tries: no next try is shown.
    Subscriber.objects.filter(pk=subscriber.pk).update(auto_renew=False)
    (row,) = dashboard.build(tenant.auditor.user).failed_subscribers
    assert row.next_attempt_at is None
    assert subscriber.pk not in lifecycle.first_issues_due(subscriber.next_attempt_at)

    # With a current certificate the failure is retried when its renewal comes, not at the backoff.
    Subscriber.objects.filter(pk=subscriber.pk).update(auto_renew=True)
    current = make_cert(tenant.organization, ca=subscriber.ca, subscriber=subscriber, days=50, renew_in=30)
    (row,) = dashboard.build(tenant.auditor.user).failed_subscribers
    assert row.next_attempt_at == current.next_renewal_at
    assert subscriber.pk not in lifecycle.first_issues_due(subscriber.next_attempt_at)
