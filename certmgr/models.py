"""Organizations, memberships, API tokens and the audit log."""

from __future__ import annotations

import time
from base64 import b32encode
from binascii import unhexlify

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.oath import TOTP
from django_otp.util import random_hex

from certmgr.encryption import EncryptedTextField
from certmgr.permissions import Role, TwoFactorRequirement
from certmgr.querysets import (
    ApiTokenQuerySet,
    AuditEventQuerySet,
    InvitationQuerySet,
    MembershipQuerySet,
    OrganizationQuerySet,
)


class Organization(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # The lowest role whose members must sign in to the admin with a second factor ("" : nobody must).
    two_factor_required = models.CharField(
        "two-factor authentication required for",
        max_length=16,
        blank=True,
        default=TwoFactorRequirement.NOBODY,
        choices=TwoFactorRequirement.choices,
    )

    objects = OrganizationQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="membership_unique_user_org"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.get_role_display()})"


class SingleSignOnIdentity(models.Model):
    """The identity provider's account behind a user who signs in with single sign-on: the issuer and the
    provider's never-reassigned subject identifier (``sub``). Sign-ins find their user by these, never by a
    user name or e-mail address that the provider could hand out again."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identity"
    )
    issuer = models.CharField(max_length=300)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_login_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "single sign-on identity"
        verbose_name_plural = "single sign-on identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_unique_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.subject} at {self.issuer})"


class ApiToken(models.Model):
    """A bearer token for scripts: shown once, stored as a SHA-256 digest, bound to one org and a role."""

    is_api_token = True  # how ``as_actor`` tells a token from a session without importing the models

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_tokens")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=16, choices=Role.choices)
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The token that created this one (through the API), if any: revoking it revokes this one too.
    created_by_token = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        related_name="created_tokens",
    )

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def state(self, now=None) -> str:
        now = now or timezone.now()
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= now:
            return "expired"
        return "active"


class AuditChainHead(models.Model):
    """The last link of one hash chain (one per organization; 0 for events outside any).

    Writers lock this row, so two concurrent events of one organization cannot both link to the
    same predecessor. Database triggers refuse deleting it and moving it back (certmgr/0008).
    """

    chain = models.BigIntegerField(primary_key=True)
    sequence = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="")
    # The audit key that linked the last event: a different signing key makes the next event a rotation.
    key_id = models.CharField(verbose_name="key id", max_length=16, default="", blank=True)

    def __str__(self) -> str:
        return f"chain {self.chain} at {self.sequence}"


class AuditEvent(models.Model):
    """One recorded action. Append-only: database triggers reject UPDATE, DELETE and TRUNCATE."""

    class Algorithm(models.TextChoices):
        # Events written before the chain was keyed: an unkeyed SHA-256 link, verified as such.
        LEGACY_SHA256 = "sha256", "SHA-256 (unkeyed, before keyed links)"
        HMAC_SHA256 = "hmac-sha256", "HMAC-SHA256 under an audit key"

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"

    class ActorType(models.TextChoices):
        USER = "user", "User"
        TOKEN = "token", "API token"
        SYSTEM = "system", "System task"

    time = models.DateTimeField(default=timezone.now, db_index=True)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    chain = models.BigIntegerField()
    sequence = models.BigIntegerField()
    actor_type = models.CharField(verbose_name="actor kind", max_length=8, choices=ActorType.choices)
    # Plain ids, not foreign keys: the log must outlive the users and tokens it names.
    actor_id = models.CharField(verbose_name="actor id", max_length=64, blank=True)
    actor_label = models.CharField(verbose_name="actor", max_length=200, blank=True)
    action = models.CharField(max_length=100)
    target_type = models.CharField(verbose_name="target kind", max_length=100, blank=True)
    target_id = models.CharField(verbose_name="target id", max_length=64, blank=True)
    target_repr = models.CharField(verbose_name="target", max_length=300, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.SUCCESS)
    error = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(verbose_name="request ID", max_length=64, blank=True)
    ip = models.GenericIPAddressField(verbose_name="IP address", null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64)
    algorithm = models.CharField(max_length=16, choices=Algorithm.choices, default=Algorithm.HMAC_SHA256)
    key_id = models.CharField(
        verbose_name="key id", max_length=16, blank=True
    )  # the audit key's id (certmgr.audit_keys)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "sequence"], name="auditevent_unique_chain_link"),
        ]
        indexes = [
            models.Index(fields=["organization", "-time"], name="audit_org_time"),
            models.Index(fields=["action", "-time"], name="audit_action_time"),
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
            models.Index(fields=["actor_type", "actor_id"], name="audit_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.action} {self.target_repr} ({self.outcome})"


class JobRun(models.Model):
    """One run of a scheduled job (or its management command): when, what it did, what went wrong."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCESS = "success", "Success"
        PARTIAL = "partial", "Finished with errors"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=64)
    trigger = models.CharField(max_length=16, default="schedule", help_text="schedule or command")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    errors = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["name", "-started_at"], name="jobrun_name_started")]
        verbose_name = "job run"

    def __str__(self) -> str:
        return f"{self.name} at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def duration(self):
        return (self.finished_at - self.started_at) if self.finished_at else None


class AnonymousAuthFailure(models.Model):
    """Bad bearer tokens that name no token, counted per client address and minute. A flood of them
    writes one audit event per address and minute (with the count), not one permanent row each."""

    address = models.CharField(max_length=45, blank=True)  # "" when the client's address is unknown
    minute = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=100, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["address", "minute"], name="anonymous_auth_failure_unique")
        ]

    def __str__(self) -> str:
        return f"{self.count} bad tokens from {self.address or 'an unknown address'} at {self.minute:%H:%M}"


class Invitation(models.Model):
    """An offer to join an organization, sent as a one-time link. Only its SHA-256 digest is stored; whoever
    opens the link signs in (or creates an account) and accepts, so no one is attached to an organization
    without saying yes, and inviting reveals nothing about which user names exist."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(help_text="Where the link is sent.")
    role = models.CharField(max_length=16, choices=Role.choices)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True, editable=False)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} to {self.organization} ({self.get_role_display()})"

    def state(self, now=None) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= (now or timezone.now()):
            return "expired"
        return "pending"


def new_totp_key() -> str:
    return random_hex(20)  # 160 bits, as RFC 4226 recommends


class TOTPDevice(TimestampMixin, ThrottlingMixin, Device):
    """A user's authenticator app (RFC 6238 TOTP), a django-otp device whose key is encrypted at rest.

    django-otp's own TOTP model keeps the key in plain hex; this one keeps it in an ``EncryptedTextField``
    so no dump, page or backup shows it. A device is ``confirmed`` once its owner entered a code from it;
    failures back off exponentially (django-otp's throttling) until a correct code.
    """

    key = EncryptedTextField(default=new_totp_key, editable=False)  # hex
    step = models.PositiveSmallIntegerField(default=30)
    digits = models.PositiveSmallIntegerField(default=6)
    tolerance = models.PositiveSmallIntegerField(default=1)  # steps before and after now that still match
    drift = models.SmallIntegerField(default=0)
    last_t = models.BigIntegerField(default=-1)  # the step of the last accepted code: no code is used twice

    class Meta(Device.Meta):
        verbose_name = "TOTP device"
        constraints = [models.UniqueConstraint(fields=["user"], name="totpdevice_one_per_user")]

    @property
    def bin_key(self) -> bytes:
        return unhexlify(self.key.encode())

    @property
    def base32_key(self) -> str:
        """The key as authenticator apps take it when typed in."""
        return b32encode(self.bin_key).decode().rstrip("=")

    def totp(self) -> TOTP:
        totp = TOTP(self.bin_key, self.step, 0, self.digits, self.drift)
        totp.time = time.time()
        return totp

    def verify_token(self, token) -> bool:
        """django-otp's contract: True if ``token`` is the current code and newer than the last one
        accepted. A wrong code doubles the wait before the next try; while waiting, every code is refused."""
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        token = str(token).strip().replace(" ", "")
        totp = self.totp()
        if (
            token.isdigit()
            and len(token) == self.digits
            and totp.verify(int(token), self.tolerance, self.last_t + 1)
        ):
            self.last_t = totp.t()
            self.drift = totp.drift
            self.throttle_reset(commit=False)
            self.set_last_used_timestamp(commit=False)
            self.save()
            return True
        self.throttle_increment(commit=True)
        return False

    def get_throttle_factor(self) -> int:
        return settings.CERTMGR_TWO_FACTOR_THROTTLE_SECONDS
