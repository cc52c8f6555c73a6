"""Challenge record cleanup that ends: a record never written needs no removal; a removal the provider
refuses stops after a bounded number of attempts, shows on the order, alerts once, and an operator clears
it. Against the real PowerDNS (and Pebble)."""

from __future__ import annotations

import pytest

from acmeca import flow, orders, tasks
from acmeca.models import AcmeChallenge, AcmeOrder
from certmgr.models import AuditEvent, JobRun
from dnsproviders import services as dns_services
from pki import alerts
from pki import services as pki_services
from pki.models import AlertDelivery
from tests.acmeca.conftest import acme_subscriber, unique_name
from tests.outcomes import ordered

pytestmark = pytest.mark.django_db(transaction=True)
ORDERS = "/api/v1/acme-orders/"


def _janitor_run() -> JobRun:
    tasks.janitor()
    return JobRun.objects.filter(name="janitor").latest("started_at")


def test_a_record_no_zone_holds_is_never_written_and_needs_no_removal(tenant, pebble, bind, pebble_ca):
    """The name lives in DNS (BIND serves it) but no zone of the PowerDNS connection holds it: the write is
    refused, so nothing is left to remove and the janitor has nothing to report."""
    name = unique_name(bind.zone, "zoneless")
    sub = acme_subscriber(tenant, pebble_ca, [name])
    order = ordered(pki_services.issue(sub, actor=tenant.operator.user))
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.FAILED and order.error_type == "dnsProvider", order.last_error
    assert "No zone" in order.last_error
    (ch,) = order.challenges.all()
    assert not ch.record_present and ch.error.startswith("could not write the record")
    assert not order.cleanup_pending
    run = _janitor_run()
    assert run.status == JobRun.Status.SUCCESS, run.errors
    assert "cleaned" not in run.counts


def _record_left_behind(tenant, powerdns, pebble_ca, pdns_connection) -> tuple[AcmeOrder, AcmeChallenge]:
    """An issued order whose TXT record is back at PowerDNS and marked for removal (as after a removal that
    failed), and a DNS connection whose API key PowerDNS now refuses."""
    name = unique_name(powerdns.zone, "left")
    order = ordered(
        pki_services.issue(acme_subscriber(tenant, pebble_ca, [name]), actor=tenant.operator.user)
    )
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    ch = order.challenges.get()
    written = flow._provider(pdns_connection).present(ch.record_name + ".", ch.record_value)
    ch.provider_ref = {**written.as_dict(), "connection": pdns_connection.pk}
    ch.record_present = True
    ch.save()
    AcmeOrder.objects.filter(pk=order.pk).update(cleanup_pending=True)
    dns_services.update_connection(
        pdns_connection, actor=tenant.admin.user, credentials=powerdns.credentials(api_key="revoked-key")
    )
    return order, ch


def test_a_refused_removal_stops_after_the_limit_alerts_once_and_is_cleared(
    tenant, pebble, powerdns, pebble_ca, pdns_connection, settings
):
    settings.CERTMGR_ACME_CLEANUP_MAX_ATTEMPTS = 3
    mail = alerts.create_channel(
        tenant.organization, name="mail", kind="email", recipients=["pki@acme.test"], actor=tenant.admin.user
    ).channel
    alerts.create_rule(
        tenant.organization, name="left", event="cleanup_failed", channels=[mail], actor=tenant.admin.user
    )
    order, ch = _record_left_behind(tenant, powerdns, pebble_ca, pdns_connection)

    for _ in range(2):  # attempts left: retried, the run is no failure
        run = _janitor_run()
        assert run.status == JobRun.Status.SUCCESS and run.counts.get("cleanup_retrying") == 1, run.errors
    run = _janitor_run()  # the third refusal: cleanup stops, reported once
    assert run.status == JobRun.Status.PARTIAL and f"order {order.pk}" in run.errors
    order.refresh_from_db()
    assert order.cleanup_pending and order.cleanup_stopped_at is not None
    assert "refused the API key" in order.cleanup_error and ch.record_name in order.cleanup_error
    ch.refresh_from_db()
    assert ch.cleanup_attempts == 3 and ch.record_present
    run = _janitor_run()  # stopped: not tried again, not reported again, no second alert
    assert run.status == JobRun.Status.SUCCESS and not run.counts, run.counts
    (alert,) = AlertDelivery.objects.filter(event="cleanup_failed")
    assert alert.subscriber_id == order.subscriber_id and "could not be removed" in alert.payload["message"]
    assert AuditEvent.objects.filter(action="acme.order.cleanup_stopped", target_id=str(order.pk)).exists()
    assert powerdns.txt_records(ch.record_name) == [ch.record_value]  # really still there

    shown = tenant.operator.client.get(f"{ORDERS}{order.pk}/").json()
    assert shown["cleanup_pending"] and shown["cleanup_stopped_at"] and "API key" in shown["cleanup_error"]
    assert tenant.auditor.client.post(f"{ORDERS}{order.pk}/clear-cleanup/").status_code == 403
    answer = tenant.operator.client.post(f"{ORDERS}{order.pk}/clear-cleanup/")
    assert answer.status_code == 200, answer.content
    assert not answer.json()["cleanup_pending"] and answer.json()["cleanup_stopped_at"] is None
    assert not order.challenges.filter(record_present=True).exists()
    event = AuditEvent.objects.get(action="acme.order.cleanup_clear", target_id=str(order.pk))
    assert event.details["records"] == [ch.record_name]
    assert tenant.operator.client.post(f"{ORDERS}{order.pk}/clear-cleanup/").status_code == 409
    orders.delete_order(AcmeOrder.objects.get(pk=order.pk), actor=tenant.operator.user)  # now allowed
