"""The admin index grouped by the work: members see their groups, the framework's tables (task queue, users,
groups, login attempts) only superusers; "/" and "View site" lead to the dashboard; the empty dashboard's
checklist ticks off what is done; the CA hierarchy and a CA's page count its certificates."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.conftest import PASSWORD
from tests.pki import conftest as pki_fixtures
from tests.reports.test_dashboard import make_cert

hierarchy, subscriber, issued = pki_fixtures.hierarchy, pki_fixtures.subscriber, pki_fixtures.issued
pytestmark = pytest.mark.django_db


def session(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def groups(response) -> dict[str, list[str]]:
    return {app["name"]: [m["name"] for m in app["models"]] for app in response.context["app_list"]}


def test_member_sees_the_work_groups_and_no_framework_tables(tenant):
    response = session(tenant.admin.user).get("/admin/")
    assert response.status_code == 200
    found = groups(response)
    assert list(found) == [
        "Inventory",
        "Issuance",
        "Certificate authorities",
        "Enrollment (ACME server)",
        "Deployment",
        "Connections",
        "Alerts",
        "Organization",
    ]
    assert found["Inventory"][:3] == ["Dashboard", "Certificates", "CSRs"]
    assert "CA hierarchy" in found["Certificate authorities"]
    assert found["Connections"] == ["DNS providers"]
    assert found["Deployment"] == ["Sync destinations", "Sync rules", "Sync runs"]
    assert found["Enrollment (ACME server)"][:4] == [
        "ACME profiles",
        "ACME order profiles",
        "ACME EAB keys",
        "ACME early renewals",
    ]
    html = response.content.decode()
    assert "Scheduled tasks" not in html and "/admin/auth/user/" not in html
    assert session(tenant.admin.user).get("/admin/django_q/").status_code == 404


def test_superuser_also_sees_the_framework_tables(tenant):
    root = get_user_model().objects.create_superuser("root", password=PASSWORD)
    found = groups(session(root).get("/admin/"))
    system = found["System (superusers)"]
    assert any(name.startswith("Scheduled tasks") for name in system)
    assert any(name.startswith("Users") for name in system)


def test_front_page_and_view_site_lead_to_the_dashboard(tenant):
    response = Client().get("/")
    assert response.status_code == 302 and response["Location"] == "/admin/dashboard/"
    index = session(tenant.auditor.user).get("/admin/").content.decode()
    assert 'href="/admin/dashboard/">View site' in index


def test_empty_dashboard_checklist_ticks_off_what_is_done(tenant, hierarchy):
    response = session(tenant.admin.user).get("/admin/dashboard/")
    steps = {step.title: step.done for step in response.context["getting_started"]}
    assert steps == {
        "Connect a DNS provider": False,
        "Add a certificate authority": True,
        "Create a subscriber": False,
        "Issue the first certificate": False,
    }
    assert 'id="cm-getting-started"' in response.content.decode()


def test_no_checklist_once_a_certificate_exists(tenant, issued):
    response = session(tenant.admin.user).get("/admin/dashboard/")
    assert response.context["getting_started"] == []
    assert 'id="cm-getting-started"' not in response.content.decode()


def test_hierarchy_and_ca_page_count_certificates(tenant, other_tenant, issued):
    make_cert(tenant.organization, ca=issued.ca, days=5)
    make_cert(tenant.organization, ca=issued.ca, days=200, status="revoked")
    make_cert(other_tenant.organization, days=5)  # another organization's: never counted
    client = session(tenant.auditor.user)
    response = client.get("/admin/pki/certificateauthority/hierarchy/")
    assert response.status_code == 200
    (root,) = response.context["tree"]
    assert root["ca"].parent_id is None and root["counts"].total == 0
    (intermediate,) = root["children"]
    assert intermediate["ca"].pk == issued.ca_id
    counts = intermediate["counts"]
    assert (counts.total, counts.active, counts.expiring, counts.revoked) == (3, 2, 2, 1)

    page = client.get(f"/admin/pki/certificateauthority/{issued.ca_id}/change/")
    assert page.status_code == 200
    assert page.context["ca_counts"] == counts
    assert 'id="cm-ca-counts"' in page.content.decode()
    assert f"?ca={issued.ca_id}&amp;expiring_within=30" in page.content.decode()
