"""External ACME CAs: their settings, accounts, and orders persisted step by step.

An ACME CA is a ``pki.CertificateAuthority`` of kind ``acme`` with one ``AcmeSettings`` row. Orders are state
machines: every answer of the CA is stored before the next request, so a worker that dies mid-order is
resumed from the stored order URL (no second order, no duplicate certificate, no orphan TXT record).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from acmeca import choices
from acmeca.querysets import (
    AcmeAccountQuerySet,
    AcmeChallengeQuerySet,
    AcmeOrderQuerySet,
    AcmeSettingsQuerySet,
)
from acmeca.vendors import Vendor
from certmgr.encryption import EncryptedTextField
from certmgr.models import Organization

ACCOUNT_KEY_KINDS = choices.ACCOUNT_KEY_KINDS
ChallengeType = choices.ChallengeType


class AcmeAccount(models.Model):
    """An account at one ACME server; its key is made here and stored encrypted."""

    Status = choices.AccountStatus

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="acme_accounts")
    vendor = models.CharField(max_length=24, choices=[(v.value, v.value) for v in Vendor])
    directory_url = models.URLField(verbose_name="directory URL", max_length=500)
    email = models.EmailField(blank=True)
    key_kind = models.CharField(max_length=10, choices=ACCOUNT_KEY_KINDS, default="ec-p256")
    private_key = EncryptedTextField(editable=False)
    account_url = models.URLField(verbose_name="account URL", max_length=500)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.VALID)
    terms_of_service = models.URLField(max_length=500, blank=True)
    terms_agreed_at = models.DateTimeField(null=True, blank=True)
    eab_kid = models.CharField("EAB key id", max_length=200, blank=True)
    key_rolled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = AcmeAccountQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "ACME account"

    def __str__(self) -> str:
        return f"{self.email or 'no email'} at {self.directory_url}"


class AcmeSettings(models.Model):
    """The ACME side of an external CA: where it is, how to prove control, which account to use."""

    ca = models.OneToOneField(
        "pki.CertificateAuthority", verbose_name="CA", on_delete=models.CASCADE, related_name="acme"
    )
    vendor = models.CharField(max_length=24, choices=[(v.value, v.value) for v in Vendor])
    directory_url = models.URLField(verbose_name="directory URL", max_length=500)
    email = models.EmailField(blank=True)
    eab_kid = models.CharField("EAB key id", max_length=200, blank=True)
    eab_hmac_key = EncryptedTextField("EAB HMAC key", blank=True, editable=False)
    account = models.ForeignKey(
        AcmeAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="settings"
    )
    dns_connection = models.ForeignKey(
        "dnsproviders.AppConnection",
        verbose_name="DNS app connection",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="acme_settings",
    )
    hosted_zone_id = models.CharField(
        verbose_name="hosted zone ID", max_length=255, blank=True, help_text="empty: found from the domain"
    )
    challenge_type = models.CharField(
        max_length=8, choices=ChallengeType.choices, default=ChallengeType.DNS_01
    )
    profile = models.CharField(max_length=64, blank=True, help_text="ACME profile name, if the CA has them")
    caa_identifiers = models.CharField(
        "CAA identifiers",
        max_length=500,
        blank=True,
        help_text="The CA's CAA issuer domains, comma-separated (the preset's when empty): before each "
        "order, a name whose CAA records name none of them (for this account and challenge type) fails",
    )
    preferred_chain = models.CharField(
        max_length=255, blank=True, help_text="issuer common name of the chain to prefer"
    )
    tls_ca_bundle = models.TextField(
        "TLS trust bundle", blank=True, help_text="PEM of the CA of the ACME server's HTTPS certificate"
    )
    direct_issuance = models.BooleanField(
        default=False, help_text="allow certificates by names alone, without a subscriber"
    )
    reregister_automatically = models.BooleanField(
        "re-register automatically when the CA forgets the account",
        default=True,
        help_text="when the CA answers accountDoesNotExist, register a new account with the same key and "
        "retry the failed order on it",
    )
    propagation_timeout = models.PositiveIntegerField(
        default=180, help_text="seconds to wait for the TXT records to reach every name server"
    )
    propagation_interval = models.FloatField(default=1.0, help_text="seconds between propagation checks")

    objects = AcmeSettingsQuerySet.as_manager()

    class Meta:
        verbose_name = "ACME settings"
        verbose_name_plural = "ACME settings"

    def __str__(self) -> str:
        return f"ACME settings of {self.ca}"

    @property
    def organization_id(self) -> int:
        return self.ca.organization_id


class AcmeOrder(models.Model):
    """One certificate order at an ACME CA (RFC 8555 §7.1.3), run by a worker step by step."""

    Status = choices.OrderStatus
    Step = choices.OrderStep

    FINISHED_STEPS = choices.FINISHED_STEPS

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="acme_orders")
    ca = models.ForeignKey(
        "pki.CertificateAuthority", verbose_name="CA", on_delete=models.PROTECT, related_name="acme_orders"
    )
    account = models.ForeignKey(
        AcmeAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    subscriber = models.ForeignKey(
        "pki.Subscriber", null=True, blank=True, on_delete=models.SET_NULL, related_name="acme_orders"
    )
    renewal_of = models.ForeignKey(
        "pki.Certificate", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    certificate = models.ForeignKey(
        "pki.Certificate", null=True, blank=True, on_delete=models.SET_NULL, related_name="acme_orders"
    )
    # The failed or cancelled order this one starts over (retry_order, the lost-account recovery): the
    # retries of one subscriber's orders form one chain, shown on each order's page.
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    identifiers = models.JSONField(default=list, help_text='[{"type": "dns", "value": "example.com"}, ...]')
    challenge_type = models.CharField(max_length=8, choices=ChallengeType.choices)
    csr_pem = models.TextField(verbose_name="CSR (PEM)", blank=True)
    # The certificate's key when certmgr made it; empty when the caller brought a CSR.
    private_key = EncryptedTextField(blank=True, editable=False)
    order_url = models.URLField(verbose_name="order URL", max_length=500, blank=True)
    finalize_url = models.URLField(verbose_name="finalize URL", max_length=500, blank=True)
    certificate_url = models.URLField(verbose_name="certificate URL", max_length=500, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, blank=True, default=Status.NEW)
    step = models.CharField(max_length=16, choices=Step.choices, default=Step.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    error_type = models.CharField(max_length=100, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A running worker holds the lease and renews it; a lease past its time is a dead worker's.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Challenge records still to remove (a failed cleanup is retried by the janitor) ...
    cleanup_pending = models.BooleanField(default=False)
    # ... until a removal failed for a permanent reason CERTMGR_ACME_CLEANUP_MAX_ATTEMPTS times: then the
    # janitor stops, the reason stays here and an operator clears it (``orders.clear_cleanup``).
    cleanup_stopped_at = models.DateTimeField("cleanup stopped at", null=True, blank=True)
    cleanup_error = models.TextField("cleanup error", blank=True)
    # ACME requests this order made, by the CA's answer (for /metrics): 2xx, 4xx, 5xx; badNonce retries.
    requests_ok = models.PositiveIntegerField(verbose_name="successful requests", default=0, editable=False)
    requests_client_error = models.PositiveIntegerField(default=0, editable=False)
    requests_server_error = models.PositiveIntegerField(default=0, editable=False)
    bad_nonces = models.PositiveIntegerField(default=0, editable=False)
    requested_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = AcmeOrderQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "ACME order"
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="acmeorder_org_created"),
            models.Index(fields=["subscriber", "step"], name="acmeorder_subscriber_step"),
            models.Index(fields=["step", "lease_until"], name="acmeorder_step_lease"),
        ]

    def __str__(self) -> str:
        names = ", ".join(i["value"] for i in self.identifiers[:3])
        return f"order {self.pk} ({names})"

    @property
    def finished(self) -> bool:
        return self.step in self.FINISHED_STEPS

    @property
    def names(self) -> list[str]:
        return [i["value"] for i in self.identifiers]


class AcmeAuthorization(models.Model):
    """One identifier's authorization inside an order."""

    order = models.ForeignKey(AcmeOrder, on_delete=models.CASCADE, related_name="authorizations")
    identifier = models.CharField(max_length=255)
    wildcard = models.BooleanField(default=False)
    url = models.URLField(verbose_name="URL", max_length=500)
    status = models.CharField(max_length=12, default="pending")
    expires = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "ACME authorization"

    def __str__(self) -> str:
        return ("*." if self.wildcard else "") + self.identifier


class AcmeChallenge(models.Model):
    """The challenge certmgr answers for one authorization, and the record it wrote to do so."""

    Status = choices.ChallengeStatus

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    order = models.ForeignKey(AcmeOrder, on_delete=models.CASCADE, related_name="challenges")
    authorization = models.OneToOneField(
        AcmeAuthorization, on_delete=models.CASCADE, related_name="challenge"
    )
    type = models.CharField(max_length=8, choices=ChallengeType.choices)
    url = models.URLField(verbose_name="URL", max_length=500)
    token = models.CharField(max_length=255, db_index=True)
    # dns-01: the TXT record name (after CNAME delegation) and value; http-01: the path and key authorization.
    record_name = models.CharField(max_length=500)
    record_value = models.CharField(max_length=500)
    ttl = models.PositiveIntegerField(verbose_name="TTL (seconds)", default=60)
    # What the provider needs to remove the record again (dnsproviders RecordRef.as_dict()).
    provider_ref = models.JSONField(default=dict, blank=True)
    # True from just before the record is written until it is removed: cleanup never misses one. False again
    # when the provider refused the write (no zone for the name, a refused key): nothing to remove.
    record_present = models.BooleanField(default=False)
    # Removals of the record that failed for a permanent reason (the provider refused).
    cleanup_attempts = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NOT_READY)
    answered_at = models.DateTimeField(null=True, blank=True)
    validated_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True, help_text="manual DNS: operator confirmed")
    error = models.TextField(blank=True)

    objects = AcmeChallengeQuerySet.as_manager()

    class Meta:
        ordering = ["order_id", "id"]
        verbose_name = "ACME challenge"

    def __str__(self) -> str:
        return f"{self.type} {self.record_name}"
