from __future__ import annotations

from rest_framework import serializers

from certmgr.api.mixins import OrganizationChoiceField
from certmgr.encryption import unreadable_secret
from dnsproviders.models import AppConnection


class AppConnectionSerializer(serializers.ModelSerializer):
    """``credentials`` is write-only; ``settings`` shows back the non-secret parts (URLs, server names)."""

    organization = OrganizationChoiceField(source="organization_id")
    kind = serializers.ChoiceField(choices=AppConnection.Kind.choices)
    credentials = serializers.DictField(
        write_only=True,
        required=False,
        help_text="Per kind: powerdns {api_url, api_key, server_id}; rfc2136 {server, port, tsig_key_name, "
        "tsig_algorithm, tsig_secret, zone}; aws {access_key_id, secret_access_key, region, role_arn}; "
        "cloudflare {api_token}; acme-dns {api_url, username, password, subdomain}; akamai {host, "
        "client_token, client_secret, access_token, account_switch_key}; manual {}. "
        "On update, omitted secret fields keep their stored value.",
    )
    settings = serializers.SerializerMethodField()
    credentials_error = serializers.SerializerMethodField(
        help_text="Why the stored credentials cannot be used (they cannot be decrypted), or null"
    )

    class Meta:
        model = AppConnection
        fields = [
            "id",
            "organization",
            "name",
            "kind",
            "description",
            "credentials",
            "settings",
            "credentials_error",
            "created_at",
            "updated_at",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
        ]
        read_only_fields = [
            "id",
            "created_at",
            "updated_at",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
        ]
        # Uniqueness is the service's to check (it answers 409), not the serializer's.
        validators: list[object] = []

    def get_settings(self, obj) -> dict | None:
        return obj.public_settings()

    def get_credentials_error(self, obj) -> str | None:
        error = unreadable_secret(obj, "credentials")
        return str(error) if error else None


class AppConnectionUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    credentials = serializers.DictField(write_only=True, required=False)


class ConnectionTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()
    tested_at = serializers.DateTimeField()


class HostKeyRepinSerializer(serializers.Serializer):
    host_key = serializers.CharField(help_text="The fingerprint now pinned, as ssh-keygen -l shows it.")


class HostKeyRepinRequestSerializer(serializers.Serializer):
    host_key = serializers.CharField(
        required=False,
        help_text="The fingerprint you checked on the host (ssh-keygen -lf ...): pinned only if the host "
        "shows it; without it, whatever key the host shows is pinned.",
    )
