"""A failed or cancelled order no longer reads "Pending" at the CA (acmeca.choices.finished_status)."""

from django.db import migrations


def forwards(apps, schema_editor):
    AcmeOrder = apps.get_model("acmeca", "AcmeOrder")
    AcmeOrder.objects.filter(step__in=["failed", "cancelled"]).exclude(status__in=["valid", "invalid"]).update(
        status="invalid"
    )


class Migration(migrations.Migration):
    dependencies = [("acmeca", "0008_order_retry_of")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
