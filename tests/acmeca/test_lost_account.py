"""A CA that forgets the account (accountDoesNotExist), tested by restarting Pebble, which keeps nothing: the
account is marked invalid and audited; with the CA's setting on certmgr registers again and retries the
failed order, with it off an operator registers again (API or admin) with the same or a new key."""

from __future__ import annotations

import pytest

from acmeca import services
from acmeca.models import AcmeAccount, AcmeOrder
from certmgr.models import AuditEvent
from pki import services as pki_services
from pki.models import Certificate
from tests.acmeca.conftest import acme_subscriber, make_acme_ca, unique_name
from tests.outcomes import ordered

pytestmark = pytest.mark.django_db(transaction=True)
ACCOUNTS = "/api/v1/acme-accounts/"
ORDERS = "/api/v1/acme-orders/"


def _issued_then_forgotten(tenant, own_pebble, powerdns, pdns_connection, **ca_settings):
    ca = make_acme_ca(tenant, own_pebble, name="Pebble (reset)", connection=pdns_connection, **ca_settings)
    sub = acme_subscriber(tenant, ca, [unique_name(powerdns.zone, "lost")])
    first = ordered(pki_services.issue(sub, actor=tenant.operator.user))
    first.refresh_from_db()
    assert first.step == AcmeOrder.Step.DONE, first.last_error
    own_pebble.restart()  # every account is gone at the CA
    return ca, sub, first


def test_a_forgotten_account_is_registered_again_and_the_order_retried(
    tenant, own_pebble, powerdns, pdns_connection
):
    ca, sub, first = _issued_then_forgotten(tenant, own_pebble, powerdns, pdns_connection)
    old = first.account

    failed = ordered(pki_services.issue(sub, actor=tenant.operator.user, renewal_of=first.certificate))
    failed.refresh_from_db()
    assert failed.step == AcmeOrder.Step.FAILED and failed.error_type == "accountDoesNotExist"
    assert "no longer knows the ACME account" in failed.last_error
    old.refresh_from_db()
    assert old.status == AcmeAccount.Status.INVALID
    assert AuditEvent.objects.filter(action="acme.account.lost", target_id=str(old.pk)).exists()

    ca.acme.refresh_from_db()
    fresh = ca.acme.account
    assert fresh.pk != old.pk and fresh.status == AcmeAccount.Status.VALID
    assert fresh.private_key == old.private_key  # the same key, a new account at the CA
    register = AuditEvent.objects.get(action="acme.account.register", target_id=str(fresh.pk))
    assert register.details["replaces"] == old.pk and register.details["same_key"] is True

    retried = AcmeOrder.objects.exclude(pk__in=[first.pk, failed.pk]).get(subscriber=sub)
    assert retried.account_id == fresh.pk and retried.retry_of_id == failed.pk  # linked to what it retries
    assert retried.step == AcmeOrder.Step.DONE, retried.last_error
    assert retried.certificate.renewed_from_id == first.certificate_id  # the renewal it retried
    assert Certificate.objects.filter(subscriber=sub).count() == 2
    shown = tenant.operator.client.get(f"{ACCOUNTS}{old.pk}/").json()
    assert shown["status"] == "invalid"
    # The invalid account may go now; the CA keeps using the new one.
    assert tenant.operator.client.delete(f"{ACCOUNTS}{old.pk}/").status_code == 204
    assert not AcmeAccount.objects.filter(pk=old.pk).exists()


def test_without_automatic_reregistration_an_operator_registers_a_new_key(
    tenant, own_pebble, powerdns, pdns_connection
):
    ca, sub, first = _issued_then_forgotten(
        tenant, own_pebble, powerdns, pdns_connection, reregister_automatically=False
    )
    old = first.account
    failed = ordered(pki_services.issue(sub, actor=tenant.operator.user, renewal_of=first.certificate))
    failed.refresh_from_db()
    assert failed.step == AcmeOrder.Step.FAILED and "register it again" in failed.last_error
    old.refresh_from_db()
    assert old.status == AcmeAccount.Status.INVALID
    assert AcmeOrder.objects.filter(subscriber=sub).count() == 2  # nothing retried by itself
    ca.acme.refresh_from_db()
    assert ca.acme.account_id == old.pk

    assert tenant.auditor.client.post(f"{ACCOUNTS}{old.pk}/reregister/", {}).status_code == 403
    answer = tenant.operator.client.post(f"{ACCOUNTS}{old.pk}/reregister/", {"new_key": True}, format="json")
    assert answer.status_code == 201, answer.content
    fresh = AcmeAccount.objects.get(pk=answer.json()["id"])
    assert fresh.status == AcmeAccount.Status.VALID and fresh.private_key != old.private_key
    ca.acme.refresh_from_db()
    assert ca.acme.account_id == fresh.pk
    assert tenant.operator.client.post(f"{ACCOUNTS}{fresh.pk}/reregister/", {}).status_code == 409

    retry = tenant.operator.client.post(f"{ORDERS}{failed.pk}/retry/")
    assert retry.status_code == 202, retry.content
    retried = AcmeOrder.objects.get(pk=retry.json()["order"])
    assert retried.account_id == fresh.pk and retried.step == AcmeOrder.Step.DONE, retried.last_error
    # The lost account can be deactivated here (the CA does not know it: nothing to tell it).
    services.deactivate_account(old, actor=tenant.operator.user)
    old.refresh_from_db()
    assert old.status == AcmeAccount.Status.DEACTIVATED
