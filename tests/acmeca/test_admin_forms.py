"""Admin forms around ACME CAs (issue 11): saving an app connection runs its test and says the result (the
save stands), a connection whose last test failed is marked in the ACME CA form (item 17); the subscriber
form of an ACME CA explains what the CA decides and what it takes from the form (item 15)."""

from __future__ import annotations

import pytest

from dnsproviders.models import AppConnection
from tests.acmeca.conftest import acme_subscriber
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


def test_subscriber_form_of_an_acme_ca_explains_what_the_ca_decides(tenant, pebble_ca):
    from pki import services as pki_services

    root = pki_services.create_internal_ca(
        tenant.organization,
        name="Root",
        kind="internal-root",
        subject={"common_name": "Root"},
        key_algorithm="ec-p256",
        validity_days=365,
        actor=tenant.admin.user,
    )
    subscriber = acme_subscriber(tenant, pebble_ca, ["www.acme.test"])
    client = login(tenant.operator)
    page = client.get(f"/admin/pki/subscriber/{subscriber.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    for name in ("validity_days", "key_usages", "subject_organization", "subject_country"):
        assert form.fields[name].help_text.startswith(f"Decided by the ACME CA {pebble_ca.name}"), name
    assert "DNS-01 challenge" in form.fields["ca"].help_text
    assert "the key type below is the order's key" in form.fields["ca"].help_text
    assert b"pki/subscriber_form.js" in page.content
    assert f'data-acme-cas="[{pebble_ca.pk}]"'.encode() in page.content

    # An internal CA decides nothing of that: the usual help.
    add = client.get("/admin/pki/subscriber/add/", {"ca": root.pk})
    assert not add.context["adminform"].form.fields["validity_days"].help_text.startswith("Decided by")
