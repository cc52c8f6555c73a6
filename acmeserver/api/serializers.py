"""API shapes of the ACME server: profiles (read and write), accounts and orders (read)."""

from __future__ import annotations

from rest_framework import serializers

from acmeserver import services
from acmeserver.choices import ChallengeType
from acmeserver.models import AcmeEabKey, AcmeProfile, AcmeServerAccount, AcmeServerOrder
from certmgr.api.fields import EnumChoiceField, TenantPrimaryKeyRelatedField
from certmgr.api.mixins import OrganizationChoiceField
from pki.models import CertificateAuthority, Policy


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
    directory_url = serializers.SerializerMethodField()

    class Meta:
        model = AcmeProfile
        fields = ["id", "organization", *services.PROFILE_FIELDS, "directory_url", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
        validators: list[object] = []  # uniqueness: the service answers 409

    def get_directory_url(self, profile: AcmeProfile) -> str:
        return services.directory_url(profile)


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
