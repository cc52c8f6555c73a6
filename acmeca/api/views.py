"""API doors of the ACME side: accounts, orders and challenges (ACME CAs themselves are served under
``/api/v1/cas/`` by ``pki.api.views``). Thin: look up within the caller's organizations, call
``acmeca.services`` / ``acmeca.orders``, shape the answer. Keys (account, order) are never read into a
response: the querysets defer them and no serializer names them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.urls import reverse
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import filters, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from acmeca import orders, services
from acmeca.api import serializers as s
from acmeca.filters import AcmeAccountFilter, AcmeChallengeFilter, AcmeOrderFilter
from acmeca.models import AcmeAccount, AcmeChallenge, AcmeOrder
from certmgr.api.mixins import TenantViewMixin
from certmgr.errors import OutboundRefused, ServiceError
from pki.api.serializers import CertificateDetailSerializer
from pki.models import Certificate

ACME_SETTINGS_FIELDS = {*services.SETTINGS_FIELDS, "account_key_kind"}

_ACCEPTED = OpenApiResponse(s.AcmeOrderAcceptedSerializer, description="Order queued: poll status_url.")
_CONFLICT = OpenApiResponse(description="The order's state does not allow this.")


# --- helpers shared with pki.api.views ---------------------------------------------------------------------
def dotted(detail, prefix: str = "") -> dict:
    """Nested serializer errors as one level with dotted paths: ``{"acme": {"vendor": [..]}}`` ->
    ``{"acme.vendor": [..]}``, so the error message and ``fields`` name the exact input."""
    if not isinstance(detail, dict):
        return {prefix or "non_field_errors": detail}
    result: dict = {}
    for key, value in detail.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            result.update(dotted(value, path))
        else:
            result[path] = value
    return result


def valid_data(serializer_class, request, **kwargs) -> dict:
    """Validated input; errors of nested objects named by their dotted path."""
    serializer = serializer_class(data=request.data, context={"request": request}, **kwargs)
    if not serializer.is_valid():
        raise ValidationError(dotted(serializer.errors))
    return serializer.validated_data


def acme_settings_path(field: str) -> str:
    """Where an ACME setting named by a service sits in the request body of /cas/."""
    return f"acme.{field}" if field in ACME_SETTINGS_FIELDS else field


@contextmanager
def renamed_errors(path: Callable[[str], str]) -> Iterator[None]:
    """Service errors with their field renamed to the request's own name for it."""
    try:
        yield
    except DjangoValidationError as exc:
        if not hasattr(exc, "error_dict"):
            raise
        raise DjangoValidationError({path(k): v for k, v in exc.message_dict.items()}) from exc
    except ServiceError as exc:
        if exc.field:
            exc.field = path(exc.field)
        raise


@contextmanager
def acme_ca_errors() -> Iterator[None]:
    """Errors of registering / editing an ACME CA, named by their path in the body (``acme.<field>``)."""
    try:
        with renamed_errors(acme_settings_path):
            yield
    except ServiceError as exc:
        if isinstance(exc, OutboundRefused) and not exc.field:
            exc.field = "acme.directory_url"
        raise


def accepted(request, order: AcmeOrder) -> Response:
    """202 for an order a worker runs; status and step as they are now (a worker may already be done)."""
    current = AcmeOrder.objects.filter(pk=order.pk).values("status", "step").first() or {
        "status": order.status,
        "step": order.step,
    }
    body = {
        "order": order.pk,
        "status_url": request.build_absolute_uri(reverse("acme-order-detail", args=[order.pk])),
        **current,
    }
    return Response(s.AcmeOrderAcceptedSerializer(body).data, status=status.HTTP_202_ACCEPTED)


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
        account = services.deactivate_account(self.get_object(), actor=request)
        return Response(s.AcmeAccountSerializer(account).data)

    @extend_schema(
        request=s.AcmeAccountRolloverSerializer,
        responses={200: s.AcmeAccountSerializer, 409: OpenApiResponse(description="Not a valid account.")},
    )
    @action(detail=True, methods=["post"])
    def rollover(self, request, pk=None):
        """Replace the account key at the CA (RFC 8555 key change)."""
        account = self.get_object()
        data = valid_data(s.AcmeAccountRolloverSerializer, request)
        account = services.rollover_account_key(account, actor=request, key_kind=data.get("key_kind"))
        return Response(s.AcmeAccountSerializer(account).data)

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="An ACME CA still uses it.")})
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance):
        services.delete_account(instance, actor=self.request)


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
        Prefetch("challenges", queryset=AcmeChallenge.objects.select_related("authorization"))
    )
    serializer_class = s.AcmeOrderSerializer
    filterset_class = AcmeOrderFilter
    filter_backends = [DjangoFilterBackend, filters.OrderingFilter]
    ordering_fields = ["id", "created_at", "updated_at"]

    @extend_schema(request=None, responses={202: _ACCEPTED, 409: _CONFLICT})
    @action(detail=True, methods=["post"])
    def refresh(self, request, pk=None):
        """Have a worker ask the CA for the order's state now."""
        return accepted(request, orders.refresh_order(self.get_object(), actor=request))

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
        result = orders.retry_order(self.get_object(), actor=request)
        if isinstance(result, Certificate):
            return Response(CertificateDetailSerializer(result).data, status=status.HTTP_201_CREATED)
        return accepted(request, result)

    @extend_schema(request=None, responses={200: s.AcmeOrderSerializer, 409: _CONFLICT})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Stop the order; its challenge records are removed."""
        order = orders.cancel_order(self.get_object(), actor=request)
        return Response(s.AcmeOrderSerializer(self.get_queryset().get(pk=order.pk)).data)

    @extend_schema(request=None, responses={202: _ACCEPTED, 409: _CONFLICT})
    @action(detail=True, methods=["post"])
    def confirm(self, request, pk=None):
        """Manual DNS: the TXT records shown in ``challenges`` exist now; check them and go on."""
        return accepted(request, orders.confirm_manual_records(self.get_object(), actor=request))

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="The order is not finished.")})
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance):
        orders.delete_order(instance, actor=self.request)


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
