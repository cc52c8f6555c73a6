"""Faults against the real test bed: the CA says no, the DNS server dies mid-order, the worker is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from acmeca import flow, orders, tasks
from acmeca.models import AcmeChallenge, AcmeOrder
from certmgr.models import AuditEvent
from pki import services as pki_services
from pki.models import Certificate
from tests import acme_testbed
from tests.acmeca.conftest import acme_subscriber, make_acme_ca, unique_name
from tests.outcomes import ordered

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def test_unknown_domain_fails_the_order_with_the_providers_message(tenant, pebble, pebble_ca):
    """No zone of the DNS connection holds the name: the order fails, naming it; nothing was written."""
    name = unique_name("nowhere.test", "lost")
    sub = acme_subscriber(tenant, pebble_ca, [name])
    order = ordered(pki_services.issue(sub, actor=tenant.operator.user))
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.FAILED, order.last_error
    assert order.error_type in {"dnsProvider", "dnsPropagation"}, order.last_error
    assert "nowhere.test" in order.last_error
    assert not AcmeChallenge.objects.filter(order=order, record_present=True).exists()
    assert not order.cleanup_pending


def test_names_are_checked_before_any_order(tenant, pebble_ca):
    pebble_ca.acme.direct_issuance = True
    pebble_ca.acme.save()
    with pytest.raises(ValidationError) as exc:
        orders.start_direct_order(pebble_ca, ["bad_label.pdns.test"], actor=tenant.operator.user)
    assert "bad_label" in str(exc.value)
    assert not AcmeOrder.objects.exists()


def test_ca_rejecting_the_proof_fails_the_order_with_the_cas_message(
    tenant, pebble, powerdns, pebble_ca, monkeypatch
):
    """The CA's validation fails (the TXT at the name is not ours): the order ends invalid, with Pebble's
    own words, the subscriber shows the failure, and the record written is removed."""
    name = unique_name(powerdns.zone)
    sub = acme_subscriber(tenant, pebble_ca, [name])
    # certmgr writes its value, then something rewrites the record before the CA looks.
    real_wait = flow.propagation.wait_for_txt

    def overwrite_then_wait(record, value, **kwargs):
        powerdns.set_txt(record, ["not-the-key-authorization"])
        return real_wait(record, "not-the-key-authorization", **kwargs)

    monkeypatch.setattr(flow.propagation, "wait_for_txt", overwrite_then_wait)
    order = ordered(pki_services.issue(sub, actor=tenant.operator.user))
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.FAILED and order.status == AcmeOrder.Status.INVALID
    assert order.error_type == "unauthorized", order.last_error
    assert name in order.last_error
    (ch,) = order.challenges.all()
    assert ch.status == AcmeChallenge.Status.INVALID and ch.error
    sub.refresh_from_db()
    assert sub.last_operation_status == "failed" and str(order.pk) in sub.last_operation_message


def test_dns_server_stopped_mid_order(tenant, pebble, bind, bind_connection, settings, no_worker):
    """BIND dies after the record is written: the propagation check fails naming the server, cleanup is
    left pending; once BIND is back the janitor removes the record."""
    settings.CERTMGR_DNS_PROVIDER_TIMEOUT = 1.0
    ca = make_acme_ca(tenant, pebble, name="Pebble via BIND (fault)", connection=bind_connection)
    ca.acme.propagation_timeout = 5
    ca.acme.save()
    name = unique_name(bind.zone, "fault")
    sub = acme_subscriber(tenant, ca, [name])
    order = ordered(pki_services.issue(sub, actor=tenant.operator.user))

    def on_progress(message: str) -> None:
        if message.startswith("challenge_ready"):
            bind.stop()

    try:
        order = flow.run_order(order.pk, progress=on_progress)
        assert order.step == AcmeOrder.Step.FAILED, order.last_error
        assert order.error_type == "dnsPropagation"
        assert "_acme-challenge." + name in order.last_error
        assert acme_testbed.HOST in order.last_error  # names the server that lacked the value
        assert order.cleanup_pending
        assert order.challenges.get().record_present
    finally:
        bind.start()
    record = f"_acme-challenge.{name}"
    assert len(bind.txt_records(record)) == 1  # still there: written before BIND stopped
    assert tasks.janitor()["cleaned"] == 1
    order.refresh_from_db()
    assert not order.cleanup_pending
    assert bind.txt_records(record) == []
    assert not Certificate.objects.filter(subscriber=sub).exists()


def _kill_worker_after(step_message: str, order_id: int, monkeypatch) -> int:
    """Run the worker in another process and SIGKILL it when it reports ``step_message``."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(**connection.settings_dict),
        "CERTMGR_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    script = (
        "import django, os, sys; django.setup()\n"
        "from acmeca import flow\n"
        "def progress(message):\n"
        f"    if message.startswith({step_message!r}):\n"
        "        print('killing at', message, flush=True)\n"
        "        os.kill(os.getpid(), 9)\n"
        f"flow.run_order({order_id}, progress=progress)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    return proc.returncode


@pytest.mark.parametrize("kill_at", ["submitted", "challenge_ready", "finalize"])
def test_worker_killed_between_steps_resumes_without_a_second_order(
    tenant, pebble, powerdns, pebble_ca, settings, monkeypatch, no_worker, kill_at
):
    if connection.vendor != "postgresql":
        pytest.skip("the killed worker runs in another process: needs a server database")
    name = unique_name(powerdns.zone, "kill")
    sub = acme_subscriber(tenant, pebble_ca, [name, f"www.{name}"])
    order = ordered(pki_services.issue(sub, actor=tenant.operator.user))
    _kill_worker_after(kill_at, order.pk, monkeypatch)
    order.refresh_from_db()
    assert not order.finished and order.lease_owner  # the dead worker still holds the lease
    first_url = order.order_url
    assert first_url  # the CA's order was stored before the worker died
    # Nobody takes an order whose lease is still running ...
    assert flow.run_order(order.pk).lease_owner == order.lease_owner
    # ... until the lease runs out; then the janitor resumes it.
    AcmeOrder.objects.filter(pk=order.pk).update(lease_until=order.lease_until.replace(year=2000))
    assert tasks.janitor()["resumed"] == 1
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    assert order.order_url == first_url  # resumed, not a second order
    assert Certificate.objects.filter(subscriber=sub).count() == 1
    assert not AcmeChallenge.objects.filter(order=order, record_present=True).exists()
    for ch in order.challenges.all():
        assert powerdns.txt_records(ch.record_name) == []


def test_a_failure_right_after_new_order_continues_that_order_at_the_ca(
    tenant, pebble, powerdns, pebble_ca, monkeypatch
):
    """newOrder is answered, then the network fails while its authorizations are fetched (a worker killed
    there is the same case): the retry continues the CA's order instead of creating a second one. Found by
    bench/soak_acme.py (2 extra orders at Pebble in 200, at 50% badNonce and with workers SIGKILLed)."""
    import requests

    from acmeca import client as acme_client

    real_post = acme_client.AcmeNetwork.post
    failed: list[str] = []

    def reset_once(self, *args, **kwargs):
        if "/authZ/" in str(args[0]) and not failed:
            failed.append(str(args[0]))
            raise requests.exceptions.ConnectionError("connection reset by peer (injected)")
        return real_post(self, *args, **kwargs)

    monkeypatch.setattr(acme_client.AcmeNetwork, "post", reset_once)
    created_before = pebble.log.read_text().count("Added order")
    sub = acme_subscriber(tenant, pebble_ca, [unique_name(powerdns.zone, "resub")])
    order = ordered(pki_services.issue(sub, actor=tenant.operator.user))
    order.refresh_from_db()
    assert failed, "the fault was not injected"
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    assert order.attempts == 1  # the network error was retried once ...
    assert pebble.log.read_text().count("Added order") - created_before == 1  # ... within one CA order
    assert Certificate.objects.filter(subscriber=sub).count() == 1


def test_a_dns_server_down_for_a_moment_is_retried_within_the_order(
    tenant, pebble, bind, bind_connection, settings
):
    """BIND is down when the order starts and back seven seconds later (the first lookups time out after
    five): the transient failure is retried with backoff inside the same run and the order completes (one
    order, one certificate, attempts counted)."""
    import threading

    settings.CERTMGR_DNS_PROVIDER_TIMEOUT = 1.0
    settings.CERTMGR_ACME_RETRY_BASE_SECONDS = 1.0
    ca = make_acme_ca(tenant, pebble, name="Pebble via BIND (blip)", connection=bind_connection)
    name = unique_name(bind.zone, "blip")
    sub = acme_subscriber(tenant, ca, [name])
    bind.stop()
    restart = threading.Timer(7.0, bind.start)
    restart.start()
    try:
        order = ordered(pki_services.issue(sub, actor=tenant.operator.user))
    finally:
        restart.join()
        bind.start()
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    assert order.attempts >= 1 and order.error_type == ""
    assert Certificate.objects.filter(subscriber=sub).count() == 1
    assert bind.txt_records(f"_acme-challenge.{name}") == []


def test_cancel_stops_a_running_worker_and_removes_its_record(
    tenant, pebble, powerdns, pebble_ca, monkeypatch, no_worker
):
    """The worker waits for a record that never propagates; an operator cancels: the worker notices at its
    next heartbeat, stops, and the record it wrote is gone."""
    import threading

    pebble_ca.acme.propagation_timeout = 120
    pebble_ca.acme.save()
    real_wait = flow.propagation.wait_for_txt
    present = threading.Event()

    def never_there(record, value, **kwargs):
        present.set()
        return real_wait(record, "a-value-nobody-writes", **kwargs)

    monkeypatch.setattr(flow.propagation, "wait_for_txt", never_there)
    name = unique_name(powerdns.zone, "cancel")
    order = ordered(
        pki_services.issue(acme_subscriber(tenant, pebble_ca, [name]), actor=tenant.operator.user)
    )
    worker = threading.Thread(target=lambda: (flow.run_order(order.pk), connection.close()))
    worker.start()
    assert present.wait(30)
    assert len(powerdns.txt_records(f"_acme-challenge.{name}")) == 1
    orders.cancel_order(order, actor=tenant.operator.user)
    worker.join(30)
    assert not worker.is_alive()
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.CANCELLED and not order.lease_owner
    assert powerdns.txt_records(f"_acme-challenge.{name}") == []
    assert AuditEvent.objects.filter(action="acme.order.cancel", target_id=str(order.pk)).count() == 1


def test_retrying_a_failed_direct_order_starts_over_with_the_same_key(tenant, pebble, pebble_ca):
    pebble_ca.acme.direct_issuance = True
    pebble_ca.acme.save()
    failed = orders.start_direct_order(
        pebble_ca, [unique_name("nowhere.test", "direct")], actor=tenant.operator.user
    )
    failed.refresh_from_db()
    assert failed.step == AcmeOrder.Step.FAILED and failed.csr_pem
    again = ordered(orders.retry_order(failed, actor=tenant.operator.user))
    assert again.pk != failed.pk and again.names == failed.names
    assert again.private_key == failed.private_key and again.csr_pem == failed.csr_pem
    assert again.order_url != failed.order_url  # a new order at the CA
