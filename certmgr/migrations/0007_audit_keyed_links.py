"""Keyed audit links: each event names its link algorithm and audit key. The events written before are
marked ``sha256`` (unkeyed, verified as such); new ones are HMAC-SHA256 under an audit key."""

from django.db import migrations, models

CHOICES = [
    ("sha256", "SHA-256 (unkeyed, before keyed links)"),
    ("hmac-sha256", "HMAC-SHA256 under an audit key"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("certmgr", "0006_anonymous_auth_failures"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditchainhead",
            name="key_id",
            field=models.CharField(blank=True, default="", max_length=16),
        ),
        # A column default fills the existing rows without an UPDATE (which the triggers refuse).
        migrations.AddField(
            model_name="auditevent",
            name="algorithm",
            field=models.CharField(choices=CHOICES, default="sha256", max_length=16),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="algorithm",
            field=models.CharField(choices=CHOICES, default="hmac-sha256", max_length=16),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="key_id",
            field=models.CharField(blank=True, max_length=16),
        ),
    ]
