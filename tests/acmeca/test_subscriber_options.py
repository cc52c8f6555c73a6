"""What a subscriber chooses for itself at an ACME CA (through the issuer seam's subscriber options): its own
challenge type and ACME profile, checked by the ACME issuer, used by the order; other CAs take none."""

from __future__ import annotations

import pytest
from django.test import Client

from acmeca.models import AcmeOrder
from pki import services as pki_services
from pki.models import Subscriber
from tests import acme_testbed
from tests.acmeca.conftest import unique_name
from tests.acmeca.test_flow import assert_issued, issue_and_run
from tests.conftest import PASSWORD, SYSTEM

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_subscriber_proves_its_names_with_its_own_challenge_type(
    tenant, pebble, pebble_ca, powerdns, http01_responder
):
    """The CA does dns-01; this subscriber asks for http-01 (served by certmgr itself) and gets it."""
    name = unique_name(powerdns.zone, "own")
    acme_testbed.set_a_record(powerdns, name)
    response = tenant.operator.client.post(
        "/api/v1/subscribers/",
        {
            "name": "own-challenge",
            "ca": pebble_ca.pk,
            "common_name": name,
            "sans": [name],
            "issuer_options": {"challenge_type": "http-01", "profile": ""},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["issuer_options"] == {"challenge_type": "http-01"}  # empty values dropped
    subscriber = Subscriber.objects.get(pk=response.json()["id"])
    order = issue_and_run(subscriber, tenant.operator.user)
    assert order.challenge_type == "http-01"
    assert_issued(order, pebble, [name])
    assert {c.type for c in order.challenges.all()} == {"http-01"}
    assert AcmeOrder.objects.get(pk=order.pk).ca.acme.challenge_type == "dns-01"  # the CA's is unchanged


def test_issuer_options_are_checked_by_the_cas_issuer(tenant, pebble_ca, powerdns):
    client = tenant.operator.client
    body = {"name": "opt", "ca": pebble_ca.pk, "common_name": "opt.acme.test", "sans": ["opt.acme.test"]}
    for options, message in (
        ({"color": "blue"}, "not color"),
        ({"challenge_type": "tls-alpn-01"}, "Challenge type: choose one of"),
        ({"profile": "x" * 65}, "at most 64"),
    ):
        refused = client.post("/api/v1/subscribers/", {**body, "issuer_options": options}, format="json")
        assert refused.status_code == 400, refused.content
        assert message in " ".join(refused.json()["error"]["fields"]["issuer_options"])
    root = pki_services.create_internal_ca(
        tenant.organization, name="Root", kind="internal-root", subject={"common_name": "R"}, actor=SYSTEM
    )
    refused = client.post(
        "/api/v1/subscribers/",
        {**body, "ca": root.pk, "issuer_options": {"profile": "tlsserver"}},
        format="json",
    )
    assert refused.status_code == 400 and "Root takes no options" in refused.content.decode()
    assert not Subscriber.objects.filter(name="opt").exists()


def test_the_admin_form_offers_the_acme_options_and_saves_them(tenant, pebble_ca):
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    page = client.get("/admin/pki/subscriber/add/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="issuer_option_profile"' in html and 'name="issuer_option_challenge_type"' in html
    assert "Options of ACME CA subscribers" in html
    response = client.post(
        "/admin/pki/subscriber/add/",
        {
            "organization": tenant.organization.pk,
            "name": "admin-opts",
            "issuer_type": "ca",
            "ca": pebble_ca.pk,
            "common_name": "adm.acme.test",
            "sans": "adm.acme.test",
            "key_algorithm": "ec-p256",
            "validity_days": 90,
            "auto_renew": "on",
            "issuer_option_profile": "shortlived",
            "issuer_option_challenge_type": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    saved = Subscriber.objects.get(name="admin-opts")
    assert saved.issuer_options == {"profile": "shortlived"}
    again = client.get(f"/admin/pki/subscriber/{saved.pk}/change/").content.decode()
    assert 'value="shortlived"' in again
