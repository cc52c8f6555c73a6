"""A destination that is down: moto's server stopped during a renewal. The run fails, is retried with
backoff, succeeds once the server is back, and raises one ``sync_failed`` alert; after the last attempt a
run is failed, still listed, and "retry" starts it again."""

from __future__ import annotations

import socket
from datetime import timedelta

import boto3
import pytest
from django.core import mail
from django.utils import timezone
from moto.server import ThreadedMotoServer

from certmgr.jobs import JobReport
from pki import alerts
from pki import services as pki
from pki.models import AlertDelivery
from syncs import services
from syncs.models import Deployment, SyncRun
from tests.conftest import SYSTEM
from tests.syncs.conftest import AWS_KEYS, REGION


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """moto as a real HTTP endpoint on a loopback port, which the test stops and starts again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def moto_server(monkeypatch):
    server = MotoServer()
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)  # boto3 reads it: every client goes there
    yield server
    server.stop()


@pytest.fixture
def sync_failed_alerts(tenant, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    channel = alerts.create_channel(
        tenant.organization, name="ops", kind="email", recipients=["ops@acme.test"], actor=SYSTEM
    ).channel
    alerts.create_rule(
        tenant.organization, name="syncs", event="sync_failed", channels=[channel], actor=SYSTEM
    )


def acm_at(server: MotoServer):
    return boto3.client(
        "acm",
        region_name=REGION,
        endpoint_url=server.url,
        aws_access_key_id=AWS_KEYS["access_key_id"],
        aws_secret_access_key=AWS_KEYS["secret_access_key"],
    )


def test_destination_down_during_a_renewal_fails_is_retried_succeeds_and_alerts_once(
    moto_server, acm, subscriber, sync_failed_alerts, django_capture_on_commit_callbacks
):
    services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        first = pki.issue(subscriber, actor=SYSTEM).certificate
    arn = SyncRun.objects.get(certificate=first).identifier
    assert SyncRun.objects.get(certificate=first).status == "succeeded"

    moto_server.stop()  # AWS is down
    with django_capture_on_commit_callbacks(execute=True):
        second = pki.issue(subscriber, actor=SYSTEM, renewal_of=first).certificate
    run = SyncRun.objects.get(certificate=second)
    assert (run.status, run.attempts) == ("pending", 1)
    assert "cannot reach AWS" in run.error and run.next_attempt_at > timezone.now()
    deliveries = AlertDelivery.objects.filter(event="sync_failed")
    assert deliveries.count() == 1 and "sync failed" in deliveries.get().subject
    assert Deployment.objects.get().certificate_id == first.pk  # the old one is still what is there

    # not due yet: the sweep leaves it alone
    report = JobReport()
    services.run_due(report)
    assert SyncRun.objects.get(pk=run.pk).attempts == 1

    # due, still down: attempt 2 fails, no second alert
    later = timezone.now() + timedelta(hours=2)
    services.run_due(JobReport(), now=later)
    run.refresh_from_db()
    assert (run.status, run.attempts) == ("pending", 2)

    moto_server.start()  # AWS is back (the same moto backend: the old ARN is still there)
    report = JobReport()
    services.run_due(report, now=later + timedelta(hours=2))
    run.refresh_from_db()
    assert (run.status, run.attempts, run.error) == ("succeeded", 3, "")
    assert report.counts == {"succeeded": 1}
    assert acm_at(moto_server).get_certificate(CertificateArn=run.identifier)["Certificate"].strip() == (
        second.certificate_pem.strip()
    )
    assert run.identifier == arn  # re-imported in place after the outage
    assert Deployment.objects.get().certificate_id == second.pk
    assert AlertDelivery.objects.filter(event="sync_failed").count() == 1  # one alert for the whole outage
    assert len([m for m in mail.outbox if "sync failed" in m.subject]) == 1


def test_after_the_last_attempt_the_run_is_failed_and_retry_starts_it_again(
    moto_server, acm, subscriber, sync_failed_alerts, settings, django_capture_on_commit_callbacks
):
    settings.CERTMGR_SYNC_MAX_ATTEMPTS = 2
    services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)
    moto_server.stop()
    with django_capture_on_commit_callbacks(execute=True):
        cert = pki.issue(subscriber, actor=SYSTEM).certificate
    services.run_due(JobReport(), now=timezone.now() + timedelta(hours=2))
    run = SyncRun.objects.get(certificate=cert)
    assert (run.status, run.attempts, run.next_attempt_at) == ("failed", 2, None)
    assert run.finished_at is not None and AlertDelivery.objects.filter(event="sync_failed").count() == 1
    assert list(services.undeployed_renewals()) == []  # a first issuance is no renewal

    moto_server.start()
    with django_capture_on_commit_callbacks(execute=True):
        services.retry_run(run, actor=SYSTEM)
    run.refresh_from_db()
    assert (run.status, run.attempts) == ("succeeded", 1)
