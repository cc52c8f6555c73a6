"""Sync destinations (where certificates go), rules (which go where, under which name), runs (each push or
removal, retried) and deployments (what is at each destination now, since when)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from certmgr.models import Organization
from dnsproviders.models import AppConnection
from pki.models import Certificate, Subscriber
from syncs.choices import DestinationKind, RunAction, RunStatus, RunTrigger
from syncs.querysets import DeploymentQuerySet, SyncDestinationQuerySet, SyncRuleQuerySet, SyncRunQuerySet


class SyncDestination(models.Model):
    Kind = DestinationKind

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="sync_destinations")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=24, choices=DestinationKind.choices)
    connection = models.ForeignKey(
        AppConnection,
        verbose_name="app connection",
        on_delete=models.PROTECT,
        related_name="sync_destinations",
        help_text="The credentials certmgr pushes with: aws for AWS, azure for Key Vault, webhook for an "
        "HTTPS push (its URL and signing secret).",
    )
    region = models.CharField(
        max_length=32, blank=True, help_text="AWS region; empty: the connection's region."
    )
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per kind: tags (ACM, Secrets Manager, Key Vault: {name: value}), kms_key_id (Secrets "
        "Manager), vault_url (Key Vault: https://<name>.vault.azure.net); none for a webhook.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    last_tested_at = models.DateTimeField(verbose_name="last tested", null=True, blank=True, editable=False)
    last_test_ok = models.BooleanField(verbose_name="last test passed", null=True, editable=False)
    last_test_message = models.TextField(blank=True, editable=False)

    objects = SyncDestinationQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="syncdestination_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class SyncRule(models.Model):
    """Which certificates go to a destination (a subscriber's, or those whose names match), and how."""

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="sync_rules")
    destination = models.ForeignKey(SyncDestination, on_delete=models.CASCADE, related_name="rules")
    subscriber = models.ForeignKey(
        Subscriber,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="sync_rules",
        help_text="Only this subscriber's certificates; empty: any certificate whose names match.",
    )
    name_patterns = models.JSONField(
        default=list, blank=True, help_text="example.com, *.example.com or ~regex (RE2); empty = any name"
    )
    name_schema = models.CharField(
        max_length=200,
        default="{subscriber}",
        help_text="The name at the destination: {subscriber}, {common_name}, {serial}, {id} or fixed text. "
        "The same name after a renewal replaces the certificate in place (same ARN, new secret version).",
    )
    include_private_key = models.BooleanField(
        default=True, help_text="Without it the destination never receives the key (ACM needs it)."
    )
    remove_on_expiry_or_revocation = models.BooleanField(
        default=False, help_text="Remove the certificate from the destination once it is revoked or expired."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = SyncRuleQuerySet.as_manager()

    class Meta:
        ordering = ["destination__name", "id"]

    def __str__(self) -> str:
        target = self.subscriber.name if self.subscriber_id and self.subscriber else "matching names"
        return f"{target} → {self.destination.name}"


class Deployment(models.Model):
    """What is at a destination under one name now: the certificate, where (ARN, secret), since when."""

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    destination = models.ForeignKey(SyncDestination, on_delete=models.CASCADE, related_name="deployments")
    name = models.CharField(max_length=255)
    certificate = models.ForeignKey(Certificate, on_delete=models.CASCADE, related_name="deployments")
    identifier = models.CharField(max_length=500, help_text="ARN of the ACM certificate or the secret.")
    version = models.CharField(max_length=100, blank=True, help_text="The secret version (Secrets Manager).")
    fingerprint_sha256 = models.CharField(max_length=64)
    deployed_at = models.DateTimeField(help_text="When this certificate arrived there.")
    checked_at = models.DateTimeField(null=True, blank=True, help_text="Last drift check.")
    drift = models.TextField(blank=True, help_text="What the last drift check found different; empty: none.")
    removed_at = models.DateTimeField(null=True, blank=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["destination__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["destination", "name"], name="deployment_unique_name"),
        ]
        indexes = [models.Index(fields=["certificate"], name="deployment_certificate")]

    def __str__(self) -> str:
        return f"{self.name} at {self.destination}"


class SyncRun(models.Model):
    """One push (or removal) of one certificate to one destination, with its attempts."""

    Status = RunStatus

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    destination = models.ForeignKey(SyncDestination, on_delete=models.CASCADE, related_name="runs")
    rule = models.ForeignKey(SyncRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    certificate = models.ForeignKey(Certificate, on_delete=models.CASCADE, related_name="sync_runs")
    name = models.CharField(max_length=255, help_text="The name at the destination.")
    include_private_key = models.BooleanField(default=True)
    action = models.CharField(max_length=8, choices=RunAction.choices, default=RunAction.PUSH)
    trigger = models.CharField(max_length=12, choices=RunTrigger.choices)
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    identifier = models.CharField(max_length=500, blank=True, help_text="ARN of the certificate or secret.")
    version = models.CharField(max_length=100, blank=True, help_text="The secret version (Secrets Manager).")
    serial = models.CharField(max_length=64, blank=True, help_text="The serial pushed.")
    error = models.TextField(blank=True)
    alerted = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = SyncRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="syncrun_org_created"),
            models.Index(fields=["certificate"], name="syncrun_certificate"),
            models.Index(
                fields=["next_attempt_at"],
                name="syncrun_due",
                condition=models.Q(status__in=["pending", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return f"sync {self.pk}: {self.name} → {self.destination_id}"
