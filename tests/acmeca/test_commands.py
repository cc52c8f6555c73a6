"""``manage.py acme_order``: one order run in the foreground against Pebble, with progress and exit status."""

from __future__ import annotations

import io
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from acmeca import flow
from acmeca.models import AcmeChallenge, AcmeOrder
from pki import services as pki_services
from pki.models import Certificate
from tests.acmeca.conftest import acme_subscriber, make_acme_ca, unique_name
from tests.conftest import SYSTEM
from tests.outcomes import ordered

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command("acme_order", *args, stdout=out, stderr=io.StringIO(), **kwargs)
    return out.getvalue()


def run_failing(*args, **kwargs) -> tuple[str, str]:
    out = io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("acme_order", *args, stdout=out, stderr=io.StringIO(), **kwargs)
    return str(failed.value), out.getvalue()


def test_subscriber_order_runs_here_with_progress_and_summary(tenant, pebble, pebble_ca, powerdns):
    name = unique_name(powerdns.zone)
    sub = acme_subscriber(tenant, pebble_ca, [name], name="web")
    out = run("web")
    order = AcmeOrder.objects.get(subscriber=sub)
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    # The lines come from this process: django-q (sync in tests) would have finished the order first.
    for line in (
        "created for",
        "submitted:",
        "challenge_ready:",
        "propagation:",
        "challenge_valid:",
        "issued:",
    ):
        assert line in out, out
    cert = order.certificate
    assert f"order: {order.pk}" in out and f"serial: {cert.serial}" in out and "elapsed:" in out
    assert Certificate.objects.filter(subscriber=sub).count() == 1
    assert not AcmeChallenge.objects.filter(order=order, record_present=True).exists()
    assert powerdns.txt_records(f"_acme-challenge.{name}") == []


def test_subscriber_by_id_through_bind(tenant, pebble, bind, bind_connection):
    ca = make_acme_ca(tenant, pebble, name="Pebble via BIND", connection=bind_connection)
    sub = acme_subscriber(tenant, ca, [unique_name(bind.zone)])
    out = run(str(sub.pk), organization=tenant.organization.slug)
    assert "issued:" in out
    assert AcmeOrder.objects.get(subscriber=sub).step == AcmeOrder.Step.DONE


def test_direct_order_by_names_on_a_ca(tenant, pebble, powerdns, pdns_connection):
    ca = make_acme_ca(tenant, pebble, name="Direct", connection=pdns_connection, direct_issuance=True)
    names = [unique_name(powerdns.zone), unique_name(powerdns.zone)]
    out = run(ca="Direct", names=",".join(names))
    order = AcmeOrder.objects.get(ca=ca)
    assert order.subscriber is None and order.step == AcmeOrder.Step.DONE
    assert sorted(order.certificate.sans) == sorted(names)
    assert out.count("challenge_valid:") == 2


def test_direct_order_refused_when_the_ca_does_not_allow_it(tenant, pebble, pebble_ca, powerdns):
    message, _ = run_failing(ca=str(pebble_ca.pk), names=unique_name(powerdns.zone))
    assert "direct issuance is off" in message
    assert not AcmeOrder.objects.exists()


def test_the_cas_rejection_exits_non_zero_with_its_message(tenant, pebble, pebble_ca, powerdns, monkeypatch):
    """A TXT value Pebble does not expect (the propagation check waits for that same wrong value)."""
    present = flow._Runner._present

    def wrong_value(self, ch, provider):
        ch.record_value = "not-the-key-authorization"
        return present(self, ch, provider)

    monkeypatch.setattr(flow._Runner, "_present", wrong_value)
    name = unique_name(powerdns.zone)
    acme_subscriber(tenant, pebble_ca, [name], name="bad")
    message, out = run_failing("bad")
    order = AcmeOrder.objects.get()
    assert order.step == AcmeOrder.Step.FAILED and order.error_type == "unauthorized"
    assert message == f"order {order.pk} failed: {order.last_error}"
    assert message.endswith(f"{name}: Correct value not found for DNS challenge")  # Pebble's own words
    assert "failed:" in out and "serial:" not in out
    assert powerdns.txt_records(f"_acme-challenge.{name}") == []  # removed on failure too


def test_unknown_subscriber(tenant):
    message, _ = run_failing("nobody")
    assert message == "no subscriber named 'nobody'"


def test_internal_ca_subscriber_is_sent_to_manage_py_issue(tenant):
    root = pki_services.create_internal_ca(
        tenant.organization,
        name="Root",
        kind="internal-root",
        subject={"common_name": "Acme Root CA"},
        validity_days=3650,
        actor=SYSTEM,
    )
    pki_services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="internal",
        ca=root,
        common_name="a.acme.test",
        validity_days=30,
    )
    message, _ = run_failing("internal")
    assert "internal CA: use manage.py issue" in message
    assert not Certificate.objects.filter(subscriber__name="internal").exists()


def test_resume_drives_an_order_no_worker_ran(tenant, pebble, pebble_ca, powerdns, no_worker):
    sub = acme_subscriber(tenant, pebble_ca, [unique_name(powerdns.zone)])
    order = ordered(pki_services.issue(sub, actor=SYSTEM))
    assert AcmeOrder.objects.get(pk=order.pk).step == AcmeOrder.Step.QUEUED
    out = run(resume=order.pk)
    assert "submitted:" in out and "issued:" in out
    assert AcmeOrder.objects.get(pk=order.pk).step == AcmeOrder.Step.DONE


def test_a_second_run_of_a_done_order_is_a_no_op(tenant, pebble, pebble_ca, powerdns):
    """django-q in sync mode runs the order at commit; running it again here issues nothing more."""
    sub = acme_subscriber(tenant, pebble_ca, [unique_name(powerdns.zone)])
    order = ordered(pki_services.issue(sub, actor=SYSTEM))
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.DONE
    out = run(resume=order.pk)
    assert "submitted:" not in out and f"serial: {order.certificate.serial}" in out
    assert Certificate.objects.filter(subscriber=sub).count() == 1


def test_a_leased_order_is_followed_then_taken_over(tenant, pebble, pebble_ca, powerdns, no_worker):
    """While another worker's lease holds, this process only watches; a lapsed lease lets it run the order."""
    sub = acme_subscriber(tenant, pebble_ca, [unique_name(powerdns.zone)])
    order = ordered(pki_services.issue(sub, actor=SYSTEM))
    AcmeOrder.objects.filter(pk=order.pk).update(
        lease_owner="dead-worker", lease_until=timezone.now() + timedelta(seconds=0.6)
    )
    out = run(resume=order.pk)
    assert "a worker is running order" in out and "issued:" in out
    assert Certificate.objects.filter(subscriber=sub).count() == 1


def test_resume_refuses_a_failed_order(tenant, pebble, pebble_ca, powerdns, no_worker):
    sub = acme_subscriber(tenant, pebble_ca, [unique_name(powerdns.zone)])
    order = ordered(pki_services.issue(sub, actor=SYSTEM))
    AcmeOrder.objects.filter(pk=order.pk).update(step=AcmeOrder.Step.FAILED, last_error="gone")
    message, _ = run_failing(resume=order.pk)
    assert message == f"order {order.pk} is already failed: gone"


def test_unknown_order_and_bad_arguments(tenant):
    assert run_failing(resume=999999)[0] == "no ACME order 999999"
    assert "one of them" in run_failing()[0]


# --- manage.py issue on an ACME subscriber (regression: it crashed on the order's missing serial) -------
def run_issue(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("issue", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_manage_issue_waits_for_the_order_and_prints_the_serial(
    tenant, pebble, pebble_ca, powerdns, no_worker
):
    name = unique_name(powerdns.zone, "wait")
    sub = acme_subscriber(tenant, pebble_ca, [name], name="waited")

    def worker() -> None:  # a worker that takes the order a moment after the command started waiting
        for _ in range(100):
            order = AcmeOrder.objects.filter(subscriber=sub).first()
            if order is not None:
                flow.run_order(order.pk)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        out, err = run_issue("waited", "--timeout", "60")
    finally:
        thread.join()
    cert = Certificate.objects.get(subscriber=sub)
    assert out.startswith("-----BEGIN CERTIFICATE-----") and out == cert.certificate_pem
    assert f"serial: {cert.serial}" in err and "waiting for ACME order" in err
    assert "s] " in err  # progress lines carry the elapsed time


def test_manage_issue_no_wait_prints_the_handle(tenant, pebble, pebble_ca, powerdns, no_worker):
    sub = acme_subscriber(tenant, pebble_ca, [unique_name(powerdns.zone, "nowait")], name="nowait")
    out, _ = run_issue("nowait", "--no-wait")
    order = AcmeOrder.objects.get(subscriber=sub)
    assert out.strip() == (
        f"ACME order {order.pk}: admin /admin/acmeca/acmeorder/{order.pk}/change/, "
        f"API /api/v1/acme-orders/{order.pk}/ (step: Queued)"
    )
    assert not Certificate.objects.filter(subscriber=sub).exists()


def test_manage_issue_exits_1_with_the_orders_failure(tenant, pebble, pebble_ca):
    acme_subscriber(tenant, pebble_ca, [unique_name("nowhere.test", "fail")], name="doomed")
    with pytest.raises(CommandError) as failed:
        run_issue("doomed", "--timeout", "60")
    assert "failed" in str(failed.value) and "\n" not in str(failed.value)
