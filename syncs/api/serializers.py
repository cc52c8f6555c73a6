"""What the sync API reads and writes. No serializer names a credential or a key."""

from __future__ import annotations

from rest_framework import serializers

from certmgr.api.mixins import OrganizationChoiceField
from syncs.choices import DestinationKind, RunAction, RunStatus, RunTrigger
from syncs.models import Deployment, SyncDestination, SyncRule, SyncRun


class SyncDestinationSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    connection = serializers.IntegerField(source="connection_id", read_only=True)
    host_key = serializers.SerializerMethodField(
        help_text="SSH: the host key pinned on the connection (fingerprint); null for other kinds."
    )

    class Meta:
        model = SyncDestination
        fields = [
            "id",
            "organization",
            "name",
            "kind",
            "connection",
            "region",
            "options",
            "enabled",
            "created_at",
            "updated_at",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "host_key",
        ]
        read_only_fields = fields

    def get_host_key(self, obj: SyncDestination) -> str | None:
        if obj.kind != DestinationKind.SSH:
            return None
        return str((obj.connection.public_settings() or {}).get("host_key", "")) or None


class SyncDestinationWriteSerializer(serializers.Serializer):
    organization = OrganizationChoiceField()
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=DestinationKind.choices)
    connection = serializers.IntegerField(min_value=1, help_text="An app connection of the organization.")
    region = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    options = serializers.DictField(required=False, default=dict)
    enabled = serializers.BooleanField(required=False, default=True)


class SyncDestinationUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    connection = serializers.IntegerField(min_value=1, required=False)
    region = serializers.CharField(max_length=32, required=False, allow_blank=True)
    options = serializers.DictField(required=False)
    enabled = serializers.BooleanField(required=False)


class TestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()


class SyncRuleSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    destination = serializers.IntegerField(source="destination_id", read_only=True)
    subscriber = serializers.IntegerField(source="subscriber_id", read_only=True, allow_null=True)

    class Meta:
        model = SyncRule
        fields = [
            "id",
            "organization",
            "destination",
            "subscriber",
            "name_patterns",
            "name_schema",
            "include_private_key",
            "remove_on_expiry_or_revocation",
            "enabled",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class SyncRuleWriteSerializer(serializers.Serializer):
    destination = serializers.IntegerField(min_value=1)
    subscriber = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    name_patterns = serializers.ListField(
        child=serializers.CharField(max_length=300), required=False, max_length=100
    )
    name_schema = serializers.CharField(max_length=200, required=False)
    include_private_key = serializers.BooleanField(required=False)
    remove_on_expiry_or_revocation = serializers.BooleanField(required=False)
    enabled = serializers.BooleanField(required=False)


class SyncRuleUpdateSerializer(SyncRuleWriteSerializer):
    destination = None  # type: ignore[assignment]  # a rule stays with its destination


class SyncRunSerializer(serializers.ModelSerializer):
    destination = serializers.IntegerField(source="destination_id", read_only=True)
    rule = serializers.IntegerField(source="rule_id", read_only=True, allow_null=True)
    certificate = serializers.IntegerField(source="certificate_id", read_only=True)
    action = serializers.ChoiceField(choices=RunAction.choices, read_only=True)
    trigger = serializers.ChoiceField(choices=RunTrigger.choices, read_only=True)
    status = serializers.ChoiceField(choices=RunStatus.choices, read_only=True)

    class Meta:
        model = SyncRun
        fields = [
            "id",
            "organization",
            "destination",
            "rule",
            "certificate",
            "name",
            "action",
            "trigger",
            "status",
            "attempts",
            "next_attempt_at",
            "identifier",
            "version",
            "serial",
            "include_private_key",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class SyncNowSerializer(serializers.Serializer):
    certificate = serializers.IntegerField(
        min_value=1, required=False, help_text="Only this certificate (else every current one of its rules)."
    )


class DeploymentSerializer(serializers.ModelSerializer):
    destination = serializers.IntegerField(source="destination_id", read_only=True)
    certificate = serializers.IntegerField(source="certificate_id", read_only=True)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "destination",
            "name",
            "certificate",
            "identifier",
            "version",
            "fingerprint_sha256",
            "deployed_at",
            "checked_at",
            "drift",
        ]
        read_only_fields = fields
