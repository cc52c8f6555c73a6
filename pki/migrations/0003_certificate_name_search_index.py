"""Partial-domain search over a million certificates: a trigram index on PostgreSQL (SQLite scans)."""

from django.db import migrations

UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS cert_names_trgm ON pki_certificate USING gin (names_text gin_trgm_ops)",
]
DOWN = ["DROP INDEX IF EXISTS cert_names_trgm"]


def up(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in UP:
            schema_editor.execute(statement, None)


def down(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in DOWN:
            schema_editor.execute(statement, None)


class Migration(migrations.Migration):
    dependencies = [("pki", "0002_crl_schedule")]
    operations = [migrations.RunPython(up, down)]
