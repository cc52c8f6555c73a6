"""API shapes of the ACME server: profiles (read and write), accounts and orders (read)."""

from __future__ import annotations

from rest_framework import serializers

from acmeserver import services
from acmeserver.choices import ChallengeType
from acmeserver.models import (
    AcmeEabKey,
    AcmeEarlyRenewal,
    AcmeOrderProfile,
    AcmeProfile,
    AcmeServerAccount,
    AcmeServerOrder,
)
from certmgr.api.fields import EnumChoiceField, TenantPrimaryKeyRelatedField
from certmgr.api.mixins import OrganizationChoiceField
from pki.models import Certificate, CertificateAuthority, Policy


class AcmeProfileSerializer(serializers.ModelSerializer):
    organization = OrganizationChoiceField(source="organization_id")
    slug = serializers.SlugField(max_length=50, required=False, help_text="Default: made from the name.")
    ca = TenantPrimaryKeyRelatedField(CertificateAuthority, help_text="The private (internal) CA that signs.")
    policy = TenantPrimaryKeyRelatedField(Policy, required=False, allow_null=True)
    validity_days = serializers.IntegerField(min_value=1, max_value=services.MAX_VALIDITY_DAYS, default=90)
    challenge_types = serializers.ListField(
        child=EnumChoiceField(ChallengeType.choices, enum_name="AcmeServerChallengeTypeEnum"),
        min_length=1,
        max_length=len(ChallengeType.values),
        required=False,
    )
    caa_identities = serializers.ListField(
        child=serializers.CharField(max_length=253),
        required=False,
        max_length=20,
        help_text="CAA issuer domain names of this directory (e.g. certmgr.internal); set: CAA is checked.",
    )
    directory_url = serializers.SerializerMethodField()

    class Meta:
        model = AcmeProfile
        fields = ["id", "organization", *services.PROFILE_FIELDS, "directory_url", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
        validators: list[object] = []  # uniqueness: the service answers 409

    def get_directory_url(self, profile: AcmeProfile) -> str:
        return services.directory_url(profile)


class AcmeOrderProfileSerializer(serializers.ModelSerializer):
    profile = TenantPrimaryKeyRelatedField(AcmeProfile, help_text="The directory that lists it.")
    name = serializers.CharField(max_length=64, help_text="What newOrder's profile names (a token).")
    description = serializers.CharField(max_length=300, required=False, allow_blank=True)
    policy = TenantPrimaryKeyRelatedField(
        Policy, required=False, allow_null=True, help_text="Empty: the directory's policy."
    )
    validity_days = serializers.IntegerField(min_value=1, max_value=services.MAX_VALIDITY_DAYS, default=90)

    class Meta:
        model = AcmeOrderProfile
        fields = ["id", "profile", *services.ORDER_PROFILE_FIELDS, "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
        validators: list[object] = []  # uniqueness: the service answers 409


class AcmeServerAccountSerializer(serializers.ModelSerializer):
    profile: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(read_only=True)
    status = EnumChoiceField(AcmeServerAccount.Status.choices, enum_name="AcmeServerAccountStatusEnum")

    class Meta:
        model = AcmeServerAccount
        fields = ["id", "profile", "public_id", "thumbprint", "contact", "status", "created_at", "updated_at"]
        read_only_fields = fields


class AcmeServerOrderSerializer(serializers.ModelSerializer):
    account: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(read_only=True)
    certificate: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(read_only=True)
    status = EnumChoiceField(AcmeServerOrder.Status.choices, enum_name="AcmeServerOrderStatusEnum")

    class Meta:
        model = AcmeServerOrder
        fields = [
            "id",
            "account",
            "public_id",
            "status",
            "identifiers",
            "profile_name",
            "not_before",
            "not_after",
            "expires_at",
            "error",
            "certificate",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class AcmeEabKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(
        max_length=100, required=False, allow_blank=True, help_text="Whom it is for."
    )


class AcmeEabKeyCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kid = serializers.CharField()
    hmac_key = serializers.CharField(help_text="base64url; shown this once.")


class AcmeEabKeySerializer(serializers.ModelSerializer):
    profile: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(read_only=True)
    account: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = AcmeEabKey
        fields = ["id", "profile", "name", "kid", "account", "created_at", "bound_at", "revoked_at"]
        read_only_fields = fields


class AcmeEarlyRenewalRequestSerializer(serializers.Serializer):
    profile = TenantPrimaryKeyRelatedField(AcmeProfile, required=False, help_text="Its orders' certificates.")
    ca = TenantPrimaryKeyRelatedField(CertificateAuthority, required=False, help_text="Its certificates.")
    certificates = serializers.ListField(
        child=TenantPrimaryKeyRelatedField(Certificate), required=False, max_length=10000
    )
    reason = serializers.CharField(
        max_length=services.MAX_EARLY_RENEWAL_REASON, required=False, allow_blank=True
    )


class AcmeEarlyRenewalResultSerializer(serializers.Serializer):
    certificates = serializers.IntegerField(help_text="How many certificates now suggest renewing at once.")


class AcmeEarlyRenewalSerializer(serializers.ModelSerializer):
    certificate: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = AcmeEarlyRenewal
        fields = ["id", "certificate", "reason", "requested_at"]
        read_only_fields = fields
