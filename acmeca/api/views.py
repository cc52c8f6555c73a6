"""API doors of the ACME side: accounts, orders and challenges (ACME CAs themselves are served under
``/api/v1/cas/`` by ``pki.api.views``). Thin: look up within the caller's organizations, call
``acmeca.services`` / ``acmeca.orders``, shape the answer. Keys (account, order) are never read into a
response: the querysets defer them and no serializer names them.
"""

from __future__ import annotations

from django.db.models import Prefetch
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import filters, mixins, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from acmeca import orders, services
from acmeca.api import serializers as s
from acmeca.filters import AcmeAccountFilter, AcmeChallengeFilter, AcmeOrderFilter
from acmeca.handles import pending
from acmeca.models import AcmeAccount, AcmeChallenge, AcmeOrder
from certmgr.api.mixins import TenantViewMixin
from certmgr.api.validation import valid
from pki.api.outcomes import outcome_response
from pki.api.serializers import CertificateDetailSerializer

ACME_SETTINGS_FIELDS = {*services.SETTINGS_FIELDS, "account_key_kind"}

_ACCEPTED = OpenApiResponse(s.AcmeOrderAcceptedSerializer, description="Order queued: poll status_url.")
_CONFLICT = OpenApiResponse(description="The order's state does not allow this.")


# --- accounts ---------------------------------------------------------------------------------------------
class AcmeAccountViewSet(
    TenantViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """ACME accounts, registered when an ACME CA is created. The account key never leaves certmgr.
    Deleting an account keeps every certificate it issued."""

    base_queryset = AcmeAccount.objects.defer("private_key")
    serializer_class = s.AcmeAccountSerializer
    filterset_class = AcmeAccountFilter
    search_fields = ["email", "directory_url"]
    ordering_fields = ["id", "created_at"]

    @extend_schema(
        request=None,
        responses={200: s.AcmeAccountSerializer, 409: OpenApiResponse(description="Not a valid account.")},
    )
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        """Deactivate the account at the CA (irreversible there); its CA registers a new one when edited."""
        account = services.deactivate_account(self.get_object(), actor=self.actor)
        return Response(s.AcmeAccountSerializer(account).data)

    @extend_schema(
        request=s.AcmeAccountRolloverSerializer,
        responses={200: s.AcmeAccountSerializer, 409: OpenApiResponse(description="Not a valid account.")},
    )
    @action(detail=True, methods=["post"])
    def rollover(self, request, pk=None):
        """Replace the account key at the CA (RFC 8555 key change)."""
        account = self.get_object()
        data = valid(s.AcmeAccountRolloverSerializer, request, dotted_errors=True)
        account = services.rollover_account_key(account, actor=self.actor, key_kind=data.get("key_kind"))
        return Response(s.AcmeAccountSerializer(account).data)

    @extend_schema(
        request=s.AcmeAccountReregisterSerializer,
        responses={
            201: s.AcmeAccountSerializer,
            409: OpenApiResponse(description="The account is valid, or no CA uses it."),
        },
    )
    @action(detail=True, methods=["post"])
    def reregister(self, request, pk=None):
        """Register a new account at the CA for the ACME CA of this lost (invalid) account, with the same key
        or a new one; the CA uses the new account from now on. Answers the new account."""
        account = self.get_object()
        data = valid(s.AcmeAccountReregisterSerializer, request, dotted_errors=True)
        fresh = services.reregister_account(
            account, actor=self.actor, new_key=data.get("new_key", False), key_kind=data.get("key_kind")
        )
        return Response(s.AcmeAccountSerializer(fresh).data, status=201)

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="An ACME CA still uses it.")})
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance):
        services.delete_account(instance, actor=self.actor)


# --- orders -----------------------------------------------------------------------------------------------
class AcmeOrderViewSet(
    TenantViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """ACME orders, each run step by step by a worker. ``POST /subscribers/{id}/issue/`` on an ACME
    subscriber and ``POST /cas/{id}/issue/`` start one and answer 202 with its URL here."""

    base_queryset = AcmeOrder.objects.defer("private_key", "csr_pem").prefetch_related(
        Prefetch("challenges", queryset=AcmeChallenge.objects.select_related("authorization")),
        Prefetch("retries", queryset=AcmeOrder.objects.only("id", "retry_of_id")),
    )
    serializer_class = s.AcmeOrderSerializer
    filterset_class = AcmeOrderFilter
    filter_backends = [DjangoFilterBackend, filters.OrderingFilter]
    ordering_fields = ["id", "created_at", "updated_at"]

    @extend_schema(request=None, responses={202: _ACCEPTED, 409: _CONFLICT})
    @action(detail=True, methods=["post"])
    def refresh(self, request, pk=None):
        """Have a worker ask the CA for the order's state now."""
        return outcome_response(request, pending(orders.refresh_order(self.get_object(), actor=self.actor)))

    @extend_schema(
        request=None,
        responses={
            202: _ACCEPTED,
            201: OpenApiResponse(
                CertificateDetailSerializer, description="The subscriber now issues from an internal CA."
            ),
            409: _CONFLICT,
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Run an unfinished order now. A failed or cancelled one starts over: the answer names the new
        order."""
        return outcome_response(request, orders.retry_order(self.get_object(), actor=self.actor))

    @extend_schema(request=None, responses={200: s.AcmeOrderSerializer, 409: _CONFLICT})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Stop the order; its challenge records are removed."""
        order = orders.cancel_order(self.get_object(), actor=self.actor)
        return Response(s.AcmeOrderSerializer(self.get_queryset().get(pk=order.pk)).data)

    @extend_schema(request=None, responses={202: _ACCEPTED, 409: _CONFLICT})
    @action(detail=True, methods=["post"])
    def confirm(self, request, pk=None):
        """Manual DNS: the TXT records shown in ``challenges`` exist now; check them and go on."""
        order = orders.confirm_manual_records(self.get_object(), actor=self.actor)
        return outcome_response(request, pending(order))

    @extend_schema(request=None, responses={200: s.AcmeOrderSerializer, 409: _CONFLICT})
    @action(detail=True, methods=["post"], url_path="clear-cleanup")
    def clear_cleanup(self, request, pk=None):
        """The challenge records certmgr could not remove are the operator's now (removed by hand): the
        janitor stops trying."""
        order = orders.clear_cleanup(self.get_object(), actor=self.actor)
        return Response(s.AcmeOrderSerializer(self.get_queryset().get(pk=order.pk)).data)

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="The order is not finished.")})
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance):
        orders.delete_order(instance, actor=self.actor)


# --- challenges -------------------------------------------------------------------------------------------
class AcmeChallengeViewSet(
    TenantViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """The challenge records of ACME orders (DNS TXT or HTTP-01 token), with their status."""

    base_queryset = AcmeChallenge.objects.select_related("authorization")
    serializer_class = s.AcmeChallengeSerializer
    filterset_class = AcmeChallengeFilter
    filter_backends = [DjangoFilterBackend, filters.OrderingFilter]
    ordering_fields = ["id"]
