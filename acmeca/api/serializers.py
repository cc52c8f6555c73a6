"""ACME API shapes: an ACME CA's configuration (nested as ``acme`` in ``/api/v1/cas/``), accounts, orders,
challenges, and the 202 answer of an issuance that runs on a worker.

No serializer here names an account key, an order's private key or an EAB HMAC key.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from acmeca import services as acme_services
from acmeca.models import (
    ACCOUNT_KEY_KINDS,
    AcmeAccount,
    AcmeChallenge,
    AcmeOrder,
    AcmeSettings,
    ChallengeType,
)
from acmeca.vendors import Vendor
from certmgr.api.fields import EnumChoiceField, TenantPrimaryKeyRelatedField, pem_field
from certmgr.api.mixins import OrganizationChoiceField
from dnsproviders.models import AppConnection
from pki.models import CertificateAuthority

VENDOR_CHOICES = [(v.value, v.value) for v in Vendor]


def vendor_field(**kwargs) -> EnumChoiceField:
    return EnumChoiceField(VENDOR_CHOICES, enum_name="AcmeVendorEnum", **kwargs)


def challenge_type_field(**kwargs) -> EnumChoiceField:
    return EnumChoiceField(ChallengeType.choices, enum_name="AcmeChallengeTypeEnum", **kwargs)


def account_key_kind_field(**kwargs) -> EnumChoiceField:
    return EnumChoiceField(ACCOUNT_KEY_KINDS, enum_name="AcmeAccountKeyKindEnum", **kwargs)


class AcmeAccountRefSerializer(serializers.ModelSerializer):
    status = EnumChoiceField(AcmeAccount.Status.choices, enum_name="AcmeAccountStatusEnum", read_only=True)

    class Meta:
        model = AcmeAccount
        fields = ["id", "account_url", "status"]
        read_only_fields = fields


class AcmeCaSettingsSerializer(serializers.ModelSerializer):
    """An ACME CA's configuration as read back: the EAB HMAC key is never returned, only whether it is set."""

    vendor = vendor_field(read_only=True)
    challenge_type = challenge_type_field(read_only=True)
    dns_connection = serializers.IntegerField(source="dns_connection_id", read_only=True, allow_null=True)
    eab_hmac_key_set = serializers.SerializerMethodField()
    account = AcmeAccountRefSerializer(read_only=True, allow_null=True)

    class Meta:
        model = AcmeSettings
        # Every setting the service takes, except the HMAC key: it is never shown back.
        fields = [
            *(f for f in acme_services.SETTINGS_FIELDS if f != "eab_hmac_key"),
            "eab_hmac_key_set",
            "account",
        ]
        read_only_fields = fields

    def get_eab_hmac_key_set(self, obj) -> bool:
        # Lists annotate this (the key column stays deferred, nothing is decrypted); a lone row reads it.
        known = self.context.get("eab_hmac_key_set")
        return bool(obj.eab_hmac_key) if known is None else bool(known)


@extend_schema_field(AcmeCaSettingsSerializer(allow_null=True))
class AcmeCaSettingsField(serializers.Field):
    """A CA's ACME configuration in CA reads: null for other kinds of CA."""

    def __init__(self, **kwargs):
        kwargs.setdefault("source", "*")
        kwargs.setdefault("read_only", True)
        kwargs.setdefault("help_text", "The configuration of an ACME CA; null otherwise.")
        super().__init__(**kwargs)

    def to_representation(self, ca):
        if ca.kind != CertificateAuthority.Kind.ACME:
            return None
        try:
            row = ca.acme
        except AcmeSettings.DoesNotExist:
            return None
        context = {"eab_hmac_key_set": getattr(ca, "acme_eab_hmac_key_set", None)}
        return AcmeCaSettingsSerializer(row, context=context).data


class AcmeCaSettingsWriteSerializer(serializers.Serializer):
    """An ACME CA's configuration as given on create and update. Shapes only: ``acmeca.services`` checks
    the combinations (preset URL, EAB pairs, dns-01 needs a connection) and registers the account."""

    vendor = vendor_field(help_text="A preset fills the directory URL; 'custom' needs directory_url.")
    directory_url = serializers.CharField(
        max_length=500, required=False, allow_blank=True, help_text="Required for 'custom'."
    )
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True)
    eab_kid = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="External account binding key id."
    )
    eab_hmac_key = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="External account binding HMAC key (base64url). Stored encrypted, never returned.",
    )
    dns_connection = TenantPrimaryKeyRelatedField(
        AppConnection, required=False, allow_null=True, help_text="App connection writing dns-01 records."
    )
    hosted_zone_id = serializers.CharField(
        max_length=255, required=False, allow_blank=True, help_text="Empty: found from the domain."
    )
    challenge_type = challenge_type_field(required=False)
    profile = serializers.CharField(max_length=64, required=False, allow_blank=True)
    caa_identifiers = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="The CA's CAA issuer domains, comma-separated; empty: the preset's.",
    )
    preferred_chain = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="Issuer CN of the chain to prefer.",
    )
    tls_ca_bundle = pem_field(
        required=False, allow_blank=True, help_text="PEM: the CA of the ACME server's HTTPS certificate."
    )
    direct_issuance = serializers.BooleanField(
        required=False, help_text="Allow certificates by names alone (POST /cas/{id}/issue/)."
    )
    reregister_automatically = serializers.BooleanField(
        required=False,
        help_text="When the CA forgets the account (accountDoesNotExist): register a new one and retry the "
        "failed order (default on).",
    )
    propagation_timeout = serializers.IntegerField(min_value=5, max_value=3600, required=False)
    propagation_interval = serializers.FloatField(min_value=0.1, max_value=60, required=False)


class AcmeCaSettingsCreateSerializer(AcmeCaSettingsWriteSerializer):
    account_key_kind = account_key_kind_field(default="ec-p256", help_text="Kind of the account key.")


class AcmeCertificateAuthorityCreateSerializer(serializers.Serializer):
    """An external ACME CA: creating it registers the ACME account at the CA."""

    organization = OrganizationChoiceField()
    name = serializers.CharField(max_length=100)
    kind = EnumChoiceField([(CertificateAuthority.Kind.ACME, "External (ACME)")], enum_name="AcmeCaKindEnum")
    acme = AcmeCaSettingsCreateSerializer()


# --- accounts ---------------------------------------------------------------------------------------------
class AcmeAccountSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    vendor = vendor_field(read_only=True)
    status = EnumChoiceField(AcmeAccount.Status.choices, enum_name="AcmeAccountStatusEnum", read_only=True)
    key_kind = account_key_kind_field(read_only=True)

    class Meta:
        model = AcmeAccount
        fields = [
            "id",
            "organization",
            "vendor",
            "email",
            "status",
            "directory_url",
            "account_url",
            "key_kind",
            "terms_of_service",
            "terms_agreed_at",
            "eab_kid",
            "created_at",
            "updated_at",
            "key_rolled_at",
        ]
        read_only_fields = fields


class AcmeAccountReregisterSerializer(serializers.Serializer):
    new_key = serializers.BooleanField(
        required=False, default=False, help_text="Register with a new key (default: the same key)."
    )
    key_kind = account_key_kind_field(
        required=False, help_text="The new key's type (default: the old one's)."
    )


class AcmeAccountRolloverSerializer(serializers.Serializer):
    key_kind = account_key_kind_field(required=False, help_text="Default: the kind of the current key.")


# --- challenges -------------------------------------------------------------------------------------------
class AcmeChallengeSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    order = serializers.IntegerField(source="order_id", read_only=True)
    identifier = serializers.CharField(source="authorization.identifier", read_only=True)
    wildcard = serializers.BooleanField(source="authorization.wildcard", read_only=True)
    type = challenge_type_field(read_only=True)
    status = EnumChoiceField(
        AcmeChallenge.Status.choices, enum_name="AcmeChallengeStatusEnum", read_only=True
    )
    record_name = serializers.CharField(
        read_only=True, help_text="dns-01: the TXT record name (after CNAME delegation); http-01: the path."
    )
    record_value = serializers.CharField(
        read_only=True, help_text="dns-01: the TXT value; http-01: the key authorization served."
    )
    instructions = serializers.SerializerMethodField(
        help_text="Manual DNS: what the operator must create before confirming the order."
    )

    class Meta:
        model = AcmeChallenge
        fields = [
            "id",
            "organization",
            "order",
            "identifier",
            "wildcard",
            "type",
            "record_name",
            "record_value",
            "ttl",
            "status",
            "error",
            "instructions",
            "record_present",
            "cleanup_attempts",
            "answered_at",
            "validated_at",
            "confirmed_at",
        ]
        read_only_fields = fields

    def get_instructions(self, obj) -> str | None:
        extra = (obj.provider_ref or {}).get("extra") if isinstance(obj.provider_ref, dict) else None
        text = extra.get("instructions") if isinstance(extra, dict) else None
        return str(text) if text else None


# --- orders -----------------------------------------------------------------------------------------------
class AcmeIdentifierSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="dns or ip")
    value = serializers.CharField()


class AcmeOrderSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    ca = serializers.IntegerField(source="ca_id", read_only=True)
    subscriber = serializers.IntegerField(source="subscriber_id", read_only=True, allow_null=True)
    certificate = serializers.IntegerField(
        source="certificate_id", read_only=True, allow_null=True, help_text="Set once issued."
    )
    renewal_of = serializers.IntegerField(source="renewal_of_id", read_only=True, allow_null=True)
    retry_of = serializers.IntegerField(
        source="retry_of_id", read_only=True, allow_null=True, help_text="The order this one retries."
    )
    retried_as = serializers.SerializerMethodField(help_text="The orders that retried this one.")
    identifiers = AcmeIdentifierSerializer(many=True, read_only=True)
    challenge_type = challenge_type_field(read_only=True)
    status = EnumChoiceField(
        AcmeOrder.Status.choices,
        enum_name="AcmeOrderStatusEnum",
        read_only=True,
        allow_blank=True,
        help_text="RFC 8555 status at the CA; empty before the order reached it.",
    )
    step = EnumChoiceField(AcmeOrder.Step.choices, enum_name="AcmeOrderStepEnum", read_only=True)
    error = serializers.CharField(source="last_error", read_only=True, help_text="The last error (the CA's).")
    challenges = AcmeChallengeSerializer(many=True, read_only=True)
    cleanup_pending = serializers.BooleanField(
        read_only=True, help_text="Challenge records are still to be removed."
    )
    cleanup_stopped_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="Set when removal stopped, failing for a permanent reason: clear it with clear-cleanup.",
    )
    cleanup_error = serializers.CharField(read_only=True, help_text="Why the records could not be removed.")

    class Meta:
        model = AcmeOrder
        fields = [
            "id",
            "organization",
            "ca",
            "subscriber",
            "certificate",
            "renewal_of",
            "retry_of",
            "retried_as",
            "identifiers",
            "challenge_type",
            "status",
            "step",
            "error",
            "error_type",
            "attempts",
            "next_attempt_at",
            "order_url",
            "cleanup_pending",
            "cleanup_stopped_at",
            "cleanup_error",
            "requested_by",
            "created_at",
            "updated_at",
            "finished_at",
            "challenges",
        ]
        read_only_fields = fields

    def get_retried_as(self, obj) -> list[int]:
        return sorted(retry.pk for retry in obj.retries.all())


class AcmeOrderAcceptedSerializer(serializers.Serializer):
    """The answer of an issuance that a worker runs: poll ``status_url`` until ``step`` is done/failed."""

    order = serializers.IntegerField(help_text="The ACME order id.")
    status_url = serializers.URLField(help_text="GET it to follow the order.")
    status = EnumChoiceField(AcmeOrder.Status.choices, enum_name="AcmeOrderStatusEnum", allow_blank=True)
    step = EnumChoiceField(AcmeOrder.Step.choices, enum_name="AcmeOrderStepEnum")
