"""API doors of the ACME server: ``/api/v1/acme-profiles/`` (create, read, change through
``acmeserver.services.save_profile``), ``/acme-server-accounts/`` (read, deactivate) and
``/acme-server-orders/`` (read)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import filters, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from acmeserver import services
from acmeserver.api import serializers as s
from acmeserver.models import (
    AcmeEabKey,
    AcmeEarlyRenewal,
    AcmeOrderProfile,
    AcmeProfile,
    AcmeServerAccount,
    AcmeServerOrder,
)
from certmgr.api.mixins import TenantViewMixin, resolve_organization
from certmgr.api.validation import valid


class AcmeProfileViewSet(
    TenantViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """ACME enrollment profiles: one RFC 8555 directory each (``directory_url``), signed by a private CA
    under a policy. A disabled profile answers ``unauthorized`` to every ACME request."""

    base_queryset = AcmeProfile.objects.select_related("organization")
    serializer_class = s.AcmeProfileSerializer
    filter_backends = [filters.OrderingFilter, filters.SearchFilter]
    search_fields = ["name", "slug"]
    ordering_fields = ["id", "name", "created_at"]

    def create(self, request, *args, **kwargs):
        data = valid(s.AcmeProfileSerializer, request)
        org = resolve_organization(request, data.pop("organization_id", None))
        profile = services.save_profile(org, actor=self.actor, **data)
        return Response(s.AcmeProfileSerializer(profile).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        instance = self.get_object()
        data = valid(s.AcmeProfileSerializer, request, partial=kwargs.get("partial", False))
        org_id = data.pop("organization_id", None)
        if org_id is not None and org_id != instance.organization_id:
            raise ValidationError({"organization": ["A row cannot move to another organization."]})
        profile = services.save_profile(None, actor=self.actor, instance=instance, **data)
        return Response(s.AcmeProfileSerializer(profile).data)

    @extend_schema(request=s.AcmeEabKeyCreateSerializer, responses={201: s.AcmeEabKeyCreatedSerializer})
    @action(detail=True, methods=["post"], url_path="eab-keys", url_name="eab-keys")
    def eab_keys(self, request, pk=None):
        """A new External Account Binding key for one ACME client: ``kid`` and ``hmac_key`` (base64url),
        the key shown this once (certbot: ``--eab-kid``, ``--eab-hmac-key``)."""
        profile = self.get_object()
        data = valid(s.AcmeEabKeyCreateSerializer, request)
        key, hmac_key = services.create_eab_key(profile, actor=self.actor, name=data.get("name", ""))
        return Response({"id": key.pk, "kid": key.kid, "hmac_key": hmac_key}, status=status.HTTP_201_CREATED)


class AcmeOrderProfileViewSet(
    TenantViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """ACME order profiles (draft-ietf-acme-profiles): the names a directory lists in ``meta.profiles``,
    each mapped to a policy and a validity; a newOrder naming one is issued under them."""

    base_queryset = AcmeOrderProfile.objects.select_related("profile")
    serializer_class = s.AcmeOrderProfileSerializer
    filter_backends = [filters.OrderingFilter, filters.SearchFilter]
    search_fields = ["name"]
    ordering_fields = ["id", "name", "created_at"]

    def create(self, request, *args, **kwargs):
        data = valid(s.AcmeOrderProfileSerializer, request)
        profile = data.pop("profile")
        made = services.save_order_profile(profile, actor=self.actor, **data)
        return Response(s.AcmeOrderProfileSerializer(made).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        instance = self.get_object()
        data = valid(s.AcmeOrderProfileSerializer, request, partial=kwargs.get("partial", False))
        profile = data.pop("profile", None)
        if profile is not None and profile.pk != instance.profile_id:
            raise ValidationError({"profile": ["An order profile cannot move to another directory."]})
        saved = services.save_order_profile(None, actor=self.actor, instance=instance, **data)
        return Response(s.AcmeOrderProfileSerializer(saved).data)

    def perform_destroy(self, instance):
        services.delete_order_profile(instance, actor=self.actor)


class AcmeServerAccountViewSet(
    TenantViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """The accounts ACME clients registered with the profiles (their public keys only)."""

    base_queryset = AcmeServerAccount.objects.select_related("profile")
    serializer_class = s.AcmeServerAccountSerializer
    filter_backends = [filters.OrderingFilter]
    ordering_fields = ["id", "created_at"]

    @extend_schema(
        request=None,
        responses={200: s.AcmeServerAccountSerializer, 409: OpenApiResponse(description="Not valid.")},
    )
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        """Deactivate the client's account (RFC 8555 §7.3.6, for good): every later request of it is
        ``unauthorized``; its pending authorizations are deactivated, its certificates stay."""
        account = services.deactivate_account(self.get_object(), actor=self.actor)
        return Response(s.AcmeServerAccountSerializer(account).data)


class AcmeServerOrderViewSet(
    TenantViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """The orders of the profiles' accounts, with the certificate of each finalized one."""

    base_queryset = AcmeServerOrder.objects.all()
    serializer_class = s.AcmeServerOrderSerializer
    filter_backends = [filters.OrderingFilter]
    ordering_fields = ["id", "created_at"]


class AcmeEabKeyViewSet(
    TenantViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """EAB keys of the profiles, without their HMAC keys. ``DELETE`` revokes one: it binds no account from
    then on (the row stays, for the record)."""

    base_queryset = AcmeEabKey.objects.defer("hmac_key")
    serializer_class = s.AcmeEabKeySerializer
    filter_backends = [filters.OrderingFilter]
    ordering_fields = ["id", "created_at"]

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="Revoked already.")})
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance):
        services.revoke_eab_key(instance, actor=self.actor)


class AcmeEarlyRenewalViewSet(TenantViewMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Mass re-issue over ARI (RFC 9773): ``POST`` with one of ``profile``, ``ca`` or ``certificates``
    gives those certificates a suggested renewal window in the past, so their ACME clients (``certbot
    renew``) renew at their next check. ``GET`` lists the certificates asked to renew early."""

    base_queryset = AcmeEarlyRenewal.objects.all()
    serializer_class = s.AcmeEarlyRenewalSerializer
    filter_backends = [filters.OrderingFilter]
    ordering_fields = ["id", "requested_at"]

    @extend_schema(
        request=s.AcmeEarlyRenewalRequestSerializer, responses={201: s.AcmeEarlyRenewalResultSerializer}
    )
    def create(self, request, *args, **kwargs):
        data = valid(s.AcmeEarlyRenewalRequestSerializer, request)
        count = services.request_early_renewal(
            actor=self.actor,
            profile=data.get("profile"),
            ca=data.get("ca"),
            certificates=data.get("certificates"),
            reason=data.get("reason", ""),
        )
        return Response({"certificates": count}, status=status.HTTP_201_CREATED)
