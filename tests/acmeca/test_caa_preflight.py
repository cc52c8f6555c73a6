"""CAA preflight against real DNS: records in PowerDNS, looked up through dnsdist (Pebble's resolver too).
A forbidding record fails the order before anything reaches the CA; a name without CAA proceeds."""

from __future__ import annotations

import pytest

from acmeca.models import AcmeOrder
from tests.acmeca.conftest import acme_subscriber, make_acme_ca, unique_name
from tests.acmeca.test_flow import assert_issued, issue_and_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_forbidding_caa_fails_the_order_up_front_and_a_name_without_caa_proceeds(
    tenant, pebble, powerdns, pdns_connection
):
    ca = make_acme_ca(
        tenant, pebble, name="Pebble CAA", connection=pdns_connection, caa_identifiers="pebble.test"
    )
    forbidden = unique_name(powerdns.zone, "caa")
    powerdns.set_rrset(forbidden, "CAA", ['0 issue "letsencrypt.org"'])
    wild_parent = unique_name(powerdns.zone, "wild")
    powerdns.set_rrset(wild_parent, "CAA", ['0 issue "pebble.test"', '0 issuewild ";"'])
    try:
        order = issue_and_run(acme_subscriber(tenant, ca, [f"www.{forbidden}"]), tenant.operator.user)
        assert order.step == AcmeOrder.Step.FAILED
        assert f"CAA at {forbidden} forbids this CA for www.{forbidden}" in order.last_error
        assert '0 issue "letsencrypt.org"' in order.last_error
        assert order.order_url == "" and order.requests_ok <= 3  # directory and nonce at most: no newOrder

        wild = issue_and_run(
            acme_subscriber(tenant, ca, [wild_parent, f"*.{wild_parent}"]), tenant.operator.user
        )
        assert wild.step == AcmeOrder.Step.FAILED and f"for *.{wild_parent}" in wild.last_error
        assert f"for {wild_parent} " not in wild.last_error  # the apex is allowed by its issue property

        free = unique_name(powerdns.zone, "nocaa")
        assert_issued(
            issue_and_run(acme_subscriber(tenant, ca, [free]), tenant.operator.user), pebble, [free]
        )
    finally:
        powerdns.set_rrset(forbidden, "CAA", [])
        powerdns.set_rrset(wild_parent, "CAA", [])


def test_presets_know_their_caa_identifiers_and_a_bad_one_is_a_field_error(tenant, pebble, pdns_connection):
    from django.core.exceptions import ValidationError

    from acmeca import vendors

    assert vendors.preset("letsencrypt").caa_identifiers == ("letsencrypt.org",)
    assert vendors.preset("zerossl").caa_identifiers == ("sectigo.com",)
    with pytest.raises(ValidationError) as refused:
        make_acme_ca(
            tenant, pebble, name="Bad CAA", connection=pdns_connection, caa_identifiers="not a domain"
        )
    assert "caa_identifiers" in refused.value.message_dict


def test_admin_offers_the_caa_records_that_allow_only_this_ca_and_account(
    tenant, pebble, powerdns, pdns_connection
):
    """The subscriber's page shows, per name, the issue and issuewild records with this CA's identifier, the
    account URL and the subscriber's challenge type. Published in PowerDNS, they let this account's orders
    through the preflight and refuse another account's or another method's."""
    import html

    from django.test import Client

    from acmeca import flow
    from dnsproviders import caa
    from pki import issuers
    from pki import services as pki_services
    from tests.conftest import PASSWORD, SYSTEM

    ca = make_acme_ca(
        tenant, pebble, name="Pebble pinned", connection=pdns_connection, caa_identifiers="pebble.test"
    )
    account_url = ca.acme.account.account_url
    name = unique_name(powerdns.zone, "pin")
    subscriber = acme_subscriber(tenant, ca, [name, f"*.{name}", f"www.{name}"])
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    page = html.unescape(client.get(f"/admin/pki/subscriber/{subscriber.pk}/change/").content.decode())
    assert "Records to publish" in page
    parameters = f"pebble.test; accounturi={account_url}; validationmethods=dns-01"
    for owner in (name, f"www.{name}"):
        assert f"CAA records for {owner}" in page
        assert f'{owner}. CAA 0 issue "{parameters}"\n{owner}. CAA 0 issuewild "{parameters}"' in page
    assert page.count("CAA records for ") == 2  # the wildcard's records are its base name's

    # The subscriber's own challenge type is the one pinned.
    own = pki_services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="own-method",
        ca=ca,
        common_name=f"own.{name}",
        sans=[f"own.{name}"],
        validity_days=90,
        issuer_options={"challenge_type": "http-01"},
    )
    page = html.unescape(client.get(f"/admin/pki/subscriber/{own.pk}/change/").content.decode())
    assert f"accounturi={account_url}; validationmethods=http-01" in page

    hint = issuers.backend_for(ca).publication_hints(subscriber)[0]
    powerdns.set_rrset(name, "CAA", [r.split(" CAA ", 1)[1] for r in hint.records])
    try:
        lookup = caa.resolver_lookup(flow._resolver())
        names = [name, f"*.{name}", f"www.{name}"]
        ok = caa.preflight(
            names, lookup, ca_identifiers=["pebble.test"], account_uri=account_url, method="dns-01"
        )
        assert ok == []
        other = caa.preflight(
            names, lookup, ca_identifiers=["pebble.test"], account_uri=account_url + "x", method="dns-01"
        )
        assert [r.name for r in other] == names
        http = caa.preflight(
            [name], lookup, ca_identifiers=["pebble.test"], account_uri=account_url, method="http-01"
        )
        assert [r.owner for r in http] == [name]
    finally:
        powerdns.set_rrset(name, "CAA", [])


def test_no_caa_records_offered_for_an_internal_ca_subscriber(tenant):
    from django.test import Client

    from pki import services as pki_services
    from tests.conftest import PASSWORD, SYSTEM

    root = pki_services.create_internal_ca(
        tenant.organization, name="Root", kind="internal-root", subject={"common_name": "R"}, actor=SYSTEM
    )
    subscriber = pki_services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="internal",
        ca=root,
        common_name="internal.example.com",
        sans=["internal.example.com"],
        validity_days=90,
    )
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    page = client.get(f"/admin/pki/subscriber/{subscriber.pk}/change/")
    assert page.status_code == 200
    assert b"Records to publish" not in page.content and b"CAA 0 issue" not in page.content
