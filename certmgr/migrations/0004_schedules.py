"""Every periodic job's schedule (certmgr.schedules); idempotent, also ``manage.py setup_schedules``."""

from django.db import migrations


def create(apps, schema_editor):
    from certmgr.schedules import ensure_schedules

    ensure_schedules(apps.get_model("django_q", "Schedule"))


class Migration(migrations.Migration):
    dependencies = [
        ("certmgr", "0003_job_runs"),
        ("pki", "0006_renewal_schedule"),
        ("acmeca", "0002_janitor_schedule"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
