"""App connections: a named, encrypted set of credentials for one DNS provider."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from certmgr.encryption import EncryptedJSONField, unreadable_secret
from certmgr.models import Organization
from dnsproviders.credentials import KIND_LABELS, Kind, public_summary
from dnsproviders.querysets import AppConnectionQuerySet, DelegatedChallengeQuerySet


class AppConnection(models.Model):
    # Enum's functional API, which django-stubs' TextChoices overloads leave out.
    Kind = models.TextChoices("Kind", [(k.name, (k.value, KIND_LABELS[k])) for k in Kind])  # type: ignore[call-overload]

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="app_connections")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    description = models.TextField(blank=True, max_length=2000)
    credentials = EncryptedJSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    last_tested_at = models.DateTimeField(verbose_name="last tested", null=True, blank=True, editable=False)
    last_test_ok = models.BooleanField(verbose_name="last test passed", null=True, editable=False)
    last_test_message = models.TextField(blank=True, editable=False)

    objects = AppConnectionQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="appconnection_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name

    def public_settings(self) -> dict | None:
        """The non-secret settings (URLs, servers), or None when the credentials cannot be decrypted: they
        are stored together, so a list shows the connection and says so instead of failing."""
        if unreadable_secret(self, "credentials"):
            return None
        return public_summary(self.kind, self.credentials)


class DelegatedChallenge(models.Model):
    """A live DNS-01 value that certmgr's own DNS server answers (connection kind ``delegated``).

    The operator delegated ``_acme-challenge.<name>`` to certmgr with an NS record; presenting a challenge
    stores its value here and cleanup deletes it. ``expires`` bounds a row an order never cleaned up.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(
        AppConnection, null=True, on_delete=models.SET_NULL, related_name="delegated_challenges"
    )
    name = models.CharField(max_length=255)  # absolute, lower case: _acme-challenge.example.com.
    value = models.CharField(max_length=255)
    ttl = models.PositiveIntegerField(verbose_name="TTL (seconds)", default=60)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires = models.DateTimeField()

    objects = DelegatedChallengeQuerySet.as_manager()

    class Meta:
        ordering = ["name", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name", "value"], name="delegatedchallenge_unique_value"
            ),
        ]
        indexes = [models.Index(fields=["expires"], name="delegatedchallenge_expires")]

    def __str__(self) -> str:
        return f"{self.name} TXT {self.value}"
