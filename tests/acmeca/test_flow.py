"""Orders end to end through certmgr's services and worker, against Pebble, PowerDNS and BIND."""

from __future__ import annotations

import pytest

from acmeca.models import AcmeChallenge, AcmeOrder
from certmgr.models import AuditEvent
from pki import services as pki_services
from pki.models import Certificate
from tests import acme_testbed
from tests.acmeca.conftest import acme_subscriber, make_acme_ca, unique_name
from tests.outcomes import ordered

pytestmark = pytest.mark.django_db(transaction=True)


def issue_and_run(subscriber, actor) -> AcmeOrder:
    """The worker runs on commit (django-q in sync mode in the tests)."""
    order = ordered(pki_services.issue(subscriber, actor=actor))
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
    # every request to the CA was counted (directory, nonce, order, authz, challenge, finalize, ...)
    assert order.requests_ok >= 7 and order.requests_server_error == 0
    assert order.requests_client_error >= order.bad_nonces  # a rejected nonce is a 400 answer
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


def test_external_account_binding(tenant, pebble_eab, powerdns, pdns_connection):
    from acmeca.models import AcmeAccount
    from certmgr.errors import ServiceError

    with pytest.raises(ServiceError) as refused:
        make_acme_ca(tenant, pebble_eab, name="EAB missing", connection=pdns_connection)
    assert refused.value.field == "eab_kid" and "external account binding" in refused.value.message
    with pytest.raises(ServiceError) as wrong:
        make_acme_ca(
            tenant,
            pebble_eab,
            name="EAB wrong",
            connection=pdns_connection,
            eab_kid=pebble_eab.eab_kid,
            eab_hmac_key="d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc",
        )
    assert wrong.value.field == "eab_kid"
    assert not AcmeAccount.objects.exists()
    ca = make_acme_ca(
        tenant,
        pebble_eab,
        name="EAB",
        connection=pdns_connection,
        eab_kid=pebble_eab.eab_kid,
        eab_hmac_key=pebble_eab.eab_hmac_key,
    )
    assert ca.acme.account.eab_kid == pebble_eab.eab_kid
    name = unique_name(powerdns.zone, "eab")
    order = issue_and_run(acme_subscriber(tenant, ca, [name]), tenant.operator.user)
    assert_issued(order, pebble_eab, [name])


def test_manual_dns_waits_for_the_operator(tenant, pebble, powerdns, acme_env):
    from acmeca import orders
    from dnsproviders import services as dns_services

    manual = dns_services.create_connection(
        tenant.organization, name="by hand", kind="manual", credentials={}, actor=tenant.admin.user
    )
    ca = make_acme_ca(tenant, pebble, name="Pebble manual", connection=manual)
    name = unique_name(powerdns.zone, "manual")
    order = issue_and_run(acme_subscriber(tenant, ca, [name]), tenant.operator.user)
    assert order.step == AcmeOrder.Step.WAITING_MANUAL
    (ch,) = order.challenges.all()
    assert ch.status == AcmeChallenge.Status.READY
    assert ch.record_value in ch.provider_ref["extra"]["instructions"]
    powerdns.set_txt(ch.record_name, [ch.record_value])  # the operator creates the record
    try:
        orders.confirm_manual_records(order, actor=tenant.operator.user)
        order.refresh_from_db()
        assert_issued(order, pebble, [name])
    finally:
        powerdns.set_txt(ch.record_name, [])


def test_cancel_removes_records_and_stops_the_order(tenant, pebble, powerdns, acme_env):
    from acmeca import orders
    from dnsproviders import services as dns_services

    manual = dns_services.create_connection(
        tenant.organization, name="by hand", kind="manual", credentials={}, actor=tenant.admin.user
    )
    ca = make_acme_ca(tenant, pebble, name="Pebble manual", connection=manual)
    sub = acme_subscriber(tenant, ca, [unique_name(powerdns.zone, "cancel")])
    order = issue_and_run(sub, tenant.operator.user)
    assert order.step == AcmeOrder.Step.WAITING_MANUAL
    # one order at a time per subscriber: a second trigger joins the running one
    assert ordered(pki_services.issue(sub, actor=tenant.operator.user)).pk == order.pk
    orders.cancel_order(order, actor=tenant.operator.user)
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.CANCELLED
    assert order.authorizations.get().status == "deactivated"  # told the CA too
    assert not order.challenges.filter(record_present=True).exists()
    # a cancelled order can be retried: that is a new order
    again = ordered(orders.retry_order(order, actor=tenant.operator.user))
    assert again.pk != order.pk and again.step == AcmeOrder.Step.WAITING_MANUAL


def test_direct_issuance_and_revocation_through_the_ca(tenant, pebble, powerdns, pebble_ca):
    from acmeca import orders
    from acmeca.services import update_acme_ca
    from certmgr.errors import Conflict

    name = unique_name(powerdns.zone, "direct")
    with pytest.raises(Conflict):
        orders.start_direct_order(pebble_ca, [name], actor=tenant.operator.user)
    update_acme_ca(pebble_ca, actor=tenant.admin.user, direct_issuance=True)
    order = orders.start_direct_order(pebble_ca, [name], actor=tenant.operator.user)
    order.refresh_from_db()
    cert = assert_issued(order, pebble, [name])
    assert cert.subscriber is None
    pki_services.revoke(cert, reason="key_compromise", actor=tenant.operator.user)
    cert.refresh_from_db()
    assert cert.status == Certificate.Status.REVOKED and cert.revocation_reason == "key_compromise"
    status = pebble.management(f"/cert-status-by-serial/{cert.serial}")
    assert "Revoked" in status or "revoked" in status, status


def test_preferred_chain_is_chosen_among_the_alternates(tenant, pebble, powerdns, pdns_connection):
    from cryptography import x509 as cx509
    from cryptography.x509.oid import NameOID

    def root_cn(index: int) -> str:
        root = cx509.load_pem_x509_certificate(pebble.management(f"/roots/{index}").encode())
        return root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    def top_issuer_cn(cert: Certificate) -> str:
        top = cx509.load_pem_x509_certificates(cert.chain_pem.encode())[-1]
        return top.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    default = make_acme_ca(tenant, pebble, name="default chain", connection=pdns_connection)
    name = unique_name(powerdns.zone, "chain")
    cert = assert_issued(
        issue_and_run(acme_subscriber(tenant, default, [name]), tenant.operator.user), pebble, [name]
    )
    assert top_issuer_cn(cert) == root_cn(0)
    preferred = make_acme_ca(
        tenant, pebble, name="alternate chain", connection=pdns_connection, preferred_chain=root_cn(1)
    )
    name = unique_name(powerdns.zone, "chain")
    order = issue_and_run(acme_subscriber(tenant, preferred, [name]), tenant.operator.user)
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    assert top_issuer_cn(order.certificate) == root_cn(1)


def test_policies_apply_to_acme_subscribers(tenant, pebble, powerdns, pebble_ca):
    """The policy is checked before any order exists, and again on renewal."""
    from pki.models import Policy
    from pki.services import PolicyRefused

    zone = powerdns.zone.rstrip(".")
    policy = pki_services.save_policy(
        tenant.organization, actor=tenant.admin.user, name="pdns only", san_patterns=[f"*.{zone}"]
    )
    name = unique_name(powerdns.zone, "policy")
    sub = acme_subscriber(tenant, pebble_ca, [name])
    pki_services.save_subscriber(None, actor=tenant.admin.user, instance=sub, policy=policy)
    cert = assert_issued(issue_and_run(sub, tenant.operator.user), pebble, [name])
    Policy.objects.filter(pk=policy.pk).update(san_patterns=["*.elsewhere.test"])  # tightened since
    with pytest.raises(PolicyRefused):
        ordered(pki_services.issue(sub, actor=tenant.operator.user, renewal_of=cert))
    assert AcmeOrder.objects.filter(subscriber=sub).count() == 1  # no second order was started
    sub.refresh_from_db()
    assert sub.last_operation_status == "failed" and sub.last_error_category == "policy_violation"
