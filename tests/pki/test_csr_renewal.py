"""Renewal of a certificate issued from the caller's CSR: the same public key (the stored CSR is sent again),
or, under a policy that requires a new key at renewal, a refusal that says a new CSR is needed."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from pki import alerts, lifecycle, services, x509
from pki.models import AlertDelivery, Certificate, Subscriber
from tests.conftest import SYSTEM
from tests.pki.conftest import make_subscriber
from tests.pki.test_admin import login

pytestmark = pytest.mark.django_db

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _csr_for(names: list[str]) -> tuple[str, x509.PrivateKey]:
    key = x509.generate_key("ec-p256")
    return x509.to_pem(x509.build_csr(key, x509.Subject(common_name=names[0]), names)), key


def _public_key(pem: str) -> bytes:
    return x509.load_pem_certificates(pem)[0].public_key().public_bytes(*_SPKI)


def test_a_renewal_of_a_csr_certificate_keeps_the_csr_key(tenant, hierarchy):
    sub = make_subscriber(tenant, hierarchy[1], "csr")
    csr_pem, key = _csr_for(["csr.acme.test"])
    first = services.issue(sub, actor=SYSTEM, csr_pem=csr_pem).certificate
    assert first.private_key == "" and first.csr_pem == csr_pem
    assert services.renewal_plan(sub) == "Renews with the key of the CSR you supplied."

    renewed = services.issue(sub, actor=SYSTEM, renewal_of=first).certificate

    assert renewed.renewed_from_id == first.pk and renewed.private_key == ""
    assert _public_key(renewed.certificate_pem) == key.public_key().public_bytes(*_SPKI)
    assert renewed.csr_pem == csr_pem  # and the renewal after it sends the same CSR again


def test_the_sweep_renews_a_csr_certificate_with_its_key(tenant, hierarchy):
    from certmgr.jobs import JobReport

    sub = make_subscriber(tenant, hierarchy[1], "sweep")
    csr_pem, key = _csr_for(["sweep.acme.test"])
    first = services.issue(sub, actor=SYSTEM, csr_pem=csr_pem).certificate
    report = JobReport()
    lifecycle.run_renewals(report, at=first.not_after)
    assert report.counts.get("renewed") == 1, report.errors
    renewed = Certificate.objects.get(renewed_from=first)
    assert _public_key(renewed.certificate_pem) == key.public_key().public_bytes(*_SPKI)


def test_a_policy_that_requires_a_new_key_asks_for_a_new_csr(tenant, hierarchy):
    policy = services.save_policy(tenant.organization, actor=SYSTEM, name="rotate", new_key_at_renewal=True)
    sub = make_subscriber(tenant, hierarchy[1], "rot", policy=policy)
    csr_pem, _ = _csr_for(["rot.acme.test"])
    first = services.issue(sub, actor=SYSTEM, csr_pem=csr_pem).certificate
    mail = alerts.create_channel(
        tenant.organization, name="mail", kind="email", recipients=["pki@acme.test"], actor=SYSTEM
    ).channel
    alerts.create_rule(tenant.organization, name="f", event="renewal_failed", channels=[mail], actor=SYSTEM)
    assert services.renewal_plan(sub).startswith("Needs a new CSR: policy 'rotate' requires a new key")

    with pytest.raises(services.NewCsrNeeded, match="a new CSR is needed"):
        services.issue(sub, actor=SYSTEM, renewal_of=first)
    sub.refresh_from_db()
    assert sub.last_operation_status == Subscriber.OperationStatus.FAILED
    assert "a new CSR is needed" in sub.last_operation_message
    assert AlertDelivery.objects.filter(event="renewal_failed", subscriber=sub).count() == 1
    # The same CSR again is refused too; a CSR for a new key renews.
    with pytest.raises(services.PolicyRefused, match="a new CSR is needed"):
        services.issue(sub, actor=SYSTEM, renewal_of=first, csr_pem=csr_pem)
    new_csr, new_key = _csr_for(["rot.acme.test"])
    renewed = services.issue(sub, actor=SYSTEM, renewal_of=first, csr_pem=new_csr).certificate
    assert _public_key(renewed.certificate_pem) == new_key.public_key().public_bytes(*_SPKI)


def test_a_policy_that_requires_a_new_key_overrides_reuse_key(tenant, hierarchy):
    policy = services.save_policy(tenant.organization, actor=SYSTEM, name="rotate", new_key_at_renewal=True)
    sub = make_subscriber(tenant, hierarchy[1], "reuse", policy=policy, reuse_key=True)
    first = services.issue(sub, actor=SYSTEM).certificate
    assert services.renewal_plan(sub) == "Renews with a new key made by certmgr."
    renewed = services.issue(sub, actor=SYSTEM, renewal_of=first).certificate
    assert _public_key(renewed.certificate_pem) != _public_key(first.certificate_pem)


def test_a_csr_certificate_without_a_stored_csr_needs_a_new_one(tenant, hierarchy):
    sub = make_subscriber(tenant, hierarchy[1], "old")
    csr_pem, _ = _csr_for(["old.acme.test"])
    first = services.issue(sub, actor=SYSTEM, csr_pem=csr_pem).certificate
    Certificate.objects.filter(pk=first.pk).update(csr_pem="")  # issued before certmgr kept CSRs
    first.refresh_from_db()
    assert services.renewal_plan(sub).startswith("Needs a new CSR: certificate")
    with pytest.raises(services.NewCsrNeeded, match="a new CSR is needed"):
        services.issue(sub, actor=SYSTEM, renewal_of=first)


def test_the_subscriber_page_says_which_key_a_renewal_uses(tenant, hierarchy):
    sub = make_subscriber(tenant, hierarchy[1], "page")
    services.issue(sub, actor=SYSTEM, csr_pem=_csr_for(["page.acme.test"])[0])
    page = login(tenant.admin).get(f"/admin/pki/subscriber/{sub.pk}/change/")
    assert page.status_code == 200
    assert "Renews with the key of the CSR you supplied." in page.content.decode()
