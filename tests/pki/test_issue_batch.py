"""Batch issuance: many certificates in one transaction, one audit event each, all or nothing."""

from __future__ import annotations

import pytest
from cryptography import x509 as cx509
from django.core.exceptions import ValidationError

from certmgr import audit
from certmgr.errors import Conflict, PermissionDenied
from certmgr.models import AuditEvent
from pki import services, x509
from pki.models import Certificate, CertificateAuthority, Subscriber
from tests.conftest import SYSTEM
from tests.pki.conftest import make_subscriber

pytestmark = pytest.mark.django_db


def counts() -> tuple[int, int]:
    return Certificate.objects.count(), AuditEvent.objects.filter(outcome="success").count()


def test_batch_issues_verified_chains_with_one_audit_event_each(tenant, hierarchy, subscriber):
    root, inter = hierarchy
    other = make_subscriber(tenant, inter, "api", key_algorithm="rsa-2048")
    events_before = AuditEvent.objects.filter(action="certificate.issue").count()
    requests = [subscriber, other, services.BatchRequest(subscriber), other, subscriber]

    certs = services.issue_batch(requests, actor=tenant.operator.user)

    assert len(certs) == 5 and all(c.pk for c in certs)
    assert [c.subscriber_id for c in certs] == [r.pk if isinstance(r, Subscriber) else r.subscriber.pk
                                                for r in requests]  # fmt: skip
    root_cert = cx509.load_pem_x509_certificate(root.certificate_pem.encode())
    inter_cert = cx509.load_pem_x509_certificate(inter.certificate_pem.encode())
    for cert in Certificate.objects.filter(pk__in=[c.pk for c in certs]):
        leaf = cx509.load_pem_x509_certificate(cert.certificate_pem.encode())
        chain = x509.load_pem_certificates(cert.chain_pem)
        assert chain == [inter_cert, root_cert]
        leaf.verify_directly_issued_by(inter_cert)
        inter_cert.verify_directly_issued_by(root_cert)
        assert x509.matches_key(leaf, x509.load_private_key(cert.private_key))
        assert cert.status == "active" and cert.source == "issued" and cert.ca_id == inter.pk
        assert cert.serial == x509.serial_hex(leaf)
        assert cert.fingerprint_sha256 == x509.fingerprints(leaf).sha256
        sub = cert.subscriber
        assert cert.common_name == sub.common_name and cert.sans == sub.sans
        assert cert.key_algorithm == sub.key_algorithm
        assert cert.renewed_from_id is None
    assert len({c.serial for c in certs}) == 5

    events = AuditEvent.objects.filter(action="certificate.issue").order_by("sequence")
    assert events.count() == events_before + 5
    batch_events = list(events)[-5:]
    assert [e.target_id for e in batch_events] == [str(c.pk) for c in certs]
    assert all(e.actor_label == tenant.operator.user.username for e in batch_events)
    assert batch_events[0].details == {
        "subscriber": subscriber.pk,
        "serial": certs[0].serial,
        "ca": inter.pk,
        "key_stored": True,
        "renewed_from": None,
    }
    checked, broken = audit.verify()
    assert broken is None and checked > 5

    subscriber.refresh_from_db()
    other.refresh_from_db()
    assert subscriber.last_operation_status == "success"
    assert subscriber.last_operation_message == f"issued serial {certs[4].serial}"
    assert other.last_operation_message == f"issued serial {certs[3].serial}"


def test_audit_chain_continues_across_single_and_batch_issuance(tenant, subscriber):
    services.issue(subscriber, actor=SYSTEM)
    services.issue_batch([subscriber] * 3, actor=SYSTEM)
    services.issue(subscriber, actor=SYSTEM)
    _, broken = audit.verify([tenant.organization.pk])
    assert broken is None
    sequences = list(
        AuditEvent.objects.filter(chain=tenant.organization.pk).order_by("sequence").values_list("sequence")
    )
    assert [s for (s,) in sequences] == list(range(1, len(sequences) + 1))


def test_self_signed_in_a_batch(tenant, hierarchy, subscriber):
    selfie = services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="selfie",
        issuer_type=Subscriber.IssuerType.SELF_SIGNED,
        common_name="selfie.acme.test",
        validity_days=30,
    )
    plain, own = services.issue_batch([subscriber, selfie], actor=SYSTEM)
    assert plain.ca_id == hierarchy[1].pk and plain.chain_pem
    assert own.ca_id is None and own.source == "self-signed" and own.chain_pem == ""
    leaf = cx509.load_pem_x509_certificate(own.certificate_pem.encode())
    leaf.verify_directly_issued_by(leaf)


def test_renewals_link_renewed_from(tenant, hierarchy, subscriber, issued):
    other = make_subscriber(tenant, hierarchy[1], "api")
    old_other = services.issue(other, actor=SYSTEM).certificate
    renewed, renewed_other, fresh = services.issue_batch(
        [
            services.BatchRequest(subscriber, renewal_of=issued),
            services.BatchRequest(other, renewal_of=old_other),
            services.BatchRequest(subscriber),
        ],
        actor=SYSTEM,
    )
    assert renewed.renewed_from_id == issued.pk and renewed_other.renewed_from_id == old_other.pk
    assert fresh.renewed_from_id is None
    issued.refresh_from_db()
    assert issued.renewed_by.pk == renewed.pk
    renew_events = AuditEvent.objects.filter(action="certificate.renew").order_by("sequence")
    assert [e.details["renewed_from"] for e in renew_events] == [issued.pk, old_other.pk]
    assert audit.verify()[1] is None

    # Renewed already: a second renewal of it is refused, and the batch with it.
    before = counts()
    with pytest.raises(Conflict, match="already renewed"):
        services.issue_batch([subscriber, services.BatchRequest(subscriber, renewal_of=issued)], actor=SYSTEM)
    assert counts() == before


def test_renewing_the_same_certificate_twice_in_one_batch_is_refused(subscriber, issued):
    before = counts()
    twice = [services.BatchRequest(subscriber, renewal_of=issued)] * 2
    with pytest.raises(Conflict, match="renewed twice"):
        services.issue_batch(twice, actor=SYSTEM)
    assert counts() == before


def test_renewing_another_subscribers_certificate_is_refused(tenant, hierarchy, subscriber, issued):
    other = make_subscriber(tenant, hierarchy[1], "api")
    before = counts()
    with pytest.raises(ValidationError, match="not issued from this subscriber"):
        services.issue_batch([services.BatchRequest(other, renewal_of=issued)], actor=SYSTEM)
    assert counts() == before


def bad_requests(tenant, hierarchy, subscriber):
    """(label, subscriber that spoils a batch, expected error)."""
    _, inter = hierarchy
    disabled_ca = services.create_internal_ca(
        tenant.organization,
        name="Off",
        kind="internal-intermediate",
        parent=hierarchy[0],
        subject={"common_name": "Acme Off CA"},
        actor=SYSTEM,
    )
    on_disabled = make_subscriber(tenant, disabled_ca, "old")
    services.set_ca_status(disabled_ca, CertificateAuthority.Status.DISABLED, actor=SYSTEM)
    policy = services.save_policy(
        tenant.organization, actor=SYSTEM, name="short", common_name_patterns=["*.acme.test"]
    )
    refused = make_subscriber(tenant, inter, "long", policy=policy)
    services.save_policy(None, actor=SYSTEM, instance=policy, max_validity_days=10)  # tightened later
    acme = CertificateAuthority.objects.create(
        organization=tenant.organization, name="Public", kind=CertificateAuthority.Kind.ACME
    )
    on_acme = Subscriber.objects.create(
        organization=tenant.organization,
        name="public",
        ca=acme,
        common_name="public.acme.test",
        sans=["public.acme.test"],
        validity_days=30,
    )
    return [
        ("disabled CA", on_disabled, services.CaUnavailable),
        ("policy", refused, services.PolicyRefused),
        ("ACME CA", on_acme, services.CaUnavailable),
    ]


def test_one_bad_request_leaves_nothing_stored(tenant, hierarchy, subscriber):
    for label, bad, error in bad_requests(tenant, hierarchy, subscriber):
        before = counts()
        subscriber.refresh_from_db()
        last_before = (subscriber.last_operation_status, subscriber.last_operation_message)
        failures = AuditEvent.objects.filter(action="certificate.issue_batch", outcome="failure").count()
        with pytest.raises(error):
            services.issue_batch([subscriber, subscriber, bad, subscriber], actor=SYSTEM)
        assert counts() == before, label
        subscriber.refresh_from_db()
        assert (subscriber.last_operation_status, subscriber.last_operation_message) == last_before, label
        # The refusal itself is audited, against the subscriber that caused it.
        failure = AuditEvent.objects.filter(action="certificate.issue_batch", outcome="failure")
        assert failure.count() == failures + 1, label
        assert failure.order_by("-id").first().target_id == str(bad.pk), label
    assert audit.verify()[1] is None


def test_auditor_is_refused(tenant, subscriber):
    before = counts()
    with pytest.raises(PermissionDenied):
        services.issue_batch([subscriber], actor=tenant.auditor.user)
    assert counts() == before


def test_subscriber_of_another_organization_is_refused(tenant, other_tenant, subscriber):
    other_root = services.create_internal_ca(
        other_tenant.organization,
        name="Root",
        kind="internal-root",
        subject={"common_name": "Globex Root"},
        actor=SYSTEM,
    )
    foreign = make_subscriber(other_tenant, other_root, "globex")
    before = counts()
    for actor in (tenant.admin.user, tenant.operator.user):
        with pytest.raises(PermissionDenied):
            services.issue_batch([subscriber, foreign], actor=actor)
    assert counts() == before
    # The other organization's own operator may issue both of its own, not ours.
    assert len(services.issue_batch([foreign, foreign], actor=other_tenant.operator.user)) == 2
    with pytest.raises(PermissionDenied):
        services.issue_batch([foreign, subscriber], actor=other_tenant.operator.user)


def test_empty_and_oversized_batches(subscriber):
    assert services.issue_batch([], actor=SYSTEM) == []
    before = counts()
    with pytest.raises(ValidationError, match="at most"):
        services.issue_batch([subscriber] * (services.BATCH_MAX + 1), actor=SYSTEM)
    assert counts() == before


def test_record_many_hashes_like_record(tenant, subscriber, issued):
    events = audit.record_many(
        SYSTEM,
        "certificate.test",
        [(issued, {"n": 1, "password": "x"}), (subscriber, {"n": 2})],
        organization=tenant.organization,
    )
    assert [e.sequence for e in events] == [events[0].sequence, events[0].sequence + 1]
    assert events[1].prev_hash == events[0].hash
    assert events[0].details == {"n": 1, "password": audit.REDACTED}
    stored = AuditEvent.objects.get(pk=events[1].pk)
    assert audit.compute_hash(stored) == stored.hash == events[1].hash
    after = audit.record(SYSTEM, "certificate.test", issued)
    assert after.sequence == events[1].sequence + 1 and after.prev_hash == events[1].hash
    assert audit.verify()[1] is None
