"""The audit log: one transaction with the change, append-only in the database, hash-chained."""

from __future__ import annotations

import itertools
import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from certmgr import audit, services
from certmgr.actors import Actor
from certmgr.models import AuditChainHead, AuditEvent, Organization
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db


def test_event_fields_and_request_context(tenant):
    tenant.admin.client.post(
        "/api/v1/invitations/",
        {"email": "eve@example.com", "role": "auditor"},
        format="json",
        HTTP_USER_AGENT="pipeline/1.0",
        HTTP_X_REQUEST_ID="req-12345678",
    )
    event = AuditEvent.objects.filter(action="invitation.create").latest("id")
    assert event.organization_id == tenant.organization.pk
    assert event.actor_type == "token" and "admin token" in event.actor_label
    assert event.target_type == "certmgr.invitation"
    assert event.target_repr.startswith("eve@example.com to Acme")
    assert (event.request_id, event.user_agent, event.ip) == ("req-12345678", "pipeline/1.0", "127.0.0.1")
    assert event.outcome == "success"


def test_no_change_commits_without_its_event_and_vice_versa(tenant):
    before = AuditEvent.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.create_organization("Doomed", actor=SYSTEM)
        raise RuntimeError("the surrounding transaction fails")
    assert not Organization.objects.filter(name="Doomed").exists()
    assert AuditEvent.objects.count() == before


def test_refusals_are_recorded_as_failures(tenant):
    from certmgr.errors import Conflict

    with pytest.raises(Conflict):
        services.create_organization("Acme", actor=SYSTEM)
    event = AuditEvent.objects.latest("id")
    assert (event.action, event.outcome) == ("organization.create", "failure")
    assert "already exists" in event.error


def test_database_rejects_update_and_delete(tenant):
    event = AuditEvent.objects.first()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="tampered")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE certmgr_auditevent SET action = 'x'")


def test_chains_are_per_organization_and_link_up(tenant, other_tenant):
    for org in (tenant.organization, other_tenant.organization):
        events = list(AuditEvent.objects.filter(organization=org).order_by("sequence"))
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert events[0].prev_hash == ""
        for prev, event in itertools.pairwise(events):
            assert event.prev_hash == prev.hash
    checked, broken = audit.verify()
    assert broken is None and checked == AuditEvent.objects.count()


def _tamper(sql: str, params: list) -> None:
    """Change a row by hand, as an attacker with database access would (triggers switched off)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The test's writes so far "commit": their deferred checks run now, on the untampered log.
            connection.check_constraints()
            cursor.execute("SET session_replication_role = replica")  # a superuser skipping triggers
            cursor.execute(sql, params)
            cursor.execute("SET session_replication_role = DEFAULT")
        else:
            cursor.execute("DROP TRIGGER certmgr_audit_no_update")
            cursor.execute("DROP TRIGGER certmgr_audit_no_delete")
            cursor.execute(sql, params)


def test_verify_reports_the_first_altered_event(tenant):
    call_command("verify_audit_log")  # intact
    victim = AuditEvent.objects.filter(organization=tenant.organization).order_by("sequence")[2]
    _tamper("UPDATE certmgr_auditevent SET details = %s WHERE id = %s", ['{"role": "admin"}', victim.pk])
    with pytest.raises(CommandError) as excinfo:
        call_command("verify_audit_log")
    message = str(excinfo.value)
    assert f"event id {victim.pk}" in message and f"sequence {victim.sequence}" in message
    assert "altered" in message


def test_verify_reports_a_deleted_event(tenant):
    victim = AuditEvent.objects.filter(organization=tenant.organization).order_by("sequence")[1]
    _tamper("DELETE FROM certmgr_auditevent WHERE id = %s", [victim.pk])
    _, broken = audit.verify()
    assert broken is not None and broken.sequence == victim.sequence and "missing" in broken.problem


def test_verify_reports_a_truncated_tail(tenant):
    last = AuditEvent.objects.filter(organization=tenant.organization).order_by("-sequence").first()
    _tamper("DELETE FROM certmgr_auditevent WHERE id = %s", [last.pk])
    _, broken = audit.verify()
    assert broken is not None and "missing" in broken.problem


def test_secrets_are_scrubbed_from_details(tenant):
    with transaction.atomic():
        event = audit.record(
            SYSTEM, "test.scrub", tenant.organization, api_key="k", nested={"password": "p"}, note="fine"
        )
    assert event.details == {"api_key": "[redacted]", "nested": {"password": "[redacted]"}, "note": "fine"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_do_not_fork_the_chain():
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    org = services.create_organization("Busy", actor=SYSTEM)
    errors = []

    def write(n: int) -> None:
        try:
            for i in range(10):
                with transaction.atomic():
                    audit.record(Actor.system(f"writer-{n}"), "test.concurrent", org, i=i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    events = list(AuditEvent.objects.filter(organization=org).order_by("sequence"))
    assert len(events) == 61
    assert len({e.prev_hash for e in events}) == 61  # no two events share a predecessor
    assert AuditChainHead.objects.get(pk=org.pk).sequence == 61
    assert audit.verify([org.pk])[1] is None
