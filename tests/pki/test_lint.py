"""Everything the private CA produces passes pkilint's RFC 5280 profile with no error-level finding."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pki import services
from pki.models import Crl
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db

BIN = Path(sys.executable).parent


def lint(tool: str, path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / tool), "lint", "-s", "ERROR", *extra, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_clean(tool: str, pem: str | bytes, tmp_path: Path, name: str, *extra: str) -> None:
    path = tmp_path / name
    path.write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    result = lint(tool, path, *extra)
    assert result.returncode == 0 and not result.stdout.strip(), f"{name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("algorithm", ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "ed25519"])
def test_ca_certificates_leaves_and_crls_lint_clean(
    tenant, tmp_path, client, algorithm, django_capture_on_commit_callbacks
):
    org = tenant.organization
    root = services.create_internal_ca(
        org,
        name="Root",
        kind="internal-root",
        key_algorithm=algorithm,
        subject={"common_name": "Lint Root", "organization": "Acme", "country": "DE"},
        max_path_length=1,
        actor=SYSTEM,
    )
    inter = services.create_internal_ca(
        org,
        name="Issuing",
        kind="internal-intermediate",
        parent=root,
        key_algorithm=algorithm,
        subject={"common_name": "Lint Issuing"},
        actor=SYSTEM,
    )
    server = services.save_subscriber(
        org,
        actor=SYSTEM,
        name="server",
        ca=inter,
        key_algorithm=algorithm,
        common_name="www.acme.test",
        sans=["www.acme.test", "api.acme.test", "192.0.2.10", "2001:db8::1"],
        validity_days=90,
        extended_key_usages=["server_auth", "client_auth"],
    )
    mail = services.save_subscriber(
        org,
        actor=SYSTEM,
        name="mail",
        ca=inter,
        key_algorithm=algorithm,
        sans=["alice@acme.test"],
        validity_days=90,
        extended_key_usages=["email_protection"],
    )
    selfsigned = services.save_subscriber(
        org,
        actor=SYSTEM,
        name="self",
        issuer_type="self-signed",
        key_algorithm=algorithm,
        common_name="device.acme.test",
        sans=["device.acme.test"],
        validity_days=30,
    )
    certificates = {
        "root.pem": root.certificate_pem,
        "intermediate.pem": inter.certificate_pem,
        "server.pem": services.issue(server, actor=SYSTEM).certificate.certificate_pem,
        "mail.pem": services.issue(mail, actor=SYSTEM).certificate.certificate_pem,
        "self.pem": services.issue(selfsigned, actor=SYSTEM).certificate.certificate_pem,
    }
    for name, pem in certificates.items():
        assert_clean("lint_pkix_cert", pem, tmp_path, name)

    # full CRLs, and delta CRLs listing a revocation since their full CRL (built by the on-commit task)
    services.refresh_crl(inter, actor=SYSTEM)
    victim = services.issue(server, actor=SYSTEM).certificate
    with django_capture_on_commit_callbacks(execute=True):
        services.revoke(victim, reason="key_compromise", actor=SYSTEM)
    services.refresh_crl(root, actor=SYSTEM)
    for ca in (inter, root):
        for delta in (False, True):
            crl = Crl.objects.filter(ca=ca, delta=delta).order_by("-number").first()
            assert crl is not None and (ca != inter or not delta or crl.entries == 1)
            name = f"crl-{ca.pk}-{'delta' if delta else 'full'}.der"
            assert_clean("lint_crl", bytes(crl.der), tmp_path, name, "-t", "CRL", "-p", "PKIX")


def test_the_linter_can_fail(tmp_path):
    """A certificate breaking RFC 5280 (no subject and no SAN, a version-1 style use) is reported."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    bad = (
        cx509.CertificateBuilder()
        .subject_name(cx509.Name([]))
        .issuer_name(cx509.Name([]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    from pki import x509

    path = tmp_path / "bad.pem"
    path.write_text(x509.to_pem(bad))
    result = lint("lint_pkix_cert", path)
    assert result.returncode != 0 and "ERROR" in result.stdout


def test_ocsp_responder_certificates_and_responses_lint_clean(tenant, tmp_path):
    """The delegated responder certificate and good, revoked and unknown responses: no error-level finding."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509 import ocsp as cocsp
    from django.test import Client

    root = services.create_internal_ca(
        tenant.organization,
        name="Root",
        kind="internal-root",
        subject={"common_name": "Lint Root", "organization": "Acme"},
        ocsp_enabled=True,
        actor=SYSTEM,
    )
    server = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="server", ca=root, common_name="www.acme.test",
        sans=["www.acme.test"], validity_days=90,
    )  # fmt: skip
    good = services.issue(server, actor=SYSTEM).certificate
    revoked = services.revoke(
        services.issue(server, actor=SYSTEM).certificate, reason="key_compromise", actor=SYSTEM
    )
    ca_cert = cx509.load_pem_x509_certificate(root.certificate_pem.encode())

    def ask(serial_source) -> bytes:
        if isinstance(serial_source, int):  # a serial never issued, asked by CertID alone
            request = cocsp.OCSPRequestBuilder().add_certificate_by_hash(
                *_issuer_hashes(ca_cert), serial_source, hashes.SHA1()
            )
        else:
            leaf = cx509.load_pem_x509_certificate(serial_source.certificate_pem.encode())
            request = cocsp.OCSPRequestBuilder().add_certificate(leaf, ca_cert, hashes.SHA1())
        der = request.build().public_bytes(serialization.Encoding.DER)
        return Client().post(f"/ocsp/{root.pk}/", der, content_type="application/ocsp-request").content

    responses = {"good.der": ask(good), "revoked.der": ask(revoked), "unknown.der": ask(0x7E57AB1E)}
    statuses = {name: cocsp.load_der_ocsp_response(der).certificate_status for name, der in responses.items()}
    assert statuses == {
        "good.der": cocsp.OCSPCertStatus.GOOD,
        "revoked.der": cocsp.OCSPCertStatus.REVOKED,
        "unknown.der": cocsp.OCSPCertStatus.UNKNOWN,
    }
    for name, der in responses.items():
        assert_clean("lint_ocsp_response", der, tmp_path, name)
    (signer,) = cocsp.load_der_ocsp_response(responses["good.der"]).certificates
    assert_clean("lint_pkix_cert", signer.public_bytes(serialization.Encoding.PEM), tmp_path, "responder.pem")


def _issuer_hashes(ca_cert: cx509.Certificate) -> tuple[bytes, bytes]:
    from pki import ocsp

    return ocsp.issuer_hashes(ca_cert, "sha1")
