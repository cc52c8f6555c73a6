"""Schedule the sync jobs: due runs every minute, the drift check hourly (CERTMGR_SYNC_DRIFT_MINUTES by
``manage.py setup_schedules``); idempotent."""

from django.db import migrations

JOBS = {
    "syncs.run_due": ("syncs.tasks.run_due", 1),
    "syncs.check_drift": ("syncs.tasks.check_drift", 60),
}


def create(apps, schema_editor):
    schedule = apps.get_model("django_q", "Schedule")
    for name, (func, minutes) in JOBS.items():
        schedule.objects.update_or_create(
            name=name, defaults={"func": func, "schedule_type": "I", "minutes": minutes, "repeats": -1}
        )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=list(JOBS)).delete()


class Migration(migrations.Migration):
    dependencies = [("syncs", "0001_initial"), ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more")]
    operations = [migrations.RunPython(create, remove)]
