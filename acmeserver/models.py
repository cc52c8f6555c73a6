"""The ACME server: enrollment profiles (one directory each), nonces, and the accounts, orders,
authorizations and challenges of the clients that enroll through them (RFC 8555 §7.1)."""

from __future__ import annotations

import secrets

from django.db import models
from django.utils import timezone

from acmeserver import choices
from acmeserver.querysets import (
    AcmeEabKeyQuerySet,
    AcmeEarlyRenewalQuerySet,
    AcmeOrderProfileQuerySet,
    AcmeProfileQuerySet,
    AcmeServerAccountQuerySet,
    AcmeServerAuthorizationQuerySet,
    AcmeServerOrderQuerySet,
)
from certmgr.encryption import EncryptedTextField
from certmgr.models import Organization
from pki.models import Certificate, CertificateAuthority, Policy


def new_public_id() -> str:
    """The id in a resource's URL: random, so URLs tell nothing about how many there are."""
    return secrets.token_urlsafe(16)


def default_challenge_types() -> list[str]:
    return [choices.ChallengeType.HTTP_01.value, choices.ChallengeType.DNS_01.value]


class AcmeProfile(models.Model):
    """One ACME directory, ``/acme/<organization slug>/<slug>/directory``: which private CA signs what its
    clients order, under which policy, for how long, and what they may ask for."""

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="acme_profiles")
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, help_text="the directory URL's last part")
    ca = models.ForeignKey(
        CertificateAuthority,
        verbose_name="CA",
        on_delete=models.PROTECT,
        related_name="acme_profiles",
        help_text="the private (internal) CA that signs",
    )
    policy = models.ForeignKey(
        Policy,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="acme_profiles",
        help_text="checked on every order and finalize (names, key algorithms, validity, usages)",
    )
    validity_days = models.PositiveIntegerField(default=90)
    eab_required = models.BooleanField(
        "external account binding required", default=False, help_text="new accounts need an EAB key"
    )
    challenge_types = models.JSONField(
        default=default_challenge_types, help_text="what the server offers: http-01, dns-01, tls-alpn-01"
    )
    allow_wildcards = models.BooleanField(default=False, help_text="*.example.com (proved by dns-01)")
    allow_ip_identifiers = models.BooleanField("allow IP identifiers", default=False, help_text="RFC 8738")
    enabled = models.BooleanField(default=True, help_text="a disabled profile answers 'unauthorized'")
    terms_of_service_url = models.URLField(
        "terms of service URL",
        max_length=500,
        blank=True,
        help_text="shown in the directory; new accounts must agree to it (empty: no terms)",
    )
    caa_identities = models.JSONField(
        "CAA identities",
        default=list,
        blank=True,
        help_text="issuer domain names CAA records name for this directory (RFC 8659), e.g. "
        "certmgr.internal: when set, every name's CAA records are checked at finalize (empty: no check)",
    )
    orders_per_hour = models.PositiveIntegerField(
        null=True, blank=True, help_text="new orders an account may place per hour (empty: no limit)"
    )
    max_pending_authorizations = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="pending authorizations an account may hold at once (empty: no limit)",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = AcmeProfileQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "name"]
        verbose_name = "ACME profile"
        constraints = [
            models.UniqueConstraint(fields=["organization", "slug"], name="acme_profile_unique_slug"),
            models.UniqueConstraint(fields=["organization", "name"], name="acme_profile_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class AcmeOrderProfile(models.Model):
    """An ACME profile (draft-ietf-acme-profiles) a client of the directory may name on newOrder: listed
    in the directory's ``meta.profiles``, it picks the policy and validity the certificate is issued under
    instead of the directory's own."""

    profile = models.ForeignKey(AcmeProfile, on_delete=models.CASCADE, related_name="order_profiles")
    name = models.CharField(max_length=64, help_text="what clients send as newOrder's profile (a token)")
    description = models.CharField(max_length=300, blank=True, help_text="shown in meta.profiles")
    policy = models.ForeignKey(
        Policy,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="acme_order_profiles",
        help_text="checked on its orders (empty: the directory's policy)",
    )
    validity_days = models.PositiveIntegerField(default=90)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = AcmeOrderProfileQuerySet.as_manager()

    class Meta:
        ordering = ["profile_id", "name"]
        verbose_name = "ACME order profile"
        constraints = [
            models.UniqueConstraint(fields=["profile", "name"], name="acme_order_profile_unique_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def organization_id(self) -> int:
        return self.profile.organization_id

    @property
    def effective_policy(self) -> Policy | None:
        return self.policy if self.policy_id else self.profile.policy


class AcmeNonce(models.Model):
    """A Replay-Nonce handed out and not used yet: used once (deleted by the request that uses it), kept in
    the database so every web process accepts what another one issued."""

    value = models.CharField(max_length=64, primary_key=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "ACME nonce"

    def __str__(self) -> str:
        return self.value


class AcmeServerAccount(models.Model):
    """A client's account in one profile, known by its key (RFC 7638 thumbprint)."""

    Status = choices.AccountStatus

    profile = models.ForeignKey(AcmeProfile, on_delete=models.PROTECT, related_name="accounts")
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    thumbprint = models.CharField("key thumbprint", max_length=64)
    jwk = models.JSONField("public key (JWK)")
    contact = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.VALID)
    terms_of_service_agreed = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = AcmeServerAccountQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "ACME server account"
        constraints = [
            models.UniqueConstraint(fields=["profile", "thumbprint"], name="acme_server_account_unique_key")
        ]

    def __str__(self) -> str:
        return f"account {self.public_id} ({self.profile})"

    @property
    def organization_id(self) -> int:
        return self.profile.organization_id


class AcmeServerOrder(models.Model):
    Status = choices.OrderStatus

    account = models.ForeignKey(AcmeServerAccount, on_delete=models.PROTECT, related_name="orders")
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    identifiers = models.JSONField(default=list)  # [{"type": "dns", "value": "www.example.com"}]
    expires_at = models.DateTimeField()
    error = models.JSONField(null=True, blank=True)
    certificate = models.ForeignKey(
        Certificate, null=True, blank=True, on_delete=models.SET_NULL, related_name="acme_server_orders"
    )
    # RFC 9773 ``replaces``: the certificate this order renews (the client said so).
    replaces = models.ForeignKey(
        Certificate, null=True, blank=True, on_delete=models.SET_NULL, related_name="acme_server_replaced_by"
    )
    # draft-ietf-acme-profiles: the profile the client named (its name kept for the echo if it is deleted)
    order_profile = models.ForeignKey(
        AcmeOrderProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    profile_name = models.CharField(max_length=64, blank=True)
    # RFC 8555 §7.4: the validity the client asked for (within the policy), carried by the certificate
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = AcmeServerOrderQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "ACME server order"
        indexes = [models.Index(fields=["account", "-created_at"], name="acme_srv_order_account")]

    def __str__(self) -> str:
        return f"order {self.public_id}"

    @property
    def organization_id(self) -> int:
        return self.account.profile.organization_id


class AcmeServerAuthorization(models.Model):
    Status = choices.AuthorizationStatus

    account = models.ForeignKey(AcmeServerAccount, on_delete=models.PROTECT, related_name="authorizations")
    # An account's authorization serves every order of it for the same identifier while it lasts (reuse).
    orders = models.ManyToManyField(AcmeServerOrder, related_name="authorizations")
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    identifier_type = models.CharField(max_length=8, choices=choices.IdentifierType.choices)
    identifier_value = models.CharField(max_length=255)
    wildcard = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = AcmeServerAuthorizationQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        verbose_name = "ACME server authorization"
        indexes = [
            # newOrder's reuse lookup: the account's unexpired authorizations of an identifier
            models.Index(
                fields=["account", "identifier_value", "identifier_type", "wildcard", "expires_at"],
                name="acme_srv_authz_reuse",
            ),
            # the pending-authorizations limit: an account's open ones
            models.Index(
                fields=["account", "expires_at"],
                name="acme_srv_authz_pending",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.identifier_type}:{self.identifier_value}"

    @property
    def identifier(self) -> dict[str, str]:
        """As the order named it (a wildcard with its "*.")."""
        value = f"*.{self.identifier_value}" if self.wildcard else self.identifier_value
        return {"type": self.identifier_type, "value": value}


class AcmeServerChallenge(models.Model):
    Status = choices.ChallengeStatus
    Type = choices.ChallengeType

    authorization = models.ForeignKey(
        AcmeServerAuthorization, on_delete=models.CASCADE, related_name="challenges"
    )
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    type = models.CharField(max_length=16, choices=Type.choices)
    token = models.CharField(max_length=64, default=new_public_id, editable=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    error = models.JSONField(null=True, blank=True)
    # What the validator did: the URL or record it asked for, where (address, port / name servers), what came
    # back, how long it took.
    validation_record = models.JSONField(default=list, blank=True)
    validation_seconds = models.FloatField(null=True, blank=True, help_text="how long the validation took")
    validated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["id"]
        verbose_name = "ACME server challenge"

    def __str__(self) -> str:
        return f"{self.type} for {self.authorization}"


class AcmeEabKey(models.Model):
    """An External Account Binding key (RFC 8555 §7.3.4) of a profile: the key id and the HMAC key are
    handed to one client (shown once), which binds its new account with them; a key binds one account."""

    profile = models.ForeignKey(AcmeProfile, on_delete=models.PROTECT, related_name="eab_keys")
    name = models.CharField(max_length=100, blank=True, help_text="whom it was given to")
    kid = models.CharField("key id", max_length=64, unique=True, default=new_public_id, editable=False)
    hmac_key = EncryptedTextField("HMAC key", editable=False)  # base64url; never shown again
    account = models.OneToOneField(
        AcmeServerAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="eab_key"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    bound_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AcmeEabKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "ACME EAB key"

    def __str__(self) -> str:
        return f"EAB key {self.kid}"

    @property
    def organization_id(self) -> int:
        return self.profile.organization_id


class AcmeEarlyRenewal(models.Model):
    """An operator asked the clients of a certificate to renew it early (a mass re-issue): its ARI window
    (RFC 9773) lies in the past from ``requested_at`` on."""

    certificate = models.OneToOneField(
        Certificate, on_delete=models.CASCADE, related_name="acme_early_renewal"
    )
    reason = models.CharField(max_length=200, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)

    objects = AcmeEarlyRenewalQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at", "-id"]
        verbose_name = "ACME early renewal"

    def __str__(self) -> str:
        return f"early renewal of {self.certificate_id}"


class AcmeServerProblemCount(models.Model):
    """How many refusals of each RFC 8555 type (``badNonce``, ``rateLimited``...) a profile's directory
    answered. Web processes tally in memory and add here every few seconds (``certmgr.tally``,
    ``CERTMGR_ACME_COUNT_FLUSH_SECONDS``), so /metrics reads one total across every process and host."""

    profile = models.ForeignKey(AcmeProfile, on_delete=models.CASCADE, related_name="problem_counts")
    type = models.CharField(max_length=32)  # the error type without urn:ietf:params:acme:error:
    count = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "ACME server problem count"
        constraints = [models.UniqueConstraint(fields=["profile", "type"], name="acme_problem_count_unique")]

    def __str__(self) -> str:
        return f"{self.count} {self.type} of {self.profile_id}"
