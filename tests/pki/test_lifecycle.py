"""Renewal: when (pki.renewal), the sweep (pki.lifecycle), backoff, concurrency, the commands."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from certmgr.errors import ServiceError
from certmgr.models import JobRun
from pki import lifecycle, renewal, services
from pki.models import Certificate, Policy, Subscriber
from tests.conftest import SYSTEM

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --- when ------------------------------------------------------------------------------------------
def test_default_renewal_time_is_two_thirds_or_half_for_short_lifetimes():
    assert renewal.default_renewal_time(T0, T0 + timedelta(days=90)) == T0 + timedelta(days=60)
    assert renewal.default_renewal_time(T0, T0 + timedelta(days=6)) == T0 + timedelta(days=3)
    assert renewal.default_renewal_time(T0, T0 + timedelta(days=90), renew_before_days=7) == T0 + timedelta(
        days=83
    )


def test_ari_window_is_honoured_but_never_past_the_emergency_time():
    nb, na = T0, T0 + timedelta(days=90)
    ari = T0 + timedelta(days=70)
    assert renewal.next_renewal_at(nb, na, ari_time=ari) == ari  # ARI wins over 2/3 and renew-before
    late = T0 + timedelta(days=89, hours=23)
    assert renewal.next_renewal_at(nb, na, ari_time=late) == na - timedelta(days=4.5)  # 1/20 of 90 days left
    assert renewal.next_renewal_at(nb, na, renew_before_days=1) == na - timedelta(days=4.5)


def test_a_random_time_inside_the_ari_window():
    start, end = T0, T0 + timedelta(hours=6)
    times = {renewal.choose_in_window(start, end, rng=random.Random(seed)) for seed in range(20)}
    assert all(start <= t <= end for t in times) and len(times) > 10


def test_retry_delay_grows_exponentially_and_is_capped():
    rng = random.Random(1)
    delays = [renewal.retry_delay(n, base=60, cap=3600, rng=rng) for n in range(1, 10)]
    assert 30 <= delays[0] <= 60 and 60 <= delays[1] <= 120 and 120 <= delays[2] <= 240
    assert all(1800 <= d <= 3600 for d in delays[6:])


def test_renew_before_not_shorter_than_validity_is_bad_input(subscriber):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as exc:
        services.save_subscriber(None, actor=SYSTEM, instance=subscriber, renew_before_days=30)
    assert "renew_before_days" in exc.value.message_dict


# --- the sweep --------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_next_renewal_at_is_stored_and_only_the_newest_certificate_keeps_one(subscriber, issued):
    assert issued.next_renewal_at == issued.not_before + (issued.not_after - issued.not_before) * 2 / 3
    second = services.issue(subscriber, actor=SYSTEM).certificate
    issued.refresh_from_db()
    assert issued.next_renewal_at is None and second.next_renewal_at is not None


@pytest.mark.django_db
def test_sweep_renews_what_is_due_as_of_a_shifted_time(subscriber, issued):
    assert lifecycle.plan(timezone.now()) == []
    later = issued.next_renewal_at + timedelta(minutes=1)
    (planned,) = lifecycle.plan(later)
    assert planned.certificate_id == issued.pk
    call_command("run_renewals", "--at", later.isoformat())
    issued.refresh_from_db()
    successor = issued.renewed_by
    assert successor.subscriber_id == subscriber.pk and successor.renewed_from_id == issued.pk
    assert issued.next_renewal_at is None and issued.status == Certificate.Status.ACTIVE  # kept
    run = JobRun.objects.get(name="renewals")
    assert run.status == JobRun.Status.SUCCESS and run.counts.get("renewed") == 1 and run.trigger == "command"
    assert issued.pk not in [p.certificate_id for p in lifecycle.plan(later)]  # never renewed twice


@pytest.mark.django_db
def test_dry_run_lists_and_changes_nothing(subscriber, issued, capsys):
    later = (issued.next_renewal_at + timedelta(days=1)).isoformat()
    call_command("run_renewals", "--dry-run", "--at", later)
    out = capsys.readouterr().out
    assert f"certificate {issued.pk} (www.acme.test)" in out and "1 certificate(s) due" in out
    assert Certificate.objects.count() == 1 and not JobRun.objects.exists()


@pytest.mark.django_db
def test_auto_renew_off_is_left_alone(subscriber, issued):
    services.save_subscriber(None, actor=SYSTEM, instance=subscriber, auto_renew=False)
    assert lifecycle.plan(issued.not_after) == []


@pytest.mark.django_db
def test_failed_renewal_backs_off_then_succeeds(tenant, subscriber, issued, settings):
    """A policy tightened since issuance refuses the renewal: the failure, its category and the next
    attempt are on the subscriber; the sweep waits for it; once fixed, the renewal goes through."""
    settings.CERTMGR_RENEWAL_RETRY_BASE_SECONDS = 600
    policy = services.save_policy(tenant.organization, actor=SYSTEM, name="strict", max_validity_days=365)
    services.save_subscriber(None, actor=SYSTEM, instance=subscriber, policy=policy)
    Policy.objects.filter(pk=policy.pk).update(max_validity_days=10)  # tightened behind the subscriber's back
    due = issued.next_renewal_at + timedelta(minutes=1)
    attempts = []
    for round_ in (1, 2):
        report = _sweep(at=due)
        assert report.counts == {"failed": 1, "errors": 1}
        sub = Subscriber.objects.get(pk=subscriber.pk)
        assert sub.renewal_failures == round_ and sub.last_error_category == "policy_violation"
        assert "validity" in sub.last_operation_message
        attempts.append(sub.next_attempt_at - timezone.now())
        assert _sweep(at=due).counts == {}  # not before the next attempt time
        # the clock moves past the next attempt time
        Subscriber.objects.filter(pk=sub.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert timedelta(seconds=290) < attempts[0] <= timedelta(seconds=600)
    assert timedelta(seconds=590) < attempts[1] <= timedelta(seconds=1200)  # doubled
    Policy.objects.filter(pk=policy.pk).update(max_validity_days=365)
    assert _sweep(at=due).counts == {"renewed": 1}
    sub = Subscriber.objects.get(pk=subscriber.pk)
    assert (sub.renewal_failures, sub.next_attempt_at, sub.last_operation_status) == (0, None, "success")


@pytest.mark.django_db
def test_a_failed_first_issuance_is_retried_by_the_sweep_when_its_time_comes(tenant, subscriber, settings):
    """Nothing to renew yet, so the due query cannot see it: the sweep retries it at next_attempt_at."""
    settings.CERTMGR_RENEWAL_RETRY_BASE_SECONDS = 600
    policy = services.save_policy(tenant.organization, actor=SYSTEM, name="strict", max_validity_days=365)
    services.save_subscriber(None, actor=SYSTEM, instance=subscriber, policy=policy)
    Policy.objects.filter(pk=policy.pk).update(max_validity_days=10)
    with pytest.raises(ServiceError):
        services.issue(subscriber, actor=SYSTEM)
    sub = Subscriber.objects.get(pk=subscriber.pk)
    assert sub.last_operation_status == "failed" and sub.next_attempt_at > timezone.now()
    assert _sweep(at=timezone.now()).counts == {}  # not before its retry time
    Subscriber.objects.filter(pk=sub.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert _sweep(at=timezone.now()).counts == {"first_issue_failed": 1}  # still refused: backs off again
    assert Subscriber.objects.get(pk=sub.pk).renewal_failures == 2
    Subscriber.objects.filter(pk=sub.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    Policy.objects.filter(pk=policy.pk).update(max_validity_days=365)
    assert _sweep(at=timezone.now()).counts == {"first_issue_issued": 1}
    assert Certificate.objects.filter(subscriber=sub).count() == 1
    assert _sweep(at=timezone.now()).counts == {}  # done: it has a certificate now
    # a subscriber nobody ever issued for is not issued by the sweep
    other = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="idle", ca=subscriber.ca, common_name="idle.acme.test"
    )
    assert (
        _sweep(at=timezone.now()).counts == {} and not Certificate.objects.filter(subscriber=other).exists()
    )


def _sweep(at):
    from certmgr.jobs import JobReport

    report = JobReport()
    lifecycle.run_renewals(report, at=at)
    return report


@pytest.mark.django_db
def test_key_reuse_is_optional_per_subscriber(subscriber, issued):
    from cryptography import x509 as cx509

    def spki(cert):
        return cx509.load_pem_x509_certificate(cert.certificate_pem.encode()).public_key().public_numbers()

    new_key = services.issue(subscriber, actor=SYSTEM, renewal_of=issued).certificate
    assert spki(new_key) != spki(issued)  # the default: a new key
    services.save_subscriber(None, actor=SYSTEM, instance=subscriber, reuse_key=True)
    same_key = services.issue(subscriber, actor=SYSTEM, renewal_of=new_key).certificate
    assert spki(same_key) == spki(new_key)


@pytest.mark.django_db(transaction=True)
def test_concurrent_triggers_yield_one_certificate(subscriber, issued):
    """Sweeps and manual renewals racing on one certificate: exactly one successor."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    at = issued.next_renewal_at + timedelta(minutes=1)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def sweep() -> None:
        try:
            barrier.wait()
            outcomes.append(lifecycle.renew_one(issued.pk, at=at))
        finally:
            connections.close_all()

    def manual() -> None:
        try:
            barrier.wait()
            services.issue(Subscriber.objects.get(pk=subscriber.pk), actor=SYSTEM, renewal_of=issued)
            outcomes.append("manual")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sweep) for _ in range(4)] + [
        threading.Thread(target=manual) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert Certificate.objects.filter(renewed_from=issued).count() == 1, outcomes
    assert Certificate.objects.filter(subscriber=subscriber).count() == 2
    assert sorted(outcomes).count("renewed") + sorted(outcomes).count("manual") == 1, outcomes
    assert Subscriber.objects.get(pk=subscriber.pk).renewal_failures == 0  # a lost race is not a failure


# --- doors ------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_job_runs_are_listed_for_superusers_only(tenant, subscriber, issued):
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tests.conftest import PASSWORD

    call_command("run_renewals", "--at", (issued.next_renewal_at + timedelta(minutes=1)).isoformat())
    root = get_user_model().objects.create_superuser("root", password=PASSWORD)
    client = Client()
    assert client.login(username=root.username, password=PASSWORD)
    page = client.get("/admin/certmgr/jobrun/")
    assert page.status_code == 200 and b"renewals" in page.content and b"renewed 1" in page.content
    operator = Client()
    assert operator.login(username=tenant.operator.user.username, password=PASSWORD)
    assert operator.get("/admin/certmgr/jobrun/").status_code in (302, 403)


@pytest.mark.django_db
def test_api_shows_renewal_state_and_retries_now(tenant, subscriber, issued, settings):
    cert = tenant.auditor.client.get(f"/api/v1/certificates/{issued.pk}/").json()
    assert cert["next_renewal_at"].startswith(issued.next_renewal_at.isoformat()[:16])
    services.note_issue_failure(subscriber.pk, "upstream_error", "the CA was down")
    sub = tenant.auditor.client.get(f"/api/v1/subscribers/{subscriber.pk}/").json()
    assert sub["renewal_failures"] == 1 and sub["last_error_category"] == "upstream_error"
    assert sub["next_attempt_at"] and sub["last_operation_status"] == "failed"
    assert tenant.auditor.client.post(f"/api/v1/subscribers/{subscriber.pk}/retry/").status_code == 403
    response = tenant.operator.client.post(f"/api/v1/subscribers/{subscriber.pk}/retry/")
    assert response.status_code == 201, response.content
    assert response.json()["renewed_from"] == issued.pk
    sub = tenant.auditor.client.get(f"/api/v1/subscribers/{subscriber.pk}/").json()
    assert sub["renewal_failures"] == 0 and sub["next_attempt_at"] is None


@pytest.mark.django_db
def test_admin_retry_renewal_now_skips_the_backoff(tenant, subscriber, issued):
    from django.test import Client

    from tests.conftest import PASSWORD

    services.note_issue_failure(subscriber.pk, "upstream_error", "the CA was down")
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    page = client.get(f"/admin/pki/subscriber/{subscriber.pk}/change/")
    assert b"upstream_error" in page.content  # the failure, its category and next attempt are shown
    response = client.post(
        "/admin/pki/subscriber/",
        {"action": "retry_renewal_now", "_selected_action": [subscriber.pk], "index": "0"},
        follow=True,
    )
    assert b"issued certificate" in response.content
    issued.refresh_from_db()
    assert issued.renewed_by.subscriber_id == subscriber.pk
    assert Subscriber.objects.get(pk=subscriber.pk).renewal_failures == 0


# --- the other periodic jobs' commands, as an operator runs them -------------------------------------
@pytest.mark.django_db
def test_setup_schedules_is_idempotent_and_follows_the_settings(settings, capsys):
    from django_q.models import Schedule

    settings.CERTMGR_RENEWAL_SWEEP_MINUTES = 5
    call_command("setup_schedules")
    first = capsys.readouterr().out
    assert "updated: pki.run_renewals every 5 min" in first  # the migration created it already
    names = set(Schedule.objects.values_list("name", flat=True))
    assert {"pki.run_renewals", "pki.refresh_crls", "pki.send_expiry_alerts", "acmeca.janitor"} <= names
    count = Schedule.objects.count()
    call_command("setup_schedules")
    assert Schedule.objects.count() == count
    assert Schedule.objects.get(name="pki.run_renewals").minutes == 5


@pytest.mark.django_db
def test_refresh_crls_and_janitor_commands_print_and_record_their_runs(hierarchy, capsys):
    call_command("refresh_crls")
    out = capsys.readouterr().out
    assert "refreshed: Root" in out and "refreshed: Issuing" in out and "CRL refresh: refreshed 2" in out
    call_command("refresh_crls")
    assert "CRL refresh: fresh 2" in capsys.readouterr().out
    call_command("janitor")
    assert "janitor: nothing to do" in capsys.readouterr().out
    runs = JobRun.objects.filter(trigger="command")
    assert sorted(runs.values_list("name", flat=True)) == ["crl_refresh", "crl_refresh", "janitor"]
    assert {r.status for r in runs} == {JobRun.Status.SUCCESS}
