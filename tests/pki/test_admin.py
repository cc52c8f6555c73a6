"""The PKI admin through the Django test client, as tenant members: CAs, policies, subscribers, issuance,
revocation, exports, imports, CSRs, CRLs, the inventory at scale, roles and tenancy."""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives.serialization import pkcs12
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from certmgr.models import AuditEvent
from pki import admin as pki_admin
from pki import services, x509
from pki.models import Certificate, CertificateAuthority, CertificateRequest, Crl, Policy, Subscriber
from tests.conftest import PASSWORD, SYSTEM

pytestmark = pytest.mark.django_db

CA_URL = "/admin/pki/certificateauthority/"
CERT_URL = "/admin/pki/certificate/"
SUB_URL = "/admin/pki/subscriber/"
POLICY_URL = "/admin/pki/policy/"
CSR_URL = "/admin/pki/certificaterequest/"
CRL_URL = "/admin/pki/crl/"


def login(member) -> Client:
    client = Client()
    assert client.login(username=member.user.username, password=PASSWORD)
    return client


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def key_body_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM block (what an HTML page would show if it leaked the key)."""
    return [line for line in pem.strip().splitlines() if line and not line.startswith("-----")]


def action_choices(response) -> set[str]:
    form = response.context.get("action_form")
    return {value for value, _ in form.fields["action"].choices} - {""} if form else set()


def external_leaf(cn: str = "legacy.example.org"):
    """A certificate + key from outside certmgr (self-signed leaf), as PEM strings."""
    key = x509.generate_key("ec-p256")
    cert = x509.build_self_signed_certificate(
        key=key, subject=x509.Subject(common_name=cn), sans=[cn], validity_days=30
    )
    return x509.to_pem(cert), x509.private_key_to_pem(key)


# --- certificate authorities -------------------------------------------------------------------------------
def test_operator_creates_root_and_intermediate_through_the_add_form(tenant):
    client = login(tenant.operator)
    page = client.get(f"{CA_URL}add/")
    assert page.status_code == 200
    assert b'name="private_key' not in page.content  # no key input of any kind
    base = {
        "organization": tenant.organization.pk,
        "subject_organization": "Acme",
        "subject_country": "de",
        "key_algorithm": "ec-p256",
        "validity_days": "3650",
    }
    response = client.post(
        f"{CA_URL}add/",
        {
            **base,
            "name": "Root",
            "kind": "internal-root",
            "subject_common_name": "Acme Root",
            "max_path_length": "1",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    root = CertificateAuthority.objects.get(name="Root")
    assert root.kind == "internal-root" and root.parent is None and root.max_path_length == 1
    assert "C=DE" in root.subject_dn and "CN=Acme Root" in root.subject_dn

    # An intermediate without a parent is a form error, not a 500 and not a row.
    response = client.post(
        f"{CA_URL}add/",
        {**base, "name": "Issuing", "kind": "internal-intermediate", "subject_common_name": "Acme Issuing"},
    )
    assert response.status_code == 200
    assert "parent" in response.context["adminform"].form.errors
    response = client.post(
        f"{CA_URL}add/",
        {
            **base,
            "name": "Issuing",
            "kind": "internal-intermediate",
            "parent": root.pk,
            "subject_common_name": "Acme Issuing",
            "validity_days": "1000",
            "max_path_length": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    inter = CertificateAuthority.objects.get(name="Issuing")
    assert inter.parent == root and inter.kind == "internal-intermediate"
    root_cert = cx509.load_pem_x509_certificate(root.certificate_pem.encode())
    cx509.load_pem_x509_certificate(inter.certificate_pem.encode()).verify_directly_issued_by(root_cert)
    events = AuditEvent.objects.filter(action="ca.create", outcome="success")
    assert events.count() == 2 and {e.actor_label for e in events} == {tenant.operator.user.username}

    # A refusal of the service (here: the path length of the parent) is shown on the form.
    response = client.post(
        f"{CA_URL}add/",
        {
            **base,
            "name": "Too deep",
            "kind": "internal-intermediate",
            "parent": inter.pk,
            "subject_common_name": "Deep",
        },
    )
    assert response.status_code == 200
    assert b"path" in response.content.lower() and b"errornote" in response.content
    assert not CertificateAuthority.objects.filter(name="Too deep").exists()
    # A duplicate name is a field error.
    response = client.post(
        f"{CA_URL}add/", {**base, "name": "Root", "kind": "internal-root", "subject_common_name": "Again"}
    )
    assert response.status_code == 200 and "name" in response.context["adminform"].form.errors


def test_ca_pages_never_contain_the_ca_private_key(tenant, hierarchy, subscriber, issued, monkeypatch):
    from certmgr import encryption

    root, inter = hierarchy
    client = login(tenant.admin)
    decrypted: list[str] = []
    real_decrypt = encryption.decrypt

    def counting_decrypt(token: str) -> str:
        decrypted.append(token)
        return real_decrypt(token)

    monkeypatch.setattr(encryption, "decrypt", counting_decrypt)
    for url in (CA_URL, f"{CA_URL}{inter.pk}/change/", CERT_URL, f"{CERT_URL}{issued.pk}/change/", SUB_URL):
        assert client.get(url).status_code == 200
    assert decrypted == []  # the pages do not even load (decrypt) a key
    monkeypatch.setattr(encryption, "decrypt", real_decrypt)
    for ca in (root, inter):
        key_lines = key_body_lines(CertificateAuthority.objects.get(pk=ca.pk).private_key)
        assert len(key_lines) >= 2
        urls = [
            CA_URL,
            f"{CA_URL}{ca.pk}/change/",
            f"{CA_URL}{ca.pk}/delete/",
            f"{CA_URL}{ca.pk}/history/",
            f"{CA_URL}{ca.pk}/download/pem/",
            f"{CA_URL}{ca.pk}/download/chain/",
            f"{CERT_URL}{issued.pk}/change/",
            f"{SUB_URL}{subscriber.pk}/change/",
        ]
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, url
            for line in key_lines:
                assert line.encode() not in response.content, url
        page = client.get(f"{CA_URL}{ca.pk}/change/")
        # A positive control: the certificate itself is on the page, the key is not.
        assert key_body_lines(ca.certificate_pem)[1].encode() in page.content
        assert b"PRIVATE KEY" not in page.content
        assert b"Disable" in page.content and b"Publish CRL" in page.content


def test_disable_enable_refresh_crl_and_download(tenant, hierarchy, subscriber):
    _, inter = hierarchy
    client = login(tenant.operator)
    response = client.post(f"{CA_URL}{inter.pk}/status/disabled/")
    assert response.status_code == 302
    inter.refresh_from_db()
    assert inter.status == "disabled"
    assert AuditEvent.objects.filter(action="ca.disable", outcome="success").exists()
    # A disabled CA issues nothing: the subscriber's action reports it.
    response = client.post(
        SUB_URL, {"action": "issue_now", "_selected_action": [subscriber.pk], "index": "0"}
    )
    assert response.status_code == 302
    assert any("disabled" in m for m in texts(response))
    assert not Certificate.objects.filter(subscriber=subscriber).exists()

    response = client.post(
        CA_URL, {"action": "enable_cas", "_selected_action": [inter.pk], "index": "0"}, follow=True
    )
    assert response.status_code == 200
    inter.refresh_from_db()
    assert inter.status == "active"
    before = Crl.objects.filter(ca=inter).count()
    assert client.post(f"{CA_URL}{inter.pk}/refresh-crl/").status_code == 302
    assert Crl.objects.filter(ca=inter).count() == before + 2  # a full CRL and a delta CRL of it
    assert client.get(f"{CA_URL}{inter.pk}/refresh-crl/").status_code == 405
    pem = client.get(f"{CA_URL}{inter.pk}/download/pem/")
    assert pem.status_code == 200 and pem.content.decode() == inter.certificate_pem
    chain = x509.load_pem_certificates(client.get(f"{CA_URL}{inter.pk}/download/chain/").content)
    assert len(chain) == 2


def test_import_ca_view(tenant):
    client = login(tenant.operator)
    key = x509.generate_key("ec-p256")
    cert = x509.build_ca_certificate(
        subject=x509.Subject(common_name="Old CA"), key=key, validity_days=365, max_path_length=None
    )
    cert_pem, key_pem = x509.to_pem(cert), x509.private_key_to_pem(key)
    other_key = x509.private_key_to_pem(x509.generate_key("ec-p256"))
    response = client.post(
        f"{CA_URL}import/",
        {
            "organization": tenant.organization.pk,
            "name": "Old",
            "certificate": cert_pem,
            "private_key": other_key,
        },
    )
    assert response.status_code == 200 and b"does not belong" in response.content
    for line in key_body_lines(other_key):  # a typed key is never echoed back
        assert line.encode() not in response.content
    response = client.post(
        f"{CA_URL}import/",
        {
            "organization": tenant.organization.pk,
            "name": "Old",
            "certificate_file": SimpleUploadedFile("ca.pem", cert_pem.encode()),
            "private_key_file": SimpleUploadedFile("ca.key", key_pem.encode()),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    ca = CertificateAuthority.objects.get(name="Old")
    assert ca.imported and ca.kind == "internal-root"
    assert login(tenant.auditor).get(f"{CA_URL}import/").status_code == 403


def test_delete_of_a_busy_ca_is_refused_with_a_message(tenant, hierarchy, issued):
    root, inter = hierarchy
    client = login(tenant.operator)
    page = client.get(f"{CA_URL}{inter.pk}/delete/")
    assert page.status_code == 200 and b"cannot be deleted" in page.content
    response = client.post(f"{CA_URL}{inter.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert any("disable it instead" in m for m in texts(response))
    assert CertificateAuthority.objects.filter(pk=inter.pk).exists()
    assert AuditEvent.objects.filter(action="ca.delete", outcome="failure").exists()
    # The bulk action refuses the same way.
    response = client.post(
        CA_URL, {"action": "delete_selected", "_selected_action": [root.pk], "post": "yes"}
    )
    assert response.status_code == 302
    assert CertificateAuthority.objects.filter(pk=root.pk).exists()
    # An unused CA goes.
    spare = services.create_internal_ca(
        tenant.organization,
        name="Spare",
        kind="internal-root",
        subject={"common_name": "Spare"},
        actor=SYSTEM,
    )
    assert client.post(f"{CA_URL}{spare.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not CertificateAuthority.objects.filter(pk=spare.pk).exists()
    assert AuditEvent.objects.filter(action="ca.delete", outcome="success").exists()


# --- policies and subscribers -------------------------------------------------------------------------------
def test_policy_form_lists_and_checkboxes(tenant):
    client = login(tenant.operator)
    page = client.get(f"{POLICY_URL}add/")
    assert page.status_code == 200 and b'type="checkbox"' in page.content
    response = client.post(
        f"{POLICY_URL}add/",
        {
            "organization": tenant.organization.pk,
            "name": "web",
            "common_name_patterns": "www.acme.test, *.acme.test\n~^api[0-9]{1,3}\\.acme\\.test$",
            "san_patterns": "*.acme.test",
            "allowed_san_types": ["dns", "ip"],
            "allowed_key_algorithms": ["ec-p256", "rsa-2048"],
            "max_validity_days": "90",
            "key_usages": ["digital_signature"],
            "extended_key_usages": ["server_auth"],
            "other_extended_key_usages": "1.3.6.1.5.5.7.3.17",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    policy = Policy.objects.get(name="web")
    assert policy.common_name_patterns == ["www.acme.test", "*.acme.test", "~^api[0-9]{1,3}\\.acme\\.test$"]
    assert policy.allowed_san_types == ["dns", "ip"] and policy.max_validity_days == 90
    assert policy.extended_key_usages == ["server_auth", "1.3.6.1.5.5.7.3.17"]
    page = client.get(f"{POLICY_URL}{policy.pk}/change/")
    assert b"*.acme.test" in page.content and b"1.3.6.1.5.5.7.3.17" in page.content
    # A bad regex comes back from the service as a field error.
    response = client.post(
        f"{POLICY_URL}{policy.pk}/change/",
        {"name": "web", "common_name_patterns": "~([unclosed", "max_validity_days": "90"},
    )
    assert response.status_code == 200
    assert "common_name_patterns" in response.context["adminform"].form.errors
    assert AuditEvent.objects.filter(action="policy.create", outcome="success").exists()


def test_subscriber_form_and_issue_action(tenant, hierarchy):
    _, inter = hierarchy
    client = login(tenant.operator)
    response = client.post(
        f"{SUB_URL}add/",
        {
            "organization": tenant.organization.pk,
            "name": "api",
            "issuer_type": "ca",
            "ca": inter.pk,
            "common_name": "api.acme.test",
            "sans": "api.acme.test, api2.acme.test\n10.1.2.3",
            "subject_organization": "Acme",
            "key_algorithm": "ec-p256",
            "validity_days": "30",
            "extended_key_usages": ["server_auth", "client_auth"],
            "auto_renew": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    sub = Subscriber.objects.get(name="api")
    assert sub.sans == ["api.acme.test", "api2.acme.test", "10.1.2.3"] and sub.subject == {
        "organization": "Acme"
    }

    response = client.post(SUB_URL, {"action": "issue_now", "_selected_action": [sub.pk], "index": "0"})
    assert response.status_code == 302
    cert = Certificate.objects.get(subscriber=sub)
    assert cert.common_name == "api.acme.test" and cert.private_key
    assert any("issued certificate" in m for m in texts(response))
    sub.refresh_from_db()
    assert sub.last_operation_status == "success"
    listing = client.get(SUB_URL)
    assert b"issued serial" in listing.content  # the last operation column

    # The change page's button issues one more and lands on it.
    response = client.post(f"{SUB_URL}{sub.pk}/issue/")
    assert response.status_code == 302 and "/admin/pki/certificate/" in response["Location"]
    assert Certificate.objects.filter(subscriber=sub).count() == 2
    assert client.get(f"{SUB_URL}{sub.pk}/issue/").status_code == 405
    page = client.get(f"{SUB_URL}{sub.pk}/change/")
    assert page.status_code == 200 and cert.serial.encode() in page.content


def test_issue_from_a_pasted_csr(tenant, subscriber):
    client = login(tenant.operator)
    key = x509.generate_key("ec-p256")
    csr = x509.to_pem(x509.build_csr(key, x509.Subject(common_name="www.acme.test"), ["10.0.0.5"]))
    bad = client.post(f"{SUB_URL}{subscriber.pk}/issue-csr/", {"csr": csr.replace("A", "B", 3)})
    assert bad.status_code == 200 and bad.context["form"].errors
    assert not Certificate.objects.filter(subscriber=subscriber).exists()
    response = client.post(f"{SUB_URL}{subscriber.pk}/issue-csr/", {"csr": csr})
    assert response.status_code == 302, response.content.decode()[:2000]
    cert = Certificate.objects.get(subscriber=subscriber)
    assert cert.private_key == "" and cert.common_name == "www.acme.test"
    assert x509.matches_key(cx509.load_pem_x509_certificate(cert.certificate_pem.encode()), key)


def test_policy_violation_is_a_message_not_a_500(tenant, hierarchy):
    _, inter = hierarchy
    policy = services.save_policy(
        tenant.organization,
        actor=SYSTEM,
        name="web",
        common_name_patterns=["*.acme.test"],
        max_validity_days=90,
    )
    sub = services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="www",
        ca=inter,
        policy=policy,
        common_name="www.acme.test",
        validity_days=60,
    )
    client = login(tenant.operator)
    # The policy tightens through its admin form; the next issuance is refused with a message.
    response = client.post(
        f"{POLICY_URL}{policy.pk}/change/",
        {"name": "web", "common_name_patterns": "*.acme.test", "max_validity_days": "30"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    response = client.post(
        SUB_URL, {"action": "issue_now", "_selected_action": [sub.pk], "index": "0"}, follow=True
    )
    assert response.status_code == 200
    assert (
        any("exceeds the 30 days" in m for m in texts(response)) or b"exceeds the 30 days" in response.content
    )
    response = client.post(f"{SUB_URL}{sub.pk}/issue/", follow=True)
    assert response.status_code == 200 and b"exceeds the 30 days" in response.content
    assert not Certificate.objects.filter(subscriber=sub).exists()
    assert AuditEvent.objects.filter(action="certificate.issue", outcome="failure").exists()
    # A subscriber form that breaks the policy: the form comes back with the error on the field.
    response = client.post(
        f"{SUB_URL}add/",
        {
            "organization": tenant.organization.pk,
            "name": "evil",
            "issuer_type": "ca",
            "ca": inter.pk,
            "policy": policy.pk,
            "common_name": "evil.example.com",
            "key_algorithm": "ec-p256",
            "validity_days": "10",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "not allowed" in str(errors.get("common_name"))
    assert not Subscriber.objects.filter(name="evil").exists()


# --- certificates -----------------------------------------------------------------------------------------
def test_revoke_through_the_reason_form(tenant, hierarchy, issued, django_capture_on_commit_callbacks):
    _, inter = hierarchy
    client = login(tenant.operator)
    page = client.post(
        CERT_URL, {"action": "revoke_certificates", "_selected_action": [issued.pk], "index": "0"}
    )
    assert page.status_code == 200 and b'name="reason"' in page.content
    assert b"key_compromise" in page.content and issued.serial.encode() in page.content
    assert b"delta CRL, which is republished at once" in page.content  # an internal CA publishes it here
    issued.refresh_from_db()
    assert issued.status == "active"  # nothing happens before the reason is confirmed
    with django_capture_on_commit_callbacks(execute=True):  # the delta CRL task of the revocation
        response = client.post(
            CERT_URL,
            {
                "action": "revoke_certificates",
                "_selected_action": [issued.pk],
                "reason": "key_compromise",
                "apply": "Revoke",
            },
        )
    assert response.status_code == 302
    assert any("delta CRL, which is republished at once" in m for m in texts(response))
    issued.refresh_from_db()
    assert issued.status == "revoked" and issued.revocation_reason == "key_compromise"
    assert issued.next_renewal_at is None  # a revoked certificate is never renewed
    event = AuditEvent.objects.filter(action="certificate.revoke", outcome="success").latest("id")
    assert event.actor_label == tenant.operator.user.username and event.details["reason"] == "key_compromise"
    crl = cx509.load_der_x509_crl(bytes(Crl.objects.filter(ca=inter).latest("number").der))
    assert crl.get_revoked_certificate_by_serial_number(int(issued.serial, 16)) is not None
    page = client.get(f"{CERT_URL}{issued.pk}/change/")
    tools = page.content.split(b"object-tools")[1][:3000]
    assert b"Key compromise" in page.content and b"Revoke" not in tools and b"Renew now" not in tools
    # Again: a clear message, not a 500.
    response = client.post(f"{CERT_URL}{issued.pk}/revoke/", {"reason": "superseded"}, follow=True)
    assert response.status_code == 200 and b"already revoked" in response.content


def test_single_revoke_page_and_renew(tenant, issued):
    client = login(tenant.operator)
    page = client.get(f"{CERT_URL}{issued.pk}/revoke/")
    assert page.status_code == 200 and b'name="reason"' in page.content
    response = client.post(f"{CERT_URL}{issued.pk}/renew/")
    assert response.status_code == 302
    new = Certificate.objects.get(renewed_from=issued)
    assert response["Location"].endswith(f"/{new.pk}/change/")
    assert AuditEvent.objects.filter(action="certificate.renew", outcome="success").exists()
    page = client.get(f"{CERT_URL}{issued.pk}/change/")
    assert f"{CERT_URL}{new.pk}/change/".encode() in page.content  # "renewed by" link
    page = client.get(f"{CERT_URL}{new.pk}/change/")
    assert f"{CERT_URL}{issued.pk}/change/".encode() in page.content  # "renewed from" link
    # Renewing the old one again is refused with a message.
    response = client.post(
        CERT_URL, {"action": "renew_certificates", "_selected_action": [issued.pk], "index": "0"}
    )
    assert any("already renewed" in m for m in texts(response))
    assert Certificate.objects.filter(subscriber=issued.subscriber).count() == 2


def test_renew_and_download_actions(tenant, subscriber, issued):
    other = services.issue(subscriber, actor=SYSTEM).certificate
    client = login(tenant.operator)
    response = client.post(
        CERT_URL, {"action": "renew_certificates", "_selected_action": [issued.pk, other.pk], "index": "0"}
    )
    assert response.status_code == 302
    assert sum("renewed as" in m for m in texts(response)) == 2
    assert Certificate.objects.filter(renewed_from__in=[issued, other]).count() == 2
    pems = login(tenant.auditor).post(
        CERT_URL, {"action": "download_pems", "_selected_action": [issued.pk, other.pk], "index": "0"}
    )
    assert pems.status_code == 200 and pems["Content-Type"] == "application/x-pem-file"
    serials = {x509.serial_hex(c) for c in x509.load_pem_certificates(pems.content)}
    assert serials == {issued.serial, other.serial} and b"PRIVATE KEY" not in pems.content


def test_pkcs12_export_opens_with_the_password(tenant, issued, tmp_path):
    client = login(tenant.operator)
    url = f"{CERT_URL}{issued.pk}/pkcs12/"
    assert client.get(url).status_code == 200
    short = client.post(url, {"password": "short", "password_again": "short", "alias": "web"})
    assert short.status_code == 200 and "password" in short.context["form"].errors
    password = "a long enough password"
    response = client.post(
        url,
        {
            "password": password,
            "password_again": password,
            "alias": "web-alias",
            "reason": "TICKET-7: the load balancer",
            "confirm": "on",
        },
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pkcs12"
    assert response["Content-Disposition"].endswith('.p12"')
    p12 = pkcs12.load_pkcs12(response.content, password.encode())
    assert p12.cert.friendly_name == b"web-alias"
    assert p12.cert.certificate.serial_number == int(issued.serial, 16)
    assert x509.matches_key(p12.cert.certificate, p12.key)
    assert len(p12.additional_certs) == 2
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(response.content, b"wrong password")
    (tmp_path / "cert.p12").write_bytes(response.content)
    result = subprocess.run(
        ["openssl", "pkcs12", "-info", "-in", "cert.p12", "-passin", f"pass:{password}", "-nokeys"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "BEGIN CERTIFICATE" in result.stdout
    event = AuditEvent.objects.filter(action="certificate.export_key", outcome="success").latest("id")
    assert event.details["format"] == "pkcs12" and "password" not in str(event.details).lower().replace(
        "[redacted]", ""
    )


def test_downloads_for_operator(tenant, issued):
    client = login(tenant.operator)
    cert = client.get(f"{CERT_URL}{issued.pk}/download/cert/")
    assert cert.status_code == 200 and cert.content.decode() == issued.certificate_pem
    chain = client.get(f"{CERT_URL}{issued.pk}/download/chain/")
    assert chain.content.decode() == issued.chain_pem
    full = client.get(f"{CERT_URL}{issued.pk}/download/fullchain/")
    assert len(x509.load_pem_certificates(full.content)) == 3 and b"PRIVATE KEY" not in full.content
    confirm = client.get(f"{CERT_URL}{issued.pk}/download/key/")
    assert confirm.status_code == 200 and b"PRIVATE KEY" not in confirm.content
    assert not AuditEvent.objects.filter(action="certificate.export_key").exists()
    why = {"reason": "moving web to the new host", "confirm": "on"}
    key = client.post(f"{CERT_URL}{issued.pk}/download/key/", why)
    assert key.status_code == 200 and "no-store" in key["Cache-Control"]
    assert x509.matches_key(
        cx509.load_pem_x509_certificate(issued.certificate_pem.encode()), x509.load_private_key(key.content)
    )
    bundle = client.post(f"{CERT_URL}{issued.pk}/download/bundle/", why)
    assert b"PRIVATE KEY" in bundle.content and len(x509.load_pem_certificates(bundle.content)) == 3
    assert AuditEvent.objects.filter(action="certificate.export_key", outcome="success").count() == 2
    page = client.get(f"{CERT_URL}{issued.pk}/change/")
    for line in key_body_lines(Certificate.objects.get(pk=issued.pk).private_key):
        assert line.encode() not in page.content


def test_auditor_is_read_only_and_cannot_export_keys(tenant, hierarchy, subscriber, issued):
    _, inter = hierarchy
    client = login(tenant.auditor)
    listing = client.get(CERT_URL)
    assert listing.status_code == 200 and issued.serial.encode() in listing.content
    assert action_choices(listing) <= {"download_pems"}
    assert b"/admin/pki/certificate/import/" not in listing.content
    for url in (SUB_URL, CA_URL, POLICY_URL, CSR_URL):
        page = client.get(url)
        assert page.status_code == 200
        assert action_choices(page) == set(), url
    page = client.get(f"{CERT_URL}{issued.pk}/change/")
    assert page.status_code == 200
    assert (
        b"download/key" not in page.content
        and b"pkcs12" not in page.content
        and b"/revoke/" not in page.content
    )
    assert client.get(f"{CERT_URL}{issued.pk}/download/cert/").status_code == 200
    for url in (f"{CERT_URL}{issued.pk}/download/key/", f"{CERT_URL}{issued.pk}/download/bundle/"):
        assert client.get(url).status_code == 403
        assert client.post(url).status_code == 403
    pkcs = f"{CERT_URL}{issued.pk}/pkcs12/"
    assert client.get(pkcs).status_code == 403
    password = "a long enough password"
    response = client.post(pkcs, {"password": password, "password_again": password})
    assert response.status_code == 403 and response.get("Content-Type") != "application/x-pkcs12"
    failure = AuditEvent.objects.filter(action="certificate.export_key", outcome="failure")
    assert failure.exists() and failure.latest("id").actor_label == tenant.auditor.user.username
    forbidden = [
        ("post", f"{CERT_URL}{issued.pk}/revoke/", {"reason": "key_compromise"}),
        ("get", f"{CERT_URL}{issued.pk}/revoke/", None),
        ("post", f"{CERT_URL}{issued.pk}/renew/", None),
        ("get", f"{CERT_URL}import/", None),
        ("post", f"{SUB_URL}{subscriber.pk}/issue/", None),
        ("get", f"{SUB_URL}{subscriber.pk}/issue-csr/", None),
        ("post", f"{CA_URL}{inter.pk}/status/disabled/", None),
        ("post", f"{CA_URL}{inter.pk}/refresh-crl/", None),
        ("get", f"{CA_URL}add/", None),
        ("get", f"{SUB_URL}add/", None),
        ("get", f"{POLICY_URL}add/", None),
        ("get", f"{CSR_URL}generate/", None),
        ("get", f"{CSR_URL}upload/", None),
        ("post", f"{CA_URL}{inter.pk}/delete/", {"post": "yes"}),
        ("post", f"{SUB_URL}{subscriber.pk}/change/", {"name": "hijack"}),
    ]
    for method, url, data in forbidden:
        assert getattr(client, method)(url, data or {}).status_code == 403, (method, url)
    # A forged action post does nothing.
    client.post(
        CERT_URL,
        {
            "action": "revoke_certificates",
            "_selected_action": [issued.pk],
            "reason": "key_compromise",
            "apply": "1",
        },
    )
    client.post(SUB_URL, {"action": "issue_now", "_selected_action": [subscriber.pk], "index": "0"})
    issued.refresh_from_db()
    inter.refresh_from_db()
    assert issued.status == "active" and inter.status == "active"
    assert Certificate.objects.filter(subscriber=subscriber).count() == 1
    sub_page = client.get(f"{SUB_URL}{subscriber.pk}/change/")
    assert sub_page.status_code == 200 and b"issue-csr" not in sub_page.content
    assert b'name="_save"' not in sub_page.content


def test_import_view_reports_imported_duplicates_and_rejected(tenant, issued):
    client = login(tenant.operator)
    new_pem, new_key = external_leaf("legacy.example.org")
    response = client.post(
        f"{CERT_URL}import/",
        {
            "organization": tenant.organization.pk,
            "files": [
                SimpleUploadedFile("legacy.pem", (new_pem + new_key).encode()),
                SimpleUploadedFile("again.pem", issued.certificate_pem.encode()),
                SimpleUploadedFile("junk.pem", b"this is not a certificate"),
            ],
        },
    )
    assert response.status_code == 200, response.content.decode()[:2000]
    assert len(response.context["imported"]) == 1
    assert len(response.context["duplicates"]) == 1 and len(response.context["rejected"]) == 1
    body = response.content.decode()
    assert "1 imported" in body and "legacy.example.org" in body and "junk.pem" in body
    assert "no PEM certificate found" in body
    assert f"{CERT_URL}{issued.pk}/change/" in body  # the duplicate links to the row already there
    cert = Certificate.objects.get(common_name="legacy.example.org")
    assert cert.source == "imported" and cert.private_key  # the key in the same file was kept
    assert AuditEvent.objects.filter(action="certificate.import", outcome="success").count() == 1
    # Pasted PEM with a key that does not match: rejected with the reason.
    other_pem, _ = external_leaf("other.example.org")
    _, wrong_key = external_leaf("x.example.org")
    response = client.post(
        f"{CERT_URL}import/", {"organization": tenant.organization.pk, "pem": other_pem, "key": wrong_key}
    )
    assert response.status_code == 200 and "does not belong" in response.content.decode()
    assert not Certificate.objects.filter(common_name="other.example.org").exists()
    empty = client.post(f"{CERT_URL}import/", {"organization": tenant.organization.pk})
    assert empty.status_code == 200 and empty.context["form"].errors


def _fill(tenant, ca, subscriber, count: int, *, days: int = 60, prefix: str = "host") -> None:
    """Inventory rows made straight in the database (the test data of a big inventory)."""
    template = Certificate.objects.filter(ca=ca).first()
    now = timezone.now()
    Certificate.objects.bulk_create(
        Certificate(
            organization=tenant.organization,
            ca=ca,
            subscriber=subscriber,
            source="issued",
            serial=f"{prefix}{i:x}".encode().hex(),
            certificate_pem=template.certificate_pem,
            chain_pem=template.chain_pem,
            private_key=template.private_key,
            fingerprint_sha256=f"{prefix}{i}".encode().hex().ljust(64, "0")[:64],
            fingerprint_sha1=f"{prefix}{i}".encode().hex().ljust(40, "0")[:40],
            subject_dn=f"CN={prefix}{i}.acme.test",
            common_name=f"{prefix}{i}.acme.test",
            sans=[f"{prefix}{i}.acme.test"],
            names_text=f"{prefix}{i}.acme.test",
            key_algorithm="ec-p256",
            not_before=now - timedelta(days=1),
            not_after=now + timedelta(days=days),
        )
        for i in range(count)
    )


def test_certificate_list_queries_are_bounded_and_never_count_the_table(
    tenant, hierarchy, subscriber, issued, django_assert_max_num_queries
):
    _, inter = hierarchy
    client = login(tenant.admin)
    client.get(CERT_URL)  # warm the session

    def queries_for(url: str) -> list[str]:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200
        return [q["sql"] for q in ctx.captured_queries]

    _fill(tenant, inter, subscriber, 30, prefix="a")
    small = queries_for(CERT_URL)
    _fill(tenant, inter, subscriber, 270, prefix="b")
    with django_assert_max_num_queries(12):
        response = client.get(CERT_URL)
    assert response.context["cl"].result_count == 301
    assert len(response.context["cl"].result_list) == 50
    big = queries_for(CERT_URL)
    assert len(big) == len(small)  # no query per row
    for sql in big + queries_for(f"{CERT_URL}?status=active&ca={inter.pk}&expiring_within=90&q=acme"):
        if "COUNT(" in sql.upper():
            assert "LIMIT" in sql.upper(), sql  # a capped count, never the whole table
        # No PEM, chain or key column is read for a list (of the certificates or their CAs).
        assert '"private_key"' not in sql and '"certificate_pem"' not in sql and '"chain_pem"' not in sql, sql
    # The result rows carry neither PEM nor key.
    row = response.context["cl"].result_list[0]
    assert {"certificate_pem", "chain_pem", "private_key"} <= row.get_deferred_fields()


def test_capped_count_says_more_than(tenant, hierarchy, subscriber, issued, monkeypatch):
    monkeypatch.setattr(pki_admin.CappedCountPaginator, "cap", 100)
    _fill(tenant, hierarchy[1], subscriber, 150)
    response = login(tenant.operator).get(CERT_URL)
    cl = response.context["cl"]
    assert cl.result_count == 100 and cl.paginator.capped
    assert b"more than 100" in response.content
    assert login(tenant.operator).get(f"{CERT_URL}?p=2").status_code == 200


def test_expiring_within_filter_search_and_other_filters(tenant, hierarchy, subscriber, issued):
    _, inter = hierarchy
    _fill(tenant, inter, subscriber, 5, days=5, prefix="soon")
    _fill(tenant, inter, subscriber, 7, days=60, prefix="later")
    _fill(tenant, inter, subscriber, 2, days=-3, prefix="gone")  # past not_after, status not yet swept
    client = login(tenant.operator)

    def listed(query: str) -> set[str]:
        response = client.get(f"{CERT_URL}?{query}")
        assert response.status_code == 200, response.content[:500]
        return {c.common_name for c in response.context["cl"].result_list}

    assert listed("expiring_within=7") == {f"soon{i}.acme.test" for i in range(5)}
    assert len(listed("expiring_within=30")) == 5 + 1  # + the 30-day certificate issued from the subscriber
    assert len(listed("expiring_within=90")) == 5 + 7 + 1
    assert listed("expiring_within=45") == listed("expiring_within=30")  # any number of days from the URL
    assert listed("expiring_within=past") == {"gone0.acme.test", "gone1.acme.test"}
    assert (
        client.get(f"{CERT_URL}?expiring_within=abc").status_code == 302
    )  # Django's "invalid filter" redirect
    page = client.get(CERT_URL)
    assert b"?expiring_within=7" in page.content and b"?expiring_within=90" in page.content
    # Search: partial name, exact serial, fingerprint (with colons).
    assert listed("q=soon3") == {"soon3.acme.test"}
    assert listed("q=ACME.TEST") >= {"www.acme.test", "later1.acme.test"}
    assert listed(f"q={issued.serial}") == {"www.acme.test"}
    fp = ":".join(issued.fingerprint_sha256[i : i + 2] for i in range(0, 64, 2)).upper()
    assert listed(f"q={fp}") == {"www.acme.test"}
    assert listed(f"q={issued.fingerprint_sha1}") == {"www.acme.test"}
    assert listed("q=nothing-like-this") == set()
    assert listed("status=revoked") == set()
    assert listed("key_algorithm=rsa-2048") == set()
    assert len(listed(f"subscriber={subscriber.pk}&ca={inter.pk}")) == 15


# --- CSRs and CRLs ------------------------------------------------------------------------------------------
def test_generate_upload_and_issue_from_csrs(tenant, subscriber):
    client = login(tenant.operator)
    response = client.post(
        f"{CSR_URL}generate/",
        {
            "organization": tenant.organization.pk,
            "name": "mail",
            "common_name": "www.acme.test",
            "sans": "www.acme.test 10.0.0.5",
            "key_algorithm": "rsa-2048",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    generated = CertificateRequest.objects.get(name="mail")
    assert generated.sans == ["www.acme.test", "10.0.0.5"] and generated.private_key
    for url in (CSR_URL, f"{CSR_URL}{generated.pk}/change/", f"{CSR_URL}{generated.pk}/delete/"):
        page = client.get(url)
        assert page.status_code == 200
        for line in key_body_lines(generated.private_key):
            assert line.encode() not in page.content, url
    download = client.get(f"{CSR_URL}{generated.pk}/download/")
    assert download.status_code == 200 and download.content.decode() == generated.csr_pem

    key = x509.generate_key("ec-p256")
    pem = x509.to_pem(x509.build_csr(key, x509.Subject(common_name="up.acme.test"), []))
    response = client.post(
        f"{CSR_URL}upload/",
        {
            "organization": tenant.organization.pk,
            "name": "up",
            "csr_file": SimpleUploadedFile("up.csr", pem.encode()),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert CertificateRequest.objects.get(name="up").private_key == ""
    bad = client.post(
        f"{CSR_URL}upload/", {"organization": tenant.organization.pk, "name": "bad", "csr": "nope"}
    )
    assert bad.status_code == 200 and bad.context["form"].errors

    page = client.get(f"{CSR_URL}{generated.pk}/issue/")
    assert page.status_code == 200 and subscriber.name.encode() in page.content
    response = client.post(f"{CSR_URL}{generated.pk}/issue/", {"subscriber": subscriber.pk})
    assert response.status_code == 302, response.content.decode()[:2000]
    cert = Certificate.objects.get(subscriber=subscriber)
    assert cert.private_key  # the generated CSR's key travels with it
    assert cert.key_algorithm == "rsa-2048"


def test_crl_list_and_downloads(tenant, other_tenant, hierarchy, issued, django_capture_on_commit_callbacks):
    _, inter = hierarchy
    with django_capture_on_commit_callbacks(execute=True):  # the delta CRL listing it
        services.revoke(issued, reason="superseded", actor=SYSTEM)
    client = login(tenant.auditor)
    listing = client.get(f"{CRL_URL}?ca={inter.pk}")
    assert listing.status_code == 200
    crls = listing.context["cl"].result_list
    assert crls and all(c.ca_id == inter.pk for c in crls)
    latest = max(crls, key=lambda c: c.number)
    page = client.get(f"{CRL_URL}{latest.pk}/change/")
    assert page.status_code == 200 and issued.serial.encode() in page.content
    pem = client.get(f"{CRL_URL}{latest.pk}/download/pem/")
    crl = cx509.load_pem_x509_crl(pem.content)
    assert crl.get_revoked_certificate_by_serial_number(int(issued.serial, 16)) is not None
    der = client.get(f"{CRL_URL}{latest.pk}/download/der/")
    assert der["Content-Type"] == "application/pkix-crl" and cx509.load_der_x509_crl(der.content)
    outsider = login(other_tenant.admin)
    assert outsider.get(CRL_URL).context["cl"].result_list == [] or not list(
        outsider.get(CRL_URL).context["cl"].result_list
    )
    assert outsider.get(f"{CRL_URL}{latest.pk}/download/pem/").status_code == 404


# --- tenancy ---------------------------------------------------------------------------------------------
def test_other_organization_sees_no_rows_and_gets_404(tenant, other_tenant, hierarchy, subscriber, issued):
    root, inter = hierarchy
    csr = services.generate_csr(
        tenant.organization, name="c", common_name="c.acme.test", sans=[], actor=SYSTEM
    )
    policy = services.save_policy(tenant.organization, actor=SYSTEM, name="p")
    client = login(other_tenant.admin)
    for url in (CERT_URL, CA_URL, SUB_URL, POLICY_URL, CSR_URL, CRL_URL):
        response = client.get(url)
        assert response.status_code == 200
        assert list(response.context["cl"].result_list) == [], url
    listing = client.get(CERT_URL)
    assert b"Issuing" not in listing.content and b"www.acme.test" not in listing.content  # not even filters
    assert client.get(f"{CERT_URL}?q={issued.serial}").context["cl"].result_list == [] or not list(
        client.get(f"{CERT_URL}?q={issued.serial}").context["cl"].result_list
    )
    for url in (
        f"{CERT_URL}{issued.pk}/change/",
        f"{CA_URL}{inter.pk}/change/",
        f"{SUB_URL}{subscriber.pk}/change/",
        f"{POLICY_URL}{policy.pk}/change/",
        f"{CSR_URL}{csr.pk}/change/",
    ):
        assert client.get(url).status_code == 302, url  # Django's admin: a missing object goes to the index
    for method, url in (
        ("get", f"{CERT_URL}{issued.pk}/download/cert/"),
        ("post", f"{CERT_URL}{issued.pk}/download/key/"),
        ("get", f"{CERT_URL}{issued.pk}/pkcs12/"),
        ("get", f"{CERT_URL}{issued.pk}/revoke/"),
        ("post", f"{CERT_URL}{issued.pk}/renew/"),
        ("post", f"{SUB_URL}{subscriber.pk}/issue/"),
        ("post", f"{CA_URL}{inter.pk}/status/disabled/"),
        ("get", f"{CA_URL}{root.pk}/download/pem/"),
        ("get", f"{CSR_URL}{csr.pk}/download/"),
        ("get", f"{CSR_URL}{csr.pk}/issue/"),
    ):
        assert getattr(client, method)(url).status_code == 404, (method, url)
    # Forms of the other organization cannot pick this organization's CA or policy.
    page = client.get(f"{SUB_URL}add/")
    form = page.context["adminform"].form
    assert page.status_code == 200
    assert not form.fields["ca"].queryset.filter(pk=inter.pk).exists()
    assert not form.fields["policy"].queryset.filter(pk=policy.pk).exists()
    assert b"Acme Issuing" not in page.content
    response = client.post(
        f"{SUB_URL}add/",
        {
            "organization": other_tenant.organization.pk,
            "name": "steal",
            "issuer_type": "ca",
            "ca": inter.pk,
            "common_name": "x.globex.test",
            "key_algorithm": "ec-p256",
            "validity_days": "10",
        },
    )
    assert response.status_code == 200 and "ca" in response.context["adminform"].form.errors
    # Forged action posts with this organization's ids select nothing.
    client.post(
        CERT_URL,
        {
            "action": "revoke_certificates",
            "_selected_action": [issued.pk],
            "reason": "unspecified",
            "apply": "1",
        },
    )
    issued.refresh_from_db()
    assert issued.status == "active"
    assert Certificate.objects.filter(organization=other_tenant.organization).count() == 0


def test_multi_organization_admin_sees_both_with_an_organization_column(
    tenant, other_tenant, hierarchy, issued
):
    from certmgr import services as core

    core.add_member(other_tenant.organization, tenant.admin.user, "auditor", actor=SYSTEM)
    client = login(tenant.admin)
    response = client.get(CERT_URL)
    assert response.status_code == 200
    assert "organization" in response.context["cl"].list_display
    assert re.search(rb"Globex", response.content)  # the organization filter offers both
