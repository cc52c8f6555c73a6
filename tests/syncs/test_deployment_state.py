"""A certificate's deployment state (moto's ACM and Secrets Manager as two destinations): a renewal is
deploying until every destination confirmed the new serial, then deployed (``deployed_at``: the last
confirmation) with one ``certificate.deployed`` audit event; failed when a destination failed for good.
Shown on the certificate's admin page and API, filterable in both, and in what pki says about a renewal
(the admin's message, the issued alert, ``manage.py run_renewals``)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from certmgr.jobs import JobReport
from certmgr.models import AuditEvent
from pki import alerts
from pki import services as pki
from pki.models import AlertDelivery, Certificate
from syncs import services
from syncs.models import SyncRun
from tests.conftest import SYSTEM
from tests.syncs.test_doors import login

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def two_places(acm, secrets, subscriber):
    services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)
    services.create_rule(secrets, subscriber=subscriber, actor=SYSTEM)
    return acm, secrets


@pytest.fixture
def no_workers(monkeypatch):
    """Runs are made but no worker takes them: the test runs them when it wants."""
    monkeypatch.setattr(services, "enqueue", lambda run_ids: None)


def state(cert: Certificate) -> tuple:
    cert.refresh_from_db()
    return cert.deployment_state, cert.deployment_targets, cert.deployment_confirmed


def deployed_events(cert: Certificate):
    return AuditEvent.objects.filter(action="certificate.deployed", target_id=str(cert.pk))


def test_a_renewal_is_deployed_only_once_every_destination_confirmed_it(
    two_places, subscriber, no_workers, django_capture_on_commit_callbacks
):
    acm, secrets = two_places
    with django_capture_on_commit_callbacks(execute=True):
        first = pki.issue(subscriber, actor=SYSTEM).certificate
    assert state(first) == ("deploying", 2, 0)
    services.run_due(JobReport(), now=timezone.now() + timedelta(seconds=1))
    assert state(first) == ("deployed", 2, 2)
    assert first.deployed_at == max(
        SyncRun.objects.filter(certificate=first).values_list("finished_at", flat=True)
    )
    assert deployed_events(first).count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        second = pki.issue(subscriber, actor=SYSTEM, renewal_of=first).certificate
    assert state(second) == ("deploying", 2, 0) and second.deployed_at is None
    assert list(services.undeployed_renewals()) == [second]

    run_acm, run_sm = (SyncRun.objects.get(certificate=second, destination=d) for d in (acm, secrets))
    services.run_sync(run_acm.pk)
    assert state(second) == ("deploying", 2, 1)  # one of two: not done
    assert not deployed_events(second).exists()
    assert list(services.undeployed_renewals()) == [second]
    services.run_sync(run_sm.pk)
    assert state(second) == ("deployed", 2, 2)
    run_sm.refresh_from_db()
    assert second.deployed_at == run_sm.finished_at  # when the last destination confirmed it
    assert services.undeployed_renewals().count() == 0
    [event] = deployed_events(second)
    assert event.details["destinations"] == 2 and event.details["renewed_from"] == first.pk
    assert event.details["serial"] == second.serial

    # once: refreshing again, a drift check in step, a "sync now" that confirms again add no event
    assert services.refresh_deployment_states([second.pk]) == 0
    with django_capture_on_commit_callbacks(execute=True):
        services.check_drift(JobReport())
        runs = services.sync_now(certificate=second, actor=SYSTEM)
    assert state(second) == ("deployed", 2, 2)  # confirmed places stay confirmed
    for run in runs:
        services.run_sync(run.pk)
    assert state(second) == ("deployed", 2, 2)
    assert deployed_events(second).count() == 1


def test_a_destination_failing_for_good_is_failed_retry_deploys_and_a_renewal_replaces_it(
    two_places, subscriber, no_workers, django_capture_on_commit_callbacks
):
    _, secrets = two_places
    with django_capture_on_commit_callbacks(execute=True):
        first = pki.issue(subscriber, actor=SYSTEM).certificate
    services.update_destination(secrets, enabled=False, actor=SYSTEM)  # a permanent failure
    services.run_due(JobReport(), now=timezone.now() + timedelta(seconds=1))
    assert state(first) == ("failed", 2, 1)
    assert not deployed_events(first).exists()

    run = SyncRun.objects.get(certificate=first, destination=secrets)
    assert run.status == "failed"
    services.update_destination(secrets, enabled=True, actor=SYSTEM)
    services.retry_run(run, actor=SYSTEM)
    assert state(first) == ("deploying", 2, 1)
    services.run_sync(run.pk)
    assert state(first) == ("deployed", 2, 2) and deployed_events(first).count() == 1

    # a renewal's failed place stops counting once it is renewed itself: its renewal goes there
    with django_capture_on_commit_callbacks(execute=True):
        second = pki.issue(subscriber, actor=SYSTEM, renewal_of=first).certificate
    services.update_destination(secrets, enabled=False, actor=SYSTEM)
    services.run_due(JobReport(), now=timezone.now() + timedelta(seconds=1))
    assert state(second) == ("failed", 2, 1)
    assert list(services.undeployed_renewals()) == [second]
    services.update_destination(secrets, enabled=True, actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        third = pki.issue(subscriber, actor=SYSTEM, renewal_of=second).certificate
    assert state(second) == ("deployed", 1, 1)  # what it reached; the failed place is its renewal's now
    assert state(third) == ("deploying", 2, 0)


def test_no_rule_is_no_destinations_and_deleting_a_destination_recounts(
    two_places, subscriber, hierarchy, tenant, no_workers, django_capture_on_commit_callbacks
):
    from tests.pki.conftest import make_subscriber

    acm, secrets = two_places
    lone = make_subscriber(tenant, hierarchy[1], "lone")
    with django_capture_on_commit_callbacks(execute=True):
        alone = pki.issue(lone, actor=SYSTEM).certificate
        cert = pki.issue(subscriber, actor=SYSTEM).certificate
    assert state(alone) == ("none", 0, 0)
    services.run_sync(SyncRun.objects.get(certificate=cert, destination=acm).pk)
    assert state(cert) == ("deploying", 2, 1)
    services.delete_destination(secrets, actor=SYSTEM)  # its run goes with it: the rest is confirmed
    assert state(cert) == ("deployed", 1, 1) and deployed_events(cert).count() == 1


def test_a_stale_deploying_state_is_healed_by_run_due(
    two_places, subscriber, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        cert = pki.issue(subscriber, actor=SYSTEM).certificate
    assert state(cert) == ("deployed", 2, 2)
    Certificate.objects.filter(pk=cert.pk).update(deployment_state="deploying")  # a worker died in between
    report = JobReport()
    services.run_due(report)
    assert state(cert) == ("deployed", 2, 2) and report.counts.get("states_refreshed") == 1


def test_api_field_and_filters(
    tenant, two_places, subscriber, no_workers, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = pki.issue(subscriber, actor=SYSTEM).certificate
    services.run_due(JobReport(), now=timezone.now() + timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        second = pki.issue(subscriber, actor=SYSTEM, renewal_of=first).certificate
    api = tenant.auditor.client
    shown = api.get(f"/api/v1/certificates/{second.pk}/").json()
    assert (shown["deployment_state"], shown["deployment_destinations"], shown["deployment_confirmed"]) == (
        "deploying",
        2,
        0,
    )
    assert shown["deployed_at"] is None
    listed = api.get("/api/v1/certificates/", {"deployment_state": "deployed"}).json()
    assert [c["id"] for c in listed["results"]] == [first.pk]
    assert listed["results"][0]["deployed_at"] is not None
    undeployed = api.get(
        "/api/v1/certificates/?deployment_state=deploying&deployment_state=failed&renewal=true"
    ).json()
    assert [c["id"] for c in undeployed["results"]] == [second.pk]
    assert api.get("/api/v1/certificates/", {"deployment_state": "nonsense"}).status_code == 400


def test_admin_page_filter_and_the_renew_message_say_deploying(
    tenant, two_places, subscriber, no_workers, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = pki.issue(subscriber, actor=SYSTEM).certificate
    services.run_due(JobReport(), now=timezone.now() + timedelta(seconds=1))
    operator = login(tenant.operator)
    page = operator.get(f"/admin/pki/certificate/{first.pk}/change/").content.decode()
    assert "Deployment" in page and "deployed to 2 destinations (the last confirmed it" in page

    with django_capture_on_commit_callbacks(execute=True):
        done = operator.post(f"/admin/pki/certificate/{first.pk}/renew/", follow=True)
    second = Certificate.objects.get(renewed_from=first)
    said = [str(m) for m in done.context["messages"]]
    assert any("renewed as" in m and m.endswith("; deploying to 2 destinations.") for m in said), said
    page = operator.get(f"/admin/pki/certificate/{second.pk}/change/").content.decode()
    assert "deploying to 2 destinations" in page
    listed = operator.get("/admin/pki/certificate/", {"deployment": "deploying"})
    assert listed.status_code == 200
    body = listed.content.decode()
    assert f"/admin/pki/certificate/{second.pk}/change/" in body
    assert f"/admin/pki/certificate/{first.pk}/change/" not in body
    renewals = operator.get("/admin/pki/certificate/", {"deployment": "renewed_undeployed"}).content.decode()
    assert f"/admin/pki/certificate/{second.pk}/change/" in renewals
    assert f"/admin/pki/certificate/{first.pk}/change/" not in renewals
    assert operator.get("/admin/pki/certificate/", {"deployment": "bogus"}).status_code in (200, 302)


def test_the_issued_alert_and_run_renewals_say_deploying_to_n_destinations(
    tenant, two_places, subscriber, settings, no_workers, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    channel = alerts.create_channel(
        tenant.organization, name="ops", kind="email", recipients=["ops@acme.test"], actor=SYSTEM
    ).channel
    alerts.create_rule(tenant.organization, name="issued", event="issued", channels=[channel], actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        first = pki.issue(subscriber, actor=SYSTEM).certificate
    delivery = AlertDelivery.objects.get(certificate=first)
    assert delivery.subject == "[certmgr] www.acme.test issued; deploying to 2 destinations"
    assert delivery.payload["deploying_to"] == 2

    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("run_renewals", "--at", first.not_after.isoformat(), stdout=out)
    second = Certificate.objects.get(renewed_from=first)
    assert f"renewed; deploying to 2 destinations: certificate {first.pk}" in out.getvalue(), out.getvalue()
    assert "deploying 1" in out.getvalue()
    delivery = AlertDelivery.objects.get(certificate=second)
    assert delivery.subject == "[certmgr] www.acme.test renewed; deploying to 2 destinations"
