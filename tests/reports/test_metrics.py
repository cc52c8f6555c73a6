"""/metrics: Prometheus text format, behind an API token or an allow-listed address; a token sees its own
organization; per-subscriber series for the current certificate only, capped; a fixed number of queries."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from acmeca.models import AcmeOrder
from certmgr.models import AuditEvent
from pki import models as pki_models
from pki import services
from pki.models import CertificateAuthority
from reports import metrics
from tests.conftest import SYSTEM, require_server
from tests.pki import conftest as pki_fixtures
from tests.reports.test_dashboard import make_cert

# The PKI fixtures, shared with tests/pki/ (a conftest there is not seen from here).
hierarchy, subscriber, issued = pki_fixtures.hierarchy, pki_fixtures.subscriber, pki_fixtures.issued
pytestmark = pytest.mark.django_db
URL = "/metrics"
# One sample line of the text format: name, optional {label="value",...}, a value.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\\\|\\"|\\n)*",?)*\})? '
    r"(-?[0-9.e+-]+|[+-]Inf|NaN)$"
)


def scrape(client: Client, **headers) -> str:
    response = client.get(URL, **headers)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == metrics.CONTENT_TYPE
    return response.content.decode()


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric; labels in name order (as prometheus_client writes them)."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line[len(name) :].rpartition(" ")
            found[labels] = float(value)
    return found


def assert_well_formed(text: str) -> None:
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert SAMPLE.match(line), f"not a valid sample line: {line!r}"


def test_no_credentials_is_401(tenant):
    response = Client().get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_bad_token_is_401_and_audited(tenant):
    from datetime import timedelta

    from django.utils import timezone

    from certmgr import auth_failures
    from certmgr.jobs import JobReport

    response = Client().get(URL, **bearer("cm_abcdefgh_notthesecret"))
    assert response.status_code == 401
    # counted per address and minute, audited by the minute's flush
    auth_failures.flush_now(JobReport(), now=timezone.now() + timedelta(minutes=1))
    assert AuditEvent.objects.filter(action="auth.token_rejected").exists()


def test_token_sees_its_organization_only(tenant, other_tenant, issued):
    other_ca = CertificateAuthority.objects.create(
        organization=other_tenant.organization, name="Theirs", kind="acme"
    )
    make_cert(other_tenant.organization, ca=other_ca)

    text = scrape(Client(), **bearer(tenant.auditor.token))

    assert_well_formed(text)
    expiry = samples(text, "certmgr_certificate_expiration_timestamp_seconds")
    assert expiry == {'{ca="Issuing",organization="acme",subscriber="web"}': issued.not_after.timestamp()}
    renewal = samples(text, "certmgr_certificate_renewal_timestamp_seconds")
    assert renewal == {
        '{ca="Issuing",organization="acme",subscriber="web"}': issued.next_renewal_at.timestamp()
    }
    assert samples(text, "certmgr_certificates") == {'{organization="acme",status="active"}': 1}
    assert samples(text, "certmgr_ca_certificates") == {'{ca="Issuing",organization="acme"}': 1}
    assert "globex" not in text and "Theirs" not in text


def test_allow_listed_address_sees_every_organization(settings, tenant, other_tenant, issued):
    settings.CERTMGR_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "127.0.0.0/8"]
    make_cert(other_tenant.organization)

    text = scrape(Client(REMOTE_ADDR="127.0.0.1"))

    counts = samples(text, "certmgr_certificates")
    assert counts == {
        '{organization="acme",status="active"}': 1,
        '{organization="globex",status="active"}': 1,
    }
    assert scrape(Client(REMOTE_ADDR="::ffff:10.1.2.3"))  # an IPv4-mapped address counts as IPv4
    assert Client(REMOTE_ADDR="192.168.1.1").get(URL).status_code == 401
    settings.CERTMGR_METRICS_ALLOWED_NETWORKS = []
    assert Client(REMOTE_ADDR="127.0.0.1").get(URL).status_code == 401


def test_current_certificate_is_the_newest_active(tenant, subscriber, issued):
    org, ca = tenant.organization, subscriber.ca
    make_cert(org, ca=ca, subscriber=subscriber, days=90, status="revoked")  # ends last, but revoked
    newest_active = make_cert(org, ca=ca, subscriber=subscriber, days=60, renew_in=40)
    make_cert(org, ca=ca, subscriber=subscriber, days=-30, status="expired")

    text = scrape(Client(), **bearer(tenant.auditor.token))

    expiry = samples(text, "certmgr_certificate_expiration_timestamp_seconds")
    assert list(expiry.values()) == [newest_active.not_after.timestamp()]
    renewal = samples(text, "certmgr_certificate_renewal_timestamp_seconds")
    assert list(renewal.values()) == [newest_active.next_renewal_at.timestamp()]


def test_subscribers_are_capped(settings, tenant, hierarchy, subscriber, issued):
    second = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="api", ca=hierarchy[1], common_name="api.acme.test"
    )
    services.issue(second, actor=SYSTEM)
    settings.CERTMGR_METRICS_MAX_SUBSCRIBERS = 1

    text = scrape(Client(), **bearer(tenant.auditor.token))

    assert len(samples(text, "certmgr_certificate_expiration_timestamp_seconds")) == 1
    assert 'subscriber="web"' in text  # lowest id first: the same series at every scrape
    assert samples(text, "certmgr_metrics_subscriber_limit") == {"": 1}
    assert samples(text, "certmgr_metrics_subscribers_truncated") == {"": 1}
    assert "# HELP certmgr_metrics_subscriber_limit" in text

    settings.CERTMGR_METRICS_MAX_SUBSCRIBERS = 10
    text = scrape(Client(), **bearer(tenant.auditor.token))
    assert len(samples(text, "certmgr_certificate_expiration_timestamp_seconds")) == 2
    assert samples(text, "certmgr_metrics_subscribers_truncated") == {"": 0}


def test_acme_orders_and_durations(tenant, hierarchy):
    ca = CertificateAuthority.objects.create(organization=tenant.organization, name="LE", kind="acme")
    now = timezone.now()
    for seconds, step in ((3, "done"), (40, "done"), (7200, "failed"), (1, "queued")):
        AcmeOrder.objects.create(
            organization=tenant.organization,
            ca=ca,
            identifiers=[{"type": "dns", "value": "a.acme.test"}],
            challenge_type="dns-01",
            step=step,
            created_at=now - timedelta(seconds=seconds),
            finished_at=now if step != "queued" else None,
            requests_ok=10,
            requests_client_error=1 if step == "failed" else 0,
            bad_nonces=1 if step == "failed" else 0,
        )

    text = scrape(Client(), **bearer(tenant.auditor.token))

    assert_well_formed(text)
    assert samples(text, "certmgr_acme_orders_total") == {
        '{ca="LE",organization="acme",outcome="done"}': 2,
        '{ca="LE",organization="acme",outcome="failed"}': 1,
    }
    buckets = samples(text, "certmgr_acme_order_duration_seconds_bucket")
    assert buckets['{ca="LE",le="1.0",organization="acme",outcome="done"}'] == 0
    assert buckets['{ca="LE",le="5.0",organization="acme",outcome="done"}'] == 1
    assert buckets['{ca="LE",le="60.0",organization="acme",outcome="done"}'] == 2
    assert buckets['{ca="LE",le="3600.0",organization="acme",outcome="failed"}'] == 0
    assert buckets['{ca="LE",le="+Inf",organization="acme",outcome="failed"}'] == 1
    total = samples(text, "certmgr_acme_order_duration_seconds_sum")[
        '{ca="LE",organization="acme",outcome="done"}'
    ]
    assert float(total) == pytest.approx(43, abs=0.1)
    assert "# TYPE certmgr_acme_order_duration_seconds histogram" in text
    assert samples(text, "certmgr_acme_requests_total") == {
        '{ca="LE",organization="acme",status="2xx"}': 40,
        '{ca="LE",organization="acme",status="4xx"}': 1,
        '{ca="LE",organization="acme",status="5xx"}': 0,
    }
    assert samples(text, "certmgr_acme_bad_nonces_total") == {'{ca="LE",organization="acme"}': 1}


def test_renewal_failures_per_subscriber(tenant, subscriber):
    services.note_issue_failure(subscriber.pk, "dns", "no such zone")
    services.note_issue_failure(subscriber.pk, "dns", "no such zone")
    text = scrape(Client(), **bearer(tenant.auditor.token))
    assert samples(text, "certmgr_renewal_failures") == {'{organization="acme",subscriber="web"}': 2}


@pytest.mark.skipif(not hasattr(pki_models, "AlertDelivery"), reason="alert models not built yet")
def test_alert_deliveries_by_status(tenant):
    for status in ("sent", "sent", "failed"):
        pki_models.AlertDelivery.objects.create(
            organization=tenant.organization, event="issued", subject="s", status=status
        )
    text = scrape(Client(), **bearer(tenant.auditor.token))
    assert samples(text, "certmgr_alert_deliveries") == {
        '{organization="acme",status="failed"}': 1,
        '{organization="acme",status="sent"}': 2,
    }


def test_label_values_and_help_are_escaped():
    out = metrics.Exposition()
    out.family("m", "gauge", "help with \\ and\na newline")
    out.sample("m", (("name", 'we"ird\\\n'),), 1.5)
    out.sample("m", (), float("inf"))
    assert out.text() == (
        '# HELP m help with \\\\ and\\na newline\n# TYPE m gauge\nm{name="we\\"ird\\\\\\n"} 1.5\nm +Inf\n'
    )
    assert_well_formed(out.text())


PROMTOOL = shutil.which("promtool")  # Debian's prometheus package


def promtool_check(text: str) -> None:
    if PROMTOOL is None:
        require_server(False, "promtool is not installed (Debian package prometheus)")
        return
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_full_scrape_passes_promtool_and_offers_cert_managers_names(
    settings, tenant, hierarchy, subscriber
):
    org = tenant.organization
    make_cert(org, ca=hierarchy[1], subscriber=subscriber, days=30, renew_in=10)
    never = services.save_subscriber(
        org, actor=SYSTEM, name="never-issued", ca=hierarchy[1], common_name="n.acme.test"
    )
    acme = CertificateAuthority.objects.create(organization=org, name="LE", kind="acme")
    now = timezone.now()
    order = AcmeOrder.objects.create(
        organization=org,
        ca=acme,
        step="done",
        identifiers=[{"type": "dns", "value": "a.acme.test"}],
        requests_ok=7,
        requests_client_error=2,
        requests_server_error=1,
    )
    AcmeOrder.objects.filter(pk=order.pk).update(created_at=now - timedelta(seconds=30), finished_at=now)
    subscriber.renewal_failures = 1
    subscriber.save(update_fields=["renewal_failures"])
    text = scrape(Client(), **bearer(tenant.auditor.token))
    promtool_check(text)
    for family, kind in (
        ("certmgr_certificate_expiration_timestamp_seconds", "gauge"),
        ("certmgr_certificate_renewal_timestamp_seconds", "gauge"),
        ("certmgr_certificate_ready_status", "gauge"),
        ("certmgr_acme_client_request", "summary"),
        ("certmgr_acme_orders_total", "counter"),
        ("certmgr_acme_order_duration_seconds", "histogram"),
    ):
        assert f"# TYPE {family} {kind}\n" in text
    assert samples(text, "certmgr_certificate_ready_status") == {
        f'{{condition="{c}",organization="acme",subscriber="{name}"}}': value
        for name, ready in (("web", True), (never.name, False))
        for c, value in (("False", float(not ready)), ("True", float(ready)), ("Unknown", 0.0))
    }
    assert samples(text, "certmgr_acme_client_request_count") == {
        '{ca="LE",organization="acme",status="2xx"}': 7,
        '{ca="LE",organization="acme",status="4xx"}': 2,
        '{ca="LE",organization="acme",status="5xx"}': 1,
    }


def test_a_scrape_is_reused_for_the_cache_interval(settings, tenant, hierarchy, subscriber):
    from django.core.cache import cache

    cache.clear()
    settings.CERTMGR_METRICS_CACHE_SECONDS = 60
    client = Client()
    first = scrape(client, **bearer(tenant.auditor.token))
    make_cert(tenant.organization, ca=hierarchy[1], subscriber=subscriber, days=30, renew_in=10)
    assert scrape(client, **bearer(tenant.auditor.token)) == first  # within the interval: the same body
    settings.CERTMGR_METRICS_CACHE_SECONDS = 0
    assert samples(scrape(client, **bearer(tenant.auditor.token)), "certmgr_certificates") == {
        '{organization="acme",status="active"}': 1
    }
    cache.clear()


def test_query_count_does_not_grow_with_rows(tenant, hierarchy, subscriber, django_assert_num_queries):
    org = tenant.organization
    services.set_ocsp(hierarchy[1], enabled=True, actor=SYSTEM)  # (without an OCSP CA: two fewer queries)
    for days in range(1, 60, 3):
        make_cert(org, ca=hierarchy[1], subscriber=subscriber, days=days, renew_in=days / 2)
    # organizations, CAs, subscribers, their certificates, counts by status, by CA, failures, orders,
    # ACME requests (+ alert deliveries), OCSP answer counts, coverage and oldest response, the ACME
    # server's orders, validation durations and refusal counts
    expected = 9 + hasattr(pki_models, "AlertDelivery") + 3 + 3  # OCSP: answers, coverage, oldest
    with django_assert_num_queries(expected):
        metrics.collect({org.pk})
    for i in range(5):
        other = services.save_subscriber(
            org, actor=SYSTEM, name=f"s{i}", ca=hierarchy[1], common_name="x.acme.test"
        )
        make_cert(org, ca=hierarchy[1], subscriber=other, days=30, renew_in=10)
    with django_assert_num_queries(expected):
        metrics.collect({org.pk})


# --- the OCSP responder -----------------------------------------------------------------------------------
@pytest.fixture
def no_tally():
    """This process's OCSP answer counts of earlier tests (whose CAs are gone) dropped."""
    from pki.services import ocsp as ocsp_service

    ocsp_service._TALLY.take()


def _ocsp_get(client: Client, ca_id: int, der: bytes):
    import base64
    from urllib.parse import quote

    return client.get(f"/ocsp/{ca_id}/{quote(base64.b64encode(der).decode(), safe='')}")


def test_ocsp_answers_by_status_coverage_and_oldest_response(settings, tenant, hierarchy, no_tally):
    """Every answer of the responder view is counted by status and CA (no CA for an id that is not ours,
    shown to the monitoring network only); coverage counts the certificates with a fresh stored response."""
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp as cocsp

    from pki.models import OcspRequestCount, OcspResponse
    from pki.services import ocsp as ocsp_service
    from tests.pki.conftest import make_subscriber

    settings.CERTMGR_METRICS_CACHE_SECONDS = 0
    settings.CERTMGR_OCSP_COUNT_FLUSH_SECONDS = 0  # every request writes its count
    settings.CERTMGR_METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    root, inter = hierarchy
    inter = services.set_ocsp(inter, enabled=True, actor=SYSTEM)
    certs = [
        services.issue(make_subscriber(tenant, inter, f"web{i}"), actor=SYSTEM).certificate for i in range(3)
    ]
    ocsp_service.presign(inter)
    issuer = cx509.load_pem_x509_certificate(inter.certificate_pem.encode())

    def request(pem: str | None = None, serial: int | None = None) -> bytes:
        builder = cocsp.OCSPRequestBuilder()
        if pem is not None:
            builder = builder.add_certificate(
                cx509.load_pem_x509_certificate(pem.encode()), issuer, hashes.SHA1()
            )
        else:
            name_hash, key_hash = ocsp_service._issuer_hashes(inter, "sha1")
            builder = builder.add_certificate_by_hash(name_hash, key_hash, serial, hashes.SHA1())
        return builder.build().public_bytes(serialization.Encoding.DER)

    client = Client()
    services.revoke(certs[1], reason="key_compromise", actor=SYSTEM)  # its stored answer goes
    ocsp_service.presign(inter, [certs[1].serial])  # what the revocation's commit enqueues
    for _ in range(2):
        assert _ocsp_get(client, inter.pk, request(certs[0].certificate_pem)).status_code == 200  # good
    _ocsp_get(client, inter.pk, request(certs[1].certificate_pem))  # revoked
    _ocsp_get(client, inter.pk, request(serial=0x7E57AB1E))  # unknown
    client.post(f"/ocsp/{inter.pk}/", b"garbage", content_type="application/ocsp-request")  # malformed
    _ocsp_get(client, root.pk, request(certs[0].certificate_pem))  # unauthorized: OCSP off at the root
    _ocsp_get(client, 987654, request(certs[0].certificate_pem))  # unauthorized: no such CA
    # a third certificate without a stored answer, and one stored answer an hour old
    OcspResponse.objects.filter(ca=inter, serial=certs[2].serial).delete()
    hour_ago = timezone.now() - timedelta(hours=1)
    OcspResponse.objects.filter(ca=inter, serial=certs[0].serial).update(this_update=hour_ago)

    text = scrape(Client())  # the monitoring network: every organization
    assert_well_formed(text)
    promtool_check(text)
    assert "# TYPE certmgr_ocsp_responses_total counter\n" in text
    ca = '{ca="Issuing",organization="acme",'
    assert samples(text, "certmgr_ocsp_responses_total") == {
        ca + 'status="good"}': 2,
        ca + 'status="malformedRequest"}': 1,
        ca + 'status="revoked"}': 1,
        ca + 'status="unknown"}': 1,
        '{ca="Root",organization="acme",status="unauthorized"}': 1,
        '{ca="",organization="",status="unauthorized"}': 1,
    }
    assert samples(text, "certmgr_ocsp_certificates") == {'{ca="Issuing",organization="acme"}': 3}
    assert samples(text, "certmgr_ocsp_presigned_certificates") == {'{ca="Issuing",organization="acme"}': 2}
    assert samples(text, "certmgr_ocsp_presigned_ratio") == {'{ca="Issuing",organization="acme"}': 2 / 3}
    (age,) = samples(text, "certmgr_ocsp_oldest_response_age_seconds").values()
    assert 3600 <= age < 3700
    # a token sees its organization's CAs only: not the requests for a CA id that is not ours
    scoped = samples(scrape(Client(), **bearer(tenant.auditor.token)), "certmgr_ocsp_responses_total")
    assert '{ca="",organization="",status="unauthorized"}' not in scoped and len(scoped) == 5
    assert OcspRequestCount.objects.filter(ca=None).count() == 1


def test_ocsp_counts_are_kept_in_memory_between_flushes(settings, tenant, hierarchy, no_tally):
    """With a flush interval, the request path writes nothing until it has passed; then the whole tally."""
    from pki.models import OcspRequestCount
    from pki.services import ocsp as ocsp_service

    settings.CERTMGR_OCSP_COUNT_FLUSH_SECONDS = 3600
    client = Client()
    for _ in range(3):
        client.post(f"/ocsp/{hierarchy[1].pk}/", b"garbage", content_type="application/ocsp-request")
    assert not OcspRequestCount.objects.exists()
    ocsp_service.flush_counts()
    assert list(OcspRequestCount.objects.values_list("ca_id", "status", "count")) == [
        (hierarchy[1].pk, "malformedRequest", 3)
    ]


@pytest.mark.django_db(transaction=True)
def test_ocsp_counts_add_up_over_gunicorn_workers(settings, tenant, hierarchy, no_tally):
    """Two gunicorn workers answer; each keeps its counts in memory (a flush interval longer than the test)
    and adds them when it stops: the table holds every request once, whichever worker answered it."""
    import http.client
    import os
    import socket
    import sys
    import time
    from pathlib import Path

    from pki.models import OcspRequestCount

    gunicorn = Path(sys.executable).with_name("gunicorn")
    require_server(gunicorn.exists(), "gunicorn is not installed in this virtualenv")
    ca = services.set_ocsp(hierarchy[1], enabled=True, actor=SYSTEM)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    database = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + settings.DATABASES["default"]["NAME"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database,
        "CERTMGR_OCSP_COUNT_FLUSH_SECONDS": "3600",
    }
    command = [str(gunicorn), "certmgr.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pids = set()
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        for _ in range(40):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", f"/ocsp/{ca.pk}/", b"garbage", {"Content-Type": "application/ocsp-request"})
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b"\x30\x03\x0a\x01\x01"  # malformedRequest
            conn.close()
        pids = {
            int(p)
            for p in subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
            ).stdout.split()
        }
        assert not OcspRequestCount.objects.exists()  # still in the workers' memory
    finally:
        proc.terminate()  # gunicorn's graceful stop: each worker exits, adding its counts
        _, stderr = proc.communicate(timeout=60)
    assert len(pids) == 2, stderr
    assert list(OcspRequestCount.objects.values_list("ca_id", "status", "count")) == [
        (ca.pk, "malformedRequest", 40)
    ], stderr.decode()[-2000:]
