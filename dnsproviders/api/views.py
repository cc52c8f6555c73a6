from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from certmgr.api.mixins import TenantViewMixin, resolve_organization
from certmgr.api.validation import valid
from dnsproviders import services
from dnsproviders.api.serializers import (
    AppConnectionSerializer,
    AppConnectionUpdateSerializer,
    ConnectionTestResultSerializer,
    HostKeyRepinRequestSerializer,
    HostKeyRepinSerializer,
)
from dnsproviders.filters import AppConnectionFilter
from dnsproviders.models import AppConnection


class AppConnectionViewSet(TenantViewMixin, viewsets.ModelViewSet):
    """DNS provider credentials. Secrets are write-only and never returned."""

    base_queryset = AppConnection.objects.all()
    serializer_class = AppConnectionSerializer
    filterset_class = AppConnectionFilter
    search_fields = ["name", "description"]
    ordering_fields = ["id", "name", "kind", "created_at"]
    http_method_names = ["get", "post", "patch", "put", "delete", "head", "options"]

    def create(self, request):
        data = valid(AppConnectionSerializer, request)
        org = resolve_organization(request, data.get("organization_id"))
        conn = services.create_connection(
            org,
            name=data["name"],
            kind=data["kind"],
            description=data.get("description", ""),
            credentials=data.get("credentials", {}),
            actor=self.actor,
        )
        return Response(AppConnectionSerializer(conn).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=AppConnectionUpdateSerializer, responses={200: AppConnectionSerializer})
    def update(self, request, pk=None, partial=False):
        conn = self.get_object()
        data = dict(valid(AppConnectionUpdateSerializer, request))
        conn = services.update_connection(conn, actor=self.actor, **data)
        return Response(AppConnectionSerializer(conn).data)

    @extend_schema(request=AppConnectionUpdateSerializer, responses={200: AppConnectionSerializer})
    def partial_update(self, request, pk=None):
        return self.update(request, pk=pk, partial=True)

    def perform_destroy(self, instance):
        services.delete_connection(instance, actor=self.actor)

    @extend_schema(request=None, responses={200: ConnectionTestResultSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Make one cheap authenticated call to the provider and report the result."""
        conn = self.get_object()
        result = services.test_connection(conn, actor=self.actor)
        return Response({"ok": result.ok, "message": result.message, "tested_at": conn.last_tested_at})

    @extend_schema(request=HostKeyRepinRequestSerializer, responses={200: HostKeyRepinSerializer})
    @action(detail=True, methods=["post"], url_path="repin-host-key")
    def repin_host_key(self, request, pk=None):
        """SSH connections: trust the host key the host shows now (after it was replaced on purpose), or only
        the one ``host_key`` names; audited with the old and the new fingerprint."""
        conn = self.get_object()
        asked = HostKeyRepinRequestSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        new = services.repin_host_key(conn, actor=self.actor, expected=asked.validated_data.get("host_key"))
        return Response({"host_key": new})
