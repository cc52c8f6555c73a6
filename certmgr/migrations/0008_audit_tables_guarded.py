"""The database refuses what the app never does to the audit tables: TRUNCATE of events and chain heads,
deleting a chain head, moving one back; and at commit a head must name an existing event (PostgreSQL).

A superuser session may TRUNCATE with ``SET certmgr.allow_truncate = 'on'`` (the test suite empties its
tables so). A table owner can still disable these triggers: the signed checkpoints outside the database
(certmgr.audit_checkpoints) are what detect that. On SQLite (the quickstart) TRUNCATE does not exist; its
triggers are recreated here since 0007 rebuilt the events table.
"""

from django.db import migrations

EVENTS = "certmgr_auditevent"
HEADS = "certmgr_auditchainhead"

POSTGRES_UP = f"""
CREATE OR REPLACE FUNCTION certmgr_audit_no_truncate() RETURNS trigger AS $$
BEGIN
    IF current_setting('certmgr.allow_truncate', true) = 'on' AND current_setting('is_superuser') = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit tables are append-only: TRUNCATE refused on %', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER certmgr_audit_no_truncate BEFORE TRUNCATE ON {EVENTS}
    FOR EACH STATEMENT EXECUTE FUNCTION certmgr_audit_no_truncate();
CREATE TRIGGER certmgr_audit_head_no_truncate BEFORE TRUNCATE ON {HEADS}
    FOR EACH STATEMENT EXECUTE FUNCTION certmgr_audit_no_truncate();

CREATE OR REPLACE FUNCTION certmgr_audit_head_forward() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit chain heads are never deleted: DELETE refused on chain %', OLD.chain
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.chain <> OLD.chain OR NEW.sequence < OLD.sequence THEN
        RAISE EXCEPTION 'audit chain heads only move forward: chain % from sequence % to % refused',
            OLD.chain, OLD.sequence, NEW.sequence USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER certmgr_audit_head_no_delete BEFORE DELETE ON {HEADS}
    FOR EACH ROW EXECUTE FUNCTION certmgr_audit_head_forward();
CREATE TRIGGER certmgr_audit_head_forward BEFORE UPDATE ON {HEADS}
    FOR EACH ROW EXECUTE FUNCTION certmgr_audit_head_forward();

-- At commit, the head (as it is then) names the chain's last event: a head moved forward without events,
-- or pointed at a hash no event has, is refused. One lookup by the unique (chain, sequence) index.
CREATE OR REPLACE FUNCTION certmgr_audit_head_linked() RETURNS trigger AS $$
DECLARE
    head {HEADS}%ROWTYPE;
BEGIN
    SELECT * INTO head FROM {HEADS} WHERE chain = NEW.chain;
    IF head.sequence = 0 AND head.last_hash = '' THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM {EVENTS} WHERE chain = head.chain AND sequence = head.sequence AND hash = head.last_hash
    ) THEN
        RAISE EXCEPTION 'audit chain % head at sequence % names no event with its hash', head.chain,
            head.sequence USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER certmgr_audit_head_linked AFTER UPDATE ON {HEADS}
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION certmgr_audit_head_linked();
"""
POSTGRES_DOWN = f"""
DROP TRIGGER IF EXISTS certmgr_audit_no_truncate ON {EVENTS};
DROP TRIGGER IF EXISTS certmgr_audit_head_no_truncate ON {HEADS};
DROP TRIGGER IF EXISTS certmgr_audit_head_no_delete ON {HEADS};
DROP TRIGGER IF EXISTS certmgr_audit_head_forward ON {HEADS};
DROP TRIGGER IF EXISTS certmgr_audit_head_linked ON {HEADS};
DROP FUNCTION IF EXISTS certmgr_audit_no_truncate();
DROP FUNCTION IF EXISTS certmgr_audit_head_forward();
DROP FUNCTION IF EXISTS certmgr_audit_head_linked();
"""
SQLITE_TRIGGERS = {
    "certmgr_audit_no_update": f"""BEFORE UPDATE ON {EVENTS}
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END""",
    "certmgr_audit_no_delete": f"""BEFORE DELETE ON {EVENTS}
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused'); END""",
    "certmgr_audit_head_no_delete": f"""BEFORE DELETE ON {HEADS}
        BEGIN SELECT RAISE(ABORT, 'audit chain heads are never deleted: DELETE refused'); END""",
    "certmgr_audit_head_forward": f"""BEFORE UPDATE ON {HEADS}
        WHEN NEW.chain <> OLD.chain OR NEW.sequence < OLD.sequence
        BEGIN SELECT RAISE(ABORT, 'audit chain heads only move forward: UPDATE refused'); END""",
}


def up(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP, None)
    elif vendor == "sqlite":
        for name, body in SQLITE_TRIGGERS.items():
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", None)
            schema_editor.execute(f"CREATE TRIGGER {name} {body}", None)
    else:
        raise RuntimeError(f"certmgr supports PostgreSQL and SQLite, not {vendor}")


def down(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_DOWN, None)
    else:
        for name in ("certmgr_audit_head_no_delete", "certmgr_audit_head_forward"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", None)


class Migration(migrations.Migration):
    dependencies = [("certmgr", "0007_audit_keyed_links")]
    operations = [migrations.RunPython(up, down)]
