"""The database itself refuses to change or delete audit events (PostgreSQL and SQLite triggers)."""

from django.db import migrations

TABLE = "certmgr_auditevent"

POSTGRES_UP = f"""
CREATE OR REPLACE FUNCTION certmgr_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER certmgr_audit_no_update BEFORE UPDATE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION certmgr_audit_append_only();
CREATE TRIGGER certmgr_audit_no_delete BEFORE DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION certmgr_audit_append_only();
"""
POSTGRES_DOWN = f"""
DROP TRIGGER IF EXISTS certmgr_audit_no_update ON {TABLE};
DROP TRIGGER IF EXISTS certmgr_audit_no_delete ON {TABLE};
DROP FUNCTION IF EXISTS certmgr_audit_append_only();
"""
SQLITE_UP = [
    f"""CREATE TRIGGER certmgr_audit_no_update BEFORE UPDATE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END""",
    f"""CREATE TRIGGER certmgr_audit_no_delete BEFORE DELETE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused'); END""",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS certmgr_audit_no_update", "DROP TRIGGER IF EXISTS certmgr_audit_no_delete"]


def up(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP, None)
    elif vendor == "sqlite":
        for statement in SQLITE_UP:
            schema_editor.execute(statement, None)
    else:
        raise RuntimeError(f"certmgr supports PostgreSQL and SQLite, not {vendor}")


def down(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in [POSTGRES_DOWN] if vendor == "postgresql" else SQLITE_DOWN:
        schema_editor.execute(statement, None)


class Migration(migrations.Migration):
    dependencies = [("certmgr", "0001_initial")]
    operations = [migrations.RunPython(up, down)]
