"""The OCSP responder (RFC 6960 / RFC 5019) as relying parties see it: OpenSSL's and GnuTLS's clients against
the live server, the delegated responder certificate, pre-signed responses, caching headers, nonces, and the
error statuses for garbage and for CAs that are not ours or have OCSP off."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as cocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from django.db import connection
from django.test import Client
from django.utils import timezone

from certmgr.models import AuditEvent
from pki import services, tasks
from pki.models import Certificate, CertificateAuthority, OcspResponder, OcspResponse
from pki.services import ocsp as ocsp_service
from pki.services import revocation
from tests.conftest import PASSWORD, SYSTEM, require_server
from tests.pki.conftest import make_subscriber
from tests.webservers import Nginx, s_client

pytestmark = pytest.mark.django_db


def _pem(cert_pem: str, path: Path) -> Path:
    path.write_text(cert_pem)
    return path


def _enable(tenant, ca) -> CertificateAuthority:
    response = tenant.admin.client.patch(f"/api/v1/cas/{ca.pk}/", {"ocsp_enabled": True}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["ocsp_enabled"] is True
    assert response.json()["ocsp_url"].endswith(f"/ocsp/{ca.pk}/")
    return CertificateAuthority.objects.get(pk=ca.pk)


def _request(cert: cx509.Certificate, issuer: cx509.Certificate, *, nonce: bytes | None = None) -> bytes:
    builder = cocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(cx509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _load(pem: str) -> cx509.Certificate:
    return cx509.load_pem_x509_certificate(pem.encode())


# --- real relying parties against the live server -------------------------------------------------------
@pytest.fixture
def live_ca(tenant, hierarchy, live_server, settings, tmp_path):
    settings.CERTMGR_BASE_URL = live_server.url
    root, inter = hierarchy
    inter = _enable(tenant, inter)
    cert = services.issue(make_subscriber(tenant, inter, "web"), actor=SYSTEM).certificate
    _pem(inter.certificate_pem, tmp_path / "ca.pem")
    _pem(root.certificate_pem, tmp_path / "root.pem")
    _pem(inter.certificate_pem + root.certificate_pem, tmp_path / "chain.pem")
    _pem(cert.certificate_pem, tmp_path / "leaf.pem")
    return inter, cert, f"{live_server.url}/ocsp/{inter.pk}/"


def _openssl_ocsp(url: str, cwd: Path, *target: str) -> subprocess.CompletedProcess:
    require_server(shutil.which("openssl") is not None, "openssl is not installed")
    return subprocess.run(
        ["openssl", "ocsp", "-issuer", "ca.pem", *target, "-url", url, "-CAfile", "chain.pem", "-resp_text"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.django_db(transaction=True)
def test_openssl_sees_good_then_revoked_and_unknown_for_a_made_up_serial(live_ca, tmp_path):
    ca, cert, url = live_ca
    leaf = _load(cert.certificate_pem)
    aia = leaf.extensions.get_extension_for_class(cx509.AuthorityInformationAccess).value
    assert [
        d.access_location.value for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP
    ] == [url]

    # pre-signed when it was issued (the issuance's commit enqueued it)
    presigned = bytes(OcspResponse.objects.get(ca=ca, serial=cert.serial, status="good").der)
    good = _openssl_ocsp(url, tmp_path, "-cert", "leaf.pem")
    assert good.returncode == 0, good.stderr
    assert "Response verify OK" in good.stderr
    assert "leaf.pem: good" in good.stdout
    assert "OCSP Signing" in good.stdout and "OCSP No Check" in good.stdout  # the delegated responder
    assert (
        bytes(OcspResponse.objects.get(ca=ca, serial=cert.serial).der) == presigned
    )  # served, not re-signed

    services.revoke(cert, reason="key_compromise", actor=SYSTEM)
    revoked = _openssl_ocsp(url, tmp_path, "-cert", "leaf.pem")
    assert "Response verify OK" in revoked.stderr
    assert "leaf.pem: revoked" in revoked.stdout
    assert "Reason: keyCompromise" in revoked.stdout and "Revocation Time:" in revoked.stdout
    assert OcspResponse.objects.get(ca=ca, serial=cert.serial).status == "revoked"  # re-signed on commit

    unknown = _openssl_ocsp(url, tmp_path, "-serial", "0x7e57ab1e0123456789")
    assert "Response verify OK" in unknown.stderr
    assert "0x7e57ab1e0123456789: unknown" in unknown.stdout


@pytest.mark.django_db(transaction=True)
def test_gnutls_ocsptool_asks_and_verifies(live_ca, tmp_path):
    require_server(shutil.which("ocsptool") is not None, "ocsptool (Debian gnutls-bin) is not installed")
    _, cert, url = live_ca

    def ask() -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                *("ocsptool", f"--ask={url}", "--load-cert", "leaf.pem", "--load-issuer", "ca.pem"),
                *("--load-trust", "ca.pem", "--no-nonce"),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )

    good = ask()
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Certificate Status: good" in good.stdout
    assert "Verifying OCSP Response: Success" in good.stdout
    services.revoke(cert, reason="superseded", actor=SYSTEM)
    revoked = ask()
    assert "Certificate Status: revoked" in revoked.stdout, revoked.stdout + revoked.stderr
    assert "Verifying OCSP Response: Success" in revoked.stdout


# --- the responder in-process -----------------------------------------------------------------------------


@pytest.fixture
def ocsp_ca(tenant, hierarchy):
    inter = services.set_ocsp(hierarchy[1], enabled=True, actor=SYSTEM)
    cert = services.issue(make_subscriber(tenant, inter, "web"), actor=SYSTEM).certificate
    return inter, cert


def _ask(ca, der: bytes, *, get: bool = False, **headers):
    if get:
        # RFC 5019 §5: base64, then URL-encoded ("/", "+" and "=" escaped)
        encoded = quote(base64.b64encode(der).decode(), safe="")
        return Client().get(f"/ocsp/{ca.pk}/{encoded}", **headers)
    return Client().post(f"/ocsp/{ca.pk}/", der, content_type="application/ocsp-request", **headers)


def _status(response) -> cocsp.OCSPResponseStatus:
    assert response["Content-Type"] == "application/ocsp-response"
    return cocsp.load_der_ocsp_response(response.content).response_status


def test_garbage_gets_malformed_request(ocsp_ca):
    ca, _ = ocsp_ca
    for body in (b"", b"not ocsp at all", b"\x30\x03\x02\x01\x01"):
        assert _status(_ask(ca, body)) is cocsp.OCSPResponseStatus.MALFORMED_REQUEST
    bad_base64 = Client().get(f"/ocsp/{ca.pk}/%%%not-base64")
    assert _status(bad_base64) is cocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert Client().put(f"/ocsp/{ca.pk}/").status_code == 405


def test_unauthorized_for_ocsp_off_for_another_issuer_and_for_no_such_ca(tenant, hierarchy, ocsp_ca):
    root, _ = hierarchy
    ca, cert = ocsp_ca
    der = _request(_load(cert.certificate_pem), _load(ca.certificate_pem))
    assert _status(_ask(ca, der)) is cocsp.OCSPResponseStatus.SUCCESSFUL
    # the root has OCSP off
    assert _status(_ask(root, der)) is cocsp.OCSPResponseStatus.UNAUTHORIZED
    services.set_ocsp(root, enabled=True, actor=SYSTEM)
    # the root is on now, but this CertID names the issuing CA, not the root
    assert _status(_ask(root, der)) is cocsp.OCSPResponseStatus.UNAUTHORIZED
    assert _status(Client().post("/ocsp/999999/", der, content_type="application/ocsp-request")) is (
        cocsp.OCSPResponseStatus.UNAUTHORIZED
    )
    services.set_ocsp(ca, enabled=False, actor=SYSTEM)
    assert _status(_ask(ca, der)) is cocsp.OCSPResponseStatus.UNAUTHORIZED


def test_the_delegated_responder_signs_and_its_key_is_encrypted(ocsp_ca):
    ca, cert = ocsp_ca
    der = _request(_load(cert.certificate_pem), _load(ca.certificate_pem))
    response = cocsp.load_der_ocsp_response(_ask(ca, der).content)
    assert response.certificate_status is cocsp.OCSPCertStatus.GOOD
    (signer,) = response.certificates
    ca_cert = _load(ca.certificate_pem)
    signer.verify_directly_issued_by(ca_cert)
    assert signer.extensions.get_extension_for_class(cx509.ExtendedKeyUsage).value == cx509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.OCSP_SIGNING]
    )
    assert signer.extensions.get_extension_for_class(cx509.OCSPNoCheck)
    assert isinstance(signer.public_key(), ec.EllipticCurvePublicKey)
    assert signer.public_key().curve.name == "secp256r1"
    lifetime = signer.not_valid_after_utc - signer.not_valid_before_utc
    assert timedelta(days=6) < lifetime <= timedelta(days=7, minutes=5)
    # signed by the responder's key, not the CA's
    signer.public_key().verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    assert response.responder_key_hash is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key FROM pki_ocspresponder WHERE ca_id = %s", [ca.pk])
        (stored,) = cursor.fetchone()
    assert "PRIVATE KEY" not in stored


def test_the_responder_is_rotated_before_it_expires(ocsp_ca):
    ca, _ = ocsp_ca
    first = ocsp_service.responder(ca)
    OcspResponder.objects.filter(pk=first.pk).update(not_after=timezone.now() + timedelta(days=1))
    ocsp_service._RESPONDERS.clear()  # another worker, which never saw the old one
    tasks.refresh_ocsp()
    second = ocsp_service.responder(ca)
    assert second.pk != first.pk and second.not_after > timezone.now() + timedelta(days=6)


def test_stored_responses_are_served_with_rfc5019_cache_headers(ocsp_ca):
    ca, cert = ocsp_ca
    assert ocsp_service.presign(ca) == 1
    stored = OcspResponse.objects.get(ca=ca, serial=cert.serial)
    der = _request(_load(cert.certificate_pem), _load(ca.certificate_pem))
    for response in (_ask(ca, der), _ask(ca, der, get=True)):
        assert response.content == bytes(stored.der)  # served, not signed again
        max_age = int(response["Cache-Control"].split("max-age=")[1].split(",")[0])
        assert 0 < max_age <= (stored.next_update - timezone.now()).total_seconds() + 1
        assert response["Expires"] and response["Last-Modified"] and response["ETag"]
    again = _ask(ca, der, get=True, HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304


def test_nonces_are_ignored_unless_the_ca_signs_them_on_demand(ocsp_ca):
    ca, cert = ocsp_ca
    ocsp_service.presign(ca)
    stored = bytes(OcspResponse.objects.get(ca=ca, serial=cert.serial).der)
    der = _request(_load(cert.certificate_pem), _load(ca.certificate_pem), nonce=b"n" * 16)
    assert _ask(ca, der).content == stored
    services.set_ocsp(ca, nonce_on_demand=True, actor=SYSTEM)
    fresh = _ask(ca, der)
    assert fresh.content != stored and fresh["Cache-Control"] == "no-store"
    nonce = cocsp.load_der_ocsp_response(fresh.content).extensions.get_extension_for_class(cx509.OCSPNonce)
    assert nonce.value.nonce == b"n" * 16


def test_the_job_presigns_what_is_missing_or_due(tenant, ocsp_ca):
    ca, _ = ocsp_ca
    other = services.issue(make_subscriber(tenant, ca, "api"), actor=SYSTEM).certificate
    OcspResponse.objects.filter(ca=ca).delete()
    assert tasks.refresh_ocsp()["signed"] == 2
    assert tasks.refresh_ocsp().get("signed", 0) == 0  # all fresh
    OcspResponse.objects.filter(ca=ca, serial=other.serial).update(
        next_update=timezone.now() + timedelta(hours=1)
    )
    assert tasks.refresh_ocsp()["signed"] == 1


def test_certificates_issued_before_ocsp_was_on_carry_no_ocsp_url(tenant, hierarchy):
    inter = hierarchy[1]
    before = _load(
        services.issue(make_subscriber(tenant, inter, "old"), actor=SYSTEM).certificate.certificate_pem
    )
    aia = before.extensions.get_extension_for_class(cx509.AuthorityInformationAccess).value
    assert all(d.access_method != AuthorityInformationAccessOID.OCSP for d in aia)
    inter = services.set_ocsp(inter, enabled=True, actor=SYSTEM)
    after = _load(
        services.issue(make_subscriber(tenant, inter, "new"), actor=SYSTEM).certificate.certificate_pem
    )
    aia = after.extensions.get_extension_for_class(cx509.AuthorityInformationAccess).value
    assert [d.access_method for d in aia] == [
        AuthorityInformationAccessOID.OCSP,
        AuthorityInformationAccessOID.CA_ISSUERS,
    ]


def test_the_admin_turns_ocsp_on_and_off_and_auditors_cannot(tenant, hierarchy):
    inter = hierarchy[1]
    page = f"/admin/pki/certificateauthority/{inter.pk}"
    auditor = Client()
    assert auditor.login(username=tenant.auditor.user.username, password=PASSWORD)
    assert auditor.post(f"{page}/ocsp/on/").status_code == 403
    operator = Client()
    assert operator.login(username=tenant.operator.user.username, password=PASSWORD)
    assert b"Turn OCSP on" in operator.get(f"{page}/change/").content
    assert operator.post(f"{page}/ocsp/on/").status_code == 302
    inter.refresh_from_db()
    assert inter.ocsp_enabled
    assert AuditEvent.objects.filter(action="ca.update", outcome="success").exists()
    detail = operator.get(f"{page}/change/").content
    assert b"Turn OCSP off" in detail and f"/ocsp/{inter.pk}/".encode() in detail
    assert operator.get(f"{page}/ocsp/off/").status_code == 405
    assert operator.post(f"{page}/ocsp/off/").status_code == 302
    inter.refresh_from_db()
    assert not inter.ocsp_enabled


def test_the_api_refuses_bad_values_and_read_only_roles(tenant, hierarchy):
    inter = hierarchy[1]
    client = tenant.admin.client
    bad = client.patch(f"/api/v1/cas/{inter.pk}/", {"ocsp_enabled": "maybe"}, format="json")
    assert bad.status_code == 400 and "ocsp_enabled" in bad.json()["error"]["fields"], bad.json()
    read = tenant.auditor.client.patch(f"/api/v1/cas/{inter.pk}/", {"ocsp_enabled": True}, format="json")
    assert read.status_code == 403
    inter.refresh_from_db()
    assert not inter.ocsp_enabled
    listed = client.get(f"/api/v1/cas/{inter.pk}/").json()
    assert listed["ocsp_enabled"] is False and listed["ocsp_url"] is None


def test_ocsp_answers_on_plain_http_when_https_is_enforced(ocsp_ca, settings):
    ca, cert = ocsp_ca
    settings.SECURE_SSL_REDIRECT = True
    der = _request(_load(cert.certificate_pem), _load(ca.certificate_pem))
    assert _status(_ask(ca, der)) is cocsp.OCSPResponseStatus.SUCCESSFUL  # relying parties speak HTTP
    assert Client().get("/admin/").status_code == 301  # the control: the rest is redirected


def test_a_ca_in_its_last_days_keeps_one_responder_that_ends_with_it(tenant):
    short = services.create_internal_ca(
        tenant.organization,
        name="Short",
        kind="internal-root",
        subject={"common_name": "Short-lived CA"},
        validity_days=1,
        ocsp_enabled=True,
        actor=SYSTEM,
    )
    first = ocsp_service.responder(short)
    ocsp_service._RESPONDERS.clear()
    assert ocsp_service.responder(short).pk == first.pk  # not a new certificate per signature
    assert first.not_after <= short.not_after
    assert OcspResponder.objects.filter(ca=short).count() == 1


def test_a_good_answer_written_around_a_revocation_never_sticks(ocsp_ca):
    """The races of a re-sign (or a request) that read the certificate just before its revocation
    committed: the request path never overwrites a fresh stored answer, and every pre-sign run re-signs
    whatever is revoked but stored good."""
    ca, cert = ocsp_ca
    ocsp_service.presign(ca)
    good = OcspResponse.objects.get(ca=ca, serial=cert.serial)
    # the revocation lands (its own re-sign is what the service does; here only the row changes) ...
    Certificate.objects.filter(pk=cert.pk).update(status="revoked", revoked_at=timezone.now())
    # ... while a late writer puts a good answer back
    assert good.status == "good"
    tasks.refresh_ocsp()  # everything is fresh, yet the run re-signs the revoked one
    assert OcspResponse.objects.get(ca=ca, serial=cert.serial).status == "revoked"
    fresh_revoked = bytes(OcspResponse.objects.get(ca=ca, serial=cert.serial).der)
    stale_good = ocsp_service.Signed(bytes(good.der), "good", good.this_update, good.next_update)
    ocsp_service._store(ca, cert.serial, stale_good)  # the request path's write
    assert bytes(OcspResponse.objects.get(ca=ca, serial=cert.serial).der) == fresh_revoked


def test_revoke_many_re_signs_each_serial_on_commit(tenant, ocsp_ca, django_capture_on_commit_callbacks):
    ca, cert = ocsp_ca
    other = services.issue(make_subscriber(tenant, ca, "api"), actor=SYSTEM).certificate
    ocsp_service.presign(ca)
    with django_capture_on_commit_callbacks(execute=True):
        assert revocation.revoke_many([cert, other], reason="superseded", actor=SYSTEM) == 2
    stored = dict(OcspResponse.objects.filter(ca=ca).values_list("serial", "status"))
    assert stored == {cert.serial: "revoked", other.serial: "revoked"}
    der = _request(_load(other.certificate_pem), _load(ca.certificate_pem))
    answer = cocsp.load_der_ocsp_response(_ask(ca, der).content)
    assert answer.certificate_status is cocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is cx509.ReasonFlags.superseded


def test_the_job_drops_expired_answers(ocsp_ca):
    ca, cert = ocsp_ca
    ocsp_service.presign(ca)
    OcspResponse.objects.filter(ca=ca).update(next_update=timezone.now() - timedelta(minutes=1))
    Certificate.objects.filter(pk=cert.pk).update(not_after=timezone.now() - timedelta(minutes=1))
    tasks.refresh_ocsp()
    assert not OcspResponse.objects.filter(ca=ca).exists()  # expired certificate: nothing to pre-sign


# --- nginx stapling the responder's answers ---------------------------------------------------------------
STAPLING_SERVER = """        ssl_certificate {tmp}/fullchain.pem;
        ssl_certificate_key {tmp}/leaf.key;
        ssl_stapling on;
        ssl_stapling_verify on;
        ssl_trusted_certificate {tmp}/chain.pem;
        location / {{ return 200 "stapled\\n"; }}"""


def _s_client(port: int, cwd: Path) -> str:
    return s_client(port, "localhost", "-status", "-CAfile", "root.pem", "-verify_return_error", cwd=cwd)


def _until(check, what: str, attempts: int = 40):
    for _ in range(attempts):
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"never: {what}")


@pytest.mark.django_db(transaction=True)
def test_nginx_staples_good_and_after_the_revocation_and_a_reload_nothing(live_ca, tmp_path):
    """nginx (ssl_stapling on, ssl_stapling_verify on) fetches the leaf's response from the OCSP URL in its
    AIA, which is this live server, verifies it and staples it: ``openssl s_client -status`` shows ``good``.
    nginx keeps a stapled response up to an hour; after the revocation a reload (which starts with an empty
    cache) makes it fetch again: it gets ``revoked`` from certmgr, and nginx 1.22 staples only a ``good``
    response, so it logs the revoked status and staples nothing (a must-staple client then refuses the
    certificate; one that asks the responder itself gets ``revoked``, as the tests above show)."""
    _, cert, _ = live_ca
    _pem(cert.certificate_pem + cert.chain_pem, tmp_path / "fullchain.pem")
    (tmp_path / "leaf.key").write_text(cert.private_key)
    nginx = Nginx(tmp_path, STAPLING_SERVER.format(tmp=tmp_path))
    port, log = nginx.port, nginx.log
    nginx.start()
    try:
        # nginx fetches the first response lazily: the first handshakes carry none.
        good = _until(
            lambda: (out := _s_client(port, tmp_path)) and "Cert Status: good" in out and out,
            "a stapled good response",
        )
        assert "OCSP Response Status: successful" in good and "Response Type: Basic OCSP Response" in good
        assert "Verify return code: 0 (ok)" in good

        services.revoke(cert, reason="key_compromise", actor=SYSTEM)
        assert OcspResponse.objects.get(ca=cert.ca, serial=cert.serial).status == "revoked"
        nginx.reload()
        refused = 'certificate status "revoked" in the OCSP response'

        def fetched_revoked() -> bool:
            _s_client(port, tmp_path)  # a handshake makes the new workers fetch
            return refused in log.read_text()

        _until(fetched_revoked, "nginx fetching the revoked response")
        after = _s_client(port, tmp_path)
        assert "OCSP response: no response sent" in after and "Cert Status: good" not in after
    finally:
        nginx.stop()
    text = log.read_text()
    assert "OCSP response not successful" not in text and 'certificate status "good"' not in text
