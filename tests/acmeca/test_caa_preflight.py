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
