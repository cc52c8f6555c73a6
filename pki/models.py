"""Certificate authorities, policies, subscribers, CSRs, CRLs and the certificate inventory."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from certmgr.encryption import EncryptedTextField
from certmgr.models import Organization
from pki import choices
from pki.querysets import (
    CertificateAuthorityQuerySet,
    CertificateQuerySet,
    CertificateRequestQuerySet,
    PolicyQuerySet,
    SubscriberQuerySet,
)

KEY_ALGORITHMS = choices.KeyAlgorithm.choices
RevocationReason = choices.RevocationReason


class CertificateAuthority(models.Model):
    Kind = choices.CaKind
    Status = choices.CaStatus

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="cas")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    subject = models.JSONField(default=dict, blank=True)
    subject_dn = models.CharField(verbose_name="subject DN", max_length=500, blank=True)
    key_algorithm = models.CharField(max_length=10, choices=KEY_ALGORITHMS, blank=True)
    max_path_length = models.PositiveSmallIntegerField(null=True, blank=True)
    certificate_pem = models.TextField(verbose_name="certificate (PEM)", blank=True)
    # Issuers above an imported CA that certmgr does not manage (issuer first); completes issued chains.
    chain_pem = models.TextField(verbose_name="chain (PEM)", blank=True)
    # Never exported: no API, admin or command path returns it.
    private_key = EncryptedTextField(blank=True, editable=False)
    serial = models.CharField(max_length=64, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    imported = models.BooleanField(default=False)
    crl_number = models.BigIntegerField(verbose_name="CRL number", default=0, editable=False)
    ocsp_enabled = models.BooleanField(
        "OCSP responder",
        default=False,
        help_text="answer OCSP at /ocsp/<id>/; certificates issued afterwards carry that URL in their AIA",
    )
    ocsp_nonce_on_demand = models.BooleanField(
        "sign OCSP nonces on demand",
        default=False,
        help_text="a request with a nonce gets a freshly signed response echoing it (costs a signature per "
        "request); off: the nonce is ignored and the pre-signed response served",
    )
    delta_crl_enabled = models.BooleanField(
        "delta CRLs",
        default=True,
        help_text="publish delta CRLs (RFC 5280 §5.2.4) of the full CRL the schedule builds: each revocation "
        "publishes a full CRL and a delta CRL; certificates issued meanwhile and full CRLs point at it "
        "(Freshest CRL). Off: each revocation publishes a full CRL only",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = CertificateAuthorityQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "name"]
        verbose_name = "certificate authority"
        verbose_name_plural = "certificate authorities"
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="ca_unique_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_internal(self) -> bool:
        return self.kind in choices.INTERNAL_CA_KINDS


class Policy(models.Model):
    """A certificate template: what subscribers of it may ask for. Checked on every issuance and renewal.

    Name patterns: ``example.com`` (exact), ``*.example.com`` (any name below example.com) or
    ``~regex`` (a full-match regular expression).
    """

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="policies")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, max_length=2000)
    common_name_patterns = models.JSONField(default=list, blank=True)
    san_patterns = models.JSONField(default=list, blank=True)
    allowed_san_types = models.JSONField(
        default=list, blank=True, help_text="dns, ip, email, uri; empty = all"
    )
    allowed_key_algorithms = models.JSONField(default=list, blank=True, help_text="empty = all")
    max_validity_days = models.PositiveIntegerField(null=True, blank=True)
    key_usages = models.JSONField(default=list, blank=True, help_text="allowed key usages; empty = any")
    extended_key_usages = models.JSONField(default=list, blank=True, help_text="allowed EKUs; empty = any")
    allow_ca = models.BooleanField(
        verbose_name="allow CA certificates",
        default=False,
        help_text="basic constraints: may issue CA certificates",
    )
    new_key_at_renewal = models.BooleanField(
        "require a new key at renewal",
        default=False,
        help_text="a renewal must use a key the certificate it renews did not have: certmgr makes one, "
        "or a subscriber renewing from its own CSR needs a new CSR",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "name"]
        verbose_name_plural = "policies"
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="policy_unique_name")]

    def __str__(self) -> str:
        return self.name


class Subscriber(models.Model):
    """The profile certificates are issued from (and renewed from)."""

    IssuerType = choices.IssuerType
    OperationStatus = choices.OperationStatus

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="subscribers")
    name = models.CharField(max_length=100)
    issuer_type = models.CharField(max_length=12, choices=IssuerType.choices, default=IssuerType.CA)
    ca = models.ForeignKey(
        CertificateAuthority,
        verbose_name="CA",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="subscribers",
    )
    policy = models.ForeignKey(
        Policy, null=True, blank=True, on_delete=models.PROTECT, related_name="subscribers"
    )
    common_name = models.CharField(max_length=255, blank=True)
    sans = models.JSONField(verbose_name="subject alternative names", default=list, blank=True)
    subject = models.JSONField(
        default=dict, blank=True, help_text="organization, organizational_unit, country, state, locality"
    )
    key_algorithm = models.CharField(max_length=10, choices=KEY_ALGORITHMS, default="ec-p256")
    validity_days = models.PositiveIntegerField(default=90)
    key_usages = models.JSONField(default=list, blank=True)
    extended_key_usages = models.JSONField(default=list, blank=True)
    auto_renew = models.BooleanField(default=True)
    renew_before_days = models.PositiveIntegerField(null=True, blank=True)
    reuse_key = models.BooleanField(
        default=False, help_text="renewals keep the current key (default: a new one)"
    )
    # A subordinate CA certificate instead of an end-entity one; only under a policy that allows CAs.
    ca_certificate = models.BooleanField(
        "CA certificate",
        default=False,
        help_text="issue a subordinate CA certificate (basic constraints cA) for this subscriber's key or "
        "CSR; needs a policy that allows CA certificates",
    )
    ca_path_length = models.PositiveSmallIntegerField(
        "CA path length",
        default=0,
        help_text="CA certificates: how many CAs may stand below it (0: end-entity certificates only)",
    )
    # What the CA's kind of issuer lets a subscriber choose (pki.issuers: ACME profile and challenge type).
    issuer_options = models.JSONField(
        "issuer options",
        default=dict,
        blank=True,
        help_text="choices the issuing CA takes per subscriber (ACME CAs: profile, challenge type)",
    )
    # Failed renewals: how many in a row, why (category: the CA's error type, "policy", "dns", ...), and when
    # the next attempt is due (exponential backoff; an operator can retry now).
    renewal_failures = models.PositiveIntegerField(default=0, editable=False)
    last_error_category = models.CharField(max_length=100, blank=True, editable=False)
    next_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_operation_status = models.CharField(max_length=10, choices=OperationStatus.choices, blank=True)
    last_operation_message = models.TextField(blank=True)
    last_operation_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = SubscriberQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="subscriber_unique_name")
        ]

    def __str__(self) -> str:
        return self.name


class Certificate(models.Model):
    """One certificate in the inventory, whoever issued it."""

    Status = choices.CertificateStatus
    Source = choices.CertificateSource
    DeploymentState = choices.DeploymentState

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="certificates")
    ca = models.ForeignKey(
        CertificateAuthority,
        verbose_name="CA",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="certificates",
    )
    subscriber = models.ForeignKey(
        Subscriber, null=True, blank=True, on_delete=models.SET_NULL, related_name="certificates"
    )
    source = models.CharField(max_length=12, choices=Source.choices)
    serial = models.CharField(max_length=64)
    certificate_pem = models.TextField(
        verbose_name="certificate (PEM)",
    )
    chain_pem = models.TextField(
        verbose_name="chain (PEM)", blank=True, help_text="intermediates and root, issuer first"
    )
    private_key = EncryptedTextField(blank=True, editable=False)
    # The caller's CSR when certmgr holds no key for it: a renewal sends it again (same public key).
    csr_pem = models.TextField("CSR", blank=True, editable=False)
    fingerprint_sha256 = models.CharField(max_length=64)
    fingerprint_sha1 = models.CharField(max_length=40)
    subject_dn = models.CharField(verbose_name="subject DN", max_length=1000, blank=True)
    issuer_dn = models.CharField(verbose_name="issuer DN", max_length=1000, blank=True)
    common_name = models.CharField(max_length=255, blank=True, db_index=True)
    sans = models.JSONField(verbose_name="subject alternative names", default=list, blank=True)
    # Lower-cased names joined by spaces: one column for "partial domain" search.
    names_text = models.TextField(blank=True)
    key_algorithm = models.CharField(max_length=10, choices=KEY_ALGORITHMS)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=24, choices=RevocationReason.choices, blank=True)
    renewed_from = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="renewed_by"
    )
    # When the renewal sweep renews it (pki.renewal); ARI: when to ask the CA's renewalInfo again.
    next_renewal_at = models.DateTimeField(null=True, blank=True)
    ari_checked_at = models.DateTimeField(
        verbose_name="renewal info (ARI) checked", null=True, blank=True, editable=False
    )
    ari_next_check_at = models.DateTimeField(
        verbose_name="next renewal info (ARI) check", null=True, blank=True, editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Where it is used: kept by the app that deploys it (syncs); pki only shows it (pki.deployment).
    deployment_state = models.CharField(
        max_length=10, choices=choices.DeploymentState.choices, default=choices.DeploymentState.NONE.value
    )
    deployment_targets = models.PositiveIntegerField(
        default=0, editable=False, help_text="Destinations it goes to."
    )
    deployment_confirmed = models.PositiveIntegerField(
        default=0, editable=False, help_text="Destinations that confirmed its serial."
    )
    deployed_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the last destination confirmed it."
    )

    objects = CertificateQuerySet.as_manager()

    class Meta:
        ordering = ["-not_after", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "fingerprint_sha256"], name="certificate_unique_fp"
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "not_after"], name="cert_org_not_after"),
            models.Index(fields=["organization", "status", "not_after"], name="cert_org_status_not_after"),
            models.Index(fields=["ca", "serial"], name="cert_ca_serial"),
            models.Index(fields=["serial"], name="cert_serial"),
            models.Index(fields=["fingerprint_sha256"], name="cert_fp256"),
            models.Index(fields=["fingerprint_sha1"], name="cert_fp1"),
            models.Index(fields=["subscriber", "-not_after"], name="cert_subscriber_not_after"),
            models.Index(fields=["organization", "key_algorithm"], name="cert_org_key_alg"),
            # The renewal sweep: active certificates by renewal time (a small slice of a million rows).
            models.Index(
                fields=["next_renewal_at"],
                name="cert_renewal_due",
                condition=models.Q(status="active", next_renewal_at__isnull=False),
            ),
            # Not yet everywhere it goes: the dashboard's count and the deployment filter (a small slice).
            models.Index(
                fields=["organization", "deployment_state"],
                name="cert_undeployed",
                condition=models.Q(deployment_state__in=["deploying", "failed"]),
            ),
            # A subscriber's certificates still planned for renewal (one, normally): cleared on each issuance.
            models.Index(
                fields=["subscriber"],
                name="cert_subscriber_renewing",
                condition=models.Q(next_renewal_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.common_name or self.subject_dn or self.serial} ({self.serial[:16]})"


class CertificateRequest(models.Model):
    """A CSR: generated here (its key kept encrypted) or uploaded (no key)."""

    Source = choices.CsrSource

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="csrs")
    name = models.CharField(max_length=100)
    source = models.CharField(max_length=10, choices=Source.choices)
    csr_pem = models.TextField(
        verbose_name="CSR (PEM)",
    )
    private_key = EncryptedTextField(blank=True, editable=False)
    common_name = models.CharField(max_length=255, blank=True)
    sans = models.JSONField(verbose_name="subject alternative names", default=list, blank=True)
    subject_dn = models.CharField(verbose_name="subject DN", max_length=1000, blank=True)
    key_algorithm = models.CharField(max_length=10, choices=KEY_ALGORITHMS)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = CertificateRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "CSR"
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="csr_unique_name")]

    def __str__(self) -> str:
        return self.name


class Crl(models.Model):
    """One generated CRL of a CA: a full CRL, or a delta CRL listing the revocations since the full CRL
    numbered ``base_number`` (an anchor). Both share the CA's CRL number sequence; the newest of each is
    served. A full CRL is an anchor when the schedule (or *Publish CRL*, or a delta CRL setting change) built
    it; the full CRLs a revocation publishes are not, so deltas keep naming the anchor a client may cache."""

    ca = models.ForeignKey(
        CertificateAuthority, verbose_name="CA", on_delete=models.CASCADE, related_name="crls"
    )
    number = models.BigIntegerField()
    delta = models.BooleanField(default=False)
    anchor = models.BooleanField(
        default=False,
        help_text="full CRLs built by the schedule, Publish CRL or a delta CRL setting change: the base "
        "delta CRLs name; the full CRLs revocations publish are not anchors",
    )
    base_number = models.BigIntegerField(
        null=True, blank=True, help_text="delta CRLs: the number of the full CRL it completes"
    )
    # Null on CRLs built before the count was kept.
    entries = models.PositiveIntegerField(null=True, blank=True, help_text="revoked certificates listed")
    this_update = models.DateTimeField()
    next_update = models.DateTimeField()
    der = models.BinaryField(
        verbose_name="CRL (DER)",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-number"]
        verbose_name = "CRL"
        constraints = [
            models.UniqueConstraint(fields=["ca", "number"], name="crl_unique_number"),
            models.CheckConstraint(
                condition=models.Q(delta=False, base_number__isnull=True)
                | models.Q(delta=True, base_number__isnull=False),
                name="crl_delta_has_base",
            ),
            models.CheckConstraint(condition=~models.Q(delta=True, anchor=True), name="crl_anchor_is_full"),
        ]
        indexes = [models.Index(fields=["ca", "delta", "-number"], name="crl_ca_kind_number")]

    def __str__(self) -> str:
        return f"{'Delta CRL' if self.delta else 'CRL'} {self.number} of {self.ca}"

    @property
    def organization_id(self) -> int:
        return self.ca.organization_id


class OcspResponder(models.Model):
    """A CA's delegated OCSP responder certificate (pki.ocsp): the newest unexpired one signs responses."""

    ca = models.ForeignKey(
        CertificateAuthority, verbose_name="CA", on_delete=models.CASCADE, related_name="ocsp_responders"
    )
    certificate_pem = models.TextField(verbose_name="certificate (PEM)")
    private_key = EncryptedTextField(editable=False)  # never exported
    serial = models.CharField(max_length=64)
    not_after = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-not_after"]
        verbose_name = "OCSP responder"

    def __str__(self) -> str:
        return f"OCSP responder {self.serial[:16]} of {self.ca}"


class OcspResponse(models.Model):
    """A pre-signed OCSP response (DER, SHA-1 CertID) of one serial of a CA, served until next_update."""

    ca = models.ForeignKey(
        CertificateAuthority, verbose_name="CA", on_delete=models.CASCADE, related_name="ocsp_responses"
    )
    serial = models.CharField(max_length=64)  # serial_hex
    status = models.CharField(max_length=8)  # good / revoked
    der = models.BinaryField(verbose_name="response (DER)")
    this_update = models.DateTimeField()
    next_update = models.DateTimeField()

    class Meta:
        verbose_name = "OCSP response"
        constraints = [models.UniqueConstraint(fields=["ca", "serial"], name="ocsp_response_unique_serial")]
        indexes = [models.Index(fields=["ca", "next_update"], name="ocsp_response_due")]

    def __str__(self) -> str:
        return f"OCSP {self.status} for {self.serial[:16]} of {self.ca}"


class OcspRequestCount(models.Model):
    """How many OCSP requests were answered with each status, per CA (``ca`` empty: a CA id that is not one of
    ours). Web processes tally in memory and add their tallies here every few seconds
    (``pki.services.ocsp.count_answer``), so /metrics reads one total across every worker and host."""

    ca = models.ForeignKey(
        CertificateAuthority,
        verbose_name="CA",
        null=True,
        on_delete=models.CASCADE,
        related_name="ocsp_request_counts",
    )
    status = models.CharField(max_length=24)  # good / revoked / unknown / unauthorized / malformedRequest
    count = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "OCSP request count"
        constraints = [
            models.UniqueConstraint(
                fields=["ca", "status"], condition=models.Q(ca__isnull=False), name="ocsp_count_unique_ca"
            ),
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(ca__isnull=True), name="ocsp_count_unique_no_ca"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.count} OCSP {self.status} of {self.ca or 'no CA of ours'}"


# --- alerts (pki.alerts) -----------------------------------------------------------------------------------
from certmgr.querysets import TenantQuerySet  # noqa: E402  (kept with the models that use it)


class AlertChannel(models.Model):
    """Where alerts go: e-mail recipients (Django's mail settings) or a webhook (signed JSON POST)."""

    class Kind(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="alert_channels")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    recipients = models.JSONField(default=list, blank=True, help_text="e-mail addresses (e-mail channels)")
    # A webhook URL often carries its credential (Slack, Teams, Discord): encrypted, never shown back; the
    # hint (scheme, host, last characters) is what screens and the audit log show.
    url = EncryptedTextField(verbose_name="URL", blank=True, help_text="webhook URL (webhook channels)")
    url_hint = models.CharField(
        verbose_name="URL (shown shortened)", max_length=300, blank=True, editable=False
    )
    slack = models.BooleanField(default=False, help_text='Slack-compatible payload: {"text": "..."}')
    # HMAC key of the X-Certmgr-Signature header: shown once when made, never rendered back.
    secret = EncryptedTextField(blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="alert_channel_unique_name")
        ]

    def __str__(self) -> str:
        return self.name


class AlertRule(models.Model):
    """Which events of an organization go to which channels, optionally narrowed by CA, subscriber, names."""

    class Event(models.TextChoices):
        EXPIRING = "expiring", "Expiring"
        RENEWAL_FAILED = "renewal_failed", "Renewal failed"
        ISSUED = "issued", "Issued"
        REVOKED = "revoked", "Revoked"
        # A signed checkpoint of the organization's audit chain (certmgr.audit_checkpoints): keep a copy.
        AUDIT_CHECKPOINT = "audit_checkpoint", "Audit checkpoint"
        CLEANUP_FAILED = "cleanup_failed", "Challenge record left behind"
        # A certificate could not be deployed to a sync destination (syncs: raised on a run's first failure).
        SYNC_FAILED = "sync_failed", "Sync failed"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="alert_rules")
    name = models.CharField(max_length=100)
    event = models.CharField(max_length=16, choices=Event.choices)
    enabled = models.BooleanField(default=True)
    channels = models.ManyToManyField(AlertChannel, related_name="rules", blank=True)
    ca = models.ForeignKey(
        CertificateAuthority,
        verbose_name="CA",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_rules",
    )
    subscriber = models.ForeignKey(
        Subscriber, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules"
    )
    name_patterns = models.JSONField(
        default=list, blank=True, help_text="example.com, *.example.com or ~regex; empty = any name"
    )
    thresholds = models.JSONField(
        default=list, blank=True, help_text="days before expiry (expiring rules); empty = the default"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="alert_rule_unique_name")
        ]
        indexes = [models.Index(fields=["organization", "event"], name="alert_rule_org_event")]

    def __str__(self) -> str:
        return self.name


class AlertDelivery(models.Model):
    """One alert to one channel: the history, the retry queue, and (expiry) the once-per-threshold record."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="alert_deliveries")
    # The history outlives rules, channels and certificates: labels are kept, the links may go.
    rule = models.ForeignKey(
        AlertRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    channel = models.ForeignKey(
        AlertChannel, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    channel_label = models.CharField(max_length=100, blank=True)
    event = models.CharField(max_length=16, choices=AlertRule.Event.choices)
    certificate = models.ForeignKey(
        Certificate, null=True, blank=True, on_delete=models.SET_NULL, related_name="alert_deliveries"
    )
    subscriber = models.ForeignKey(
        Subscriber, null=True, blank=True, on_delete=models.SET_NULL, related_name="alert_deliveries"
    )
    threshold_days = models.PositiveIntegerField(null=True, blank=True)
    subject = models.CharField(max_length=300)
    message = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"
        constraints = [
            # Once per threshold per certificate on a channel, however many runs (or rules) meet it.
            models.UniqueConstraint(
                fields=["channel", "certificate", "threshold_days"],
                name="alert_delivery_once_per_threshold",
                condition=models.Q(threshold_days__isnull=False),
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="alert_delivery_org_created"),
            models.Index(fields=["organization", "status", "-created_at"], name="alert_delivery_org_status"),
            models.Index(
                fields=["next_attempt_at"],
                name="alert_delivery_due",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_event_display()} → {self.channel_label} ({self.get_status_display()})"
