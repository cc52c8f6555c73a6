"""Issue 11, item 17: saving an app connection runs its test and says the result (the save stands);
choosing a connection whose last test failed, in the ACME CA form, shows a warning."""

from __future__ import annotations

import pytest

from dnsproviders.models import AppConnection
from tests.pki.test_admin import login, texts

pytestmark = pytest.mark.django_db

ADD = "/admin/dnsproviders/appconnection/add/"


def test_saving_a_connection_tests_it_and_a_failed_test_warns_in_the_acme_ca_form(tenant, powerdns, acme_env):
    client = login(tenant.operator)
    form = {
        "organization": tenant.organization.pk,
        "name": "pdns-lab",
        "kind": "powerdns",
        "description": "",
        "cred_powerdns_api_url": powerdns.api_url,
        "cred_powerdns_api_key": powerdns.api_key,
        "cred_powerdns_server_id": powerdns.server_id,
    }
    added = client.post(ADD, form)
    assert added.status_code == 302, added.content.decode()[:2000]
    said = texts(added)
    assert any(m.startswith("pdns-lab: connection test passed") for m in said), said
    conn = AppConnection.objects.get(name="pdns-lab")
    assert conn.last_test_ok is True

    changed = client.post(
        f"/admin/dnsproviders/appconnection/{conn.pk}/change/",
        {**form, "cred_powerdns_api_key": "not-the-key"},
    )
    assert changed.status_code == 302  # saved all the same
    said = texts(changed)
    assert any(m.startswith("pdns-lab: saved, but the connection test failed") for m in said), said
    conn.refresh_from_db()
    assert conn.last_test_ok is False and conn.credentials["api_key"] == "not-the-key"

    page = client.post(
        "/admin/pki/certificateauthority/acme/add/",
        {"organization": tenant.organization.pk, "name": "", "vendor": "custom", "dns_connection": conn.pk},
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert "pdns-lab (PowerDNS) — last test failed" in html
    assert "The DNS connection pdns-lab failed its last test" in html
