"""/healthz (database, broker, worker heartbeat) and the structured log lines with the request's context."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule

from certmgr.logs import logging_config
from tests.dnsservers import free_port


def fresh_schedules(**delta) -> None:
    Schedule.objects.update(next_run=timezone.now() + timedelta(**delta))


@pytest.mark.django_db
def test_healthz_healthy_and_a_stale_worker():
    client = Client()
    fresh_schedules(minutes=1)
    response = client.get("/healthz")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok" and body["failing"] == []
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"] == {"ok": True, "kind": "database"}
    assert body["checks"]["worker"]["heartbeat_age_seconds"] == 0
    assert "no-cache" in response["Cache-Control"]

    # No scheduler for ten minutes: a worker is down.
    Schedule.objects.filter(name="certmgr.auth_failures").update(
        next_run=timezone.now() - timedelta(minutes=10)
    )
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["worker"]
    assert 595 < body["checks"]["worker"]["heartbeat_age_seconds"] < 700
    assert body["checks"]["worker"]["max_age_seconds"] == settings.CERTMGR_HEALTH_WORKER_MAX_AGE

    # A real scheduler pass (what a running cluster does) brings the heartbeat back.
    from django_q.scheduler import scheduler

    scheduler(broker=get_broker())
    assert client.get("/healthz").status_code == 200

    Schedule.objects.all().delete()
    body = client.get("/healthz").json()
    assert body["failing"] == ["worker"] and "setup_schedules" in body["checks"]["worker"]["reason"]


@pytest.mark.django_db
def test_healthz_broker_down_names_it_without_details(monkeypatch):
    """A Redis broker that does not answer (a real client at a closed port): 503 "broker", and the answer
    carries no address or error text."""
    port = free_port()
    dead = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

    class DeadBroker:
        def ping(self):
            return dead.ping()

    monkeypatch.setattr("django_q.brokers.get_broker", lambda *a, **k: DeadBroker())
    fresh_schedules(minutes=1)
    response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"] == {"ok": False, "reason": "ConnectionError"}
    assert str(port) not in response.content.decode() and "127.0.0.1" not in response.content.decode()


@pytest.fixture
def log_lines():
    """The root logger through certmgr's production (JSON) formatter into a buffer."""
    buffer = io.StringIO()

    def configure(config: dict) -> None:
        # dictConfig adds a logger's filters to those it has: drop them so each is applied once.
        for name in config["loggers"]:
            logging.getLogger(name).filters.clear()
        logging.config.dictConfig(config)

    def use(json_lines: bool) -> io.StringIO:
        config = logging_config(json=json_lines, level="INFO")
        config["handlers"]["console"]["stream"] = buffer
        configure(config)
        buffer.seek(0)
        buffer.truncate()
        return buffer

    yield use
    configure(settings.LOGGING)


@pytest.mark.django_db
def test_production_logs_are_json_with_the_request_context(tenant, log_lines):
    buffer = log_lines(True)
    response = tenant.operator.client.get("/api/v1/tokens/999999/", HTTP_X_REQUEST_ID="req-abcdef123")
    assert response.status_code == 404
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]  # every line is one JSON object
    refused = next(line for line in lines if line["logger"] == "django.request")
    assert refused["event"] == "404 GET Not Found: /api/v1/tokens/999999/"  # certmgr/log_filters.py
    assert refused["level"] == "warning" and refused["timestamp"].endswith("Z")
    assert refused["request_id"] == "req-abcdef123" == response["X-Request-ID"]
    assert refused["organization"] == "acme"
    assert refused["actor"].startswith("token ") and "operator token" in refused["actor"]
    assert tenant.operator.token not in buffer.getvalue()

    # A signed-in admin user: their name, and their organization (they have one).
    buffer.seek(0)
    buffer.truncate()
    client = Client()
    client.force_login(tenant.admin.user)
    client.get("/admin/no-such-page/")
    line = json.loads(buffer.getvalue().splitlines()[-1])
    assert line["actor"] == tenant.admin.user.username and line["organization"] == "acme"
    assert len(line["request_id"]) == 32

    # The worker's own lines (django-q2 keeps a logger apart) are JSON too.
    logging.getLogger("django-q").info("Q Cluster test-cluster running.")
    worker = json.loads(buffer.getvalue().splitlines()[-1])
    assert worker["logger"] == "django-q" and worker["event"] == "Q Cluster test-cluster running."


@pytest.mark.django_db
def test_development_logs_are_readable_lines(tenant, log_lines):
    buffer = log_lines(False)
    tenant.operator.client.get("/api/v1/tokens/999999/", HTTP_X_REQUEST_ID="req-abcdef123")
    text = buffer.getvalue()
    line = next(line for line in text.splitlines() if "Not Found" in line)
    assert not line.startswith("{")
    assert "request_id=req-abcdef123" in line and "organization=acme" in line and "[warning" in line
    logging.getLogger("certmgr.test").info("plain %s", "message")
    assert "plain message" in buffer.getvalue()
