"""The deployment state of certificates that already have sync runs (pki 0021 added the columns)."""

from django.db import migrations
from django.db.models import Exists, OuterRef

from syncs.choices import deployment_state

FIELDS = ("deployment_state", "deployment_targets", "deployment_confirmed", "deployed_at")


def forwards(apps, schema_editor):
    Certificate = apps.get_model("pki", "Certificate")
    SyncRun = apps.get_model("syncs", "SyncRun")
    runs: dict = {}
    for cert_id, dest_id, name, status, finished in SyncRun.objects.filter(action="push").values_list(
        "certificate_id", "destination_id", "name", "status", "finished_at"
    ):
        runs.setdefault(cert_id, {}).setdefault((dest_id, name), []).append((status, finished))
    ids = sorted(runs)
    for start in range(0, len(ids), 1000):
        rows = list(
            Certificate.objects.filter(pk__in=ids[start : start + 1000])
            .annotate(replaced=Exists(Certificate.objects.filter(renewed_from=OuterRef("pk"))))
            .only("id", *FIELDS)
        )
        for row in rows:
            for field, value in zip(FIELDS, deployment_state(runs[row.pk], replaced=row.replaced), strict=True):
                setattr(row, field, value)
        Certificate.objects.bulk_update(rows, list(FIELDS))


class Migration(migrations.Migration):
    dependencies = [
        ("pki", "0021_certificate_deployment_state"),
        ("syncs", "0004_azure_webhook_kinds"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
