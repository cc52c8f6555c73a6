"""Orders end to end through certmgr's services and worker, against Pebble, PowerDNS and BIND."""

from __future__ import annotations

import pytest

from acmeca.models import AcmeChallenge, AcmeOrder
from certmgr.models import AuditEvent
from pki import services as pki_services
from pki.models import Certificate
from tests import acme_testbed
from tests.acmeca.conftest import acme_subscriber, make_acme_ca, unique_name

pytestmark = pytest.mark.django_db(transaction=True)


def issue_and_run(subscriber, actor) -> AcmeOrder:
    """The worker runs on commit (django-q in sync mode in the tests)."""
    order = pki_services.issue(subscriber, actor=actor)
    assert isinstance(order, AcmeOrder)
    order.refresh_from_db()
    return order


def assert_issued(order: AcmeOrder, pebble, names: list[str]) -> Certificate:
    assert order.step == AcmeOrder.Step.DONE, (order.step, order.last_error)
    assert order.status == AcmeOrder.Status.VALID
    cert = order.certificate
    assert cert is not None and cert.source == Certificate.Source.ACME
    assert sorted(cert.sans) == sorted(names)
    assert cert.private_key  # made here, stored encrypted
    assert cert.chain_pem.count("BEGIN CERTIFICATE") >= 1
    result = acme_testbed.verify_chain(cert.certificate_pem, pebble.roots_pem(), pebble.intermediates_pem())
    assert result.returncode == 0, result.stdout + result.stderr
    # every record written is gone again
    assert not AcmeChallenge.objects.filter(order=order, record_present=True).exists()
    assert not order.cleanup_pending
    return cert


def test_single_name_dns01_through_powerdns(tenant, pebble, pebble_ca, powerdns):
    name = unique_name(powerdns.zone)
    sub = acme_subscriber(tenant, pebble_ca, [name])
    order = issue_and_run(sub, tenant.operator.user)
    cert = assert_issued(order, pebble, [name])
    sub.refresh_from_db()
    assert sub.last_operation_status == "success"
    assert cert.subscriber_id == sub.pk and cert.ca_id == pebble_ca.pk
    for ch in order.challenges.all():
        assert ch.status == AcmeChallenge.Status.VALID
        assert powerdns.txt_records(ch.record_name) == []
    actions = set(AuditEvent.objects.filter(target_id=str(order.pk)).values_list("action", flat=True))
    assert {"acme.order.create", "acme.order.submitted", "acme.order.valid"} <= actions


def test_wildcard_and_apex_dns01_through_bind(tenant, pebble, bind, bind_connection):
    ca = make_acme_ca(tenant, pebble, name="Pebble via BIND", connection=bind_connection)
    apex = unique_name(bind.zone, "apex")
    names = [apex, f"*.{apex}", f"www.{apex}"]
    sub = acme_subscriber(tenant, ca, names)
    order = issue_and_run(sub, tenant.operator.user)
    assert_issued(order, pebble, names)
    assert bind.txt_records(f"_acme-challenge.{apex}") == []


def test_http01_through_certmgrs_own_responder(tenant, pebble, powerdns, pdns_connection, http01_responder):
    ca = make_acme_ca(tenant, pebble, name="Pebble http-01", connection=None, challenge_type="http-01")
    name = unique_name(powerdns.zone, "web")
    acme_testbed.set_a_record(powerdns, name)
    sub = acme_subscriber(tenant, ca, [name])
    order = issue_and_run(sub, tenant.operator.user)
    assert_issued(order, pebble, [name])
    (ch,) = order.challenges.all()
    assert ch.type == "http-01" and ch.record_name == f"/.well-known/acme-challenge/{ch.token}"
    # the token is no longer served once the order is over
    import requests

    assert requests.get(http01_responder + ch.record_name, timeout=5).status_code == 404
