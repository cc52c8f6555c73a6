"""The PKI services end to end: root -> intermediate -> leaf, policy, revocation and the served CRL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from certmgr.errors import Conflict
from certmgr.models import AuditEvent
from pki import services
from pki.models import Certificate, CertificateAuthority
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def test_issue_verify_revoke_with_openssl(
    tenant, hierarchy, tmp_path, client, django_capture_on_commit_callbacks
):
    root, inter = hierarchy
    sub = services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="web",
        ca=inter,
        common_name="www.acme.test",
        sans=["www.acme.test", "10.0.0.5"],
        key_algorithm="rsa-2048",
        validity_days=30,
        extended_key_usages=["server_auth"],
    )
    cert = services.issue(sub, actor=SYSTEM).certificate
    assert cert.private_key and cert.status == "active" and cert.ca == inter
    assert cert.sans == ["www.acme.test", "10.0.0.5"]
    (tmp_path / "cert.pem").write_text(cert.certificate_pem)
    (tmp_path / "chain.pem").write_text(cert.chain_pem)
    result = openssl("verify", "-CAfile", "chain.pem", "cert.pem", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    crl_pem = client.get(f"/pki/ca/{inter.pk}.pem")
    assert crl_pem.status_code == 200
    (tmp_path / "crl.pem").write_bytes(crl_pem.content)
    root_crl = client.get(f"/pki/ca/{root.pk}.pem").content
    (tmp_path / "crl.pem").write_bytes(crl_pem.content + root_crl)
    ok = openssl(
        "verify", "-crl_check_all", "-CAfile", "chain.pem", "-CRLfile", "crl.pem", "cert.pem", cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr

    with django_capture_on_commit_callbacks(execute=True):  # the delta CRL task of the revocation
        services.revoke(cert, reason="key_compromise", actor=SYSTEM)
    (tmp_path / "delta.pem").write_bytes(client.get(f"/pki/ca/{inter.pk}/delta.pem").content)
    bad = openssl(
        "verify", "-crl_check", "-use_deltas", "-CAfile", "chain.pem", "-CRLfile", "crl.pem",
        "-CRLfile", "delta.pem", "cert.pem", cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode != 0 and "revoked" in (bad.stdout + bad.stderr)
    assert client.get(f"/pki/ca/{inter.pk}/certificate.crt")["Content-Type"] == "application/pkix-cert"
    with pytest.raises(services.AlreadyRevoked):
        services.revoke(cert, reason="superseded", actor=SYSTEM)
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        "ca.create",
        "subscriber.create",
        "certificate.issue",
        "certificate.revoke",
        "crl.publish",
    } <= actions


def test_policy_is_enforced_on_issuance(tenant, hierarchy):
    _, inter = hierarchy
    pol = services.save_policy(
        tenant.organization,
        actor=SYSTEM,
        name="web only",
        common_name_patterns=["*.acme.test"],
        san_patterns=["*.acme.test"],
        allowed_key_algorithms=["ec-p256"],
        max_validity_days=90,
    )
    sub = services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="api",
        ca=inter,
        policy=pol,
        common_name="api.acme.test",
        sans=["api.acme.test"],
        validity_days=60,
    )
    services.issue(sub, actor=SYSTEM)
    # The policy tightens after the subscriber was made: the next issuance is refused.
    services.save_policy(None, actor=SYSTEM, instance=pol, max_validity_days=30)
    with pytest.raises(services.PolicyRefused, match="exceeds"):
        services.issue(sub, actor=SYSTEM)
    assert Certificate.objects.filter(subscriber=sub).count() == 1
    with pytest.raises(services.PolicyRefused, match="not allowed"):
        services.save_subscriber(
            tenant.organization,
            actor=SYSTEM,
            name="evil",
            ca=inter,
            policy=pol,
            common_name="evil.example.com",
            validity_days=10,
        )


def test_disabled_ca_issues_nothing_and_busy_ca_is_not_deleted(tenant, hierarchy):
    root, inter = hierarchy
    sub = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="w", ca=inter, common_name="w.acme.test", validity_days=10
    )
    services.issue(sub, actor=SYSTEM)
    services.set_ca_status(inter, CertificateAuthority.Status.DISABLED, actor=SYSTEM)
    with pytest.raises(services.CaUnavailable):
        services.issue(sub, actor=SYSTEM)
    with pytest.raises(Conflict):
        services.delete_ca(inter, actor=SYSTEM)
    with pytest.raises(Conflict):
        services.delete_ca(root, actor=SYSTEM)


def test_path_length_is_respected(tenant, hierarchy):
    _, inter = hierarchy  # max_path_length 0
    with pytest.raises(ValidationError, match="path"):
        services.create_internal_ca(
            tenant.organization,
            name="Too deep",
            kind="internal-intermediate",
            parent=inter,
            subject={"common_name": "Deep"},
            actor=SYSTEM,
        )
    assert not CertificateAuthority.objects.filter(name="Too deep").exists()


def test_issue_from_a_csr_keeps_no_key_and_checks_its_names(tenant, hierarchy):
    from pki import x509

    _, inter = hierarchy
    key = x509.generate_key("ec-p256")
    sub = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="csr", ca=inter, common_name="svc.acme.test", validity_days=10
    )
    csr = x509.to_pem(x509.build_csr(key, x509.Subject(common_name="svc.acme.test"), []))
    cert = services.issue(sub, actor=SYSTEM, csr_pem=csr).certificate
    assert cert.private_key == "" and cert.common_name == "svc.acme.test"
    other = x509.to_pem(x509.build_csr(key, x509.Subject(common_name="svc.acme.test"), ["evil.test"]))
    with pytest.raises(ValidationError, match=r"evil\.test"):
        services.issue(sub, actor=SYSTEM, csr_pem=other)
    with pytest.raises(ValidationError):
        services.issue(sub, actor=SYSTEM, csr_pem="-----BEGIN CERTIFICATE REQUEST-----\nnope\n")
    sub.refresh_from_db()
    assert sub.last_operation_status == "failed" and "refused" in sub.last_operation_message


def test_a_certificate_is_renewed_once(tenant, hierarchy):
    _, inter = hierarchy
    sub = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="r", ca=inter, common_name="r.acme.test", validity_days=10
    )
    first = services.issue(sub, actor=SYSTEM).certificate
    second = services.issue(sub, actor=SYSTEM, renewal_of=first).certificate
    assert second.renewed_from == first and first.status == "active"
    with pytest.raises(Conflict, match="already renewed"):
        services.issue(sub, actor=SYSTEM, renewal_of=first)


def test_scheduled_refresh_rebuilds_only_stale_crls(tenant, hierarchy, settings):
    from django_q.models import Schedule

    from pki.tasks import refresh_crls

    assert Schedule.objects.filter(name="pki.refresh_crls", func="pki.tasks.refresh_crls").exists()
    assert refresh_crls() == {"refreshed": 2}  # no CRL yet
    assert refresh_crls() == {"fresh": 2}
    settings.CERTMGR_CRL_VALIDITY_HOURS = 100_000  # the horizon moves past every nextUpdate
    assert refresh_crls() == {"refreshed": 2}
    from certmgr.models import JobRun

    runs = JobRun.objects.filter(name="crl_refresh")
    assert runs.count() == 3 and {r.status for r in runs} == {"success"}


def _external_hierarchy():
    from pki import x509

    root_key, inter_key = x509.generate_key("ec-p256"), x509.generate_key("ec-p256")
    root = x509.build_ca_certificate(
        subject=x509.Subject(common_name="Outside Root"), key=root_key, validity_days=3650, max_path_length=1
    )
    inter = x509.build_ca_certificate(
        subject=x509.Subject(common_name="Outside Issuing"),
        key=inter_key,
        issuer_cert=root,
        issuer_key=root_key,
        validity_days=1000,
        max_path_length=0,
    )
    return (root, root_key), (inter, inter_key)


@pytest.mark.parametrize("parent_managed", [True, False])
def test_imported_intermediate_issues_verifiable_chains(tenant, tmp_path, parent_managed):
    from pki import x509

    (root, root_key), (inter, inter_key) = _external_hierarchy()
    if parent_managed:
        services.import_ca(
            tenant.organization,
            name="Outside Root",
            certificate_pem=x509.to_pem(root),
            private_key_pem=x509.private_key_to_pem(root_key),
            actor=SYSTEM,
        )
        pem = x509.to_pem(inter)
    else:
        pem = x509.to_pem(inter) + x509.to_pem(root)
    ca = services.import_ca(
        tenant.organization,
        name="Outside Issuing",
        certificate_pem=pem,
        private_key_pem=x509.private_key_to_pem(inter_key),
        actor=SYSTEM,
    )
    assert ca.max_path_length == 0 and (ca.parent is not None) == parent_managed
    sub = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="w", ca=ca, common_name="w.acme.test", validity_days=10
    )
    cert = services.issue(sub, actor=SYSTEM).certificate
    (tmp_path / "cert.pem").write_text(cert.certificate_pem)
    (tmp_path / "chain.pem").write_text(cert.chain_pem)
    result = openssl("verify", "-CAfile", "chain.pem", "cert.pem", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_intermediate_without_its_issuers_is_refused(tenant):
    from pki import x509

    _, (inter, inter_key) = _external_hierarchy()
    with pytest.raises(ValidationError, match="parent CA first"):
        services.import_ca(
            tenant.organization,
            name="Orphan",
            certificate_pem=x509.to_pem(inter),
            private_key_pem=x509.private_key_to_pem(inter_key),
            actor=SYSTEM,
        )
    assert AuditEvent.objects.filter(action="ca.import", outcome="failure").exists()


def test_expired_certificates_are_marked(tenant, hierarchy):
    from datetime import timedelta

    from django.utils import timezone

    from pki.tasks import mark_expired

    _, inter = hierarchy
    sub = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="e", ca=inter, common_name="e.acme.test", validity_days=10
    )
    old, fresh = services.issue(sub, actor=SYSTEM).certificate, services.issue(sub, actor=SYSTEM).certificate
    Certificate.objects.filter(pk=old.pk).update(not_after=timezone.now() - timedelta(seconds=1))
    assert mark_expired() == {"expired": 1}
    assert Certificate.objects.get(pk=old.pk).status == "expired"
    assert Certificate.objects.get(pk=fresh.pk).status == "active"


def test_import_refuses_a_chain_that_does_not_link(tenant, hierarchy, subscriber):
    from pki import x509

    cert = services.issue(subscriber, actor=SYSTEM).certificate
    (stranger, _), _ = _external_hierarchy()
    bundle = cert.certificate_pem + x509.to_pem(stranger)
    Certificate.objects.filter(pk=cert.pk).delete()
    result = services.import_certificates(tenant.organization, bundle, actor=SYSTEM)
    assert not result.imported and "does not link" in result.rejected[0][1]
    assert "Outside Root" in result.rejected[0][1]
    result = services.import_certificates(
        tenant.organization, cert.certificate_pem + cert.chain_pem, actor=SYSTEM
    )
    assert len(result.imported) == 1 and result.imported[0].ca == hierarchy[1]


def test_issue_is_five_statements_and_keeps_every_guarantee(tenant, subscriber, django_assert_num_queries):
    """The savepoint (BEGIN outside tests), the subscriber lock, one write of certificate + subscriber +
    supersede + audit claim, the event with the head's hash, the release (COMMIT)."""
    from certmgr import audit

    first = services.issue(subscriber, actor=SYSTEM).certificate  # the CA's material is cached from here
    with django_assert_num_queries(5):
        second = services.issue(subscriber, actor=SYSTEM).certificate
    planned = Certificate.objects.filter(subscriber=subscriber, next_renewal_at__isnull=False)
    assert list(planned.values_list("pk", flat=True)) == [second.pk]  # the new one only, never itself
    assert Certificate.objects.get(pk=second.pk).private_key == second.private_key
    subscriber.refresh_from_db()
    assert (
        subscriber.last_operation_status == "success" and second.serial in subscriber.last_operation_message
    )
    events = AuditEvent.objects.filter(action="certificate.issue", target_id__in=[first.pk, second.pk])
    assert events.count() == 2
    assert audit.verify() == (AuditEvent.objects.count(), None)


def test_issue_reads_alert_rules_only_when_the_organization_has_some(
    tenant, subscriber, django_assert_num_queries, django_capture_on_commit_callbacks
):
    from pki import alerts
    from pki.models import AlertDelivery

    services.issue(subscriber, actor=SYSTEM)
    channel = alerts.create_channel(
        tenant.organization, actor=SYSTEM, name="ops", kind="email", recipients=["ops@acme.test"]
    ).channel
    rule = alerts.create_rule(tenant.organization, actor=SYSTEM, name="i", event="issued", channels=[channel])
    with django_capture_on_commit_callbacks():
        cert = services.issue(subscriber, actor=SYSTEM).certificate
    assert AlertDelivery.objects.filter(certificate=cert, event="issued").count() == 1
    alerts.update_rule(rule, enabled=False, actor=SYSTEM)  # disabled: back to no lookup at all
    with django_assert_num_queries(5):
        cert = services.issue(subscriber, actor=SYSTEM).certificate
    assert not AlertDelivery.objects.filter(certificate=cert).exists()


def test_hot_path_writes_store_what_save_stores(issued):
    """certmgr.sql prepares values without the field calls where they change nothing: the rows it writes
    read back exactly as rows saved by the ORM (encrypted key, JSON, time zones, foreign keys)."""
    from certmgr import sql

    def copy(n: int) -> Certificate:
        row = Certificate.objects.get(pk=issued.pk)
        row.pk, row.fingerprint_sha256, row.renewed_from_id = None, f"{n:064x}", None
        return row

    one = copy(1)
    sql.saved(one, sql.execute(sql.insert(one)))
    many = [copy(2), copy(3)]
    sql.bulk_insert(many)
    fields = [
        f.attname for f in Certificate._meta.concrete_fields if f.attname not in ("id", "fingerprint_sha256")
    ]
    for row in (one, *many):
        stored = Certificate.objects.get(pk=row.pk)
        assert {f: getattr(stored, f) for f in fields} == {f: getattr(issued, f) for f in fields} | {
            "renewed_from_id": None
        }
    assert "PRIVATE KEY" in issued.private_key
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT private_key FROM pki_certificate WHERE id = ANY(%s)", [[r.pk for r in (one, *many)]]
        )
        assert all("PRIVATE KEY" not in stored for (stored,) in cursor.fetchall())  # encrypted at rest


@pytest.mark.django_db
def test_the_common_name_is_always_among_the_sans(tenant, hierarchy):
    from cryptography import x509 as cx509

    _, inter = hierarchy
    sub = services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="cn-only",
        ca=inter,
        common_name="api.acme.test",
        sans=["www.acme.test"],
        validity_days=30,
    )
    cert = services.issue(sub, actor=SYSTEM).certificate
    parsed = cx509.load_pem_x509_certificate(cert.certificate_pem.encode())
    sans = parsed.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
    assert sans.get_values_for_type(cx509.DNSName) == ["www.acme.test", "api.acme.test"]
    # a common name no certificate could carry as a SAN is refused when the subscriber is saved
    for bad in ("My Service", "p\u0430ypal.acme.test"):
        with pytest.raises(ValidationError) as refused:
            services.save_subscriber(None, actor=SYSTEM, instance=sub, common_name=bad)
        assert "common_name" in refused.value.message_dict


def test_a_policy_in_use_is_not_deleted_and_the_refusal_is_audited(tenant, hierarchy):
    policy = services.save_policy(tenant.organization, actor=SYSTEM, name="strict")
    sub = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="w", ca=hierarchy[1], policy=policy, common_name="w.acme.test"
    )
    with pytest.raises(Conflict, match="this policy is in use"):
        services.delete_object(policy, actor=SYSTEM)
    refused = AuditEvent.objects.get(action="policy.delete")
    assert refused.outcome == "failure" and refused.target_repr == "strict"
    services.delete_object(sub, actor=SYSTEM)
    services.delete_object(policy, actor=SYSTEM)
    done = AuditEvent.objects.filter(action__in=["subscriber.delete", "policy.delete"], outcome="success")
    assert sorted(done.values_list("action", "target_repr")) == [
        ("policy.delete", "strict"),
        ("subscriber.delete", "w"),
    ]
