"""Schedule the hourly flip of expired certificates; idempotent."""

from django.db import migrations

NAME = "pki.mark_expired"


def create(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name=NAME,
        defaults={"func": "pki.tasks.mark_expired", "schedule_type": "I", "minutes": 60, "repeats": -1},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("pki", "0004_ca_chain_pem")]
    operations = [migrations.RunPython(create, remove)]
