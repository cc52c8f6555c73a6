"""The schedule of the signed audit checkpoints (certmgr.schedules); idempotent."""

from django.db import migrations


def create(apps, schema_editor):
    from certmgr.schedules import ensure_schedules

    ensure_schedules(apps.get_model("django_q", "Schedule"))


class Migration(migrations.Migration):
    dependencies = [("certmgr", "0008_audit_tables_guarded")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
