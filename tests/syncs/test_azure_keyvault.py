"""The Azure Key Vault destination through the real azure-identity and azure-keyvault-certificates
clients, against an HTTPS mock of the documented Entra ID token and Key Vault certificate requests
(tests/syncs/keyvault_mock.py): import as PKCS#12, a new version per renewal, drift read-back, a wrong
client secret, the vault URL rule, and no key material in logs or audit."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ValidationError

from certmgr.jobs import JobReport
from certmgr.models import AuditEvent
from dnsproviders import services as connections
from pki import services as pki
from syncs import services
from syncs.models import Deployment, SyncRun
from tests.conftest import SYSTEM
from tests.syncs import keyvault_mock as mock


def azure_connection(tenant, secret=mock.CLIENT_SECRET, name="azure"):
    return connections.create_connection(
        tenant.organization,
        name=name,
        kind="azure",
        credentials={"tenant_id": mock.TENANT, "client_id": mock.CLIENT_ID, "client_secret": secret},
        actor=SYSTEM,
    )


@pytest.fixture
def vault_destination(tenant, kv):
    return services.create_destination(
        tenant.organization,
        name="kv",
        kind="azure_key_vault",
        connection=azure_connection(tenant),
        options={"vault_url": kv.vault_url(), "tags": {"team": "web"}},
        actor=SYSTEM,
    )


def issue(subscriber, capture, renewal_of=None):
    with capture(execute=True):
        return pki.issue(subscriber, actor=SYSTEM, renewal_of=renewal_of).certificate


def test_import_as_pkcs12_then_a_renewal_is_a_new_version_of_the_same_name(
    kv, vault_destination, subscriber, django_capture_on_commit_callbacks
):
    services.create_rule(vault_destination, subscriber=subscriber, name_schema="{subscriber}", actor=SYSTEM)
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    run = SyncRun.objects.get(certificate=cert)
    assert run.status == "succeeded", run.error
    name = services.name_at_destination(run.rule, cert, subscriber.name)
    kv_name = next(iter(kv.certificates))
    assert run.identifier == f"{kv.vault_url()}/certificates/{kv_name}"
    (first,) = kv.certificates[kv_name]
    assert run.version == first.version
    # what went over the wire: base64 PKCS#12 with the key of the certificate, no password, pkcs12 policy
    assert first.body["policy"]["secret_props"]["contentType"] == "application/x-pkcs12"
    assert not first.body.get("pwd")
    assert first.cer == _der(cert.certificate_pem)
    key = serialization.load_pem_private_key(cert.private_key.encode(), None)
    assert first.key_der == key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert first.tags["certmgr-serial"] == cert.serial and first.tags["team"] == "web"
    assert first.tags["certmgr-subscriber"] == subscriber.name
    # the challenge flow: unauthenticated first, then with the token the mock issued
    assert kv.requests[0][2] is False and all(ok for _, _, ok in kv.requests[1:])
    assert kv.token_requests and kv.token_requests[0]["scope"] == [
        f"https://{mock.VAULT_SUFFIX}:{kv.port}/.default"
    ]

    renewed = issue(subscriber, django_capture_on_commit_callbacks, renewal_of=cert)
    again = SyncRun.objects.get(certificate=renewed)
    assert again.status == "succeeded", again.error
    assert list(kv.certificates) == [kv_name] and len(kv.certificates[kv_name]) == 2
    assert again.identifier == run.identifier and again.version == kv.certificates[kv_name][1].version
    assert again.version != run.version
    dep = Deployment.objects.get(destination=vault_destination, name=name)
    assert dep.certificate_id == renewed.pk and dep.version == again.version


def test_drift_is_read_back_with_get_certificate(
    kv, tenant, hierarchy, vault_destination, subscriber, django_capture_on_commit_callbacks
):
    services.create_rule(vault_destination, subscriber=subscriber, actor=SYSTEM)
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    report = JobReport()
    assert services.check_drift(report) == [] and report.counts.get("in_step") == 1
    # someone imports another certificate under the same name in the portal
    kv_name = next(iter(kv.certificates))
    other = pki.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="other",
        ca=hierarchy[1],
        common_name="other.acme.test",
        sans=["other.acme.test"],
        validity_days=30,
        extended_key_usages=["server_auth"],
    )
    stranger = pki.issue(other, actor=SYSTEM).certificate
    kv.certificates[kv_name].append(mock.Version("f" * 32, _der(stranger.certificate_pem), {}, {}, b""))
    report = JobReport()
    (run,) = services.check_drift(report)
    assert report.counts.get("drifted") == 1 and run.trigger == "drift"
    dep = Deployment.objects.get(destination=vault_destination)
    assert stranger.fingerprint_sha256 in dep.drift
    services.run_sync(run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert kv.certificates[kv_name][-1].cer == _der(cert.certificate_pem)
    assert services.check_drift(JobReport()) == []
    # deleted in the portal: pushed again
    kv.deleted.add(kv_name)
    report = JobReport()
    assert len(services.check_drift(report)) == 1 and report.counts.get("drifted") == 1


def test_a_wrong_client_secret_fails_clearly_and_never_reaches_the_vault_with_a_token(
    kv, tenant, subscriber, django_capture_on_commit_callbacks
):
    wrong = "kv~wrong-secret-0000000000000000000000"
    dest = services.create_destination(
        tenant.organization,
        name="kv",
        kind="azure_key_vault",
        connection=azure_connection(tenant, secret=wrong),
        options={"vault_url": kv.vault_url()},
        actor=SYSTEM,
    )
    result = services.test_destination(dest, actor=SYSTEM)
    assert not result.ok and "AADSTS7000215" in result.message and wrong not in result.message
    services.create_rule(dest, subscriber=subscriber, actor=SYSTEM)
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    run = SyncRun.objects.get(certificate=cert)
    assert run.status == "failed" and "Azure refused the credentials" in run.error, run.error
    assert "AADSTS7000215" in run.error and wrong not in run.error
    assert not kv.certificates and all(not ok for _, _, ok in kv.requests)


def test_the_test_action_lists_certificates_through_the_outbound_guard(kv, vault_destination, settings):
    result = services.test_destination(vault_destination, actor=SYSTEM)
    assert result.ok, result.message
    assert kv.vault_url() in result.message
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []  # the guard's default: no loopback
    seen = len(kv.requests) + len(kv.token_requests)
    result = services.test_destination(
        services.SyncDestination.objects.get(pk=vault_destination.pk), actor=SYSTEM
    )
    assert not result.ok and "loopback" in result.message, result.message
    assert len(kv.requests) + len(kv.token_requests) == seen


def test_vault_url_and_key_rules(kv, tenant, vault_destination):
    conn = vault_destination.connection
    for bad in (
        "https://attacker.example.com",
        f"http://kv-certmgr.{mock.VAULT_SUFFIX}",
        f"https://kv-certmgr.{mock.VAULT_SUFFIX}.evil.test",
        f"https://kv-certmgr.{mock.VAULT_SUFFIX}/certificates",
        f"https://{mock.VAULT_SUFFIX}",
        "",
    ):
        with pytest.raises(ValidationError) as err:
            services.create_destination(
                tenant.organization,
                name="bad",
                kind="azure_key_vault",
                connection=conn,
                options={"vault_url": bad},
                actor=SYSTEM,
            )
        assert "options" in err.value.message_dict, bad
    with pytest.raises(ValidationError) as err:
        services.update_destination(
            vault_destination, options={"vault_url": "https://x.vault.evil"}, actor=SYSTEM
        )
    assert "vault_url" in str(err.value)
    with pytest.raises(ValidationError) as err:
        services.create_rule(vault_destination, include_private_key=False, actor=SYSTEM)
    assert "Key Vault" in err.value.message_dict["include_private_key"][0]
    with pytest.raises(ValidationError):
        services.update_destination(vault_destination, region="eu-west-1", actor=SYSTEM)


def test_no_key_material_in_logs_or_audit(
    kv, vault_destination, subscriber, django_capture_on_commit_callbacks, caplog
):
    caplog.set_level(logging.DEBUG)
    services.create_rule(vault_destination, subscriber=subscriber, actor=SYSTEM)
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    assert SyncRun.objects.get(certificate=cert).status == "succeeded"
    (version,) = next(iter(kv.certificates.values()))
    pfx_b64 = version.body["value"]
    key_body = "".join(cert.private_key.strip().splitlines()[1:-1])
    texts = [json.dumps(e.details) + e.error for e in AuditEvent.objects.all()]
    texts.append("\n".join(r.getMessage() for r in caplog.records))
    for text in texts:
        assert "PRIVATE KEY" not in text and key_body[:40] not in text
        assert pfx_b64[:40] not in text and pfx_b64[-40:] not in text
        assert mock.CLIENT_SECRET not in text


def _der(pem: str) -> bytes:
    body = "".join(line for line in pem.strip().splitlines() if "-----" not in line)
    return base64.b64decode(body)


def test_revocation_deletes_the_certificate_where_the_rule_says_so(
    kv, vault_destination, subscriber, django_capture_on_commit_callbacks
):
    services.create_rule(
        vault_destination, subscriber=subscriber, remove_on_expiry_or_revocation=True, actor=SYSTEM
    )
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    kv_name = next(iter(kv.certificates))
    with django_capture_on_commit_callbacks(execute=True):
        pki.revoke(cert, reason="superseded", actor=SYSTEM)
    removal = SyncRun.objects.get(certificate=cert, action="remove")
    assert removal.status == "succeeded", removal.error
    assert kv_name in kv.deleted and ("DELETE", f"/certificates/{kv_name}", True) in kv.requests
    assert Deployment.objects.get(destination=vault_destination).removed_at is not None
