"""Syncs against moto's ACM and Secrets Manager: import, re-import to the same ARN, secret versions, the
on-commit trigger after issuance, drift, removal, validation, and no key material in the audit log."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import boto3
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from certmgr.jobs import JobReport
from certmgr.models import AuditEvent
from pki import services as pki
from pki.models import AlertDelivery, Certificate
from syncs import services
from syncs.models import Deployment, SyncRun
from tests.conftest import SYSTEM
from tests.syncs.conftest import REGION

pytestmark = pytest.mark.usefixtures("aws")


def acm_client():
    return boto3.client("acm", region_name=REGION)


def sm_client():
    return boto3.client("secretsmanager", region_name=REGION)


def renew(cert: Certificate, capture) -> Certificate:
    with capture(execute=True):
        return pki.issue(cert.subscriber, actor=SYSTEM, renewal_of=cert).certificate


def issue(subscriber, capture) -> Certificate:
    with capture(execute=True):
        return pki.issue(subscriber, actor=SYSTEM).certificate


def test_issuance_from_an_internal_ca_creates_a_run_on_commit_and_imports_into_acm(
    acm, subscriber, django_capture_on_commit_callbacks
):
    services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)
    with django_capture_on_commit_callbacks() as callbacks:
        cert = pki.issue(subscriber, actor=SYSTEM).certificate
        assert not SyncRun.objects.exists()  # nothing inside the issuance's transaction
    assert callbacks  # pki's signal waits for the commit
    with django_capture_on_commit_callbacks(execute=True):  # the commit: the run, then its worker task
        for callback in callbacks:
            callback()
    # the run was made after the commit; the worker (tasks run inline in tests) pushed it
    run = SyncRun.objects.get()
    assert (run.certificate_id, run.trigger, run.status, run.serial) == (
        cert.pk,
        "issuance",
        "succeeded",
        cert.serial,
    )
    assert run.identifier.startswith("arn:aws:acm:eu-west-1:") and run.attempts == 1
    there = acm_client().get_certificate(CertificateArn=run.identifier)
    assert there["Certificate"].strip() == cert.certificate_pem.strip()
    assert there["CertificateChain"].startswith(cert.chain_pem.strip())  # moto appends a chain of its own
    tags = {
        t["Key"]: t["Value"]
        for t in acm_client().list_tags_for_certificate(CertificateArn=run.identifier)["Tags"]
    }
    assert tags["Name"] == "web" and tags["team"] == "web" and tags["certmgr:serial"] == cert.serial
    dep = Deployment.objects.get()
    assert (dep.certificate_id, dep.identifier, dep.fingerprint_sha256) == (
        cert.pk,
        run.identifier,
        cert.fingerprint_sha256,
    )
    assert services.deployments_of(certificate=cert) == [dep]


def test_a_renewal_is_reimported_to_the_same_arn(acm, subscriber, django_capture_on_commit_callbacks):
    services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)
    first = issue(subscriber, django_capture_on_commit_callbacks)
    arn = SyncRun.objects.get(certificate=first).identifier
    second = renew(first, django_capture_on_commit_callbacks)
    run = SyncRun.objects.get(certificate=second)
    assert run.status == "succeeded" and run.identifier == arn  # every listener keeps its certificate
    assert len(acm_client().list_certificates()["CertificateSummaryList"]) == 1
    there = acm_client().get_certificate(CertificateArn=arn)["Certificate"]
    assert there.strip() == second.certificate_pem.strip()
    dep = Deployment.objects.get()
    assert dep.certificate_id == second.pk and dep.identifier == arn
    assert services.deployments_of(certificate=first) == []


def test_secrets_manager_gets_one_json_secret_and_a_new_version_on_renewal(
    secrets, subscriber, django_capture_on_commit_callbacks
):
    services.create_rule(secrets, subscriber=subscriber, name_schema="tls/{subscriber}", actor=SYSTEM)
    first = issue(subscriber, django_capture_on_commit_callbacks)
    run1 = SyncRun.objects.get(certificate=first)
    assert run1.status == "succeeded" and run1.version and run1.name == "tls/web"
    value = json.loads(sm_client().get_secret_value(SecretId="tls/web")["SecretString"])
    assert value["certificate"].strip() == first.certificate_pem.strip()
    assert value["chain"] == first.chain_pem and value["serial"] == first.serial
    assert "BEGIN PRIVATE KEY" in value["private_key"]
    second = renew(first, django_capture_on_commit_callbacks)
    run2 = SyncRun.objects.get(certificate=second)
    assert run2.identifier == run1.identifier and run2.version != run1.version
    versions = sm_client().list_secret_version_ids(SecretId="tls/web")["Versions"]
    assert len(versions) == 2
    current = json.loads(sm_client().get_secret_value(SecretId="tls/web")["SecretString"])
    assert current["serial"] == second.serial


def test_a_rule_without_the_key_sends_no_key_and_acm_refuses_such_a_rule(
    acm, secrets, subscriber, django_capture_on_commit_callbacks
):
    with pytest.raises(ValidationError) as refused:
        services.create_rule(acm, subscriber=subscriber, include_private_key=False, actor=SYSTEM)
    assert "private key" in refused.value.message_dict["include_private_key"][0]
    rule = services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)
    with pytest.raises(ValidationError):
        services.update_rule(rule, include_private_key=False, actor=SYSTEM)
    services.delete_rule(rule, actor=SYSTEM)
    services.create_rule(secrets, subscriber=subscriber, include_private_key=False, actor=SYSTEM)
    issue(subscriber, django_capture_on_commit_callbacks)
    value = json.loads(sm_client().get_secret_value(SecretId="web")["SecretString"])
    assert "private_key" not in value and "PRIVATE KEY" not in json.dumps(value)


def test_name_patterns_pick_certificates_across_subscribers(
    tenant, hierarchy, secrets, django_capture_on_commit_callbacks
):
    from tests.pki.conftest import make_subscriber

    services.create_rule(
        secrets, name_patterns=["*.acme.test"], name_schema="{common_name}-{serial}", actor=SYSTEM
    )
    with pytest.raises(ValidationError):
        services.create_rule(secrets, name_patterns=["~(unclosed"], actor=SYSTEM)
    with pytest.raises(ValidationError):
        services.create_rule(secrets, name_schema="{password}", actor=SYSTEM)
    a = issue(make_subscriber(tenant, hierarchy[1], "a"), django_capture_on_commit_callbacks)
    run = SyncRun.objects.get(certificate=a)
    assert run.name == f"a.acme.test-{a.serial}" and run.status == "succeeded"


def test_key_material_is_never_in_audit_details_or_logs(
    acm, secrets, subscriber, django_capture_on_commit_callbacks, caplog
):
    caplog.set_level(logging.DEBUG)
    services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)
    services.create_rule(secrets, subscriber=subscriber, actor=SYSTEM)
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    assert SyncRun.objects.filter(status="succeeded").count() == 2
    key = cert.private_key
    body = "".join(key.strip().splitlines()[1:-1])
    events = AuditEvent.objects.filter(action="certificate.sync")
    assert events.count() == 2
    for event in AuditEvent.objects.all():
        text = json.dumps(event.details) + event.error
        assert "PRIVATE KEY" not in text and body[:40] not in text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "sync run" in logged  # the runs were logged...
    assert body[:40] not in logged and "PRIVATE KEY" not in logged  # ...without the key


def test_drift_check_pushes_what_changed_or_vanished_at_the_destination(
    acm, secrets, subscriber, django_capture_on_commit_callbacks
):
    services.create_rule(secrets, subscriber=subscriber, actor=SYSTEM)
    services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    report = JobReport()
    assert services.check_drift(report) == [] and report.counts["in_step"] == 2
    # someone overwrites the secret and deletes the ACM certificate
    sm_client().put_secret_value(SecretId="web", SecretString=json.dumps({"certificate": "junk"}))
    acm_client().delete_certificate(CertificateArn=Deployment.objects.get(destination=acm).identifier)
    report = JobReport()
    with django_capture_on_commit_callbacks(execute=True):
        runs = services.check_drift(report)
    assert report.counts["drifted"] == 2 and len(runs) == 2
    assert all(r.trigger == "drift" for r in runs)
    assert set(SyncRun.objects.filter(trigger="drift").values_list("status", flat=True)) == {"succeeded"}
    value = json.loads(sm_client().get_secret_value(SecretId="web")["SecretString"])
    assert value["serial"] == cert.serial
    report = JobReport()
    assert services.check_drift(report) == [] and report.counts["in_step"] == 2


def test_drift_check_creates_runs_for_certificates_that_never_arrived(
    secrets, subscriber, django_capture_on_commit_callbacks
):
    cert = issue(subscriber, django_capture_on_commit_callbacks)  # before any rule: nothing synced
    services.create_rule(secrets, subscriber=subscriber, actor=SYSTEM)
    report = JobReport()
    with django_capture_on_commit_callbacks(execute=True):
        services.check_drift(report)
    assert report.counts["missing"] == 1
    assert Deployment.objects.get().certificate_id == cert.pk


def test_sync_now_and_revocation_removal(secrets, subscriber, django_capture_on_commit_callbacks):
    services.create_rule(secrets, subscriber=subscriber, remove_on_expiry_or_revocation=True, actor=SYSTEM)
    cert = pki.issue(subscriber, actor=SYSTEM).certificate  # on-commit callbacks dropped: nothing synced
    assert not SyncRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        runs = services.sync_now(destination=secrets, actor=SYSTEM)
    assert [r.certificate_id for r in runs] == [cert.pk]
    assert SyncRun.objects.get().status == "succeeded"
    assert AuditEvent.objects.filter(action="sync.now").exists()
    with django_capture_on_commit_callbacks(execute=True):
        pki.revoke(cert, reason="superseded", actor=SYSTEM)
    removal = SyncRun.objects.get(action="remove")
    assert (removal.status, removal.trigger) == ("succeeded", "revocation")
    assert Deployment.objects.get().removed_at is not None
    listed = sm_client().list_secrets()["SecretList"]
    assert not listed or all(s.get("DeletedDate") for s in listed)


def test_an_older_certificate_never_replaces_a_newer_one(
    secrets, subscriber, django_capture_on_commit_callbacks
):
    services.create_rule(secrets, subscriber=subscriber, actor=SYSTEM)
    first = issue(subscriber, django_capture_on_commit_callbacks)
    second = renew(first, django_capture_on_commit_callbacks)
    stale = SyncRun.objects.create(
        organization_id=first.organization_id,
        destination=secrets,
        certificate=first,
        name="web",
        trigger="manual",
        next_attempt_at=timezone.now(),
    )
    run = services.run_sync(stale.pk)
    assert run.status == "superseded"
    assert Deployment.objects.get().certificate_id == second.pk


def test_destination_test_action_is_recorded(acm, secrets):
    result = services.test_destination(acm, actor=SYSTEM)
    assert result.ok and "Certificate Manager" in result.message
    assert services.test_destination(secrets, actor=SYSTEM).ok
    acm.refresh_from_db()
    assert acm.last_test_ok is True
    assert AuditEvent.objects.filter(action="sync_destination.test", outcome="success").count() == 2


def test_validation_of_destinations(tenant, connection):
    from dnsproviders import services as connections

    with pytest.raises(ValidationError) as bad:
        services.create_destination(
            tenant.organization, name="x", kind="aws_acm", connection=connection, region="mars", actor=SYSTEM
        )
    assert "region" in bad.value.message_dict
    manual = connections.create_connection(
        tenant.organization, name="m", kind="manual", credentials={}, actor=SYSTEM
    )
    with pytest.raises(ValidationError) as bad:
        services.create_destination(
            tenant.organization, name="x", kind="aws_acm", connection=manual, actor=SYSTEM
        )
    assert "connection" in bad.value.message_dict
    with pytest.raises(ValidationError):
        services.create_destination(
            tenant.organization,
            name="x",
            kind="aws_acm",
            connection=connection,
            options={"tags": {"aws:x": "1"}},
            actor=SYSTEM,
        )
    assert AuditEvent.objects.filter(action="sync_destination.create", outcome="failure").count() == 3


def test_no_rule_no_cost_and_no_alert(subscriber, django_capture_on_commit_callbacks):
    issue(subscriber, django_capture_on_commit_callbacks)
    assert not SyncRun.objects.exists() and not AlertDelivery.objects.exists()


def test_undeployed_renewals_counts_a_renewal_whose_run_is_not_confirmed(
    secrets, subscriber, django_capture_on_commit_callbacks
):
    services.create_rule(secrets, subscriber=subscriber, actor=SYSTEM)
    first = issue(subscriber, django_capture_on_commit_callbacks)
    second = pki.issue(
        subscriber, actor=SYSTEM, renewal_of=first
    ).certificate  # commit callbacks dropped: the run never came
    assert services.undeployed_renewals().count() == 0  # no run yet: the drift check makes one
    with django_capture_on_commit_callbacks(execute=False):
        services.sync_now(certificate=second, actor=SYSTEM)
    assert list(services.undeployed_renewals()) == [second]
    services.run_due(JobReport(), now=timezone.now() + timedelta(seconds=1))
    assert services.undeployed_renewals().count() == 0


def test_a_batch_issuance_makes_one_run_per_certificate_in_one_go(
    tenant, hierarchy, secrets, django_capture_on_commit_callbacks
):
    from tests.pki.conftest import make_subscriber

    services.create_rule(secrets, name_patterns=["*.acme.test"], actor=SYSTEM)
    subs = [make_subscriber(tenant, hierarchy[1], f"b{i}") for i in range(5)]
    with django_capture_on_commit_callbacks(execute=True):
        certs = pki.issue_batch(subs, actor=SYSTEM)
    runs = SyncRun.objects.filter(trigger="issuance")
    assert sorted(r.certificate_id for r in runs) == sorted(c.pk for c in certs)
    assert set(runs.values_list("status", flat=True)) == {"succeeded"}
    assert {s["Name"] for s in sm_client().list_secrets()["SecretList"]} == {f"b{i}" for i in range(5)}


def test_an_expired_certificate_is_removed_where_the_rule_says_so(
    secrets, acm, subscriber, django_capture_on_commit_callbacks
):
    services.create_rule(secrets, subscriber=subscriber, remove_on_expiry_or_revocation=True, actor=SYSTEM)
    services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)  # keeps it
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    Certificate.objects.filter(pk=cert.pk).update(not_after=timezone.now() - timedelta(minutes=1))
    report = JobReport()
    with django_capture_on_commit_callbacks(execute=True):
        runs = services.check_drift(report)
    assert [(r.action, r.trigger, r.destination_id) for r in runs] == [("remove", "expiry", secrets.pk)]
    assert SyncRun.objects.get(action="remove").status == "succeeded"
    assert Deployment.objects.get(destination=secrets).removed_at is not None
    assert Deployment.objects.get(destination=acm).removed_at is None
    assert AuditEvent.objects.filter(action="certificate.sync_remove", outcome="success").count() == 1
