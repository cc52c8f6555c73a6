"""Re-issue every certificate of a CA: the service, the worker task behind the admin and API doors, and the
command. What an organization runs after a CA key compromise or a misissuance."""

from __future__ import annotations

import io

import pytest
from cryptography import x509 as cx509
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from certmgr.errors import PermissionDenied, ServiceError
from certmgr.models import AuditEvent
from pki import services
from pki.models import Certificate, CertificateAuthority, Subscriber
from tests.conftest import PASSWORD, SYSTEM
from tests.pki.conftest import make_subscriber

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(tenant, hierarchy):
    """Three subscribers of the issuing CA, each with a current certificate (one with an older one too)."""
    _, inter = hierarchy
    subs = [make_subscriber(tenant, inter, name) for name in ("api", "web", "mail")]
    old = services.issue(subs[0], actor=SYSTEM).certificate
    current = [services.issue(sub, actor=SYSTEM).certificate for sub in subs]
    return subs, current, old


def other_ca(tenant, root, name="Issuing 2") -> CertificateAuthority:
    return services.create_internal_ca(
        tenant.organization,
        name=name,
        kind="internal-intermediate",
        parent=root,
        subject={"common_name": f"Acme {name} CA"},
        key_algorithm="ec-p256",
        validity_days=1825,
        max_path_length=0,
        actor=SYSTEM,
    )


def finished_event(ca) -> AuditEvent:
    return AuditEvent.objects.filter(action="ca.reissue.finished", target_id=str(ca.pk)).latest("id")


def test_reissue_replaces_each_current_certificate_once(tenant, hierarchy, fleet):
    _, inter = hierarchy
    subs, current, old = fleet
    report = services.reissue_ca(inter, actor=tenant.operator.user)
    assert (report.reissued, report.ordered, report.revoked, report.failed) == (3, 0, 0, [])
    for sub, before in zip(subs, current, strict=True):
        planned = Certificate.objects.filter(subscriber=sub, next_renewal_at__isnull=False)
        assert planned.count() == 1  # one current certificate per subscriber, the new one
        new = planned.get()
        assert new.pk > before.pk and new.serial != before.serial and new.ca_id == inter.pk
        assert new.private_key != before.private_key  # a new key: the old one may be the compromised part
    # the older certificate of the first subscriber was not current: it is not re-issued again
    assert Certificate.objects.filter(ca=inter).count() == len(current) + 1 + 3
    event = finished_event(inter)
    assert event.outcome == "success"
    assert (event.details["reissued"], event.details["failed"]) == (3, 0)
    assert old.pk  # untouched


def test_reissue_to_another_ca_with_revocation(tenant, hierarchy, fleet, django_capture_on_commit_callbacks):
    root, inter = hierarchy
    subs, current, _ = fleet
    target = other_ca(tenant, root)
    inter = services.set_ca_status(inter, CertificateAuthority.Status.DISABLED, actor=SYSTEM)  # compromised
    with django_capture_on_commit_callbacks(execute=True):  # the delta CRL task of the revocations
        report = services.reissue_ca(
            inter, actor=tenant.operator.user, to_ca=target, revoke_reason="key_compromise"
        )
    assert (report.reissued, report.revoked, report.failed) == (3, 3, [])
    assert set(Subscriber.objects.filter(pk__in=[s.pk for s in subs]).values_list("ca", flat=True)) == {
        target.pk
    }
    for before in current:
        before.refresh_from_db()
        assert before.status == Certificate.Status.REVOKED and before.revocation_reason == "key_compromise"
    assert Certificate.objects.filter(ca=target, status=Certificate.Status.ACTIVE).count() == 3
    crl = cx509.load_der_x509_crl(bytes(inter.crls.order_by("-number").first().der))
    listed = {format(entry.serial_number, "x") for entry in crl}
    assert {c.serial for c in current} <= listed


def test_one_refused_subscriber_costs_only_its_own_certificate(tenant, hierarchy, fleet):
    _, inter = hierarchy
    subs, current, _ = fleet
    # A policy the first subscriber no longer fits: its re-issue is refused, the batch falls back.
    policy = services.save_policy(
        tenant.organization, actor=SYSTEM, name="strict", san_patterns=[r"^(web|mail)\.acme\.test$"]
    )
    Subscriber.objects.filter(pk=subs[0].pk).update(policy=policy)
    report = services.reissue_ca(inter, actor=tenant.operator.user)
    assert report.reissued == 2
    assert [cert_id for cert_id, _ in report.failed] == [current[0].pk]
    assert "api.acme.test" in report.failed[0][1]
    event = finished_event(inter)
    assert event.outcome == "failure" and event.details["failed"] == 1
    assert event.details["failures"][0].startswith(f"certificate {current[0].pk}:")


def test_reissue_refusals_before_anything_runs(tenant, other_tenant, hierarchy, fleet):
    _, inter = hierarchy
    with pytest.raises(PermissionDenied):
        services.check_reissue(inter, actor=tenant.auditor.user)
    with pytest.raises(PermissionDenied):
        services.start_reissue(inter, actor=other_tenant.admin.user)
    with pytest.raises(ValidationError) as bad_reason:
        services.check_reissue(inter, actor=tenant.operator.user, revoke_reason="because")
    assert "revoke_reason" in bad_reason.value.message_dict
    with pytest.raises(ValidationError) as same:
        services.check_reissue(inter, actor=tenant.operator.user, to_ca=inter)
    assert "to_ca" in same.value.message_dict
    inter = services.set_ca_status(inter, CertificateAuthority.Status.DISABLED, actor=SYSTEM)
    with pytest.raises(ServiceError) as disabled:
        services.check_reissue(inter, actor=tenant.operator.user)
    assert disabled.value.field_errors() == {"to_ca": [str(disabled.value)]}
    assert not AuditEvent.objects.filter(action="ca.reissue", outcome="success").exists()


def test_admin_reissue_page_starts_a_worker_run(tenant, hierarchy, fleet, django_capture_on_commit_callbacks):
    _, inter = hierarchy
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    url = f"/admin/pki/certificateauthority/{inter.pk}/reissue/"
    page = client.get(url)
    assert page.status_code == 200 and b"3 current subscriber certificates" in page.content
    refused = client.post(url, {"revoke_reason": ""})  # not confirmed
    assert refused.status_code == 200 and b"This field is required" in refused.content
    assert not AuditEvent.objects.filter(action="ca.reissue.finished").exists()
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {"revoke_reason": "superseded", "confirm": "on"}, follow=True)
    assert done.status_code == 200 and b"started in a worker" in done.content
    event = finished_event(inter)  # the sync test broker ran the task on commit, as the user
    assert event.actor_label == tenant.operator.user.username
    assert (event.details["reissued"], event.details["revoked"]) == (3, 3)
    change = client.get(f"/admin/pki/certificateauthority/{inter.pk}/change/")
    assert url.encode() in change.content
    auditor = Client()
    assert auditor.login(username=tenant.auditor.user.username, password=PASSWORD)
    assert auditor.get(url).status_code == 403
    assert url.encode() not in auditor.get(f"/admin/pki/certificateauthority/{inter.pk}/change/").content


def test_api_reissue_answers_202_and_runs_as_the_token(
    tenant, hierarchy, fleet, django_capture_on_commit_callbacks
):
    _, inter = hierarchy
    url = f"/api/v1/cas/{inter.pk}/reissue/"
    bad = tenant.operator.client.post(url, {"revoke_reason": "because"}, format="json")
    assert bad.status_code == 400 and "revoke_reason" in str(bad.json())
    assert tenant.auditor.client.post(url, {}, format="json").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        started = tenant.operator.client.post(url, {"revoke_reason": "KEY_COMPROMISE"}, format="json")
    assert started.status_code == 202, started.content
    assert started.json() == {"status": "started", "certificates": 3, "result": "ca.reissue.finished"}
    event = finished_event(inter)
    assert event.actor_label.startswith("token ")
    assert (event.details["reissued"], event.details["revoked"]) == (3, 3)


def test_reissue_command(tenant, hierarchy, fleet):
    root, _ = hierarchy
    target = other_ca(tenant, root)
    out = io.StringIO()
    call_command("reissue_ca", "issuing", "--org", "acme", "--to-ca", target.name, stdout=out)
    assert "CA 'Issuing': 3 re-issued, 0 ordered from an external CA, 0 revoked, 0 failed." in out.getvalue()
    assert "3/3 certificates handled" in out.getvalue()
    with pytest.raises(CommandError, match="unknown revocation reason 'oops'"):
        call_command("reissue_ca", "Issuing", "--revoke-reason", "oops", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no CA named 'nope'"):
        call_command("reissue_ca", "nope", stdout=io.StringIO())


def test_refused_admin_pages_are_audited_like_refused_api_calls(tenant, hierarchy):
    _, inter = hierarchy
    auditor = Client()
    assert auditor.login(username=tenant.auditor.user.username, password=PASSWORD)
    before = AuditEvent.objects.filter(action="auth.permission_denied").count()
    assert auditor.get(f"/admin/pki/certificateauthority/{inter.pk}/reissue/").status_code == 403
    assert auditor.post(f"/admin/pki/certificateauthority/{inter.pk}/status/disabled/").status_code == 403
    events = AuditEvent.objects.filter(action="auth.permission_denied").order_by("id")[before:]
    assert [(e.details["method"], e.details["path"]) for e in events] == [
        ("GET", f"/admin/pki/certificateauthority/{inter.pk}/reissue/"),
        ("POST", f"/admin/pki/certificateauthority/{inter.pk}/status/disabled/"),
    ]
    assert all(e.outcome == "failure" and e.organization_id == tenant.organization.pk for e in events)
    assert events[0].actor_label == tenant.auditor.user.username
