"""The generic HTTPS push against a real HTTPS receiver on loopback (http.server + ssl) that verifies the
Certmgr-Signature header the way the guide tells receivers to: payload, key only when the rule includes
it, the receiver's identifier, non-2xx failing with status and body and retried, https only."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from certmgr.models import AuditEvent
from dnsproviders import services as connections
from pki import services as pki
from syncs import services
from syncs.models import SyncRun
from tests.conftest import SYSTEM
from tests.syncs.kind_fixtures import SECRET


def webhook_destination(tenant, url, secret=SECRET):
    conn = connections.create_connection(
        tenant.organization,
        name="hook",
        kind="webhook",
        credentials={"url": url, "signing_secret": secret},
        actor=SYSTEM,
    )
    return services.create_destination(
        tenant.organization, name="hook", kind="webhook", connection=conn, actor=SYSTEM
    )


def issue(subscriber, capture, renewal_of=None):
    with capture(execute=True):
        return pki.issue(subscriber, actor=SYSTEM, renewal_of=renewal_of).certificate


def test_a_signed_push_carries_the_certificate_and_the_receivers_identifier_is_kept(
    receiver, tenant, subscriber, django_capture_on_commit_callbacks
):
    dest = webhook_destination(tenant, receiver.url)
    assert services.test_destination(dest, actor=SYSTEM).ok
    assert receiver.deliveries.pop()["event"] == "ping"
    receiver.answers.append((201, {"identifier": "lb-7/listener-443"}))
    services.create_rule(dest, subscriber=subscriber, actor=SYSTEM)
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    run = SyncRun.objects.get(certificate=cert)
    assert run.status == "succeeded", run.error
    assert run.identifier == "lb-7/listener-443" and receiver.rejected == 0
    (body,) = receiver.deliveries
    assert body["event"] == "deployed" and body["serial"] == cert.serial
    assert body["certificate"] == cert.certificate_pem and body["chain"] == cert.chain_pem
    assert body["private_key"] == cert.private_key
    assert body["fingerprints"]["sha256"] == cert.fingerprint_sha256 and body["subscriber"] == "web"
    assert body["name"] == run.name and body["timestamp"]
    headers = receiver.headers[-1]
    assert headers["Certmgr-Event"] == "deployed" and headers["Certmgr-Delivery"] == body["delivery_id"]
    assert run.version == body["delivery_id"]


def test_without_the_key_in_the_rule_no_key_is_sent_and_retries_keep_the_delivery_id(
    receiver, tenant, subscriber, django_capture_on_commit_callbacks, caplog
):
    caplog.set_level(logging.DEBUG)
    dest = webhook_destination(tenant, receiver.url)
    services.create_rule(dest, subscriber=subscriber, include_private_key=False, actor=SYSTEM)
    receiver.answers.append((503, {"error": "maintenance until 22:00"}))
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    run = SyncRun.objects.get(certificate=cert)
    assert run.status == "pending" and run.next_attempt_at is not None
    assert "HTTP 503" in run.error and "maintenance until 22:00" in run.error
    services.run_sync(run.pk, now=run.next_attempt_at + timedelta(seconds=1))
    run.refresh_from_db()
    assert run.status == "succeeded" and run.attempts == 2
    first, second = receiver.deliveries
    assert "private_key" not in first and "private_key" not in second
    assert first["delivery_id"] == second["delivery_id"]  # idempotency across attempts
    assert run.identifier == run.name  # no identifier answered: the name
    key_body = "".join(cert.private_key.strip().splitlines()[1:-1])
    texts = [json.dumps(e.details) + e.error for e in AuditEvent.objects.all()]
    texts.append("\n".join(r.getMessage() for r in caplog.records))
    assert all(key_body[:40] not in t and SECRET not in t for t in texts)


def test_a_wrong_secret_is_refused_by_the_receiver_and_reported(
    receiver, tenant, subscriber, django_capture_on_commit_callbacks
):
    dest = webhook_destination(tenant, receiver.url, secret="x" * 40)
    result = services.test_destination(dest, actor=SYSTEM)
    assert not result.ok and "HTTP 401" in result.message and "bad signature" in result.message
    assert receiver.rejected == 1


def test_removal_posts_a_removed_event(receiver, tenant, subscriber, django_capture_on_commit_callbacks):
    dest = webhook_destination(tenant, receiver.url)
    services.create_rule(dest, subscriber=subscriber, remove_on_expiry_or_revocation=True, actor=SYSTEM)
    receiver.answers.append((200, {"identifier": "slot-1"}))
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        pki.revoke(cert, reason="superseded", actor=SYSTEM)
    assert receiver.deliveries[-1]["event"] == "removed"
    assert receiver.deliveries[-1]["identifier"] == "slot-1"


def test_https_only_a_long_secret_and_the_guard(tenant, settings):
    with pytest.raises(ValidationError) as err:
        connections.create_connection(
            tenant.organization,
            name="plain",
            kind="webhook",
            credentials={"url": "http://hooks.example.com/x", "signing_secret": SECRET},
            actor=SYSTEM,
        )
    assert "https" in str(err.value)
    with pytest.raises(ValidationError):
        connections.create_connection(
            tenant.organization,
            name="short",
            kind="webhook",
            credentials={"url": "https://hooks.example.com/x", "signing_secret": "short"},
            actor=SYSTEM,
        )
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []
    dest = webhook_destination(tenant, "https://127.0.0.1:9/hooks")
    result = services.test_destination(dest, actor=SYSTEM)
    assert not result.ok and "loopback" in result.message
    with pytest.raises(ValidationError):
        services.update_destination(dest, options={"tags": {"a": "b"}}, actor=SYSTEM)
