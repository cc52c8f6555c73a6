"""ACME API shapes: accounts, orders, challenges, and the 202 answer of an issuance that runs on a worker.

No serializer here names an account key, an order's private key or an EAB HMAC key. An ACME CA's own
configuration is part of the CA's shape (``pki.api.serializers.AcmeCaSettingsSerializer``).
"""

from __future__ import annotations

from rest_framework import serializers

from acmeca.models import AcmeAccount, AcmeChallenge, AcmeOrder
from pki.api.serializers import (
    LIST_MAX,
    NAME_MAX,
    EnumChoiceField,
    _pem_field,
    account_key_kind_field,
    challenge_type_field,
    key_algorithm_field,
    vendor_field,
)


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

    class Meta:
        model = AcmeOrder
        fields = [
            "id",
            "organization",
            "ca",
            "subscriber",
            "certificate",
            "renewal_of",
            "identifiers",
            "challenge_type",
            "status",
            "step",
            "error",
            "error_type",
            "attempts",
            "next_attempt_at",
            "order_url",
            "requested_by",
            "created_at",
            "updated_at",
            "finished_at",
            "challenges",
        ]
        read_only_fields = fields


class AcmeOrderAcceptedSerializer(serializers.Serializer):
    """The answer of an issuance that a worker runs: poll ``status_url`` until ``step`` is done/failed."""

    order = serializers.IntegerField(help_text="The ACME order id.")
    status_url = serializers.URLField(help_text="GET it to follow the order.")
    status = EnumChoiceField(AcmeOrder.Status.choices, enum_name="AcmeOrderStatusEnum", allow_blank=True)
    step = EnumChoiceField(AcmeOrder.Step.choices, enum_name="AcmeOrderStepEnum")


class DirectIssueSerializer(serializers.Serializer):
    names = serializers.ListField(
        child=serializers.CharField(max_length=NAME_MAX),
        min_length=1,
        max_length=LIST_MAX,
        help_text="DNS names (and, with http-01, IP addresses) to certify.",
    )
    key_algorithm = key_algorithm_field(default="ec-p256", help_text="Key made here (ignored with a CSR).")
    csr = _pem_field(
        required=False,
        allow_blank=True,
        help_text="A PKCS#10 request (PEM) asking for exactly these names; then no key is stored.",
    )
