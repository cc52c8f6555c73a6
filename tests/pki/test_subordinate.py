"""CA certificates for subscribers (a subordinate CA run elsewhere) and ``Policy.allow_ca``, enforced at every
door: the service, the API and the admin form."""

from __future__ import annotations

import subprocess

import pytest
from cryptography import x509 as cx509
from django.core.exceptions import ValidationError
from django.test import Client

from certmgr.errors import ServiceError
from pki import services, x509
from pki.models import Subscriber
from tests.conftest import PASSWORD, SYSTEM

pytestmark = pytest.mark.django_db


def sub_ca(tenant, ca, policy=None, **values) -> Subscriber:
    return services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="branch-ca",
        ca=ca,
        policy=policy,
        common_name="Acme Branch CA",
        validity_days=365,
        key_usages=["key_cert_sign", "crl_sign", "digital_signature"],
        ca_certificate=True,
        **values,
    )


def allowing(tenant, allow_ca: bool, **rules):
    return services.save_policy(
        tenant.organization, actor=SYSTEM, name=f"ca-{allow_ca}", allow_ca=allow_ca, **rules
    )


def test_a_ca_certificate_needs_a_policy_that_allows_it(tenant, hierarchy):
    root, _ = hierarchy
    for policy in (None, allowing(tenant, False)):
        with pytest.raises(ServiceError) as refused:
            sub_ca(tenant, root, policy)  # refused when saved ...
        assert "ca_certificate" in refused.value.field_errors()
    # ... and when issued, if the policy changed since
    policy = allowing(tenant, True)
    sub = sub_ca(tenant, root, policy)
    services.save_policy(None, actor=SYSTEM, instance=policy, allow_ca=False)
    with pytest.raises(ServiceError) as refused:
        services.issue(sub, actor=tenant.operator.user)
    assert "ca_certificate" in refused.value.field_errors()
    assert not root.certificates.exists()


def test_every_policy_violation_is_reported_at_once(tenant, hierarchy):
    root, _ = hierarchy
    policy = allowing(tenant, False, common_name_patterns=[r"^[a-z.]+\.acme\.test$"], max_validity_days=90)
    with pytest.raises(ServiceError) as refused:
        sub_ca(tenant, root, policy)
    assert {"ca_certificate", "common_name", "validity_days"} <= set(refused.value.field_errors())


def test_an_allowed_ca_certificate_verifies_under_the_root(tenant, hierarchy, tmp_path):
    root, _ = hierarchy
    sub = sub_ca(tenant, root, allowing(tenant, True), ca_path_length=0)
    cert = services.issue(sub, actor=tenant.operator.user).certificate
    parsed = cx509.load_pem_x509_certificate(cert.certificate_pem.encode())
    constraints = parsed.extensions.get_extension_for_class(cx509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert parsed.extensions.get_extension_for_class(cx509.KeyUsage).value.key_cert_sign
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    (tmp_path / "sub.pem").write_text(cert.certificate_pem)
    checked = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", "root.pem", "sub.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    # the subordinate's key works as a CA: a leaf it signs verifies through it
    leaf_key = x509.generate_key("ec-p256")
    leaf = x509.build_leaf_certificate(
        csr_or_public_key=leaf_key.public_key(),
        subject=x509.Subject(common_name="leaf.acme.test"),
        sans=["leaf.acme.test"],
        issuer_cert=parsed,
        issuer_key=x509.load_private_key(services.export_private_key(cert, actor=SYSTEM)),
        validity_days=30,
    ).certificate
    (tmp_path / "leaf.pem").write_text(x509.to_pem(leaf))
    chained = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "sub.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert chained.returncode == 0, chained.stderr


def test_the_issuing_cas_path_length_bounds_the_subordinate(tenant, hierarchy):
    _, inter = hierarchy  # pathLenConstraint 0: it issues end-entity certificates only
    sub = sub_ca(tenant, inter, allowing(tenant, True))
    with pytest.raises(ValidationError) as refused:
        services.issue(sub, actor=tenant.operator.user)
    assert "ca_path_length" in refused.value.message_dict
    assert not inter.certificates.exists()


def test_a_self_signed_subscriber_cannot_ask_for_a_ca_certificate(tenant):
    with pytest.raises(ValidationError) as refused:
        services.save_subscriber(
            tenant.organization,
            actor=SYSTEM,
            name="selfca",
            issuer_type="self-signed",
            common_name="x",
            ca_certificate=True,
        )
    assert "ca_certificate" in refused.value.message_dict


def test_api_and_admin_doors(tenant, hierarchy):
    root, _ = hierarchy
    client = tenant.operator.client
    body = {
        "name": "branch",
        "ca": root.pk,
        "common_name": "Branch CA",
        "key_usages": ["key_cert_sign", "crl_sign"],
        "ca_certificate": True,
    }
    refused = client.post("/api/v1/subscribers/", body, format="json")
    assert refused.status_code == 400 and "ca_certificate" in refused.json()["error"]["fields"]
    created = client.post(
        "/api/v1/subscribers/", {**body, "policy": allowing(tenant, True).pk}, format="json"
    )
    assert created.status_code == 201, created.content
    assert created.json()["ca_certificate"] is True and created.json()["ca_path_length"] == 0
    issued = client.post(f"/api/v1/subscribers/{created.json()['id']}/issue/", {}, format="json")
    assert issued.status_code == 201, issued.content
    parsed = cx509.load_pem_x509_certificate(issued.json()["certificate"].encode())
    assert parsed.extensions.get_extension_for_class(cx509.BasicConstraints).value.ca
    admin = Client()
    assert admin.login(username=tenant.operator.user.username, password=PASSWORD)
    page = admin.get(f"/admin/pki/subscriber/{created.json()['id']}/change/")
    assert b'name="ca_certificate"' in page.content and b'name="ca_path_length"' in page.content
