from __future__ import annotations

from rest_framework import serializers

from certmgr.api.mixins import OrganizationChoiceField
from certmgr.models import ApiToken, AuditEvent, Invitation, Membership, Organization
from certmgr.permissions import Role


class OrganizationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "two_factor_required", "created_at"]
        read_only_fields = fields  # the rule is changed in the admin (two_factor.set_requirement)


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "organization", "user", "username", "role", "created_at"]
        read_only_fields = fields


class MembershipCreateSerializer(serializers.Serializer):
    organization = OrganizationChoiceField()
    username = serializers.CharField(
        max_length=150, help_text="Created (without a password) if it does not exist."
    )
    email = serializers.EmailField(required=False, allow_blank=True)
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationSerializer(serializers.ModelSerializer):
    invited_by = serializers.CharField(source="invited_by.username", read_only=True, default=None)
    accepted_by = serializers.CharField(source="accepted_by.username", read_only=True, default=None)
    state = serializers.SerializerMethodField()

    class Meta:
        model = Invitation
        fields = [
            "id", "organization", "email", "role", "state", "invited_by", "created_at", "expires_at",
            "accepted_at", "accepted_by", "revoked_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_state(self, obj) -> str:
        return obj.state()


class InvitationCreateSerializer(serializers.Serializer):
    organization = OrganizationChoiceField()
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationCreatedSerializer(InvitationSerializer):
    link = serializers.CharField(help_text="The one-time link, shown once (it is also e-mailed).")
    emailed = serializers.BooleanField()
    email_error = serializers.CharField()

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "link", "emailed", "email_error"]
        read_only_fields = fields


class MembershipUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class ApiTokenSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    state = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "organization",
            "user",
            "username",
            "name",
            "role",
            "prefix",
            "state",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ]
        read_only_fields = fields

    def get_state(self, obj) -> str:
        return obj.state()


class ApiTokenCreateSerializer(serializers.Serializer):
    organization = OrganizationChoiceField()
    name = serializers.CharField(max_length=100)
    role = serializers.ChoiceField(choices=Role.choices)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    username = serializers.CharField(
        max_length=150, required=False, help_text="Owner (admins only); defaults to the caller."
    )


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret. Shown once; store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "time",
            "organization",
            "sequence",
            "actor_type",
            "actor_id",
            "actor_label",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "outcome",
            "error",
            "details",
            "request_id",
            "ip",
            "user_agent",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields
