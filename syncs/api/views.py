"""API doors of certificate syncs: destinations (with test and sync now), rules, runs (with retry).

Operators manage, auditors read; another organization's rows are 404 (``TenantViewMixin``).
"""

from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from certmgr.api.mixins import TenantViewMixin, resolve_organization
from certmgr.api.validation import valid
from certmgr.permissions import Action
from dnsproviders.models import AppConnection
from pki.filters import IdFilter
from pki.models import Certificate, Subscriber
from syncs import services
from syncs.api import serializers as s
from syncs.choices import RunStatus, RunTrigger
from syncs.models import Deployment, SyncDestination, SyncRule, SyncRun


def _connection(request, org_id: int, pk: int) -> AppConnection:
    row = AppConnection.objects.restrict(request).filter(organization_id=org_id, pk=pk).first()
    if row is None:
        raise ValidationError({"connection": ["Unknown app connection."]})
    return row


class SyncDestinationViewSet(TenantViewMixin, viewsets.ModelViewSet):
    """Where certificates are deployed: AWS Certificate Manager or Secrets Manager, on an app connection."""

    base_queryset = SyncDestination.objects.all()
    serializer_class = s.SyncDestinationSerializer
    search_fields = ["name"]
    ordering_fields = ["id", "name", "created_at"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_permissions = {"test": Action.MANAGE, "sync": Action.MANAGE, "deployments": Action.VIEW}

    @extend_schema(request=s.SyncDestinationWriteSerializer, responses={201: s.SyncDestinationSerializer})
    def create(self, request):
        data = dict(valid(s.SyncDestinationWriteSerializer, request))
        org = resolve_organization(request, data.pop("organization", None))
        data["connection"] = _connection(request, org.pk, data["connection"])
        dest = services.create_destination(org, actor=self.actor, **data)
        return Response(s.SyncDestinationSerializer(dest).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.SyncDestinationUpdateSerializer, responses={200: s.SyncDestinationSerializer})
    def partial_update(self, request, pk=None):
        dest = self.get_object()
        data = dict(valid(s.SyncDestinationUpdateSerializer, request))
        if "connection" in data:
            data["connection"] = _connection(request, dest.organization_id, data["connection"])
        dest = services.update_destination(dest, actor=self.actor, **data)
        return Response(s.SyncDestinationSerializer(dest).data)

    def perform_destroy(self, instance):
        services.delete_destination(instance, actor=self.actor)

    @extend_schema(request=None, responses={200: s.TestResultSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """One cheap authenticated call at the destination; the result is stored on it."""
        result = services.test_destination(self.get_object(), actor=self.actor)
        return Response({"ok": result.ok, "message": result.message})

    @extend_schema(request=s.SyncNowSerializer, responses={202: s.SyncRunSerializer(many=True)})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        """Sync now: push every current certificate of this destination's rules (or one certificate)."""
        dest = self.get_object()
        data = valid(s.SyncNowSerializer, request)
        cert = None
        if data.get("certificate"):
            cert = (
                Certificate.objects.restrict(request)
                .filter(organization_id=dest.organization_id, pk=data["certificate"])
                .first()
            )
            if cert is None:
                raise ValidationError({"certificate": ["Unknown certificate."]})
        runs = services.sync_now(
            actor=self.actor, destination=dest, certificate=cert, trigger=RunTrigger.MANUAL
        )
        rows = SyncRun.objects.filter(pk__in=[r.pk for r in runs]).order_by("pk")
        return Response(s.SyncRunSerializer(rows, many=True).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: s.DeploymentSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def deployments(self, request, pk=None):
        """What is at this destination now (at most 1000 names)."""
        dest = self.get_object()
        rows = Deployment.objects.present().filter(destination=dest).order_by("name")[:1000]
        return Response(s.DeploymentSerializer(rows, many=True).data)


class SyncRuleFilter(django_filters.FilterSet):
    destination = IdFilter(field_name="destination_id")
    subscriber = IdFilter(field_name="subscriber_id")

    class Meta:
        model = SyncRule
        fields = ["destination", "subscriber", "enabled"]


def _rule_values(request, org_id: int, data: dict) -> dict:
    values = dict(data)
    values.pop("destination", None)
    if values.get("subscriber") is not None:
        sub = (
            Subscriber.objects.restrict(request)
            .filter(organization_id=org_id, pk=values["subscriber"])
            .first()
        )
        if sub is None:
            raise ValidationError({"subscriber": ["Unknown subscriber."]})
        values["subscriber"] = sub
    return values


class SyncRuleViewSet(TenantViewMixin, viewsets.ModelViewSet):
    """Which certificates go to a destination (a subscriber's, or matching names), under which name, with
    or without the private key."""

    base_queryset = SyncRule.objects.all()
    serializer_class = s.SyncRuleSerializer
    filterset_class = SyncRuleFilter
    ordering_fields = ["id", "created_at"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @extend_schema(request=s.SyncRuleWriteSerializer, responses={201: s.SyncRuleSerializer})
    def create(self, request):
        data = valid(s.SyncRuleWriteSerializer, request)
        dest = SyncDestination.objects.restrict(request).filter(pk=data["destination"]).first()
        if dest is None:
            raise ValidationError({"destination": ["Unknown destination."]})
        rule = services.create_rule(
            dest, actor=self.actor, **_rule_values(request, dest.organization_id, data)
        )
        return Response(s.SyncRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.SyncRuleUpdateSerializer, responses={200: s.SyncRuleSerializer})
    def partial_update(self, request, pk=None):
        rule = self.get_object()
        data = valid(s.SyncRuleUpdateSerializer, request)
        rule = services.update_rule(
            rule, actor=self.actor, **_rule_values(request, rule.organization_id, data)
        )
        return Response(s.SyncRuleSerializer(rule).data)

    def perform_destroy(self, instance):
        services.delete_rule(instance, actor=self.actor)


class SyncRunFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")
    destination = IdFilter(field_name="destination_id")
    certificate = IdFilter(field_name="certificate_id")
    status = django_filters.ChoiceFilter(choices=RunStatus.choices)

    class Meta:
        model = SyncRun
        fields = ["organization", "destination", "certificate", "status"]


class SyncRunViewSet(
    TenantViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Every push and removal: status, attempts, the destination's identifier (ARN, secret version), the
    serial pushed, the error."""

    base_queryset = SyncRun.objects.all()
    serializer_class = s.SyncRunSerializer
    filterset_class = SyncRunFilter
    search_fields = ["name", "serial"]
    ordering_fields = ["id", "created_at"]
    action_permissions = {"retry": Action.MANAGE}

    @extend_schema(request=None, responses={202: s.SyncRunSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Try a failed run again now, with a new round of attempts."""
        run = services.retry_run(self.get_object(), actor=self.actor)
        run.refresh_from_db()
        return Response(s.SyncRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


def register(router) -> None:
    router.register("sync-destinations", SyncDestinationViewSet, basename="sync-destination")
    router.register("sync-rules", SyncRuleViewSet, basename="sync-rule")
    router.register("sync-runs", SyncRunViewSet, basename="sync-run")
