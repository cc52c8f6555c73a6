"""ARI (RFC 9773) against a real ACME server that offers renewalInfo: acme2certifier on loopback.

Pebble (tests/acmeca/test_renewal.py) covers the fallback; here the CA suggests a window, and certmgr must
renew inside it, ask again when told, and say which certificate a renewal replaces.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from acmeca import ari
from acmeca.models import AcmeOrder, AcmeSettings
from certmgr.jobs import JobReport
from certmgr.models import AuditEvent
from pki import lifecycle
from pki import services as pki_services
from pki.models import Certificate
from tests import ari_testbed
from tests.acmeca.conftest import acme_subscriber, make_acme_ca
from tests.outcomes import ordered

acme2certifier = ari_testbed.acme2certifier

pytestmark = pytest.mark.django_db(transaction=True)

_counter = itertools.count()


@pytest.fixture
def ari_ca(tenant, acme2certifier, settings):
    # http-01 without a DNS connection: acme2certifier validates nothing here (see tests/ari_testbed.py).
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.CERTMGR_ACME_RETRY_BASE_SECONDS = 0.2
    return make_acme_ca(tenant, acme2certifier, name="acme2certifier", challenge_type="http-01")


def _issue(tenant, ca) -> Certificate:
    name = f"ari-{next(_counter)}-{uuid.uuid4().hex[:8]}.example.test"
    sub = acme_subscriber(tenant, ca, [name])
    order = ordered(pki_services.issue(sub, actor=tenant.operator.user))  # the worker runs inline in tests
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    return order.certificate


def _window(server: ari_testbed.Acme2CertifierServer, cert: Certificate) -> tuple[datetime, datetime, str]:
    """The server's own suggested window for ``cert`` and its Retry-After, asked with plain HTTP."""
    body, response = server.renewal_info(ari.cert_id(cert.certificate_pem))
    window = body["suggestedWindow"]
    start, end = (datetime.fromisoformat(window[k].replace("Z", "+00:00")) for k in ("start", "end"))
    return start, end, response.headers.get("Retry-After", "")


def test_directory_offers_renewal_info(acme2certifier, ari_ca):
    assert "renewalInfo" in acme2certifier.directory()
    assert ari.supports_ari(AcmeSettings.objects.get(ca=ari_ca))


def test_server_knows_certmgr_certificate_id(tenant, acme2certifier, ari_ca):
    # acme2certifier finds the certificate by the AKI and serial certmgr puts in the id (RFC 9773 §4.1).
    cert = _issue(tenant, ari_ca)
    start, end, retry_after = _window(acme2certifier, cert)
    lifetime = cert.not_after - cert.not_before
    assert abs(start - (cert.not_before + lifetime * ari_testbed.RENEWAL_THRESHOLD_PCT / 100)) < timedelta(
        minutes=2
    )
    assert end - start == timedelta(seconds=ari_testbed.WINDOW_SECONDS)
    assert retry_after == str(ari_testbed.RETRY_AFTER_SECONDS)


def test_sweep_stores_a_time_inside_the_suggested_window(tenant, acme2certifier, ari_ca):
    cert = _issue(tenant, ari_ca)
    lifetime = cert.not_after - cert.not_before
    start, end, _ = _window(acme2certifier, cert)
    fallback = cert.not_before + lifetime * 2 / 3
    assert not start <= fallback <= end  # the window must be told apart from the fallback

    report = JobReport()
    before = timezone.now()
    ari.refresh_renewal_times(report, now=before)
    after = timezone.now()

    assert report.counts.get("ari_checked") == 1 and report.counts.get("ari_windows") == 1, report.errors
    cert.refresh_from_db()
    assert cert.ari_checked_at == before
    assert start <= cert.next_renewal_at <= end
    # Retry-After (two hours here) sets the next check, not the library's six-hour default.
    retry = timedelta(seconds=ari_testbed.RETRY_AFTER_SECONDS)
    assert (
        before + retry - timedelta(seconds=2)
        <= cert.ari_next_check_at
        <= after + retry + timedelta(seconds=2)
    )

    # Until that time the CA is not asked again.
    stored = cert.next_renewal_at
    again = JobReport()
    ari.refresh_renewal_times(again, now=timezone.now())
    assert "ari_checked" not in again.counts
    cert.refresh_from_db()
    assert cert.next_renewal_at == stored and cert.ari_checked_at == before


def test_nothing_renews_before_the_window(tenant, acme2certifier, ari_ca):
    cert = _issue(tenant, ari_ca)
    start, _, _ = _window(acme2certifier, cert)
    report = JobReport()
    lifecycle.run_renewals(report, at=start - timedelta(minutes=1))
    assert report.counts.get("ari_windows") == 1, report.errors
    assert not {"ordered", "renewed"} & set(report.counts)
    assert not AcmeOrder.objects.filter(renewal_of=cert).exists()


def test_renewal_inside_the_window_replaces_the_old_certificate(tenant, acme2certifier, ari_ca):
    old = _issue(tenant, ari_ca)
    _, end, _ = _window(acme2certifier, old)
    old_id = ari.cert_id(old.certificate_pem)
    orders_before = len(acme2certifier.posted("/acme/neworders"))

    report = JobReport()
    lifecycle.run_renewals(report, at=end)  # the whole window has come, wherever the random time fell

    assert report.counts.get("ari_windows") == 1 and report.counts.get("ordered") == 1, report.errors
    order = AcmeOrder.objects.get(renewal_of=old)
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    new = order.certificate
    assert new.renewed_from_id == old.pk and new.pk != old.pk
    old.refresh_from_db()
    assert old.next_renewal_at is None  # only the newest certificate is renewed from now on

    # What went over the wire: the renewal's newOrder named the old certificate by its ARI id.
    sent = acme2certifier.posted("/acme/neworders")[orders_before:]
    assert [p.get("replaces") for p in sent] == [old_id]
    submitted = AuditEvent.objects.get(action="acme.order.submitted", target_id=str(order.pk))
    assert submitted.details["replaces"] == old_id

    # The new certificate gets its own window from the CA at its next check.
    again = JobReport()
    ari.refresh_renewal_times(again, now=timezone.now())
    new.refresh_from_db()
    start, end, _ = _window(acme2certifier, new)
    assert new.ari_checked_at is not None and start <= new.next_renewal_at <= end


def test_first_order_carries_no_replaces(tenant, acme2certifier, ari_ca):
    before = len(acme2certifier.posted("/acme/neworders"))
    _issue(tenant, ari_ca)
    sent = acme2certifier.posted("/acme/neworders")[before:]
    assert len(sent) == 1 and "replaces" not in sent[0]


def test_an_ari_failure_keeps_the_fallback_time(tenant, acme2certifier, ari_ca):
    cert = _issue(tenant, ari_ca)
    fallback = cert.next_renewal_at
    acme2certifier.forget(cert.certificate_pem)  # renewalInfo now answers 404 for it

    report = JobReport()
    ari.refresh_renewal_times(report, now=timezone.now())

    assert "ari_checked" not in report.counts
    assert len(report.errors) == 1 and f"certificate {cert.pk}" in report.errors[0]
    cert.refresh_from_db()
    assert cert.next_renewal_at == fallback and cert.ari_checked_at is None


def test_an_ari_failure_is_not_asked_again_at_every_sweep(tenant, acme2certifier, ari_ca):
    cert = _issue(tenant, ari_ca)
    acme2certifier.forget(cert.certificate_pem)
    ari.refresh_renewal_times(JobReport(), now=timezone.now())
    cert.refresh_from_db()
    assert cert.ari_next_check_at is not None and cert.ari_next_check_at > timezone.now() + timedelta(hours=1)

    again = JobReport()
    ari.refresh_renewal_times(again, now=timezone.now() + timedelta(minutes=10))
    assert not again.errors
