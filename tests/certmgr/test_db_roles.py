"""The deployment roles of docs/guide/security.md, run as written: the web and worker role appends to the
audit log and moves chain heads forward, and can neither rewrite, delete, truncate nor switch off the
triggers (only the owner can, and the checkpoints detect the owner)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, transaction

from certmgr import audit
from certmgr.models import AuditEvent
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "security.md"
ROLE = "certmgr_app_roletest"


def _documented_grants() -> list[str]:
    """The statements the guide tells the owner to run after each migrate, for our test role."""
    block = re.search(r"-- as certmgr_owner, after each manage.py migrate\n(.*?)```", GUIDE.read_text(), re.S)
    assert block, "the guide's owner grants moved: update this test"
    return [s.strip().replace("certmgr_app", ROLE) for s in block.group(1).split(";") if s.strip()]


def _refused(sql: str) -> str:
    with pytest.raises(DatabaseError) as refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    return str(refused.value)


def test_the_runtime_role_appends_but_cannot_rewrite_the_audit_log(tenant):
    audit.record(SYSTEM, "test.before", tenant.organization)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {ROLE} NOLOGIN")  # rolled back with the test's transaction
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
        for statement in _documented_grants():
            cursor.execute(statement)
        cursor.execute(f"SET LOCAL ROLE {ROLE}")
    try:
        event = audit.record(SYSTEM, "test.as_app_role", tenant.organization, n=1)  # append + head forward
        assert AuditEvent.objects.filter(pk=event.pk).exists()
        for sql in (
            "UPDATE certmgr_auditevent SET action = 'x'",
            "DELETE FROM certmgr_auditevent",
            "TRUNCATE certmgr_auditevent CASCADE",
            "TRUNCATE certmgr_auditchainhead",
            "DELETE FROM certmgr_auditchainhead",
            "UPDATE certmgr_auditchainhead SET chain = chain + 1000",
            "ALTER TABLE certmgr_auditevent DISABLE TRIGGER USER",
            "SET session_replication_role = replica",
        ):
            assert re.search(r"permission denied|must be owner", _refused(sql)), sql
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
    checked, broken = audit.verify()
    assert broken is None and checked >= 2
