"""The admin: tenancy and roles, audit-log pages and CSV export, app connections with write-only secrets."""

from __future__ import annotations

import csv
import io

import pytest
from django.test import Client

from certmgr.models import ApiToken, AuditEvent, Membership
from dnsproviders.models import AppConnection
from dnsproviders.services import create_connection
from tests.conftest import PASSWORD, SYSTEM

pytestmark = pytest.mark.django_db

PLANTED = "PLANTED-admin-secret-0a1b2c3d"


def login(member) -> Client:
    client = Client()
    assert client.login(username=member.user.username, password=PASSWORD)
    return client


@pytest.fixture
def connection(tenant):
    return create_connection(
        tenant.organization,
        name="pdns",
        kind="powerdns",
        credentials={"api_url": "https://pdns.example.net", "api_key": PLANTED, "server_id": "localhost"},
        actor=SYSTEM,
    )


def test_operator_adds_a_connection_through_the_form(tenant):
    client = login(tenant.operator)
    page = client.get("/admin/dnsproviders/appconnection/add/")
    assert page.status_code == 200
    assert b"cred_powerdns_api_key" in page.content and b'type="password"' in page.content
    response = client.post(
        "/admin/dnsproviders/appconnection/add/",
        {
            "organization": tenant.organization.pk,
            "name": "bind-main",
            "kind": "rfc2136",
            "description": "",
            "cred_rfc2136_server": "ns1.example.net",
            "cred_rfc2136_port": "53",
            "cred_rfc2136_tsig_key_name": "certmgr",
            "cred_rfc2136_tsig_algorithm": "hmac-sha256",
            "cred_rfc2136_tsig_secret": "c2VjcmV0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    conn = AppConnection.objects.get(name="bind-main")
    assert conn.credentials["tsig_secret"] == "c2VjcmV0"
    event = AuditEvent.objects.filter(action="app_connection.create").latest("id")
    assert event.actor_type == "user" and event.actor_label == tenant.operator.user.username


def test_moving_a_connection_needs_its_secret_again(tenant, connection):
    client = login(tenant.operator)
    url = f"/admin/dnsproviders/appconnection/{connection.pk}/change/"
    moved = {
        "name": "pdns",
        "description": "",
        "cred_powerdns_api_url": "https://collector.example.org",
        "cred_powerdns_server_id": "localhost",
    }
    refused = client.post(url, moved)
    assert refused.status_code == 200
    (message,) = refused.context["adminform"].form.errors["cred_powerdns_api_key"]
    assert message == "Enter the API key again: changing API URL changes where it is sent."
    connection.refresh_from_db()
    assert connection.credentials["api_url"] == "https://pdns.example.net"
    assert client.post(url, {**moved, "cred_powerdns_api_key": "new-key"}).status_code == 302
    connection.refresh_from_db()
    assert connection.credentials == {
        "api_url": "https://collector.example.org",
        "api_key": "new-key",
        "server_id": "localhost",
    }


def test_form_shows_per_field_credential_errors(tenant):
    client = login(tenant.operator)
    response = client.post(
        "/admin/dnsproviders/appconnection/add/",
        {
            "organization": tenant.organization.pk,
            "name": "x",
            "kind": "powerdns",
            "cred_powerdns_api_url": "nope",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "cred_powerdns_api_url" in errors and "cred_powerdns_api_key" in errors
    assert not AppConnection.objects.exists()


def test_edit_keeps_the_secret_and_never_renders_it(tenant, connection):
    client = login(tenant.operator)
    url = f"/admin/dnsproviders/appconnection/{connection.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    assert PLANTED.encode() not in page.content
    assert b"pdns.example.net" in page.content  # non-secret settings are shown for editing
    response = client.post(
        url,
        {
            "name": "pdns-renamed",
            "description": "",
            "cred_powerdns_api_url": "https://pdns.example.net",
            "cred_powerdns_server_id": "localhost",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    connection.refresh_from_db()
    assert connection.name == "pdns-renamed" and connection.credentials["api_key"] == PLANTED


def test_planted_secret_is_on_no_admin_page(tenant, connection):
    client = login(tenant.admin)
    pages = [
        "/admin/",
        "/admin/dnsproviders/appconnection/",
        f"/admin/dnsproviders/appconnection/{connection.pk}/change/",
        f"/admin/dnsproviders/appconnection/{connection.pk}/history/",
        f"/admin/dnsproviders/appconnection/{connection.pk}/delete/",
        "/admin/certmgr/auditevent/",
        "/admin/certmgr/auditevent/export.csv",
    ]
    for event in AuditEvent.objects.all()[:20]:
        pages.append(f"/admin/certmgr/auditevent/{event.pk}/change/")
    for url in pages:
        response = client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code == 200, url
        assert PLANTED.encode() not in body, url


def test_auditor_sees_read_only_pages(tenant, connection):
    client = login(tenant.auditor)
    changelist = client.get("/admin/dnsproviders/appconnection/")
    assert changelist.status_code == 200 and b"pdns" in changelist.content
    assert b"/admin/dnsproviders/appconnection/add/" not in changelist.content
    page = client.get(f"/admin/dnsproviders/appconnection/{connection.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert b"https://pdns.example.net" in page.content and b"stored (hidden)" in page.content
    assert PLANTED.encode() not in page.content
    assert client.get("/admin/dnsproviders/appconnection/add/").status_code == 403
    response = client.post(f"/admin/dnsproviders/appconnection/{connection.pk}/change/", {"name": "hijack"})
    assert response.status_code == 403
    assert client.post(f"/admin/dnsproviders/appconnection/{connection.pk}/test/").status_code == 403


def test_other_organization_cannot_see_the_row(tenant, other_tenant, connection):
    client = login(other_tenant.admin)
    assert b"pdns" not in client.get("/admin/dnsproviders/appconnection/").content
    page = client.get(f"/admin/dnsproviders/appconnection/{connection.pk}/change/")
    assert page.status_code == 302  # Django's admin redirects a missing object to the index
    assert AuditEvent.objects.filter(organization=tenant.organization).exists()
    audit_list = client.get("/admin/certmgr/auditevent/")
    assert all(
        e.organization_id == other_tenant.organization.pk for e in audit_list.context["cl"].result_list
    )


def test_test_connection_button_reports_the_result(tenant, settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []
    conn = create_connection(
        tenant.organization,
        name="local",
        kind="powerdns",
        credentials={"api_url": "http://127.0.0.1:9", "api_key": "k"},
        actor=SYSTEM,
    )
    client = login(tenant.operator)
    response = client.post(f"/admin/dnsproviders/appconnection/{conn.pk}/test/", follow=True)
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert any("CERTMGR_OUTBOUND_ALLOWED_NETWORKS" in m for m in messages), messages
    assert AuditEvent.objects.filter(action="app_connection.test", outcome="failure").exists()


def test_audit_log_list_filters_search_detail_and_csv(tenant, connection):
    client = login(tenant.auditor)
    page = client.get("/admin/certmgr/auditevent/")
    assert page.status_code == 200
    for text in (
        b"By actor",
        b"By action",
        b"By target type",
        b"By outcome",
        b"By date range",
        b"Export CSV",
    ):
        assert text in page.content, text
    filtered = client.get("/admin/certmgr/auditevent/", {"action": "app_connection.create"})
    assert [e.action for e in filtered.context["cl"].result_list] == ["app_connection.create"]
    searched = client.get("/admin/certmgr/auditevent/", {"q": "pdns"})
    assert searched.context["cl"].result_list
    by_actor = client.get("/admin/certmgr/auditevent/", {"actor": "system:"})
    assert all(e.actor_type == "system" for e in by_actor.context["cl"].result_list)
    dated = client.get("/admin/certmgr/auditevent/", {"time__gte": "2000-01-01", "time__lt": "2000-01-02"})
    assert list(dated.context["cl"].result_list) == []

    event = AuditEvent.objects.filter(action="app_connection.create").get()
    detail = client.get(f"/admin/certmgr/auditevent/{event.pk}/change/")
    assert detail.status_code == 200 and event.hash.encode() in detail.content
    assert b'name="_save"' not in detail.content

    export = client.get("/admin/certmgr/auditevent/export.csv", {"action": "app_connection.create"})
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [r["action"] for r in rows] == ["app_connection.create"]
    assert AuditEvent.objects.filter(action="audit.export", actor_label=tenant.auditor.user.username).exists()


def test_csv_export_neutralises_formulas(tenant):
    create_connection(
        tenant.organization, name="=HYPERLINK(evil)", kind="manual", credentials={}, actor=SYSTEM
    )
    client = login(tenant.auditor)
    export = client.get("/admin/certmgr/auditevent/export.csv", {"action": "app_connection.create"})
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert rows[0]["target_repr"] == "'=HYPERLINK(evil)"


def test_audit_events_cannot_be_changed_in_the_admin(tenant):
    client = login(tenant.admin)
    event = AuditEvent.objects.filter(organization=tenant.organization).first()
    assert client.post(f"/admin/certmgr/auditevent/{event.pk}/delete/").status_code == 403
    assert client.get("/admin/certmgr/auditevent/add/").status_code == 403


def test_admin_creates_token_and_sees_it_once(tenant):
    client = login(tenant.operator)
    response = client.post(
        "/admin/certmgr/apitoken/add/",
        {
            "organization": tenant.organization.pk,
            "user": tenant.operator.user.pk,
            "name": "deploy",
            "role": "auditor",
            "expires_at_0": "",
            "expires_at_1": "",
        },
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"] if "cm_" in str(m)]
    assert len(shown) == 1
    token = ApiToken.objects.get(name="deploy")
    secret = shown[0].split("<code class='api-token'>")[1].split("</code>")[0]
    assert token.prefix in secret
    again = client.get(f"/admin/certmgr/apitoken/{token.pk}/change/")
    assert secret.encode() not in again.content


def test_a_superuser_attaches_accounts_administrators_invite(tenant, django_user_model):
    assert login(tenant.admin).get("/admin/certmgr/membership/add/").status_code == 403
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    assert client.login(username="root", password=PASSWORD)
    response = client.post(
        "/admin/certmgr/membership/add/",
        {
            "organization": tenant.organization.pk,
            "role": "operator",
            "username": "newcomer",
            "password": "a sufficiently long passphrase 9",
        },
    )
    assert response.status_code == 302, response.content.decode()[:1500]
    assert Membership.objects.get(user__username="newcomer").role == "operator"
    assert Client().login(username="newcomer", password="a sufficiently long passphrase 9")
    assert login(tenant.operator).get("/admin/certmgr/membership/add/").status_code == 403


def test_filters_never_list_other_organizations(tenant, other_tenant, connection):
    client = login(other_tenant.admin)
    for url in (
        "/admin/certmgr/membership/",
        "/admin/certmgr/apitoken/",
        "/admin/dnsproviders/appconnection/",
        "/admin/certmgr/auditevent/",
    ):
        page = client.get(url)
        assert page.status_code == 200
        assert b"Acme" not in page.content, url


def test_membership_change_page_for_every_role(tenant):
    from certmgr.models import Membership

    membership = Membership.objects.get(organization=tenant.organization, user=tenant.auditor.user)
    url = f"/admin/certmgr/membership/{membership.pk}/change/"
    for member in (tenant.admin, tenant.operator, tenant.auditor):
        page = login(member).get(url)
        assert page.status_code == 200, (member.role, page.status_code)
        assert tenant.auditor.user.username.encode() in page.content
    changed = login(tenant.admin).post(url, {"role": "operator"})
    assert changed.status_code == 302, changed.content.decode()[:2000]
    membership.refresh_from_db()
    assert membership.role == "operator"
