"""API doors of alerts: channels, rules, and the delivery history (with "retry now").

``register(router)`` adds ``alert-channels``, ``alert-rules`` and ``alert-deliveries`` to the /api/v1/ router.
A webhook channel's secret is write-only: the create call (or ``regenerate_secret``) returns a generated
secret once, in ``secret``; no other answer carries it.
"""

from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from certmgr.api.mixins import OrganizationChoiceField, TenantViewMixin, resolve_organization
from certmgr.api.validation import valid
from certmgr.encryption import has_secret
from certmgr.permissions import Action
from pki import alerts
from pki.filters import IdFilter
from pki.models import AlertChannel, AlertDelivery, AlertRule, CertificateAuthority, Subscriber


# --- serializers ---------------------------------------------------------------------------------------
class AlertChannelSerializer(serializers.ModelSerializer):
    organization = OrganizationChoiceField(source="organization_id")
    kind = serializers.ChoiceField(choices=AlertChannel.Kind.choices)
    recipients = serializers.ListField(child=serializers.CharField(max_length=254), required=False)
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = AlertChannel
        fields = [
            "id", "organization", "name", "kind", "enabled", "recipients", "url_hint", "slack", "has_secret",
            "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "url_hint", "has_secret", "created_at", "updated_at"]
        validators: list[object] = []  # uniqueness is the service's (409)

    def get_has_secret(self, obj) -> bool:
        return has_secret(obj, "secret")


class AlertChannelWriteSerializer(serializers.Serializer):
    organization = OrganizationChoiceField()
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=AlertChannel.Kind.choices)
    enabled = serializers.BooleanField(required=False, default=True)
    recipients = serializers.ListField(child=serializers.CharField(max_length=254), required=False)
    url = serializers.CharField(
        max_length=2000,
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="Webhook URL; never shown back (url_hint shows its host and last characters). On a change, "
        "leave it out or empty to keep the stored one.",
    )
    slack = serializers.BooleanField(required=False, default=False)
    secret = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="Webhook HMAC key; omit it to have one generated (returned once).",
    )


class AlertChannelUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    enabled = serializers.BooleanField(required=False)
    recipients = serializers.ListField(child=serializers.CharField(max_length=254), required=False)
    url = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    slack = serializers.BooleanField(required=False)
    secret = serializers.CharField(
        max_length=500, required=False, allow_blank=True, write_only=True, help_text="Empty keeps it."
    )
    regenerate_secret = serializers.BooleanField(
        required=False, default=False, help_text="Make a new secret; returned once."
    )


class AlertChannelCreatedSerializer(AlertChannelSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="Present only when certmgr generated the secret: shown once, store it now."
    )

    class Meta(AlertChannelSerializer.Meta):
        fields = [*AlertChannelSerializer.Meta.fields, "secret"]


class AlertRuleSerializer(serializers.ModelSerializer):
    organization = OrganizationChoiceField(source="organization_id")
    event = serializers.ChoiceField(choices=AlertRule.Event.choices)
    channels = serializers.SerializerMethodField()
    ca = serializers.IntegerField(source="ca_id", allow_null=True, read_only=True)
    subscriber = serializers.IntegerField(source="subscriber_id", allow_null=True, read_only=True)

    class Meta:
        model = AlertRule
        fields = [
            "id", "organization", "name", "event", "enabled", "channels", "ca", "subscriber", "name_patterns",
            "thresholds", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_channels(self, obj) -> list[int]:
        return sorted(ch.pk for ch in obj.channels.all())


class AlertRuleWriteSerializer(serializers.Serializer):
    organization = OrganizationChoiceField()
    name = serializers.CharField(max_length=100, required=False)
    event = serializers.ChoiceField(choices=AlertRule.Event.choices, required=False)
    enabled = serializers.BooleanField(required=False)
    channels = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=50
    )
    ca = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    subscriber = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    name_patterns = serializers.ListField(
        child=serializers.CharField(max_length=300), required=False, max_length=100
    )
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=3650),
        required=False,
        max_length=20,
        help_text="Days before expiry (expiring rules); empty = CERTMGR_EXPIRY_ALERT_DAYS.",
    )


class AlertDeliverySerializer(serializers.ModelSerializer):
    channel = serializers.IntegerField(source="channel_id", read_only=True, allow_null=True)
    rule = serializers.IntegerField(source="rule_id", read_only=True, allow_null=True)
    certificate = serializers.IntegerField(source="certificate_id", read_only=True, allow_null=True)
    subscriber = serializers.IntegerField(source="subscriber_id", read_only=True, allow_null=True)

    class Meta:
        model = AlertDelivery
        fields = [
            "id", "organization", "event", "rule", "channel", "channel_label", "certificate", "subscriber",
            "threshold_days", "subject", "status", "attempts", "last_error", "next_attempt_at", "created_at",
            "sent_at",
        ]  # fmt: skip
        read_only_fields = fields


class AlertDeliveryFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")
    channel = IdFilter(field_name="channel_id")
    rule = IdFilter(field_name="rule_id")
    certificate = IdFilter(field_name="certificate_id")
    status = django_filters.ChoiceFilter(choices=AlertDelivery.Status.choices)
    event = django_filters.ChoiceFilter(choices=AlertRule.Event.choices)

    class Meta:
        model = AlertDelivery
        fields = ["organization", "channel", "rule", "certificate", "status", "event"]


# --- views ---------------------------------------------------------------------------------------------
class AlertChannelViewSet(TenantViewMixin, viewsets.ModelViewSet):
    """Where alerts go: e-mail recipients or a webhook. A webhook's secret is write-only."""

    base_queryset = AlertChannel.objects.all()
    serializer_class = AlertChannelSerializer
    search_fields = ["name"]
    ordering_fields = ["id", "name", "created_at"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @extend_schema(request=AlertChannelWriteSerializer, responses={201: AlertChannelCreatedSerializer})
    def create(self, request):
        data = dict(valid(AlertChannelWriteSerializer, request))
        org = resolve_organization(request, data.pop("organization", None))
        saved = alerts.create_channel(org, actor=self.actor, **data)
        return Response(_channel_body(saved), status=status.HTTP_201_CREATED)

    @extend_schema(request=AlertChannelUpdateSerializer, responses={200: AlertChannelCreatedSerializer})
    def partial_update(self, request, pk=None):
        channel = self.get_object()
        data = dict(valid(AlertChannelUpdateSerializer, request))
        saved = alerts.update_channel(channel, actor=self.actor, **data)
        return Response(_channel_body(saved))

    def perform_destroy(self, instance):
        alerts.delete_channel(instance, actor=self.actor)


def _channel_body(saved: alerts.SavedChannel) -> dict:
    body = AlertChannelSerializer(saved.channel).data
    if saved.secret:
        body["secret"] = saved.secret
    return body


def _rule_values(request, org_id: int, data: dict) -> dict:
    """Turn ids into rows of the rule's organization (another tenant's id reads as unknown)."""
    values = dict(data)
    values.pop("organization", None)
    if "channels" in values:
        ids = set(values["channels"])
        rows = list(
            AlertChannel.objects.restrict(request, Action.MANAGE).filter(organization_id=org_id, pk__in=ids)
        )
        if len(rows) != len(ids):
            raise ValidationError({"channels": ["Unknown channel."]})
        values["channels"] = rows
    for field, model in (("ca", CertificateAuthority), ("subscriber", Subscriber)):
        if field in values and values[field] is not None:
            row = model.objects.restrict(request).filter(organization_id=org_id, pk=values[field]).first()
            if row is None:
                raise ValidationError({field: [f"Unknown {field}."]})
            values[field] = row
    return values


class AlertRuleViewSet(TenantViewMixin, viewsets.ModelViewSet):
    """Which events (expiring, renewal_failed, issued, revoked) of which certificates go to which channels."""

    base_queryset = AlertRule.objects.prefetch_related("channels")
    serializer_class = AlertRuleSerializer
    search_fields = ["name"]
    ordering_fields = ["id", "name", "event", "created_at"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @extend_schema(request=AlertRuleWriteSerializer, responses={201: AlertRuleSerializer})
    def create(self, request):
        data = valid(AlertRuleWriteSerializer, request)
        org = resolve_organization(request, data.get("organization"))
        rule = alerts.create_rule(org, actor=self.actor, **_rule_values(request, org.pk, data))
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=AlertRuleWriteSerializer, responses={200: AlertRuleSerializer})
    def partial_update(self, request, pk=None):
        rule = self.get_object()
        data = valid(AlertRuleWriteSerializer, request)
        rule = alerts.update_rule(rule, actor=self.actor, **_rule_values(request, rule.organization_id, data))
        return Response(
            AlertRuleSerializer(AlertRule.objects.prefetch_related("channels").get(pk=rule.pk)).data
        )

    def perform_destroy(self, instance):
        alerts.delete_rule(instance, actor=self.actor)


class AlertDeliveryViewSet(
    TenantViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """The alert history: every delivery with its status, attempts, last error and next attempt."""

    base_queryset = AlertDelivery.objects.all()
    serializer_class = AlertDeliverySerializer
    filterset_class = AlertDeliveryFilter
    search_fields = ["subject"]
    ordering_fields = ["id", "created_at"]
    action_permissions = {"retry": Action.MANAGE}

    @extend_schema(request=None, responses={200: AlertDeliverySerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Send it again now (a failed delivery gets a new round of attempts)."""
        delivery = alerts.retry_delivery(self.get_object(), actor=self.actor)
        delivery.refresh_from_db()
        return Response(AlertDeliverySerializer(delivery).data)


def register(router) -> None:
    router.register("alert-channels", AlertChannelViewSet, basename="alert-channel")
    router.register("alert-rules", AlertRuleViewSet, basename="alert-rule")
    router.register("alert-deliveries", AlertDeliveryViewSet, basename="alert-delivery")
