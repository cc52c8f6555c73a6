"""The audit log against its own database role: keyed links, the TRUNCATE and chain-head triggers, and the
signed checkpoints outside the database that catch what an owner bypassing the triggers does.

Each review scenario runs on the test database after real events were checkpointed; the attacker is the
test's superuser session with triggers switched off (``session_replication_role = replica``), which is what a
table owner gets with ``ALTER TABLE ... DISABLE TRIGGER``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat

import boto3
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, IntegrityError, connection, transaction
from moto import mock_aws

from certmgr import audit, audit_checkpoints, audit_keys
from certmgr.models import AuditChainHead, AuditEvent
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db

KEY_A = "test-audit-key-1-not-for-production-0123456789"
KEY_B = "test-audit-key-0-not-for-production-0123456789"


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the audit triggers under test are PostgreSQL's")


def chain_of(tenant) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(chain=tenant.organization.pk).order_by("sequence"))


def more_events(tenant, n: int) -> None:
    for i in range(n):
        with transaction.atomic():
            audit.record(SYSTEM, "test.event", tenant.organization, i=i)


def as_owner(*statements: tuple[str, list]) -> None:
    """Run SQL with the triggers off, as a table owner who disabled them (or a superuser) would."""
    connection.check_constraints()  # the test's own writes "commit" first, untampered
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        for sql, params in statements:
            cursor.execute(sql, params)
        cursor.execute("SET session_replication_role = DEFAULT")


def verify(*args: str) -> str:
    """verify_audit_log's refusal (all lines), or fail if it finds the log intact."""
    from io import StringIO

    err = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("verify_audit_log", *args, stderr=err)
    return f"{excinfo.value}\n{err.getvalue()}"


@pytest.fixture
def anchored(tenant, other_tenant, tmp_path):
    """Both tenants' chains, checkpointed twice (after setup, and after five more events of ``tenant``)."""
    store = audit_checkpoints.DirectoryStore(tmp_path)
    first = audit_checkpoints.write_checkpoints(stores=[store])
    more_events(tenant, 5)
    second = audit_checkpoints.write_checkpoints(stores=[store])
    assert {c.chain for c in first} >= {tenant.organization.pk, other_tenant.organization.pk}
    assert [c.chain for c in second] == [tenant.organization.pk]  # only the head that moved
    out = call_command_out("verify_audit_log", "--checkpoints", str(tmp_path))
    assert "intact" in out and f"against {len(first) + len(second)} signed checkpoints" in out
    return str(tmp_path)


def call_command_out(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- keyed links -------------------------------------------------------------------------------------
def test_links_are_hmacs_under_the_first_audit_key(tenant):
    events = chain_of(tenant)
    signing = audit_keys.signing_key()
    assert {(e.algorithm, e.key_id) for e in events} == {("hmac-sha256", signing.key_id)}
    last = events[-1]
    assert last.hash == audit.compute_hash(last) != hashlib.sha256(b"").hexdigest()
    # Without the key, the content alone does not give the link: the unkeyed hash of it differs.
    last.algorithm = "sha256"
    assert audit.compute_hash(last) != last.hash
    assert len(signing.key_id) == 16 and KEY_A not in signing.key_id


def test_a_new_signing_key_is_a_rotation_event_in_the_chain(tenant, settings):
    old = audit_keys.signing_key().key_id
    settings.CERTMGR_AUDIT_KEYS = [KEY_B, KEY_A]  # a new key first; the old one still verifies
    new = audit_keys.signing_key().key_id
    more_events(tenant, 2)
    rotation, first, second = chain_of(tenant)[-3:]
    assert (rotation.action, rotation.details) == ("audit.key_rotated", {"from_key": old, "to_key": new})
    assert rotation.key_id == first.key_id == second.key_id == new
    assert first.prev_hash == rotation.hash
    assert AuditChainHead.objects.get(pk=tenant.organization.pk).key_id == new
    assert audit.verify() == (AuditEvent.objects.count(), None)

    settings.CERTMGR_AUDIT_KEYS = [KEY_B]  # the old key dropped too early: its links cannot be checked
    message = verify()
    assert f"linked by audit key '{old}', which is not in CERTMGR_AUDIT_KEYS" in message
    assert "sequence 1," in message


def test_events_from_before_keyed_links_verify_as_legacy_and_only_as_a_prefix():
    """Chain 0 as a database upgraded from unkeyed links holds it: two SHA-256 events, then new ones."""
    head = AuditChainHead.objects.create(chain=0)
    prev = ""
    for seq in (1, 2):
        event = AuditEvent(
            chain=0, sequence=seq, actor_type="system", action="legacy", prev_hash=prev, algorithm="sha256"
        )
        event.hash = audit.compute_hash(event)
        event.save()
        prev = event.hash
    AuditChainHead.objects.filter(pk=head.pk).update(sequence=2, last_hash=prev)

    with transaction.atomic():
        event = audit.record(SYSTEM, "test.after_upgrade", None)
    rotation = AuditEvent.objects.get(chain=0, sequence=3)
    assert rotation.action == "audit.key_rotated" and rotation.details["from_algorithm"] == "sha256"
    assert event.sequence == 4 and event.prev_hash == rotation.hash
    assert "(2 unkeyed links from before keyed links)" in call_command_out("verify_audit_log")

    # An unkeyed link after keyed ones is what relinking without the key looks like (INSERT is allowed).
    forged = AuditEvent(
        chain=0, sequence=5, actor_type="system", action="x", prev_hash=event.hash, algorithm="sha256"
    )
    forged.hash = audit.compute_hash(forged)
    forged.save()
    AuditChainHead.objects.filter(pk=0).update(sequence=5, last_hash=forged.hash)
    message = verify()
    assert "chain 0 (no organization), sequence 5" in message and "unkeyed link after keyed ones" in message


# --- what the database refuses -----------------------------------------------------------------------
@pytest.mark.parametrize("table", ["certmgr_auditevent", "certmgr_auditchainhead"])
def test_truncate_is_refused(tenant, table):
    connection.check_constraints()  # the events so far "commit" (pending checks would block TRUNCATE)
    # Only a superuser session that asks for it may truncate (the test suite's own flush does).
    with (
        pytest.raises(DatabaseError, match="TRUNCATE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET LOCAL certmgr.allow_truncate = 'off'")
        cursor.execute(f"TRUNCATE {table} CASCADE")
    assert AuditEvent.objects.filter(chain=tenant.organization.pk).exists()


def test_chain_heads_are_never_deleted_nor_moved_back(tenant):
    chain = tenant.organization.pk
    with pytest.raises(DatabaseError, match="never deleted"), transaction.atomic():
        AuditChainHead.objects.filter(pk=chain).delete()
    with pytest.raises(DatabaseError, match="only move forward"), transaction.atomic():
        AuditChainHead.objects.filter(pk=chain).update(sequence=2)
    assert AuditChainHead.objects.get(pk=chain).sequence == len(chain_of(tenant))


def test_a_head_that_names_no_event_is_refused_at_commit(tenant):
    chain = tenant.organization.pk
    with pytest.raises(IntegrityError, match="names no event"), transaction.atomic():
        AuditChainHead.objects.filter(pk=chain).update(last_hash="0" * 64)
        connection.check_constraints()  # what COMMIT runs
    connection.cursor().execute("SET CONSTRAINTS ALL DEFERRED")
    with pytest.raises(IntegrityError, match="names no event"), transaction.atomic():
        claim = audit.claim(chain)  # a claimed sequence number never used
        connection.cursor().execute(claim.sql, claim.params)
        connection.check_constraints()
    connection.cursor().execute("SET CONSTRAINTS ALL DEFERRED")


# --- the review's scenarios, with the triggers bypassed, against the checkpoints ----------------------
def test_truncation_is_detected(tenant, other_tenant, anchored):
    as_owner(("TRUNCATE certmgr_auditevent, certmgr_auditchainhead", []))
    assert "intact: 0 events" in call_command_out("verify_audit_log")  # why the checkpoints exist
    message = verify("--checkpoints", anchored)
    for org in (tenant.organization, other_tenant.organization):
        assert f"chain {org.pk} (organization {org.pk}), sequence 1, missing event: chain removed" in message


def test_a_tail_cut_with_the_head_moved_back_is_detected(tenant, other_tenant, anchored):
    events = chain_of(tenant)
    keep = events[-4]
    as_owner(
        ("DELETE FROM certmgr_auditevent WHERE chain = %s AND sequence > %s", [keep.chain, keep.sequence]),
        (
            "UPDATE certmgr_auditchainhead SET sequence = %s, last_hash = %s WHERE chain = %s",
            [keep.sequence, keep.hash, keep.chain],
        ),
    )
    assert "intact" in call_command_out("verify_audit_log")  # consistent in itself
    message = verify("--checkpoints", anchored)
    assert f"chain {keep.chain} (organization {keep.chain}), sequence {keep.sequence + 1}," in message
    assert f"events {keep.sequence + 1}..{events[-1].sequence} are missing" in message
    assert f"chain {other_tenant.organization.pk} " not in message  # the other chain is intact


def test_a_removed_chain_is_detected(tenant, other_tenant, anchored):
    chain = other_tenant.organization.pk
    as_owner(
        ("DELETE FROM certmgr_auditevent WHERE chain = %s", [chain]),
        ("DELETE FROM certmgr_auditchainhead WHERE chain = %s", [chain]),
    )
    assert "intact" in call_command_out("verify_audit_log")
    message = verify("--checkpoints", anchored)
    assert f"chain {chain} (organization {chain}), sequence 1, missing event: chain removed" in message
    assert f"chain {tenant.organization.pk} " not in message


def _relink(events: list[AuditEvent], start: int, how: str) -> list[tuple[str, list]]:
    """Edit event ``start`` and recompute every later link without the audit key: unkeyed SHA-256
    (``legacy``), or an HMAC under a key of the attacker's own (``guessed``)."""
    statements, prev = [], events[start - 2].hash if start > 1 else ""
    for event in events[start - 1 :]:
        if event.sequence == start:
            event.details = {**event.details, "role": "admin"}
        event.prev_hash = prev
        if how == "legacy":
            event.algorithm = "sha256"
            event.hash = audit.compute_hash(event)
        else:
            guess = b"guessed-" + b"k" * 32
            event.hash = hmac.new(guess, audit._canonical(event, audit.KEYED_FIELDS), "sha256").hexdigest()
        statements.append(
            (
                "UPDATE certmgr_auditevent SET details = %s, prev_hash = %s, hash = %s, algorithm = %s "
                "WHERE id = %s",
                [json.dumps(event.details), event.prev_hash, event.hash, event.algorithm, event.pk],
            )
        )
        prev = event.hash
    statements.append(
        ("UPDATE certmgr_auditchainhead SET last_hash = %s WHERE chain = %s", [prev, events[0].chain])
    )
    return statements


@pytest.mark.parametrize("how", ["legacy", "guessed"])
def test_an_edit_with_the_chain_recomputed_without_the_key_is_detected(tenant, anchored, how):
    events = chain_of(tenant)
    victim = events[2]
    as_owner(*_relink(events, victim.sequence, how))
    message = verify("--checkpoints", anchored)
    assert f"chain {victim.chain} (organization {victim.chain}), sequence {victim.sequence}, " in message
    assert f"event id {victim.pk}" in message
    assert "relinked without the audit key" in message


def test_a_whole_chain_rewritten_unkeyed_is_caught_by_the_checkpoints(tenant, anchored):
    """Every link recomputed as if from before keyed links: consistent in itself, not with what was signed."""
    events = chain_of(tenant)
    as_owner(*_relink(events, 1, "legacy"))
    assert "intact" in call_command_out("verify_audit_log")
    message = verify("--checkpoints", anchored)
    assert f"chain {tenant.organization.pk} (organization {tenant.organization.pk}), sequence 1," in message
    assert "differs from the checkpoint" in message


# --- the checkpoints themselves -------------------------------------------------------------------------
def test_checkpoint_files_are_written_once_read_only_and_signed(tenant, tmp_path):
    store = audit_checkpoints.DirectoryStore(tmp_path)
    [*written] = audit_checkpoints.write_checkpoints(stores=[store])
    assert audit_checkpoints.write_checkpoints(stores=[store]) == []  # nothing moved: nothing new
    mine = next(c for c in written if c.chain == tenant.organization.pk)
    path = tmp_path / mine.name
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o440
    data = json.loads(path.read_bytes())
    head = AuditChainHead.objects.get(pk=tenant.organization.pk)
    assert (data["sequence"], data["head_hash"], data["organization"]) == (
        head.sequence,
        head.last_hash,
        head.chain,
    )
    assert data["key_id"] == audit_keys.signing_key().key_id and len(data["signature"]) == 64

    # Someone with write access to the directory moves the signed sequence back: the signature says so.
    os.chmod(path, 0o640)
    path.write_text(json.dumps({**data, "sequence": 1}))
    message = verify("--checkpoints", str(tmp_path))
    assert f"checkpoint {path}: its signature does not verify" in message


def test_checkpoints_go_to_an_s3_bucket_without_overwriting(tenant, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="certmgr-audit")
        store = audit_checkpoints.S3Store("certmgr-audit", "prod/", client)
        written = audit_checkpoints.write_checkpoints(stores=[store])
        assert written and audit_checkpoints.write_checkpoints(stores=[store]) == []
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="certmgr-audit")["Contents"]]
        assert sorted(keys) == sorted(f"prod/{c.name}" for c in written)
        assert "intact" in call_command_out("verify_audit_log", "--checkpoints", "s3://certmgr-audit/prod/")

        chain = tenant.organization.pk
        as_owner(
            ("DELETE FROM certmgr_auditevent WHERE chain = %s", [chain]),
            ("DELETE FROM certmgr_auditchainhead WHERE chain = %s", [chain]),
        )
        assert "chain removed" in verify("--checkpoints", "s3://certmgr-audit/prod/")


def test_the_schedule_writes_checkpoints_to_the_configured_directory(tenant, settings, tmp_path):
    from django_q.models import Schedule

    settings.CERTMGR_AUDIT_CHECKPOINT_DIR = str(tmp_path / "checkpoints")
    schedule = Schedule.objects.get(name="certmgr.audit_checkpoints")
    assert schedule.func == "certmgr.audit_checkpoints.run" and schedule.minutes == 60
    counts = audit_checkpoints.run()
    assert counts["checkpoints"] >= 1
    assert (tmp_path / "checkpoints" / f"chain-{tenant.organization.pk}").is_dir()
