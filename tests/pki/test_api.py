"""The PKI through the API: CAs, policies, subscribers, CSRs, the inventory, exports, revocation and the
seed API's paths. Checked from outside with the real openssl where it matters."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from django.db import connection
from django.test.utils import CaptureQueriesContext

from certmgr.models import AuditEvent
from pki import services, x509
from pki.models import Certificate, CertificateAuthority, CertificateRequest, Crl
from tests.conftest import SYSTEM, assert_isolated

pytestmark = pytest.mark.django_db

ROOT = {
    "name": "Root",
    "kind": "internal-root",
    "subject": {"common_name": "Acme Root CA", "organization": "Acme", "country": "DE"},
    "key_algorithm": "ec-p384",
    "validity_days": 3650,
    "max_path_length": 1,
}
P12_PASSWORD = "a long export password"


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def post(client, url, body=None):
    return client.post(url, body, format="json")


def created(response) -> dict:
    assert response.status_code == 201, response.content[:2000]
    return response.json()


def make_root(client, **overrides) -> dict:
    return created(post(client, "/api/v1/cas/", {**ROOT, **overrides}))


def make_intermediate(client, parent: int, name="Issuing", **overrides) -> dict:
    body = {
        "name": name,
        "kind": "internal-intermediate",
        "parent": parent,
        "subject": {"common_name": f"Acme {name} CA", "organization": "Acme"},
        "key_algorithm": "ec-p256",
        "validity_days": 1825,
        "max_path_length": 0,
        **overrides,
    }
    return created(post(client, "/api/v1/cas/", body))


def make_subscriber(client, ca: int, name="web", **overrides) -> dict:
    body = {
        "name": name,
        "ca": ca,
        "common_name": f"{name}.acme.test",
        "sans": [f"{name}.acme.test", "10.0.0.5"],
        "subject": {"organization": "Acme", "country": "DE"},
        "key_algorithm": "ec-p256",
        "validity_days": 30,
        "extended_key_usages": ["server_auth"],
        **overrides,
    }
    return created(post(client, "/api/v1/subscribers/", body))


def issue(client, subscriber: int, body=None) -> dict:
    return created(post(client, f"/api/v1/subscribers/{subscriber}/issue/", body or {}))


@pytest.fixture
def pki(tenant):
    """Root -> intermediate -> subscriber, made through the API by the operator."""
    client = tenant.operator.client
    root = make_root(client)
    inter = make_intermediate(client, root["id"])
    sub = make_subscriber(client, inter["id"])
    return {"root": root, "inter": inter, "sub": sub}


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content[:2000]
    return [row["id"] for row in response.json()["results"]]


def self_signed(common_name: str, *, days: int = 30, serial: int | None = None, sans=()):
    key = x509.generate_key("ec-p256")
    cert = x509.build_self_signed_certificate(
        key=key,
        subject=x509.Subject(common_name=common_name),
        sans=list(sans),
        validity_days=days,
        serial=serial,
    )
    return x509.to_pem(cert), x509.private_key_to_pem(key)


# --- certificate authorities ------------------------------------------------------------------------------
def test_create_root_and_intermediate_return_pems(tenant, tmp_path):
    client = tenant.operator.client
    root = make_root(client)
    assert root["kind"] == "internal-root" and root["status"] == "active" and root["parent"] is None
    assert root["subject"] == ROOT["subject"] and root["key_algorithm"] == "ec-p384"
    assert root["subject_dn"] == "CN=Acme Root CA,O=Acme,C=DE"
    root_cert = cx509.load_pem_x509_certificate(root["certificate"].encode())
    assert x509.serial_hex(root_cert) == root["serial"]
    assert root["crl_url"].endswith(f"/pki/ca/{root['id']}.crl")
    assert root["aia_url"].endswith(f"/pki/ca/{root['id']}/certificate.crt")
    assert "private_key" not in root

    inter = make_intermediate(client, root["id"])
    assert inter["kind"] == "internal-intermediate" and inter["parent"] == root["id"]
    inter_cert = cx509.load_pem_x509_certificate(inter["certificate"].encode())
    assert inter_cert.issuer == root_cert.subject
    (tmp_path / "root.pem").write_text(root["certificate"])
    (tmp_path / "inter.pem").write_text(inter["certificate"])
    result = openssl("verify", "-CAfile", "root.pem", "inter.pem", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    detail = client.get(f"/api/v1/cas/{inter['id']}/").json()
    assert detail["certificate"] == inter["certificate"]
    assert AuditEvent.objects.filter(action="ca.create", outcome="success").count() == 2


def test_ca_validity_defaults_fit_under_the_root(tenant):
    client = tenant.operator.client
    body = {k: v for k, v in ROOT.items() if k != "validity_days"}
    root = make_root(client, **body)
    inter = created(
        post(
            client,
            "/api/v1/cas/",
            {
                "name": "I",
                "kind": "internal-intermediate",
                "parent": root["id"],
                "subject": {"common_name": "I"},
                "max_path_length": 0,
            },
        )
    )
    years = {
        ca["name"]: round((dt.datetime.fromisoformat(ca["not_after"]) - dt.datetime.now(dt.UTC)).days / 365)
        for ca in (root, inter)
    }
    assert years == {"Root": 10, "I": 5}
    too_long = post(
        client,
        "/api/v1/cas/",
        {
            "name": "J",
            "kind": "internal-intermediate",
            "parent": root["id"],
            "subject": {"common_name": "J"},
            "max_path_length": 0,
            "validity_days": 4000,
        },
    )
    assert too_long.status_code == 400 and "outlive" in too_long.json()["error"]["message"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": "acme"}, "acme"),
        ({"kind": "internal-intermediate"}, "parent"),
        ({"subject": {"organization": "no common name"}}, "subject"),
        ({"subject": {"common_name": "x", "country": "Germany"}}, "subject"),
        ({"key_algorithm": "dsa-1024"}, "key_algorithm"),
        ({"validity_days": 0}, "validity_days"),
        ({"parent": 2**40}, "parent"),
    ],
)
def test_bad_ca_requests_get_field_errors(tenant, overrides, field):
    response = post(tenant.operator.client, "/api/v1/cas/", {**ROOT, **overrides})
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"], response.json()
    assert not CertificateAuthority.objects.exists()


def test_duplicate_ca_name_is_409(tenant):
    make_root(tenant.operator.client)
    response = post(tenant.operator.client, "/api/v1/cas/", ROOT)
    assert response.status_code == 409 and "name" in response.json()["error"]["fields"]


def test_path_length_is_respected(tenant, pki):
    response = post(
        tenant.operator.client,
        "/api/v1/cas/",
        {
            "name": "Too deep",
            "kind": "internal-intermediate",
            "parent": pki["inter"]["id"],
            "subject": {"common_name": "Deep"},
        },
    )
    assert response.status_code == 400, response.content
    assert not CertificateAuthority.objects.filter(name="Too deep").exists()


def test_another_tenants_ca_cannot_be_a_parent(tenant, other_tenant):
    theirs = make_root(other_tenant.operator.client)
    response = post(
        tenant.operator.client,
        "/api/v1/cas/",
        {
            "name": "Sub",
            "kind": "internal-intermediate",
            "parent": theirs["id"],
            "subject": {"common_name": "S"},
        },
    )
    assert response.status_code == 400 and "parent" in response.json()["error"]["fields"]


def test_import_ca_keeps_the_key_write_only(tenant, pki):
    key = x509.generate_key("ec-p256")
    cert = x509.build_ca_certificate(
        subject=x509.Subject(common_name="Legacy Root"), key=key, validity_days=365, max_path_length=0
    )
    key_pem = x509.private_key_to_pem(key)
    response = post(
        tenant.operator.client,
        "/api/v1/cas/import/",
        {"name": "Legacy", "certificate": x509.to_pem(cert), "private_key": key_pem},
    )
    body = created(response)
    assert body["imported"] is True and body["kind"] == "internal-root"
    assert body["subject_dn"] == "CN=Legacy Root"
    assert "private_key" not in body and _key_body(key_pem)[0] not in response.content.decode()
    assert CertificateAuthority.objects.get(pk=body["id"]).private_key == key_pem

    # It signs: a subscriber under it issues a certificate.
    sub = make_subscriber(tenant.operator.client, body["id"], name="legacy")
    leaf = issue(tenant.operator.client, sub["id"])
    assert leaf["ca"] == body["id"]

    other_key = x509.private_key_to_pem(x509.generate_key("ec-p256"))
    mismatch = post(
        tenant.operator.client,
        "/api/v1/cas/import/",
        {"name": "Wrong", "certificate": x509.to_pem(cert), "private_key": other_key},
    )
    assert mismatch.status_code == 400 and "private_key" in mismatch.json()["error"]["fields"]
    leaf_pem, leaf_key = self_signed("not-a-ca.test")
    not_ca = post(
        tenant.operator.client,
        "/api/v1/cas/import/",
        {"name": "Leaf", "certificate": leaf_pem, "private_key": leaf_key},
    )
    assert not_ca.status_code == 400 and "certificate" in not_ca.json()["error"]["fields"]
    garbage = post(
        tenant.operator.client,
        "/api/v1/cas/import/",
        {"name": "G", "certificate": "nope", "private_key": "no"},
    )
    assert garbage.status_code == 400


def test_rename_disable_enable_and_delete_ca(tenant, pki):
    client = tenant.operator.client
    inter_url = f"/api/v1/cas/{pki['inter']['id']}/"
    renamed = client.patch(inter_url, {"name": "Issuing 2025"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "Issuing 2025"
    assert AuditEvent.objects.filter(action="ca.update", target_id=str(pki["inter"]["id"])).exists()
    clash = client.patch(inter_url, {"name": "Root"}, format="json")
    assert clash.status_code == 409

    disabled = post(client, f"{inter_url}disable/")
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    refused = post(client, f"/api/v1/subscribers/{pki['sub']['id']}/issue/", {})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "ca_unavailable"
    enabled = post(client, f"{inter_url}enable/")
    assert enabled.json()["status"] == "active"
    issue(client, pki["sub"]["id"])

    # A CA with certificates, subordinates or subscribers stays: disable it instead.
    assert client.delete(inter_url).status_code == 409
    assert client.delete(f"/api/v1/cas/{pki['root']['id']}/").status_code == 409
    spare = make_root(client, name="Spare")
    assert client.delete(f"/api/v1/cas/{spare['id']}/").status_code == 204
    assert not CertificateAuthority.objects.filter(pk=spare["id"]).exists()


def test_ca_crls_list(tenant, pki, django_capture_on_commit_callbacks):
    client = tenant.operator.client
    url = f"/api/v1/cas/{pki['inter']['id']}/crls/"
    first = client.get(url)
    assert first.status_code == 200, first.content
    rows = first.json()["results"]
    assert len(rows) == 1 and rows[0]["number"] == 1  # built on first request
    assert rows[0]["delta"] is False and rows[0]["base_number"] is None and rows[0]["entries"] == 0
    crl = cx509.load_pem_x509_crl(rows[0]["crl"].encode())
    assert crl.issuer.rfc4514_string() == pki["inter"]["subject_dn"]
    cert = issue(client, pki["sub"]["id"])
    with django_capture_on_commit_callbacks(execute=True):  # the revocation's delta CRL task
        post(client, f"/api/v1/certificates/{cert['id']}/revoke/", {"reason": "superseded"})
    rows = client.get(url).json()["results"]
    # the revocation's full CRL (not an anchor) and its delta CRL, which names the anchor
    assert [(r["number"], r["delta"], r["anchor"], r["base_number"], r["entries"]) for r in rows] == [
        (3, True, False, 1, 1),
        (2, False, False, None, 1),
        (1, False, True, None, 0),
    ]
    newest = cx509.load_pem_x509_crl(rows[0]["crl"].encode())
    assert [format(r.serial_number, "x") for r in newest] == [cert["serial"]]


# --- the CA private key never leaves -------------------------------------------------------------------
def _key_body(pem: str) -> list[str]:
    """The base64 lines of a PEM key: any of them in a response means the key leaked."""
    return [line for line in pem.strip().splitlines() if not line.startswith("-----") and len(line) > 20]


def test_ca_private_key_appears_in_no_response(tenant, pki, tmp_path):
    client = tenant.admin.client
    responses = []

    def call(method, url, body=None):
        response = getattr(client, method)(url, body, format="json")
        responses.append(response)
        return response

    root_id, inter_id, sub_id = pki["root"]["id"], pki["inter"]["id"], pki["sub"]["id"]
    cert = call("post", f"/api/v1/subscribers/{sub_id}/issue/", {}).json()
    for url in [
        "/api/v1/cas/",
        f"/api/v1/cas/{root_id}/",
        f"/api/v1/cas/{inter_id}/",
        f"/api/v1/cas/{inter_id}/crls/",
        f"/api/v1/pki/ca/{inter_id}/crls",
        "/api/v1/certificates/",
        f"/api/v1/certificates/{cert['id']}/",
        f"/api/v1/certificates/{cert['id']}/bundle/?include_key=true",
        f"/api/v1/certificates/{cert['id']}/private-key/",
        f"/api/v1/subscribers/{sub_id}/latest-bundle/",
        "/api/v1/subscribers/",
        "/api/v1/audit-events/",
        "/api/v1/schema/",
        f"/pki/ca/{inter_id}.pem",
        f"/pki/ca/{inter_id}/certificate.pem",
    ]:
        assert call("get", url).status_code == 200, url
    call("patch", f"/api/v1/cas/{inter_id}/", {"name": "Renamed"})
    call("post", f"/api/v1/cas/{inter_id}/disable/")
    call("post", f"/api/v1/cas/{inter_id}/enable/")
    call("post", f"/api/v1/certificates/{cert['id']}/pkcs12/", {"password": P12_PASSWORD})
    call("post", f"/api/v1/certificates/{cert['id']}/revoke/", {"reason": "superseded"})
    call("post", "/api/v1/cas/", {**ROOT, "name": "Second root"})

    secrets = []
    for ca in CertificateAuthority.objects.all():
        assert ca.private_key
        secrets.extend(_key_body(ca.private_key))
    leaf_key_lines = _key_body(Certificate.objects.get(pk=cert["id"]).private_key)
    assert any(line in responses[9].content.decode() for line in leaf_key_lines)  # the leaf key does leave
    for response in responses:
        text = response.content.decode("latin-1")
        for line in secrets:
            assert line not in text, response.request["PATH_INFO"]
    # PKCS#12 is binary: its key bag is encrypted under the password; check it holds the leaf key only.
    (tmp_path / "x.p12").write_bytes(responses[-3].content)
    dump = openssl(
        "pkcs12", "-in", "x.p12", "-nocerts", "-nodes", "-passin", f"pass:{P12_PASSWORD}", cwd=tmp_path
    )
    assert dump.returncode == 0, dump.stderr
    assert not any(line in dump.stdout for line in secrets)


# --- policies ---------------------------------------------------------------------------------------------
POLICY = {
    "name": "web only",
    "common_name_patterns": ["*.acme.test"],
    "san_patterns": ["*.acme.test", "~10\\.0\\.0\\.[0-9]+"],
    "allowed_san_types": ["dns", "ip"],
    "allowed_key_algorithms": ["ec-p256", "ec-p384"],
    "max_validity_days": 90,
    "key_usages": ["digital_signature"],
    "extended_key_usages": ["server_auth", "1.3.6.1.5.5.7.3.2"],
}


def test_policy_crud(tenant):
    client = tenant.operator.client
    body = created(post(client, "/api/v1/policies/", POLICY))
    assert body["organization"] == tenant.organization.pk
    assert {k: body[k] for k in POLICY} == POLICY
    url = f"/api/v1/policies/{body['id']}/"
    patched = client.patch(url, {"max_validity_days": 30, "description": "tight"}, format="json")
    assert patched.status_code == 200 and patched.json()["max_validity_days"] == 30
    assert patched.json()["common_name_patterns"] == ["*.acme.test"]
    event = AuditEvent.objects.filter(action="policy.update").latest("id")
    assert event.details["changed"] == ["description", "max_validity_days"]
    assert post(client, "/api/v1/policies/", POLICY).status_code == 409
    bad = post(client, "/api/v1/policies/", {"name": "bad", "common_name_patterns": ["~(unclosed"]})
    assert bad.status_code == 400 and "common_name_patterns" in bad.json()["error"]["fields"]
    bad = post(client, "/api/v1/policies/", {"name": "bad", "key_usages": ["everything"]})
    assert bad.status_code == 400 and "key_usages" in bad.json()["error"]["fields"]
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404


def test_policy_is_enforced_on_subscribers_and_issuance(tenant, pki):
    client = tenant.operator.client
    policy = created(post(client, "/api/v1/policies/", POLICY))
    refused = post(
        client,
        "/api/v1/subscribers/",
        {"name": "evil", "ca": pki["inter"]["id"], "policy": policy["id"], "common_name": "evil.example.com"},
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "policy_violation"
    sub = make_subscriber(client, pki["inter"]["id"], name="api", policy=policy["id"], validity_days=60)
    issue(client, sub["id"])
    # The policy tightens after the subscriber was made: the next issuance is refused.
    client.patch(f"/api/v1/policies/{policy['id']}/", {"max_validity_days": 30}, format="json")
    again = post(client, f"/api/v1/subscribers/{sub['id']}/issue/", {})
    assert again.status_code == 400 and again.json()["error"]["code"] == "policy_violation"
    # A policy in use is not deleted.
    assert client.delete(f"/api/v1/policies/{policy['id']}/").status_code == 409


# --- subscribers ------------------------------------------------------------------------------------------
def test_subscriber_crud(tenant, pki):
    client = tenant.operator.client
    sub = pki["sub"]
    assert sub["ca"] == pki["inter"]["id"] and sub["policy"] is None
    assert sub["subject"] == {"organization": "Acme", "country": "DE"}
    assert sub["last_operation_status"] == "" and sub["issuer_type"] == "ca"
    url = f"/api/v1/subscribers/{sub['id']}/"
    patched = client.patch(
        url, {"validity_days": 10, "auto_renew": False, "renew_before_days": 3}, format="json"
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["validity_days"] == 10 and patched.json()["sans"] == sub["sans"]
    bad = client.patch(url, {"renew_before_days": 20}, format="json")
    assert bad.status_code == 400 and "renew_before_days" in bad.json()["error"]["fields"]
    bad = post(
        client, "/api/v1/subscribers/", {"name": "x", "ca": pki["inter"]["id"], "sans": ["not a name!"]}
    )
    assert bad.status_code == 400 and "sans" in bad.json()["error"]["fields"]
    bad = post(client, "/api/v1/subscribers/", {"name": "x", "common_name": "x.test"})
    assert bad.status_code == 400 and "ca" in bad.json()["error"]["fields"]
    assert (
        post(
            client, "/api/v1/subscribers/", {"name": "web", "ca": pki["inter"]["id"], "common_name": "a"}
        ).status_code
        == 409
    )
    issue(client, sub["id"])
    assert client.get(url).json()["last_operation_status"] == "success"
    assert client.delete(url).status_code == 204
    assert Certificate.objects.filter(subscriber__isnull=True).count() == 1  # the certificate stays


def test_issue_via_subscriber_verifies_with_openssl(tenant, pki, tmp_path):
    cert = issue(tenant.operator.client, pki["sub"]["id"])
    assert cert["status"] == "active" and cert["ca"] == pki["inter"]["id"]
    assert cert["subscriber"] == pki["sub"]["id"] and cert["has_private_key"] is True
    assert cert["common_name"] == "web.acme.test" and cert["sans"] == ["web.acme.test", "10.0.0.5"]
    assert "private_key" not in cert
    (tmp_path / "cert.pem").write_text(cert["certificate"])
    (tmp_path / "chain.pem").write_text(cert["chain"])
    result = openssl("verify", "-CAfile", "chain.pem", "cert.pem", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    leaf = cx509.load_pem_x509_certificate(cert["certificate"].encode())
    assert leaf.fingerprint(hashes.SHA256()).hex() == cert["fingerprint_sha256"]
    cdp = leaf.extensions.get_extension_for_class(cx509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == pki["inter"]["crl_url"]


def test_issue_from_the_callers_csr_keeps_no_key(tenant, pki):
    key = x509.generate_key("ec-p256")
    csr = x509.to_pem(x509.build_csr(key, x509.Subject(common_name="web.acme.test"), ["web.acme.test"]))
    cert = issue(tenant.operator.client, pki["sub"]["id"], {"csr": csr})
    assert cert["has_private_key"] is False and cert["common_name"] == "web.acme.test"
    assert cert["sans"] == ["web.acme.test", "10.0.0.5"]  # the subscriber's names, not the CSR's
    leaf = cx509.load_pem_x509_certificate(cert["certificate"].encode())
    assert x509.matches_key(leaf, key)
    response = tenant.operator.client.get(f"/api/v1/certificates/{cert['id']}/private-key/")
    assert response.status_code == 404
    url = f"/api/v1/subscribers/{pki['sub']['id']}/issue/"
    bad = post(tenant.operator.client, url, {"csr": "garbage"})
    assert bad.status_code == 400 and "csr" in bad.json()["error"]["fields"]
    other_names = x509.to_pem(x509.build_csr(key, x509.Subject(common_name="evil.example.com")))
    refused = post(tenant.operator.client, url, {"csr": other_names})
    assert refused.status_code == 400 and "evil.example.com" in refused.json()["error"]["fields"]["csr"][0]


def test_latest_bundle(tenant, pki, tmp_path):
    sub_url = f"/api/v1/subscribers/{pki['sub']['id']}/latest-bundle/"
    assert tenant.operator.client.get(sub_url).status_code == 404
    issue(tenant.operator.client, pki["sub"]["id"])
    newest = issue(tenant.operator.client, pki["sub"]["id"])
    audited = AuditEvent.objects.filter(action="certificate.export_key", target_id=str(newest["id"]))
    # Without ?include_key=true no key is sent (nor exported), whatever the role.
    plain = tenant.operator.client.get(sub_url).json()
    assert "private_key" not in plain and plain["id"] == newest["id"] and audited.count() == 0
    answer = tenant.operator.client.get(f"{sub_url}?include_key=true")
    assert "no-store" in answer["Cache-Control"]
    body = answer.json()
    assert body["id"] == newest["id"] and body["serial"] == newest["serial"]
    assert body["certificate"] == newest["certificate"] and body["chain"] == newest["chain"]
    key = x509.load_private_key(body["private_key"])
    assert x509.matches_key(cx509.load_pem_x509_certificate(body["certificate"].encode()), key)
    assert audited.count() == 1
    # An auditor gets the bundle without the key; asking for it is refused, and nothing is exported.
    as_auditor = tenant.auditor.client.get(sub_url)
    assert as_auditor.status_code == 200 and "private_key" not in as_auditor.json()
    assert tenant.auditor.client.get(f"{sub_url}?include_key=true").status_code == 403
    assert audited.count() == 1
    # Revoked certificates are not "active": the older one is served after the newest is revoked.
    post(tenant.operator.client, f"/api/v1/certificates/{newest['id']}/revoke/", {"reason": "superseded"})
    assert tenant.operator.client.get(sub_url).json()["id"] != newest["id"]


# --- CSRs -------------------------------------------------------------------------------------------------
def test_generate_and_upload_csrs_and_issue_from_them(tenant, pki, tmp_path):
    client = tenant.operator.client
    generated = created(
        post(
            client,
            "/api/v1/csrs/",
            {
                "name": "gen",
                "common_name": "web.acme.test",
                "sans": ["web.acme.test"],
                "key_algorithm": "rsa-2048",
            },
        )
    )
    assert generated["source"] == "generated" and generated["has_private_key"] is True
    assert generated["key_algorithm"] == "rsa-2048" and "private_key" not in generated
    csr_key = CertificateRequest.objects.get(pk=generated["id"]).private_key
    assert not any(line in str(generated) for line in _key_body(csr_key))
    x509.load_csr(generated["csr"])

    key = x509.generate_key("ed25519")
    uploaded = created(
        post(
            client,
            "/api/v1/csrs/",
            {
                "name": "up",
                "csr": x509.to_pem(x509.build_csr(key, x509.Subject(common_name="web.acme.test"))),
            },
        )
    )
    assert uploaded["source"] == "uploaded" and uploaded["has_private_key"] is False
    assert uploaded["common_name"] == "web.acme.test" and uploaded["key_algorithm"] == "ed25519"

    listed = client.get("/api/v1/csrs/")
    assert set(ids(listed)) == {generated["id"], uploaded["id"]}
    for response in (listed, client.get(f"/api/v1/csrs/{generated['id']}/")):
        assert not any(line in response.content.decode() for line in _key_body(csr_key))

    cert = created(post(client, f"/api/v1/csrs/{generated['id']}/issue/", {"subscriber": pki["sub"]["id"]}))
    assert cert["has_private_key"] is True and cert["key_algorithm"] == "rsa-2048"
    assert Certificate.objects.get(pk=cert["id"]).private_key == csr_key  # the generated key goes along
    cert = created(post(client, f"/api/v1/csrs/{uploaded['id']}/issue/", {"subscriber": pki["sub"]["id"]}))
    assert cert["has_private_key"] is False and cert["key_algorithm"] == "ed25519"

    assert client.delete(f"/api/v1/csrs/{uploaded['id']}/").status_code == 204
    assert not CertificateRequest.objects.filter(pk=uploaded["id"]).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "csr"),
        ({"name": "x", "csr": "not a csr"}, "csr"),
        (
            {
                "name": "x",
                "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            },
            "csr",
        ),
        ({"name": "x", "common_name": "x.test", "sans": ["bad name!"]}, "sans"),
        ({"name": "x", "common_name": "c", "subject": {"country": "Germany"}}, "subject"),
    ],
)
def test_bad_csrs_are_400(tenant, body, field):
    response = post(tenant.operator.client, "/api/v1/csrs/", body)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"], response.json()


@pytest.mark.filterwarnings("ignore:Attribute's length")
def test_csr_whose_subject_breaks_our_rules_is_400_not_500(tenant):
    """A well-signed CSR whose subject our Subject type refuses (a 3-letter country)."""
    key = x509.generate_key("ec-p256")
    attribute = cx509.NameAttribute(NameOID.COUNTRY_NAME, "DEU", _validate=False)
    name = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "odd.test"), attribute])
    csr = cx509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    response = post(tenant.operator.client, "/api/v1/csrs/", {"name": "odd", "csr": pem})
    assert response.status_code == 400, response.content
    assert "csr" in response.json()["error"]["fields"]
    assert not CertificateRequest.objects.exists()


# --- the inventory ----------------------------------------------------------------------------------------
def test_list_and_detail_never_carry_the_key(tenant, pki):
    cert = issue(tenant.operator.client, pki["sub"]["id"])
    key_lines = _key_body(Certificate.objects.get(pk=cert["id"]).private_key)
    listed = tenant.admin.client.get("/api/v1/certificates/")
    detail = tenant.admin.client.get(f"/api/v1/certificates/{cert['id']}/")
    bundle = tenant.admin.client.get(f"/api/v1/certificates/{cert['id']}/bundle/")
    for response in (listed, detail, bundle):
        assert response.status_code == 200
        assert not any(line in response.content.decode() for line in key_lines)
    row = listed.json()["results"][0]
    assert row["has_private_key"] is True and "certificate" not in row
    assert row["ca_name"] == "Issuing" and row["subscriber_name"] == "web"
    for field in [
        "id",
        "serial",
        "common_name",
        "sans",
        "status",
        "not_before",
        "not_after",
        "ca",
        "subscriber",
        "fingerprint_sha256",
        "key_algorithm",
        "renewed_from",
        "renewed_by",
    ]:
        assert field in row, field
    assert detail.json()["certificate"] == cert["certificate"]
    body = bundle.json()
    assert body["bundle"] == cert["certificate"] + cert["chain"] and "private_key" not in body


def test_bundle_with_key_for_operators_only(tenant, pki):
    cert = issue(tenant.operator.client, pki["sub"]["id"])
    url = f"/api/v1/certificates/{cert['id']}/bundle/?include_key=true"
    assert tenant.auditor.client.get(url).status_code == 403
    answer = tenant.operator.client.get(url)
    assert "no-store" in answer["Cache-Control"]
    body = answer.json()
    assert x509.matches_key(
        cx509.load_pem_x509_certificate(body["certificate"].encode()),
        x509.load_private_key(body["private_key"]),
    )
    assert AuditEvent.objects.filter(action="certificate.export_key", target_id=str(cert["id"])).count() == 1


def test_private_key_export_is_operator_only_and_audited(tenant, pki):
    cert = issue(tenant.operator.client, pki["sub"]["id"])
    url = f"/api/v1/certificates/{cert['id']}/private-key/"
    denied = tenant.auditor.client.get(url)
    assert denied.status_code == 403 and denied.json()["error"]["status"] == 403
    p12 = post(
        tenant.auditor.client, f"/api/v1/certificates/{cert['id']}/pkcs12/", {"password": P12_PASSWORD}
    )
    assert p12.status_code == 403
    assert not AuditEvent.objects.filter(action="certificate.export_key", outcome="success").exists()
    assert AuditEvent.objects.filter(action="auth.permission_denied").count() >= 2

    response = tenant.operator.client.get(url)
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    assert response.json()["private_key"] == Certificate.objects.get(pk=cert["id"]).private_key
    event = AuditEvent.objects.get(action="certificate.export_key", outcome="success")
    assert event.target_id == str(cert["id"]) and event.actor_type == "token"
    assert event.details["serial"] == cert["serial"] and event.organization_id == tenant.organization.pk
    assert "BEGIN" not in str(event.details)


def test_pkcs12_loads_in_openssl(tenant, pki, tmp_path):
    cert = issue(tenant.operator.client, pki["sub"]["id"])
    url = f"/api/v1/certificates/{cert['id']}/pkcs12/"
    short = post(tenant.operator.client, url, {"password": "short"})
    assert short.status_code == 400 and "password" in short.json()["error"]["fields"]
    response = post(tenant.operator.client, url, {"password": P12_PASSWORD, "alias": "web-2025"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    assert response["Content-Type"] == "application/x-pkcs12"
    assert 'filename="web.acme.test.p12"' in response["Content-Disposition"]
    (tmp_path / "cert.p12").write_bytes(response.content)
    info = openssl(
        "pkcs12", "-info", "-noout", "-in", "cert.p12", "-passin", f"pass:{P12_PASSWORD}", cwd=tmp_path
    )
    assert info.returncode == 0, info.stdout + info.stderr
    wrong = openssl(
        "pkcs12", "-info", "-noout", "-in", "cert.p12", "-passin", "pass:wrong password!", cwd=tmp_path
    )
    assert wrong.returncode != 0
    certs = openssl(
        "pkcs12", "-in", "cert.p12", "-nokeys", "-passin", f"pass:{P12_PASSWORD}", cwd=tmp_path
    ).stdout
    assert "friendlyName: web-2025" in certs and certs.count("BEGIN CERTIFICATE") == 3
    event = AuditEvent.objects.filter(action="certificate.export_key", outcome="success").latest("id")
    assert event.details["format"] == "pkcs12" and P12_PASSWORD not in str(event.details)
    no_key = issue(
        tenant.operator.client,
        pki["sub"]["id"],
        {
            "csr": x509.to_pem(
                x509.build_csr(x509.generate_key("ec-p256"), x509.Subject(common_name="web.acme.test"))
            )
        },
    )
    missing = post(
        tenant.operator.client, f"/api/v1/certificates/{no_key['id']}/pkcs12/", {"password": P12_PASSWORD}
    )
    assert missing.status_code == 404


def _verify_with_crl(tmp_path, cert: dict, crls: list[str]) -> subprocess.CompletedProcess:
    """``openssl verify`` with the CA's full CRL and its delta CRL (``-use_deltas``)."""
    (tmp_path / "cert.pem").write_text(cert["certificate"])
    (tmp_path / "chain.pem").write_text(cert["chain"])
    files = []
    for i, crl_pem in enumerate(crls):
        (tmp_path / f"crl{i}.pem").write_text(crl_pem)
        files += ["-CRLfile", f"crl{i}.pem"]
    return openssl(
        "verify", "-crl_check", "-use_deltas", "-CAfile", "chain.pem", *files, "cert.pem", cwd=tmp_path
    )


def _seed_crl(client, ca_id: int) -> list[str]:
    """The seed listing: the current full CRL, then its current delta CRL, each with its public URL."""
    response = client.get(f"/api/v1/pki/ca/{ca_id}/crls")
    assert response.status_code == 200, response.content
    rows = response.json()
    assert isinstance(rows, list) and [row["delta"] for row in rows] == [False, True]
    full, delta = rows
    assert set(full) == {
        "id", "number", "delta", "anchor", "base_number", "this_update", "next_update", "entries", "url",
        "crl",
    }  # fmt: skip
    # the delta names the anchor, the full CRL beside it (a revocation's, or the anchor) is numbered at or
    # above it and below the delta: the two combine (RFC 5280 §5.2.4)
    assert delta["base_number"] <= full["number"] < delta["number"] and full["base_number"] is None
    assert full["anchor"] == (delta["base_number"] == full["number"]) and delta["anchor"] is False
    assert full["url"].endswith(f"/pki/ca/{ca_id}.crl") and delta["url"].endswith(
        f"/pki/ca/{ca_id}/delta.crl"
    )
    for row in rows:
        stored = Crl.objects.get(pk=row["id"], ca_id=ca_id)
        assert (stored.number, stored.delta, stored.entries) == (row["number"], row["delta"], row["entries"])
    return [full["crl"], delta["crl"]]


def test_revoke_by_id_then_the_seed_crl_fails_verification(
    tenant, pki, tmp_path, django_capture_on_commit_callbacks
):
    client = tenant.operator.client
    cert = issue(client, pki["sub"]["id"])
    before = _verify_with_crl(tmp_path, cert, _seed_crl(client, pki["inter"]["id"]))
    assert before.returncode == 0, before.stdout + before.stderr

    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, f"/api/v1/certificates/{cert['id']}/revoke/", {"reason": "key_compromise"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (
        body["status"] == "revoked" and body["revocation_reason"] == "key_compromise" and body["revoked_at"]
    )
    after = _verify_with_crl(tmp_path, cert, _seed_crl(client, pki["inter"]["id"]))
    assert after.returncode != 0 and "revoked" in (after.stdout + after.stderr)
    again = post(client, f"/api/v1/certificates/{cert['id']}/revoke/", {"reason": "superseded"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_revoked"


@pytest.mark.parametrize("reason", ["KEY_COMPROMISE", "keyCompromise", "key_compromise"])
def test_revoke_accepts_rfc_and_seed_reason_names(tenant, pki, reason):
    cert = issue(tenant.operator.client, pki["sub"]["id"])
    response = post(tenant.operator.client, f"/api/v1/certificates/{cert['id']}/revoke/", {"reason": reason})
    assert response.status_code == 200 and response.json()["revocation_reason"] == "key_compromise"


def test_revoke_with_an_unknown_reason_is_400(tenant, pki):
    cert = issue(tenant.operator.client, pki["sub"]["id"])
    response = post(tenant.operator.client, f"/api/v1/certificates/{cert['id']}/revoke/", {"reason": "bored"})
    assert response.status_code == 400 and "reason" in response.json()["error"]["fields"]
    assert Certificate.objects.get(pk=cert["id"]).status == "active"


def test_seed_revoke_by_serial_then_crl_check_fails(
    tenant, pki, tmp_path, django_capture_on_commit_callbacks
):
    client = tenant.operator.client
    cert = issue(client, pki["sub"]["id"])
    before = _verify_with_crl(tmp_path, cert, _seed_crl(client, pki["inter"]["id"]))
    assert before.returncode == 0, before.stdout + before.stderr
    serial = cert["serial"].upper()  # the seed's scripts may send upper case; colons too
    with django_capture_on_commit_callbacks(execute=True):
        response = post(
            client, f"/api/v1/pki/certificates/{serial}/revoke", {"revocationReason": "KEY_COMPROMISE"}
        )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["message"] == "Successfully revoked certificate" and body["serialNumber"] == cert["serial"]
    revoked_at = dt.datetime.fromisoformat(body["revokedAt"].replace("Z", "+00:00"))
    assert revoked_at == Certificate.objects.get(pk=cert["id"]).revoked_at
    assert Certificate.objects.get(pk=cert["id"]).revocation_reason == "key_compromise"
    after = _verify_with_crl(tmp_path, cert, _seed_crl(client, pki["inter"]["id"]))
    assert after.returncode != 0 and "revoked" in (after.stdout + after.stderr)
    again = post(
        client, f"/api/v1/pki/certificates/{cert['serial']}/revoke", {"revocationReason": "UNSPECIFIED"}
    )
    assert again.status_code == 409


def test_seed_revoke_unknown_ambiguous_and_forbidden(tenant, other_tenant, pki):
    client = tenant.operator.client
    url = "/api/v1/pki/certificates/{}/revoke"
    assert post(client, url.format("abcdef0123"), {"revocationReason": "UNSPECIFIED"}).status_code == 404
    assert post(client, url.format("not-hex"), {}).status_code == 404
    bad = post(client, url.format("abcdef"), {"revocationReason": "BORED"})
    assert bad.status_code == 400 and "revocationReason" in bad.json()["error"]["fields"]

    # Two certificates with one serial (two issuers): the serial does not say which one.
    for name in ("one.test", "two.test"):
        pem, _ = self_signed(name, serial=0x5EED)
        created(post(client, "/api/v1/certificates/import/", {"certificate": pem}))
    ambiguous = post(client, url.format("5eed"), {"revocationReason": "UNSPECIFIED"})
    assert ambiguous.status_code == 409 and "/api/v1/certificates/" in ambiguous.json()["error"]["message"]

    cert = issue(client, pki["sub"]["id"])
    assert post(tenant.auditor.client, url.format(cert["serial"]), {}).status_code == 403
    assert post(other_tenant.admin.client, url.format(cert["serial"]), {}).status_code == 404
    assert other_tenant.admin.client.get(f"/api/v1/pki/ca/{pki['inter']['id']}/crls").status_code == 404
    assert post(APIClientNoAuth(), url.format(cert["serial"]), {}).status_code == 401
    assert Certificate.objects.get(pk=cert["id"]).status == "active"


def APIClientNoAuth():
    from rest_framework.test import APIClient

    return APIClient()


def test_imported_certificates_cannot_be_revoked_here(tenant):
    pem, _ = self_signed("outside.test")
    cert = created(post(tenant.operator.client, "/api/v1/certificates/import/", {"certificate": pem}))
    response = post(tenant.operator.client, f"/api/v1/certificates/{cert['id']}/revoke/", {})
    assert response.status_code == 400
    assert Certificate.objects.get(pk=cert["id"]).status == "active"


# --- import -----------------------------------------------------------------------------------------------
def test_import_with_and_without_key(tenant, pki, tmp_path):
    client = tenant.operator.client
    pem, key = self_signed("imported.example.org", sans=["imported.example.org", "www.imported.example.org"])
    with_key = created(post(client, "/api/v1/certificates/import/", {"certificate": pem, "private_key": key}))
    assert with_key["source"] == "imported" and with_key["has_private_key"] is True
    assert with_key["common_name"] == "imported.example.org" and with_key["ca"] is None
    assert "private_key" not in with_key
    assert client.get(f"/api/v1/certificates/{with_key['id']}/private-key/").json()["private_key"] == key

    pem2, _ = self_signed("nokey.example.org")
    without = created(post(client, "/api/v1/certificates/import/", {"certificate": pem2}))
    assert without["has_private_key"] is False

    # A certificate of our own CA, with its chain in a separate field, is linked to that CA.
    theirs = services.issue(
        services.save_subscriber(
            tenant.organization,
            actor=SYSTEM,
            name="tmp",
            ca=CertificateAuthority.objects.get(pk=pki["inter"]["id"]),
            common_name="tmp.acme.test",
            validity_days=5,
        ),
        actor=SYSTEM,
    ).certificate
    leaf_pem, chain_pem = theirs.certificate_pem, theirs.chain_pem
    Certificate.objects.filter(pk=theirs.pk).delete()
    linked = created(
        post(client, "/api/v1/certificates/import/", {"certificate": leaf_pem, "chain": chain_pem})
    )
    assert linked["ca"] == pki["inter"]["id"] and linked["chain"] == chain_pem
    assert AuditEvent.objects.filter(action="certificate.import", outcome="success").count() == 3


def test_import_duplicate_is_409_and_garbage_is_400(tenant):
    client = tenant.operator.client
    pem, key = self_signed("dup.example.org")
    created(post(client, "/api/v1/certificates/import/", {"certificate": pem}))
    duplicate = post(client, "/api/v1/certificates/import/", {"certificate": pem, "private_key": key})
    assert duplicate.status_code == 409, duplicate.content
    assert "certificate" in duplicate.json()["error"]["fields"]
    garbage = post(client, "/api/v1/certificates/import/", {"certificate": "this is not PEM"})
    assert garbage.status_code == 400
    error = garbage.json()["error"]
    assert "certificate" in error["fields"] and "no PEM certificate" in error["message"]
    broken = post(
        client,
        "/api/v1/certificates/import/",
        {"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
    )
    assert broken.status_code == 400 and "certificate" in broken.json()["error"]["fields"]
    other_pem, _ = self_signed("other.example.org")
    mismatch = post(client, "/api/v1/certificates/import/", {"certificate": other_pem, "private_key": key})
    assert mismatch.status_code == 400 and "private_key" in mismatch.json()["error"]["fields"]
    bad_key = post(client, "/api/v1/certificates/import/", {"certificate": other_pem, "private_key": "nope"})
    assert bad_key.status_code == 400 and "private_key" in bad_key.json()["error"]["fields"]
    assert Certificate.objects.count() == 1


def _raw_certificate(key, *, country="DE", ca=False):
    """A certificate built by hand, outside the rules pki.x509 enforces on what it issues."""
    import warnings

    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        name = cx509.Name(
            [
                cx509.NameAttribute(NameOID.COMMON_NAME, "odd.example.org"),
                cx509.NameAttribute(NameOID.COUNTRY_NAME, country, _validate=False),
            ]
        )
    now = dt.datetime.now(dt.UTC)
    builder = (
        cx509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(cx509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(cx509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = dict.fromkeys(
            [
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
            ],
            False,
        )
        builder = builder.add_extension(
            cx509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), critical=True
        )
    algorithm = (
        None if isinstance(key, ed448.Ed448PrivateKey | ed25519.Ed25519PrivateKey) else hashes.SHA256()
    )
    cert = builder.sign(key, algorithm)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return x509.to_pem(cert), key_pem


@pytest.mark.filterwarnings("ignore:Attribute's length")
def test_odd_certificates_import_or_get_a_reason_never_a_500(tenant):
    from cryptography.hazmat.primitives.asymmetric import ed448

    client = tenant.operator.client
    pem, key = _raw_certificate(x509.generate_key("ec-p256"), country="DEU")
    odd = post(client, "/api/v1/certificates/import/", {"certificate": pem, "private_key": key})
    assert odd.status_code == 201, odd.content  # the inventory takes any certificate as it is
    assert "C=DEU" in odd.json()["subject_dn"]
    pem, key = _raw_certificate(ed448.Ed448PrivateKey.generate())
    unsupported = post(client, "/api/v1/certificates/import/", {"certificate": pem})
    assert unsupported.status_code == 400 and "unsupported key" in unsupported.json()["error"]["message"]

    # As CAs: a subject our Subject type refuses, and a key type certmgr cannot sign with.
    pem, key = _raw_certificate(x509.generate_key("ec-p256"), country="DEU", ca=True)
    response = post(client, "/api/v1/cas/import/", {"name": "odd", "certificate": pem, "private_key": key})
    assert response.status_code == 400, response.content
    pem, key = _raw_certificate(ed448.Ed448PrivateKey.generate(), ca=True)
    response = post(client, "/api/v1/cas/import/", {"name": "ed448", "certificate": pem, "private_key": key})
    assert response.status_code == 400, response.content
    assert not CertificateAuthority.objects.exists()


# --- filters ----------------------------------------------------------------------------------------------
@pytest.fixture
def inventory(tenant, pki):
    """Certificates of two CAs, two subscribers, two validities, one revoked, one RSA, one imported."""
    client = tenant.operator.client
    other_ca = make_intermediate(client, pki["root"]["id"], name="Second")
    short = make_subscriber(client, pki["inter"]["id"], name="short", validity_days=10)
    long = make_subscriber(client, other_ca["id"], name="long", validity_days=200, key_algorithm="rsa-2048")
    certs = {
        "short": issue(client, short["id"]),
        "long": issue(client, long["id"]),
        "revoked": issue(client, pki["sub"]["id"]),
    }
    post(client, f"/api/v1/certificates/{certs['revoked']['id']}/revoke/", {"reason": "superseded"})
    pem, _ = self_signed("legacy.example.org", days=5)
    certs["imported"] = created(post(client, "/api/v1/certificates/import/", {"certificate": pem}))
    return {"certs": certs, "other_ca": other_ca, "short": short, "long": long}


def test_filters(tenant, pki, inventory):
    client = tenant.auditor.client
    certs = inventory["certs"]
    url = "/api/v1/certificates/"
    assert set(ids(client.get(url))) == {c["id"] for c in certs.values()}
    assert set(ids(client.get(url, {"expires_within_days": 30}))) == {
        certs["short"]["id"],
        certs["imported"]["id"],
    }
    assert ids(client.get(url, {"expires_within_days": 7})) == [certs["imported"]["id"]]
    assert ids(client.get(url, {"status": "revoked"})) == [certs["revoked"]["id"]]
    assert certs["revoked"]["id"] not in ids(client.get(url, {"status": "active"}))
    assert ids(client.get(url, {"ca": inventory["other_ca"]["id"]})) == [certs["long"]["id"]]
    assert ids(client.get(url, {"subscriber": inventory["short"]["id"]})) == [certs["short"]["id"]]
    assert ids(client.get(url, {"key_algorithm": "rsa-2048"})) == [certs["long"]["id"]]
    assert ids(client.get(url, {"source": "imported"})) == [certs["imported"]["id"]]
    assert client.get(url, {"status": "bogus"}).status_code == 400
    assert client.get(url, {"expires_within_days": -1}).status_code == 400
    assert client.get(url, {"ca": 2**70}).status_code == 400


def test_search_by_partial_domain_serial_and_fingerprint(tenant, inventory):
    client = tenant.auditor.client
    certs = inventory["certs"]
    url = "/api/v1/certificates/"
    assert ids(client.get(url, {"search": "short.acme"})) == [certs["short"]["id"]]
    assert ids(client.get(url, {"search": "LEGACY.EXAMPLE"})) == [certs["imported"]["id"]]
    assert set(ids(client.get(url, {"search": "acme.test"}))) == {
        certs["short"]["id"],
        certs["long"]["id"],
        certs["revoked"]["id"],
    }
    assert ids(client.get(url, {"search": "10.0.0.5", "subscriber": inventory["long"]["id"]})) == [
        certs["long"]["id"]
    ]
    long = certs["long"]
    assert long["id"] in ids(client.get(url, {"search": long["serial"][:12]}))
    assert ids(client.get(url, {"search": long["serial"]})) == [long["id"]]
    colons = ":".join(re.findall("..", long["fingerprint_sha256"].upper()))
    assert ids(client.get(url, {"search": colons})) == [long["id"]]
    assert ids(client.get(url, {"search": long["fingerprint_sha1"]})) == [long["id"]]
    flipped = long["fingerprint_sha256"][:-1] + ("1" if long["fingerprint_sha256"][-1] == "0" else "0")
    assert ids(client.get(url, {"search": flipped})) == []
    assert ids(client.get(url, {"search": "nothing-like-this"})) == []


def test_ordering(tenant, inventory):
    client = tenant.auditor.client
    rows = client.get("/api/v1/certificates/", {"ordering": "not_after"}).json()["results"]
    assert [r["not_after"] for r in rows] == sorted(r["not_after"] for r in rows)
    rows = client.get("/api/v1/certificates/", {"ordering": "-id", "page_size": 2}).json()
    assert [r["id"] for r in rows["results"]] == sorted(
        (c["id"] for c in inventory["certs"].values()), reverse=True
    )[:2]
    assert rows["next"]


# --- tenancy ----------------------------------------------------------------------------------------------
def test_isolation_of_cas(tenant, other_tenant, pki):
    url = f"/api/v1/cas/{pki['inter']['id']}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/cas/",
        detail_url=url,
        write_calls=[
            ("post", "/api/v1/cas/", {**ROOT, "name": "Another"}),
            ("post", "/api/v1/cas/import/", {"name": "I", "certificate": "x", "private_key": "y"}),
            ("patch", url, {"name": "Renamed"}),
            ("delete", url, None),
            ("post", f"{url}disable/", None),
            ("post", f"{url}enable/", None),
        ],
    )
    for role in ("admin", "operator", "auditor"):
        client = other_tenant.member(role).client
        assert client.get(f"{url}crls/").status_code == 404
        assert client.get(f"/api/v1/pki/ca/{pki['inter']['id']}/crls").status_code == 404
    assert CertificateAuthority.objects.get(pk=pki["inter"]["id"]).status == "active"


def test_isolation_of_policies(tenant, other_tenant):
    policy = created(post(tenant.operator.client, "/api/v1/policies/", POLICY))
    url = f"/api/v1/policies/{policy['id']}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/policies/",
        detail_url=url,
        write_calls=[
            ("post", "/api/v1/policies/", {"name": "p2"}),
            ("patch", url, {"description": "x"}),
            ("put", url, {"name": "p3"}),
            ("delete", url, None),
        ],
    )


def test_isolation_of_subscribers(tenant, other_tenant, pki):
    url = f"/api/v1/subscribers/{pki['sub']['id']}/"
    issue(tenant.operator.client, pki["sub"]["id"])
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/subscribers/",
        detail_url=url,
        write_calls=[
            (
                "post",
                "/api/v1/subscribers/",
                {"name": "s2", "ca": pki["inter"]["id"], "common_name": "a.test"},
            ),
            ("patch", url, {"validity_days": 5}),
            ("put", url, {"name": "s3"}),
            ("delete", url, None),
            ("post", f"{url}issue/", {}),
        ],
    )
    for role in ("admin", "operator", "auditor"):
        assert other_tenant.member(role).client.get(f"{url}latest-bundle/").status_code == 404
    # Another tenant's CA or policy cannot be named in a subscriber.
    theirs = make_root(other_tenant.operator.client)
    response = post(
        tenant.operator.client,
        "/api/v1/subscribers/",
        {"name": "x", "ca": theirs["id"], "common_name": "x.test"},
    )
    assert response.status_code == 400 and "ca" in response.json()["error"]["fields"]


def test_isolation_of_csrs(tenant, other_tenant, pki):
    csr = created(post(tenant.operator.client, "/api/v1/csrs/", {"name": "c", "common_name": "c.acme.test"}))
    url = f"/api/v1/csrs/{csr['id']}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/csrs/",
        detail_url=url,
        write_calls=[
            ("post", "/api/v1/csrs/", {"name": "c2", "common_name": "c2.test"}),
            ("delete", url, None),
            ("post", f"{url}issue/", {"subscriber": pki["sub"]["id"]}),
        ],
    )
    # Their subscriber cannot be used for our CSR, nor ours for theirs.
    theirs = created(
        post(other_tenant.operator.client, "/api/v1/csrs/", {"name": "t", "common_name": "t.test"})
    )
    response = post(
        other_tenant.operator.client, f"/api/v1/csrs/{theirs['id']}/issue/", {"subscriber": pki["sub"]["id"]}
    )
    assert response.status_code == 400 and "subscriber" in response.json()["error"]["fields"]


def test_isolation_of_certificates(tenant, other_tenant, pki):
    cert = issue(tenant.operator.client, pki["sub"]["id"])
    url = f"/api/v1/certificates/{cert['id']}/"
    pem, _ = self_signed("iso.example.org")
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/certificates/",
        detail_url=url,
        write_calls=[
            ("post", "/api/v1/certificates/import/", {"certificate": pem}),
            ("post", f"{url}revoke/", {"reason": "superseded"}),
            ("post", f"{url}pkcs12/", {"password": P12_PASSWORD}),
            ("get", f"{url}private-key/", None),
            (
                "post",
                f"/api/v1/pki/certificates/{cert['serial']}/revoke",
                {"revocationReason": "UNSPECIFIED"},
            ),
        ],
    )
    for role in ("admin", "operator", "auditor"):
        assert other_tenant.member(role).client.get(f"{url}bundle/").status_code == 404
    assert Certificate.objects.get(pk=cert["id"]).status == "active"
    assert not Certificate.objects.filter(common_name="iso.example.org").exists()


# --- query counts -----------------------------------------------------------------------------------------
def _count_queries(client, url) -> tuple[int, int]:
    client.get(url)  # warm: the token's last-used stamp is written at most once a minute
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    body = response.json()
    rows = body["results"] if isinstance(body, dict) else body
    return len(ctx.captured_queries), len(rows)


def _assert_constant(client, url, grow, django_assert_max_num_queries, *, expected_rows=20) -> int:
    one, rows = _count_queries(client, url)
    assert rows >= 1
    grow()
    with django_assert_max_num_queries(one):
        response = client.get(url)
    body = response.json()
    assert len(body["results"] if isinstance(body, dict) else body) >= expected_rows
    return one


def test_list_query_counts_do_not_grow_with_rows(tenant, pki, django_assert_max_num_queries):
    client = tenant.auditor.client
    org = tenant.organization
    inter = CertificateAuthority.objects.get(pk=pki["inter"]["id"])
    sub = services.save_subscriber(
        org, actor=SYSTEM, name="many", ca=inter, common_name="m.acme.test", policy=None
    )
    services.issue(sub, actor=SYSTEM)
    services.save_policy(org, actor=SYSTEM, name="p0")
    services.generate_csr(org, name="csr0", common_name="c.test", sans=[], actor=SYSTEM)
    counts = {}

    def more_certificates():
        previous = None
        for i in range(20):
            cert = services.issue(sub, actor=SYSTEM, renewal_of=previous if i % 2 else None).certificate
            previous = cert
        services.revoke(cert, reason="superseded", actor=SYSTEM)

    def more_cas():
        for i in range(19):
            services.create_internal_ca(
                org, name=f"R{i}", kind="internal-root", subject={"common_name": f"R{i}"}, actor=SYSTEM
            )

    def more_policies():
        for i in range(1, 20):
            services.save_policy(org, actor=SYSTEM, name=f"p{i}")

    def more_subscribers():
        for i in range(19):
            services.save_subscriber(org, actor=SYSTEM, name=f"s{i}", ca=inter, common_name=f"s{i}.acme.test")

    def more_csrs():
        for i in range(1, 20):
            services.generate_csr(org, name=f"csr{i}", common_name=f"c{i}.test", sans=[], actor=SYSTEM)

    def more_crls():
        for _ in range(20):
            services.refresh_crl(inter, actor=SYSTEM)

    counts["certificates"] = _assert_constant(
        client, "/api/v1/certificates/", more_certificates, django_assert_max_num_queries
    )
    counts["cas"] = _assert_constant(client, "/api/v1/cas/", more_cas, django_assert_max_num_queries)
    counts["policies"] = _assert_constant(
        client, "/api/v1/policies/", more_policies, django_assert_max_num_queries
    )
    counts["subscribers"] = _assert_constant(
        client, "/api/v1/subscribers/", more_subscribers, django_assert_max_num_queries
    )
    counts["csrs"] = _assert_constant(client, "/api/v1/csrs/", more_csrs, django_assert_max_num_queries)
    counts["crls"] = _assert_constant(
        client, f"/api/v1/cas/{inter.pk}/crls/", more_crls, django_assert_max_num_queries
    )
    counts["filtered"] = _assert_constant(
        client,
        "/api/v1/certificates/?expires_within_days=120&search=acme&ordering=not_after",
        lambda: None,
        django_assert_max_num_queries,
    )
    # Authentication and role lookups plus one page query (and the CRL freshness check).
    assert max(counts.values()) <= 8, counts
