"""Alerts against real local servers: an SMTP sink and a webhook receiver on 127.0.0.1.

Expiry alerts go out once per threshold per certificate, webhooks carry a verifiable HMAC signature, failed
deliveries are retried with backoff and end visible as failed, rules never cross organizations, auditors
change nothing, and a channel's secret appears in no API answer, admin page or audit event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socketserver
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.test import Client
from django.urls import include, path
from django.utils import timezone
from rest_framework.routers import DefaultRouter

from certmgr.errors import PermissionDenied
from certmgr.models import AuditEvent, JobRun
from pki import alerts, services, tasks
from pki.api.alerts import register
from pki.models import AlertChannel, AlertDelivery, AlertRule, Certificate, Policy
from tests.conftest import PASSWORD, SYSTEM, assert_isolated

# A test-only urlconf: the alert routes in front of the project's (until certmgr/api/urls.py registers them).
_router = DefaultRouter(trailing_slash=True)
register(_router)
urlpatterns = [path("api/v1/", include(_router.urls)), path("", include("certmgr.urls"))]

SECRET = "whsec-test-6f1c2e0a9b7d4c3e8a5f"
CHANNELS = "/api/v1/alert-channels/"
RULES = "/api/v1/alert-rules/"
DELIVERIES = "/api/v1/alert-deliveries/"


# --- local servers --------------------------------------------------------------------------------------
class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 sink ESMTP")
        sender, rcpts = "", []
        while line := self.rfile.readline():
            command = line.decode(errors="replace").strip()
            verb = command[:4].upper()
            if verb == "EHLO":
                self.reply("250-sink")
                self.reply("250 8BITMIME")
            elif verb in ("HELO", "NOOP"):
                self.reply("250 OK")
            elif verb == "MAIL":
                sender, rcpts = command.split(":", 1)[1].split()[0].strip("<>"), []
                self.reply("250 OK")
            elif verb == "RCPT":
                rcpts.append(command.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                self.server.messages.append({"from": sender, "to": rcpts, "data": b"".join(data).decode()})
                self.reply("250 queued")
            elif verb == "RSET":
                sender, rcpts = "", []
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class _SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.messages: list[dict] = []


class _WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        code = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok" if code < 300 else b"receiver unavailable")

    def log_message(self, *args):
        pass


class _WebhookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.requests: list[dict] = []
        self.statuses: list[int] = []  # answers to give, in order; 200 once exhausted

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/certmgr"


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def smtp_sink(settings):
    server = _serve(_SmtpServer())
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.server_address[1]
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "certmgr@acme.test"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver(settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    server = _serve(_WebhookServer())
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(settings):
    settings.ROOT_URLCONF = __name__


def verify(request: dict, secret: str = SECRET) -> dict:
    """Check the signature as a receiver would, then parse the body."""
    expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["X-Certmgr-Signature"], expected)
    assert request["headers"]["Content-Type"] == "application/json"
    return json.loads(request["body"])


def expiring_in(certificate: Certificate, days: float) -> Certificate:
    Certificate.objects.filter(pk=certificate.pk).update(not_after=timezone.now() + timedelta(days=days))
    certificate.refresh_from_db()
    return certificate


def webhook(org, url, **kw):
    return alerts.create_channel(
        org, name=kw.pop("name", "hook"), kind="webhook", url=url, actor=SYSTEM, **kw
    )


def email(org, recipients, name="mail"):
    return alerts.create_channel(org, name=name, kind="email", recipients=recipients, actor=SYSTEM).channel


def shift_due(*deliveries) -> None:
    """Time control: make pending deliveries due now instead of sleeping through the backoff."""
    AlertDelivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


# --- expiry, end to end ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_expiry_alerts_go_out_once_per_threshold_to_mail_and_a_signed_webhook(
    tenant, subscriber, smtp_sink, receiver
):
    certs = [expiring_in(services.issue(subscriber, actor=SYSTEM).certificate, d) for d in (20, 10, 3)]
    hook = webhook(tenant.organization, receiver.url, secret=SECRET).channel
    mail = email(tenant.organization, ["secops@acme.test", "oncall@acme.test"])
    alerts.create_rule(
        tenant.organization, name="expiry", event="expiring", channels=[hook, mail], actor=SYSTEM
    )

    call_command("send_expiry_alerts")
    call_command("send_expiry_alerts")  # a second run (and the daily schedule after it) sends nothing new
    tasks.send_expiry_alerts()

    assert len(receiver.requests) == 3 and len(smtp_sink.messages) == 3
    payloads = {p["certificate"]["id"]: p for p in map(verify, receiver.requests)}
    assert {cid: p["threshold_days"] for cid, p in payloads.items()} == {
        certs[0].pk: 30,
        certs[1].pk: 14,
        certs[2].pk: 7,
    }
    assert payloads[certs[2].pk]["event"] == "expiring" and payloads[certs[2].pk]["days_left"] == 2
    assert all(m["to"] == ["secops@acme.test", "oncall@acme.test"] for m in smtp_sink.messages)
    assert any("www.acme.test expires in 9 days" in m["data"] for m in smtp_sink.messages)
    rows = AlertDelivery.objects.filter(organization=tenant.organization)
    assert rows.count() == 6 and set(rows.values_list("status", flat=True)) == {"sent"}
    assert JobRun.objects.filter(name="expiry_alerts", status="success").count() == 3

    # Two days later the 3-day certificate has crossed the 1-day threshold: one more alert per channel.
    Certificate.objects.filter(pk=certs[2].pk).update(not_after=timezone.now() + timedelta(hours=20))
    call_command("send_expiry_alerts")
    assert len(receiver.requests) == 4 and verify(receiver.requests[-1])["threshold_days"] == 1
    assert len(smtp_sink.messages) == 4


@pytest.mark.django_db
def test_a_rule_may_override_the_thresholds_and_renewed_or_revoked_certificates_are_skipped(
    tenant, subscriber, receiver, settings
):
    settings.CERTMGR_EXPIRY_ALERT_DAYS = [5]
    soon = expiring_in(services.issue(subscriber, actor=SYSTEM).certificate, 20)
    renewed = expiring_in(services.issue(subscriber, actor=SYSTEM).certificate, 10)
    services.issue(subscriber, actor=SYSTEM, renewal_of=renewed)
    revoked = expiring_in(services.issue(subscriber, actor=SYSTEM).certificate, 10)
    services.revoke(revoked, reason="superseded", actor=SYSTEM)
    hook = webhook(tenant.organization, receiver.url).channel
    rule = alerts.create_rule(tenant.organization, name="r", event="expiring", channels=[hook], actor=SYSTEM)

    tasks.send_expiry_alerts()
    assert receiver.requests == []  # the default (5 days) reaches none of them

    alerts.update_rule(rule, thresholds=[25, 21], actor=SYSTEM)  # the renewal expires in 30
    tasks.send_expiry_alerts()
    assert [(p["certificate"]["id"], p["threshold_days"]) for p in map(json.loads, _bodies(receiver))] == [
        (soon.pk, 21)
    ]


def _bodies(server):
    return [r["body"] for r in server.requests]


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_queue_each_threshold_once(tenant, subscriber):
    for days in (20, 10, 3):
        expiring_in(services.issue(subscriber, actor=SYSTEM).certificate, days)
    hook = alerts.create_channel(
        tenant.organization, name="h", kind="webhook", url="https://hooks.example.com/x", actor=SYSTEM
    ).channel
    alerts.create_rule(tenant.organization, name="r", event="expiring", channels=[hook], actor=SYSTEM)
    barrier, errors = threading.Barrier(4), []

    def run():
        try:
            barrier.wait()
            alerts.queue_expiry_alerts(alerts.JobReport())
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(AlertDelivery.objects.values_list("threshold_days", flat=True)) == [7, 14, 30]


# --- events, retries, failures --------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_failed_webhook_is_retried_with_backoff_then_delivered(
    tenant, issued, receiver, api, django_capture_on_commit_callbacks
):
    receiver.statuses = [500, 503]
    hook = webhook(tenant.organization, receiver.url, secret=SECRET).channel
    alerts.create_rule(tenant.organization, name="revoked", event="revoked", channels=[hook], actor=SYSTEM)

    with django_capture_on_commit_callbacks(execute=True):
        before = timezone.now()
        alerts.notify("revoked", certificate=issued, message="key compromise suspected")
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.last_error.startswith("HTTP 500")
    assert before + timedelta(seconds=25) < delivery.next_attempt_at < before + timedelta(seconds=65)

    tasks.deliver_alerts()  # not due yet: nothing is sent
    assert len(receiver.requests) == 1

    shift_due(delivery)
    tasks.deliver_alerts()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error[:8]) == ("pending", 2, "HTTP 503")
    listed = tenant.auditor.client.get(DELIVERIES, {"status": "pending"}).json()["results"]
    assert [(d["id"], d["attempts"], d["last_error"][:8]) for d in listed] == [(delivery.pk, 2, "HTTP 503")]

    with django_capture_on_commit_callbacks(execute=True):  # an operator's "retry now"
        response = tenant.operator.client.post(f"{DELIVERIES}{delivery.pk}/retry/")
    assert response.status_code == 200, response.content
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 3, "")
    assert len(receiver.requests) == 3
    body = verify(receiver.requests[-1])
    assert body["event"] == "revoked" and body["certificate"]["serial"] == issued.serial
    assert body["message"] == "key compromise suspected"


@pytest.mark.django_db
def test_after_the_last_attempt_a_delivery_is_failed_still_listed_and_the_command_fails(
    tenant, issued, receiver, api, settings
):
    settings.CERTMGR_ALERT_MAX_ATTEMPTS = 2
    receiver.statuses = [500] * 10
    hook = webhook(tenant.organization, receiver.url).channel
    alerts.create_rule(tenant.organization, name="r", event="expiring", channels=[hook], actor=SYSTEM)
    expiring_in(issued, 6)

    with pytest.raises(CommandError, match="HTTP 500"):
        call_command("send_expiry_alerts")
    delivery = AlertDelivery.objects.get()
    shift_due(delivery)
    with pytest.raises(CommandError):
        call_command("send_expiry_alerts")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 2, None)
    assert JobRun.objects.filter(name="expiry_alerts", status="partial").count() == 2

    tasks.deliver_alerts()
    assert len(receiver.requests) == 2  # a failed delivery is not retried by itself ...
    listed = tenant.auditor.client.get(DELIVERIES, {"status": "failed"}).json()["results"]
    assert [d["id"] for d in listed] == [delivery.pk]  # ... but stays listed, with its error
    assert listed[0]["last_error"].startswith("HTTP 500")


@pytest.mark.django_db
def test_events_from_the_services_reach_email(
    tenant, subscriber, issued, smtp_sink, django_capture_on_commit_callbacks
):
    mail = email(tenant.organization, ["pki@acme.test"])
    for event in ("issued", "renewal_failed"):
        alerts.create_rule(tenant.organization, name=event, event=event, channels=[mail], actor=SYSTEM)
    alerts.create_rule(tenant.organization, name="revoked", event="revoked", channels=[mail], actor=SYSTEM)
    policy = services.save_policy(tenant.organization, actor=SYSTEM, name="tight", max_validity_days=365)
    services.save_subscriber(None, actor=SYSTEM, instance=subscriber, policy=policy)
    Policy.objects.filter(pk=policy.pk).update(max_validity_days=1)
    with django_capture_on_commit_callbacks(execute=True):  # the services themselves raise the events
        with pytest.raises(services.PolicyRefused):
            services.issue(subscriber, actor=SYSTEM, renewal_of=issued)
        Policy.objects.filter(pk=policy.pk).update(max_validity_days=365)
        renewed = services.issue(subscriber, actor=SYSTEM, renewal_of=issued).certificate
        services.revoke(renewed, reason="superseded", actor=SYSTEM)
    subjects = sorted(
        m["data"].split("Subject: ", 1)[1].split("\n", 1)[0].strip() for m in smtp_sink.messages
    )
    assert subjects == [
        "[certmgr] renewal failed: www.acme.test",
        "[certmgr] www.acme.test renewed",  # a renewal says so (no sync destination: nothing more)
        "[certmgr] www.acme.test revoked",
    ], subjects
    assert "validity" in next(m["data"] for m in smtp_sink.messages if "renewal failed" in m["data"])


@pytest.mark.django_db
def test_slack_payload_is_text_only_and_still_signed(
    tenant, issued, receiver, django_capture_on_commit_callbacks
):
    hook = webhook(tenant.organization, receiver.url, secret=SECRET, slack=True).channel
    alerts.create_rule(tenant.organization, name="r", event="issued", channels=[hook], actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        alerts.notify("issued", certificate=[issued.pk])
    body = verify(receiver.requests[0])
    assert list(body) == ["text"] and "www.acme.test issued" in body["text"]


@pytest.mark.django_db
def test_filters_by_ca_subscriber_and_name_pattern(tenant, hierarchy, subscriber, issued):
    root, inter = hierarchy
    hook = alerts.create_channel(
        tenant.organization, name="h", kind="webhook", url="https://hooks.example.com/x", actor=SYSTEM
    ).channel

    def rule(name, **kw):
        return alerts.create_rule(
            tenant.organization, name=name, event="issued", channels=[hook], actor=SYSTEM, **kw
        )

    assert alerts.rule_matches(rule("any"), issued)
    assert alerts.rule_matches(rule("ca", ca=inter), issued)
    assert not alerts.rule_matches(rule("root", ca=root), issued)
    assert alerts.rule_matches(rule("sub", subscriber=subscriber), issued)
    assert alerts.rule_matches(rule("wild", name_patterns=["*.acme.test"]), issued)
    assert alerts.rule_matches(rule("ip", name_patterns=["10.0.0.5"]), issued)  # any of the names
    assert not alerts.rule_matches(rule("regex", name_patterns=[r"~api\..*"]), issued)
    with pytest.raises(Exception, match="wildcard"):
        rule("bad", name_patterns=["www.*.acme.test"])


# --- tenancy, roles, secrets ----------------------------------------------------------------------------
@pytest.mark.django_db
def test_another_organizations_rules_never_see_this_organizations_certificates(
    tenant, other_tenant, issued, receiver, django_capture_on_commit_callbacks
):
    expiring_in(issued, 2)
    theirs = webhook(other_tenant.organization, receiver.url).channel
    for event in ("expiring", "issued", "revoked"):
        alerts.create_rule(
            other_tenant.organization, name=event, event=event, channels=[theirs], actor=SYSTEM
        )
    with django_capture_on_commit_callbacks(execute=True):
        alerts.notify("issued", certificate=issued)
        services.revoke(issued, reason="superseded", actor=SYSTEM)
        alerts.notify("revoked", certificate=issued)
    tasks.send_expiry_alerts()
    assert receiver.requests == [] and not AlertDelivery.objects.exists()

    ours = email(tenant.organization, ["a@acme.test"])
    with pytest.raises(Exception, match="this organization"):
        alerts.create_rule(
            tenant.organization, name="x", event="issued", channels=[ours, theirs], actor=SYSTEM
        )


@pytest.mark.django_db
def test_api_tenancy_and_roles(tenant, other_tenant, issued, api):
    created = tenant.operator.client.post(
        CHANNELS, {"name": "ops", "kind": "email", "recipients": ["ops@acme.test"]}, format="json"
    )
    assert created.status_code == 201, created.content
    channel_id = created.json()["id"]
    rule = tenant.operator.client.post(
        RULES,
        {
            "name": "exp",
            "event": "expiring",
            "channels": [channel_id],
            "thresholds": [10, 3],
            "ca": issued.ca_id,
        },
        format="json",
    )
    assert rule.status_code == 201, rule.content
    assert rule.json()["thresholds"] == [10, 3] and rule.json()["channels"] == [channel_id]
    delivery = AlertDelivery.objects.create(
        organization=tenant.organization,
        channel_id=channel_id,
        channel_label="ops",
        event="issued",
        subject="s",
    )
    for url, kind in ((CHANNELS, "channel"), (RULES, "rule")):
        detail = f"{url}{channel_id if kind == 'channel' else rule.json()['id']}/"
        assert_isolated(
            tenant,
            other_tenant,
            list_url=url,
            detail_url=detail,
            write_calls=[
                ("post", url, {"name": "n", "kind": "email", "event": "issued"}),
                ("patch", detail, {}),
                ("delete", detail, None),
            ],
        )
    assert_isolated(
        tenant,
        other_tenant,
        list_url=DELIVERIES,
        detail_url=f"{DELIVERIES}{delivery.pk}/",
        write_calls=[("post", f"{DELIVERIES}{delivery.pk}/retry/", None)],
    )
    # Another organization's channel id is unknown, not "forbidden".
    theirs = email(other_tenant.organization, ["b@globex.test"], name="theirs")
    refused = tenant.operator.client.post(
        RULES, {"name": "x", "event": "issued", "channels": [theirs.pk]}, format="json"
    )
    assert refused.status_code == 400 and "channels" in refused.json()["error"]["fields"]


@pytest.mark.django_db
def test_an_auditor_cannot_create_channels_or_rules(tenant):
    with pytest.raises(PermissionDenied):
        alerts.create_channel(
            tenant.organization, name="x", kind="email", recipients=["a@acme.test"], actor=tenant.auditor.user
        )
    with pytest.raises(PermissionDenied):
        alerts.create_rule(tenant.organization, name="x", event="issued", actor=tenant.auditor.user)
    assert not AlertChannel.objects.exists() and not AlertRule.objects.exists()
    assert AuditEvent.objects.filter(action="alert_channel.create", outcome="failure").exists()
    client = Client()
    assert client.login(username=tenant.auditor.user.username, password=PASSWORD)
    assert client.get("/admin/pki/alertchannel/add/").status_code == 403


@pytest.mark.django_db
def test_the_secret_never_appears_in_api_admin_or_audit(tenant, api):
    client = tenant.admin.client
    created = client.post(
        CHANNELS, {"name": "hook", "kind": "webhook", "url": "https://hooks.example.com/a", "secret": SECRET},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201 and created.json()["has_secret"] is True
    pk = created.json()["id"]
    answers = [
        created,
        client.get(CHANNELS),
        client.get(f"{CHANNELS}{pk}/"),
        client.patch(f"{CHANNELS}{pk}/", {"name": "hook2", "secret": SECRET + "-2"}, format="json"),
        client.get("/api/v1/audit-events/"),
    ]
    browser = Client()
    assert browser.login(username=tenant.admin.user.username, password=PASSWORD)
    answers += [browser.get("/admin/pki/alertchannel/"), browser.get(f"/admin/pki/alertchannel/{pk}/change/")]
    for answer in answers:
        assert answer.status_code == 200 or answer.status_code == 201
        assert SECRET.encode() not in answer.content
    assert AlertChannel.objects.get(pk=pk).secret == SECRET + "-2"
    for event in AuditEvent.objects.filter(action__startswith="alert_channel"):
        assert SECRET not in json.dumps(event.details) + event.target_repr
    with connection.cursor() as cursor:  # encrypted at rest
        cursor.execute("SELECT secret FROM pki_alertchannel WHERE id = %s", [pk])
        assert SECRET not in cursor.fetchone()[0]

    generated = client.post(
        CHANNELS, {"name": "gen", "kind": "webhook", "url": "https://h.example.com/"}, format="json"
    )
    shown = generated.json()["secret"]  # shown once ...
    assert len(shown) >= 32 and AlertChannel.objects.get(name="gen").secret == shown
    assert shown.encode() not in client.get(f"{CHANNELS}{generated.json()['id']}/").content  # ... never again


@pytest.mark.django_db
def test_admin_creates_through_the_services_and_retries_deliveries(
    tenant, issued, receiver, django_capture_on_commit_callbacks
):
    browser = Client()
    assert browser.login(username=tenant.operator.user.username, password=PASSWORD)
    org = tenant.organization.pk
    response = browser.post(
        "/admin/pki/alertchannel/add/",
        {"organization": org, "name": "hook", "kind": "webhook", "enabled": "on", "url": receiver.url,
         "new_secret": SECRET, "recipients_text": ""},
    )  # fmt: skip
    assert response.status_code == 302, response.content[:2000]
    hook = AlertChannel.objects.get(name="hook")
    assert hook.secret == SECRET
    response = browser.post(
        "/admin/pki/alertrule/add/",
        {"organization": org, "name": "exp", "event": "expiring", "enabled": "on", "channels": [hook.pk],
         "name_patterns_text": "*.acme.test", "thresholds_text": "30, 7"},
    )  # fmt: skip
    assert response.status_code == 302, response.content[:2000]
    assert AlertRule.objects.get(name="exp").thresholds == [30, 7]
    assert AuditEvent.objects.filter(
        action="alert_rule.create", actor_label=tenant.operator.user.username
    ).exists()

    receiver.statuses = [500]
    expiring_in(issued, 5)
    tasks.send_expiry_alerts()
    delivery = AlertDelivery.objects.get()
    page = browser.get("/admin/pki/alertdelivery/", {"status": "pending"})
    assert page.status_code == 200 and b"HTTP 500" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        response = browser.post(
            "/admin/pki/alertdelivery/", {"action": "retry_now", "_selected_action": [delivery.pk]}
        )
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == "sent" and verify(receiver.requests[-1])["threshold_days"] == 7
    assert browser.get(f"/admin/pki/alertdelivery/{delivery.pk}/change/").status_code == 200


@pytest.mark.django_db
def test_a_webhook_url_is_a_secret_shown_only_as_a_hint(tenant, api):
    """Slack-style URLs carry their credential: encrypted at rest, never shown back, not in the audit log."""
    token = "T000/B000/planted7f3aXyZ9"
    url = f"https://hooks.example.com/services/{token}"
    client = tenant.admin.client
    created = client.post(
        CHANNELS, {"name": "slack", "kind": "webhook", "url": url, "slack": True}, format="json"
    )
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    assert created.json()["url_hint"] == "https://hooks.example.com/…XyZ9" and "url" not in created.json()
    # a change without the URL keeps it
    assert client.patch(f"{CHANNELS}{pk}/", {"name": "slack2"}, format="json").status_code == 200
    assert AlertChannel.objects.get(pk=pk).url == url
    browser = Client()
    assert browser.login(username=tenant.admin.user.username, password=PASSWORD)
    answers = [
        created,
        client.get(CHANNELS),
        client.get(f"{CHANNELS}{pk}/"),
        client.get("/api/v1/audit-events/"),
        browser.get("/admin/pki/alertchannel/"),
        browser.get(f"/admin/pki/alertchannel/{pk}/change/"),
    ]
    for answer in answers:
        assert answer.status_code in (200, 201)
        assert token.encode() not in answer.content, answer.request["PATH_INFO"]
    assert b"hooks.example.com/\xe2\x80\xa6XyZ9" in answers[-1].content  # the hint is what the admin shows
    for event in AuditEvent.objects.filter(action__startswith="alert_channel"):
        assert token not in json.dumps(event.details)
    with connection.cursor() as cursor:  # encrypted at rest
        cursor.execute("SELECT url FROM pki_alertchannel WHERE id = %s", [pk])
        assert token not in cursor.fetchone()[0]
    # the admin form keeps the stored URL when left empty
    form = browser.post(
        f"/admin/pki/alertchannel/{pk}/change/",
        {"name": "slack3", "enabled": "on", "url": "", "slack": "on", "recipients_text": ""},
    )
    assert form.status_code == 302, form.content[:1500]
    assert AlertChannel.objects.get(pk=pk).url == url


# --- audit checkpoints ----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_audit_checkpoints_go_to_the_channels_of_audit_checkpoint_rules(
    tenant, other_tenant, receiver, tmp_path, django_capture_on_commit_callbacks
):
    from certmgr import audit_checkpoints

    hook = webhook(tenant.organization, receiver.url, secret=SECRET).channel
    alerts.create_rule(
        tenant.organization, name="anchor", event="audit_checkpoint", channels=[hook], actor=SYSTEM
    )
    with django_capture_on_commit_callbacks(execute=True):
        written = audit_checkpoints.write_checkpoints(stores=[audit_checkpoints.DirectoryStore(tmp_path)])
    mine = next(c for c in written if c.chain == tenant.organization.pk)
    [request] = receiver.requests  # the other organization has no such rule: nothing for it
    body = verify(request)
    assert body["event"] == "audit_checkpoint" and body["organization"] == tenant.organization.pk
    assert body["checkpoint"] == json.loads((tmp_path / mine.name).read_bytes())
    assert body["checkpoint"]["sequence"] == mine.sequence and body["checkpoint"]["signature"]
