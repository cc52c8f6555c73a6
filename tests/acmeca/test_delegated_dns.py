"""Delegated DNS-01 end to end: Pebble validates through dnsdist, which sends the delegated
``_acme-challenge`` names to certmgr's own DNS server (``manage.py dns_server``) while PowerDNS, the parent
zone, holds the NS record. No DNS provider credentials anywhere."""

from __future__ import annotations

import re

import pytest

from acmeca import flow
from acmeca.models import AcmeOrder
from dnsproviders import delegation
from dnsproviders import services as dns_services
from dnsproviders.models import DelegatedChallenge
from pki import services as pki_services
from tests import dnsservers
from tests.acmeca.conftest import acme_subscriber, make_acme_ca, unique_name
from tests.acmeca.test_flow import assert_issued
from tests.dnsservers import CERTMGR_DNS_NAME
from tests.outcomes import ordered

pytestmark = [pytest.mark.servers, pytest.mark.django_db(transaction=True)]
certmgr_dns = dnsservers.certmgr_dns


@pytest.fixture
def delegated_ca(tenant, pebble, acme_env, certmgr_dns, settings):
    settings.CERTMGR_DNS_SERVER_NAME = CERTMGR_DNS_NAME
    acme_env.add_backend("certmgr", certmgr_dns.address, "certmgr")
    conn = dns_services.create_connection(
        tenant.organization, name="delegated", kind="delegated", credentials={}, actor=tenant.admin.user
    )
    return make_acme_ca(tenant, pebble, name="Pebble delegated", connection=conn)


def _status(out: str) -> str:
    match = re.search(r"status: (\w+)", out)
    assert match, out
    return match.group(1)


def test_wildcard_and_apex_issued_through_certmgrs_own_dns(
    tenant, pebble, powerdns, delegated_ca, certmgr_dns, acme_env, no_worker
):
    apex = unique_name(powerdns.zone, "deleg")
    record = f"_acme-challenge.{apex}."
    powerdns.set_rrset(record, "NS", [CERTMGR_DNS_NAME])  # the operator's one record, in the parent zone
    acme_env.route(record, "certmgr", except_ns=True)  # what a resolver following the referral does
    names = [apex, f"*.{apex}"]
    sub = acme_subscriber(tenant, delegated_ca, names)
    assert delegation.required_records(delegated_ca.acme.dns_connection) == [
        f"{record} NS {CERTMGR_DNS_NAME}"
    ]
    # a zone at certmgr's server already: a subscriber names it
    assert _status(certmgr_dns.wait_for_status(record, "SOA", "NOERROR")) == "NOERROR"

    seen: list[str] = []
    values: list[str] = []

    def progress(message: str) -> None:
        if message.startswith("propagation"):  # both values are stored: dig shows them to the CA
            values.extend(DelegatedChallenge.objects.filter(name=record).values_list("value", flat=True))
            assert len(values) == 2
            for value in values:
                seen.append(certmgr_dns.wait_for_txt(record, True, value))

    order = ordered(pki_services.issue(sub, actor=tenant.operator.user))
    order = flow.run_order(order.pk, progress=progress)
    assert_issued(order, pebble, names)
    assert len(seen) == 2 and all(_status(out) == "NOERROR" for out in seen), seen
    assert all(re.search(r"flags: qr aa rd;", out) for out in seen)
    assert not DelegatedChallenge.objects.exists()  # cleaned up
    for value in values:
        after = certmgr_dns.wait_for_txt(record, False, value)
    assert _status(after) == "NOERROR" and "ANSWER: 0" in after and "AUTHORITY: 1" in after, after
    assert _status(certmgr_dns.dig(f"x.{record}", "TXT")) == "NXDOMAIN"
    assert _status(certmgr_dns.dig(apex, "A")) == "REFUSED"  # not certmgr's to answer
    assert _status(certmgr_dns.dig("+tcp", record, "TXT")) == "NOERROR"


@pytest.mark.parametrize("where", ["missing", "elsewhere"])
def test_a_missing_delegation_fails_before_any_order_at_the_ca(
    tenant, pebble, powerdns, delegated_ca, acme_env, no_worker, where
):
    apex = unique_name(powerdns.zone, f"deleg-{where}")
    record = f"_acme-challenge.{apex}."
    if where == "elsewhere":
        powerdns.set_rrset(record, "NS", ["ns1.other-dns.test."])
    sub = acme_subscriber(tenant, delegated_ca, [apex, f"*.{apex}"])
    order = ordered(pki_services.issue(sub, actor=tenant.operator.user))
    order = flow.run_order(order.pk)
    assert order.step == AcmeOrder.Step.FAILED and order.error_type == "dnsDelegation", order.last_error
    assert f"create the record `{record} NS {CERTMGR_DNS_NAME}`" in order.last_error
    assert ("ns1.other-dns.test." in order.last_error) == (where == "elsewhere")
    assert order.order_url == "" and not order.authorizations.exists()  # the CA saw nothing
    assert not DelegatedChallenge.objects.exists()


def test_the_connection_page_shows_the_ns_record_per_subscriber_name(tenant, powerdns, delegated_ca):
    from django.test import Client

    from tests.conftest import PASSWORD

    apex = unique_name(powerdns.zone, "deleg-admin")
    acme_subscriber(tenant, delegated_ca, [apex, f"*.{apex}", f"www.{apex}"])
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    conn = delegated_ca.acme.dns_connection
    page = client.get(f"/admin/dnsproviders/appconnection/{conn.pk}/change/").content.decode()
    assert "NS records to create" in page
    assert page.count(f"<code>_acme-challenge.{apex}. NS {CERTMGR_DNS_NAME}</code>") == 1  # apex + wildcard
    assert f"<code>_acme-challenge.www.{apex}. NS {CERTMGR_DNS_NAME}</code>" in page
    add = client.get("/admin/dnsproviders/appconnection/add/").content.decode()
    assert "delegated with an NS record to certmgr" in add


def test_the_janitor_removes_expired_delegated_values(tenant):
    from datetime import timedelta

    from django.utils import timezone

    from acmeca import tasks

    now = timezone.now()
    for value, expires in (("old", now - timedelta(minutes=1)), ("live", now + timedelta(hours=1))):
        DelegatedChallenge.objects.create(
            organization=tenant.organization, name="_acme-challenge.j.example.", value=value, expires=expires
        )
    assert tasks.janitor()["delegated_expired"] == 1
    assert list(DelegatedChallenge.objects.values_list("value", flat=True)) == ["live"]


def test_an_order_by_names_alone_is_served_too(
    tenant, pebble, powerdns, delegated_ca, certmgr_dns, acme_env, no_worker
):
    """No subscriber names it: the unfinished order makes the name a zone at certmgr's server."""
    from acmeca import orders
    from acmeca.services import update_acme_ca

    name = unique_name(powerdns.zone, "deleg-direct")
    record = f"_acme-challenge.{name}."
    powerdns.set_rrset(record, "NS", [CERTMGR_DNS_NAME])
    acme_env.route(record, "certmgr", except_ns=True)
    assert _status(certmgr_dns.dig(record, "SOA")) == "REFUSED"
    update_acme_ca(delegated_ca, actor=tenant.admin.user, direct_issuance=True)
    order = orders.start_direct_order(delegated_ca, [name], actor=tenant.operator.user)
    assert _status(certmgr_dns.wait_for_status(record, "SOA", "NOERROR")) == "NOERROR"
    order = flow.run_order(order.pk)
    cert = assert_issued(order, pebble, [name])
    assert cert.subscriber is None
    assert _status(certmgr_dns.wait_for_status(record, "SOA", "REFUSED")) == "REFUSED"  # order done
