"""Renewal of ACME certificates by the sweep, against Pebble (which has no ARI: the fallback rules apply)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from acmeca import ari
from acmeca.models import AcmeOrder
from certmgr.jobs import JobReport
from pki import lifecycle
from pki import services as pki_services
from pki.models import Certificate
from tests.acmeca.conftest import acme_subscriber, unique_name
from tests.outcomes import ordered

pytestmark = pytest.mark.django_db(transaction=True)


def test_sweep_renews_an_acme_certificate_without_ari(tenant, pebble, powerdns, pebble_ca):
    name = unique_name(powerdns.zone, "renew")
    sub = acme_subscriber(tenant, pebble_ca, [name])
    first = ordered(pki_services.issue(sub, actor=tenant.operator.user))
    first.refresh_from_db()
    old = first.certificate
    lifetime = old.not_after - old.not_before
    assert old.next_renewal_at == old.not_before + lifetime * 2 / 3  # no ARI: two thirds

    report = JobReport()
    lifecycle.run_renewals(report, at=old.next_renewal_at + timedelta(minutes=1))
    assert report.counts.get("ordered") == 1, report.errors
    assert report.counts.get("ari_checked") == 1 and "ari_windows" not in report.counts
    old.refresh_from_db()
    assert old.ari_checked_at is not None and old.ari_next_check_at > timezone.now() + timedelta(hours=5)
    order = AcmeOrder.objects.get(renewal_of=old)
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    assert order.certificate.renewed_from_id == old.pk
    assert old.next_renewal_at is None  # only the newest certificate is renewed from now on
    assert Certificate.objects.filter(subscriber=sub).count() == 2


def test_ari_certificate_id_is_aki_dot_serial():
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    # RFC 9773 §4.1's example: AKI 69:88:5B:...:C8:D4, serial 00:87:65:43:21
    key = ec.generate_private_key(ec.SECP256R1())
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    name = cx509.Name([cx509.NameAttribute(cx509.oid.NameOID.COMMON_NAME, "x")])
    cert = (
        cx509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x87654321)
        .not_valid_before(timezone.now())
        .not_valid_after(timezone.now() + timedelta(days=1))
        .add_extension(cx509.AuthorityKeyIdentifier(aki, None, None), critical=False)
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    assert ari.cert_id(cert.public_bytes(Encoding.PEM).decode()) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_a_certificate_ordered_from_a_csr_renews_with_the_csr_key(tenant, pebble, powerdns, pebble_ca):
    from cryptography.hazmat.primitives import serialization

    from pki import x509

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    name = unique_name(powerdns.zone, "csr")
    sub = acme_subscriber(tenant, pebble_ca, [name])
    key = x509.generate_key("ec-p256")
    csr_pem = x509.to_pem(x509.build_csr(key, x509.Subject(common_name=name), [name]))
    first = ordered(pki_services.issue(sub, actor=tenant.operator.user, csr_pem=csr_pem))
    first.refresh_from_db()
    assert first.step == AcmeOrder.Step.DONE, first.last_error
    old = first.certificate
    assert old.private_key == "" and old.csr_pem == csr_pem
    assert pki_services.renewal_plan(sub) == "Renews with the key of the CSR you supplied."

    report = JobReport()
    lifecycle.run_renewals(report, at=old.next_renewal_at + timedelta(minutes=1))
    assert report.counts.get("ordered") == 1, report.errors
    order = AcmeOrder.objects.get(renewal_of=old)
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    leaf = x509.load_pem_certificates(order.certificate.certificate_pem)[0]
    assert leaf.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert order.certificate.private_key == ""
