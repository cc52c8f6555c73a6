"""API doors of the PKI: CAs, policies, subscribers, CSRs and the certificate inventory. Thin: parse, look
up within the caller's organizations, call pki.services, shape the answer.

A CA's private key is never read into any response: CA querysets defer it, and no serializer names it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import F, Model
from django.http import HttpResponse
from django.utils.cache import add_never_cache_headers
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import filters, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from certmgr.actors import as_actor
from certmgr.api.mixins import TenantViewMixin, resolve_organization
from certmgr.api.pagination import CursorPagination
from certmgr.api.validation import renamed_errors, valid
from certmgr.errors import Conflict, NotFound
from certmgr.permissions import Action
from pki import issuers, services
from pki.api import serializers as s
from pki.api.outcomes import ISSUED, PENDING, outcome_response
from pki.choices import INTERNAL_CA_KINDS
from pki.filters import (
    CertificateAuthorityFilter,
    CertificateFilter,
    CertificateRequestFilter,
    PolicyFilter,
    SubscriberFilter,
    normalize_serial,
)
from pki.models import Certificate, CertificateAuthority, CertificateRequest, Crl, Policy, Subscriber
from pki.querysets import HAS_PRIVATE_KEY, CertificateAuthorityQuerySet

CA_READ_FIELDS = (
    "id",
    "organization_id",
    "name",
    "kind",
    "status",
    "parent_id",
    "subject",
    "subject_dn",
    "key_algorithm",
    "max_path_length",
    "certificate_pem",
    "chain_pem",
    "serial",
    "not_before",
    "not_after",
    "imported",
    "ocsp_enabled",
    "ocsp_nonce_on_demand",
    "delta_crl_enabled",
    "created_at",
    "updated_at",
)


def ca_queryset() -> CertificateAuthorityQuerySet:
    """CAs as the API reads them: the listed columns and what each issuer backend shows with its CAs
    (never a private key)."""
    queryset = CertificateAuthority.objects.all()
    columns = list(CA_READ_FIELDS)
    for api in s.issuer_apis():
        queryset = api.prepare(queryset)
        columns += api.read_columns
    return queryset.only(*columns)


def _backend_of_kind(kind: str) -> issuers.IssuerBackend | None:
    try:
        return issuers.backend_for_kind(kind)
    except LookupError:
        return None


def _ca_create_request() -> dict[str, Serializer[Any] | type[Serializer[Any]]]:
    """The create body by ``kind``: internal CAs here, other kinds from their issuer backend."""
    by_kind: dict[str, Serializer[Any] | type[Serializer[Any]]] = {
        CertificateAuthority.Kind.INTERNAL_ROOT.value: s.CertificateAuthorityCreateSerializer,
        CertificateAuthority.Kind.INTERNAL_INTERMEDIATE.value: s.CertificateAuthorityCreateSerializer,
    }
    for backend in issuers.backends():
        if backend.api is not None:
            for kind in backend.kinds:
                by_kind[kind] = backend.api.create_serializer()
    return by_kind


CA_CREATE_REQUEST = PolymorphicProxySerializer(
    component_name="CertificateAuthorityCreateByKind",
    serializers=_ca_create_request,
    resource_type_field_name="kind",
)


# --- certificate authorities ------------------------------------------------------------------------------
REASON_PARAMETER = OpenApiParameter(
    "reason", OpenApiTypes.STR, description="Why the key is exported (optional); kept in the audit event."
)


class CrlPagination(CursorPagination):
    ordering = "-number"


class CertificateAuthorityViewSet(TenantViewMixin, viewsets.ModelViewSet):
    """Certificate authorities. Internal CAs sign with a key generated here (or imported) and kept
    encrypted; no endpoint ever returns a CA's private key."""

    serializer_class = s.CertificateAuthoritySerializer
    filterset_class = CertificateAuthorityFilter
    search_fields = ["name", "subject_dn"]
    ordering_fields = ["id", "name", "created_at", "not_after"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_base_queryset(self) -> CertificateAuthorityQuerySet:
        return ca_queryset()

    def _read(self, ca: CertificateAuthority) -> dict:
        """The CA as a list shows it (fresh: its issuer's configuration may just have changed)."""
        return s.CertificateAuthoritySerializer(ca_queryset().get(pk=ca.pk)).data

    @extend_schema(
        request=CA_CREATE_REQUEST,
        responses={
            201: s.CertificateAuthoritySerializer,
            502: OpenApiResponse(description="External CAs: the CA could not be reached."),
        },
    )
    def create(self, request):
        """An internal root or intermediate (key made here), or an external CA of another ``kind`` (e.g.
        "acme": then the ACME account is registered at the CA before anything is stored)."""
        kind = request.data.get("kind") if hasattr(request.data, "get") else None
        if isinstance(kind, str) and kind not in INTERNAL_CA_KINDS:
            backend = _backend_of_kind(kind)
            if backend is not None and backend.api is not None:
                data = valid(backend.api.create_serializer(), request, dotted_errors=True)
                return Response(self._read(backend.api.create(request, data)), status=status.HTTP_201_CREATED)
        data = valid(s.CertificateAuthorityCreateSerializer, request)
        org = resolve_organization(request, data.get("organization"))
        ca = services.create_internal_ca(
            org,
            name=data["name"],
            kind=data["kind"],
            subject={k: v for k, v in data["subject"].items() if v},
            key_algorithm=data["key_algorithm"],
            validity_days=data.get("validity_days"),
            max_path_length=data.get("max_path_length"),
            parent=data.get("parent"),  # loaded in full: its key signs
            actor=self.actor,
        )
        return Response(s.CertificateAuthoritySerializer(ca).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=s.CertificateAuthorityUpdateSerializer,
        responses={
            200: s.CertificateAuthoritySerializer,
            502: OpenApiResponse(description="External CAs: the CA could not be reached."),
        },
    )
    def partial_update(self, request, pk=None):
        """Rename the CA, turn a private CA's OCSP responder on or off (``ocsp_enabled``,
        ``ocsp_nonce_on_demand``); an external CA's configuration changes too (e.g. ``acme``, partial), in
        one transaction with the rename."""
        ca = self.get_object()
        data = valid(s.CertificateAuthorityUpdateSerializer, request, partial=True, dotted_errors=True)
        own = issuers.backend_for(ca).api
        for api in s.issuer_apis():
            if api.key in data and api is not own:
                raise ValidationError(
                    {api.key: [f"Only a CA of that kind has an {api.key!r} configuration."]}
                )
        ocsp = {k: data[k] for k in ("ocsp_enabled", "ocsp_nonce_on_demand") if k in data}
        deltas = data.get("delta_crl_enabled")
        if own is not None:
            if ocsp:
                raise ValidationError({next(iter(ocsp)): ["Only a private (internal) CA answers OCSP here."]})
            if deltas is not None:
                raise ValidationError(
                    {"delta_crl_enabled": ["Only a private (internal) CA publishes CRLs here."]}
                )
            ca = own.update(ca, request, data.get(own.key), data.get("name"))
        elif "name" not in data and not ocsp and deltas is None:
            raise ValidationError({"name": ["This field is required."]})
        else:
            if "name" in data:
                ca = services.rename_ca(ca, data["name"], actor=self.actor)
            if ocsp:
                ca = services.set_ocsp(
                    ca,
                    enabled=ocsp.get("ocsp_enabled"),
                    nonce_on_demand=ocsp.get("ocsp_nonce_on_demand"),
                    actor=self.actor,
                )
            if deltas is not None:
                ca = services.set_delta_crl(ca, enabled=deltas, actor=self.actor)
        return Response(self._read(ca))

    @extend_schema(
        request=s.DirectIssueSerializer,
        responses={
            202: PENDING,
            400: OpenApiResponse(description="This CA does not issue by names, or not these names."),
            409: OpenApiResponse(description="Direct issuance is off for this CA."),
        },
    )
    @action(detail=True, methods=["post"])
    def issue(self, request, pk=None):
        """Direct issuance (e.g. ACME CAs with it on): a certificate by names alone, without a subscriber."""
        ca = self.get_object()
        data = valid(s.DirectIssueSerializer, request, dotted_errors=True)
        with renamed_errors(lambda field: "names" if field == "sans" else field):
            outcome = issuers.backend_for(ca).issue_by_names(
                ca,
                data["names"],
                actor=self.actor,
                key_algorithm=data["key_algorithm"],
                csr_pem=data.get("csr") or None,
            )
        return outcome_response(request, outcome)

    def perform_destroy(self, instance):
        services.delete_ca(instance, actor=self.actor)

    @extend_schema(
        request=s.CertificateAuthorityImportSerializer, responses={201: s.CertificateAuthoritySerializer}
    )
    @action(detail=False, methods=["post"], url_path="import", url_name="import")
    def import_ca(self, request):
        """Bring an existing CA certificate and its private key under certmgr's management."""
        data = valid(s.CertificateAuthorityImportSerializer, request)
        org = resolve_organization(request, data.get("organization"))
        ca = services.import_ca(
            org,
            name=data["name"],
            certificate_pem=data["certificate"],
            private_key_pem=data["private_key"],
            actor=self.actor,
        )
        return Response(s.CertificateAuthoritySerializer(ca).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: s.CertificateAuthoritySerializer})
    @action(detail=True, methods=["post"])
    def disable(self, request, pk=None):
        """A disabled CA issues nothing (its CRL is still served)."""
        ca = services.set_ca_status(self.get_object(), CertificateAuthority.Status.DISABLED, actor=self.actor)
        return Response(self._read(ca))

    @extend_schema(request=None, responses={200: s.CertificateAuthoritySerializer})
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None):
        ca = services.set_ca_status(self.get_object(), CertificateAuthority.Status.ACTIVE, actor=self.actor)
        return Response(self._read(ca))

    @extend_schema(request=s.ReissueSerializer, responses={202: s.ReissueStartedSerializer})
    @action(detail=True, methods=["post"])
    def reissue(self, request, pk=None):
        """Re-issue every current certificate of this CA in a worker (after a key compromise or a
        misissuance); the result is the audit event ``ca.reissue.finished``."""
        ca = self.get_object()
        data = valid(s.ReissueSerializer, request)
        services.start_reissue(
            ca, actor=self.actor, to_ca=data.get("to_ca"), revoke_reason=data.get("revoke_reason")
        )
        count = services.reissue_candidates(ca).count()
        return Response(
            {"status": "started", "certificates": count, "result": "ca.reissue.finished"},
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(responses={200: s.CrlSerializer(many=True)}, filters=False)
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=CrlPagination)
    def crls(self, request, pk=None):
        """The CA's full and delta CRLs (``delta``, ``base_number``), newest first (the current full CRL is
        rebuilt first when it is near its nextUpdate)."""
        ca = self.get_object()
        _refresh_crl(ca)
        page = self.paginate_queryset(Crl.objects.filter(ca=ca))
        return self.get_paginated_response(s.CrlSerializer(page, many=True).data)


def _refresh_crl(ca: CertificateAuthority) -> None:
    if ca.is_internal and ca.certificate_pem:
        services.current_crl(ca)


# --- policies and subscribers -----------------------------------------------------------------------------
class _SavedViaServiceMixin(TenantViewMixin):
    """Create and update through ``save_function(organization, actor=, instance=, **values)``."""

    save_function: Callable[..., Model]

    def _values(self, data: dict) -> dict:
        return dict(data)

    def create(self, request):
        serializer_class = self.get_serializer_class()
        data = valid(serializer_class, request)
        org = resolve_organization(request, data.pop("organization_id", None))
        obj = type(self).save_function(org, actor=self.actor, **self._values(data))
        return Response(serializer_class(obj).data, status=status.HTTP_201_CREATED)

    def update(self, request, pk=None, partial=False):
        instance = self.get_object()
        serializer_class = self.get_serializer_class()
        data = valid(serializer_class, request, partial=partial)
        org_id = data.pop("organization_id", None)
        if org_id is not None and org_id != instance.organization_id:
            raise ValidationError({"organization": ["A row cannot move to another organization."]})
        obj = type(self).save_function(None, actor=self.actor, instance=instance, **self._values(data))
        return Response(serializer_class(obj).data)

    def partial_update(self, request, pk=None):
        return self.update(request, pk=pk, partial=True)

    def perform_destroy(self, instance):
        services.delete_object(instance, actor=self.actor)


class PolicyViewSet(_SavedViaServiceMixin, viewsets.ModelViewSet):
    """Certificate templates: the names, key algorithms, validity and usages subscribers may ask for.
    Checked on every issuance and renewal."""

    base_queryset = Policy.objects.all()
    serializer_class = s.PolicySerializer
    save_function = staticmethod(services.save_policy)
    filterset_class = PolicyFilter
    search_fields = ["name", "description"]
    ordering_fields = ["id", "name", "created_at"]


class SubscriberViewSet(_SavedViaServiceMixin, viewsets.ModelViewSet):
    """The profiles certificates are issued (and renewed) from."""

    base_queryset = Subscriber.objects.all()
    serializer_class = s.SubscriberSerializer
    save_function = staticmethod(services.save_subscriber)
    filterset_class = SubscriberFilter
    search_fields = ["name", "common_name"]
    ordering_fields = ["id", "name", "created_at", "last_operation_at"]

    def _values(self, data: dict) -> dict:
        values = dict(data)
        if "subject" in values:
            values["subject"] = {k: v for k, v in dict(values["subject"]).items() if v}
        return values

    @extend_schema(request=s.SubscriberIssueSerializer, responses={201: ISSUED, 202: PENDING})
    @action(detail=True, methods=["post"])
    def issue(self, request, pk=None):
        """Issue a certificate: from a key generated here, or from the caller's CSR (no key stored).

        An internal CA signs at once (201, the certificate). An ACME CA answers later: 202 with the order
        a worker runs (a second call while it runs returns the same order)."""
        subscriber = self.get_object()
        data = valid(s.SubscriberIssueSerializer, request)
        outcome = services.issue(subscriber, actor=self.actor, csr_pem=data.get("csr") or None)
        return outcome_response(request, outcome)

    @extend_schema(request=None, responses={201: ISSUED, 202: PENDING})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Retry now: skip the backoff of failed renewals and renew the current certificate at once."""
        return outcome_response(request, services.retry_now(self.get_object(), actor=self.actor))

    @extend_schema(
        responses={200: s.LatestBundleSerializer, 404: OpenApiResponse(description="No active certificate.")}
    )
    @action(detail=True, methods=["get"], url_path="latest-bundle", url_name="latest-bundle")
    def latest_bundle(self, request, pk=None):
        """The subscriber's newest active certificate with its chain; with ``?include_key=true`` its private
        key too (operators and administrators; the export is audited)."""
        subscriber = self.get_object()
        certificate = (
            Certificate.objects.filter(subscriber=subscriber).active().order_by("-not_after", "-id").first()
        )
        if certificate is None:
            raise NotFound("this subscriber has no active certificate")
        body = {
            "id": certificate.pk,
            "serial": certificate.serial,
            "not_after": certificate.not_after,
            "certificate": certificate.certificate_pem,
            "chain": certificate.chain_pem,
        }
        if _wants_key(request):
            _require_export(request, certificate)
            if certificate.private_key:
                body["private_key"] = services.export_private_key(
                    certificate, actor=self.actor, reason=_export_reason(request)
                )
        return _key_bearing(Response(s.LatestBundleSerializer(body).data))


# --- CSRs -------------------------------------------------------------------------------------------------
class CertificateRequestViewSet(
    TenantViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Certificate signing requests: generated here (the key stays in certmgr, encrypted, and goes to the
    certificate issued from it) or uploaded. A CSR's private key is never returned."""

    base_queryset = CertificateRequest.objects.defer("private_key").annotate(has_private_key=HAS_PRIVATE_KEY)
    serializer_class = s.CertificateRequestSerializer
    filterset_class = CertificateRequestFilter
    search_fields = ["name", "common_name"]
    ordering_fields = ["id", "name", "created_at"]

    @extend_schema(
        request=s.CertificateRequestCreateSerializer, responses={201: s.CertificateRequestSerializer}
    )
    def create(self, request):
        data = valid(s.CertificateRequestCreateSerializer, request)
        org = resolve_organization(request, data.get("organization"))
        if data.get("csr"):
            csr = services.upload_csr(org, name=data["name"], csr_pem=data["csr"], actor=self.actor)
        else:
            csr = services.generate_csr(
                org,
                name=data["name"],
                common_name=data.get("common_name", ""),
                sans=data.get("sans", []),
                subject={k: v for k, v in dict(data.get("subject") or {}).items() if v},
                key_algorithm=data["key_algorithm"],
                actor=self.actor,
            )
        return Response(s.CertificateRequestSerializer(csr).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        services.delete_object(instance, actor=self.actor)

    @extend_schema(request=s.CsrIssueSerializer, responses={201: ISSUED, 202: PENDING})
    @action(detail=True, methods=["post"])
    def issue(self, request, pk=None):
        """Issue a certificate for this CSR through a subscriber (its CA, policy and validity apply)."""
        csr = self.get_object()
        data = valid(s.CsrIssueSerializer, request)
        csr = CertificateRequest.objects.get(pk=csr.pk)  # with its key, which goes to the certificate
        return outcome_response(request, services.issue_from_csr(csr, data["subscriber"], actor=self.actor))


# --- certificates -----------------------------------------------------------------------------------------
CERTIFICATE_LIST_FIELDS = (
    "id",
    "organization_id",
    "serial",
    "common_name",
    "sans",
    "subject_dn",
    "issuer_dn",
    "status",
    "source",
    "not_before",
    "not_after",
    "ca_id",
    "ca__name",
    "subscriber_id",
    "subscriber__name",
    "fingerprint_sha256",
    "fingerprint_sha1",
    "key_algorithm",
    "revoked_at",
    "revocation_reason",
    "renewed_from_id",
    "next_renewal_at",
    "deployment_state",
    "deployment_targets",
    "deployment_confirmed",
    "deployed_at",
    "created_at",
)


class CertificateViewSet(
    TenantViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """The inventory: every certificate, issued here, through ACME or imported.

    Private keys leave only through ``private-key``, ``pkcs12`` and ``bundle?include_key=true``: those need
    the operator role and are audited."""

    base_queryset = Certificate.objects.all()
    serializer_class = s.CertificateSerializer
    filterset_class = CertificateFilter
    filter_backends = [DjangoFilterBackend, filters.OrderingFilter]
    ordering_fields = ["not_after", "created_at", "id"]
    ordering = ["-not_after", "-id"]
    action_permissions = {"private_key": Action.EXPORT_KEY, "pkcs12": Action.EXPORT_KEY}

    def get_queryset(self):
        queryset = (
            super()
            .get_queryset()
            .annotate(has_private_key=HAS_PRIVATE_KEY, renewed_by_pk=F("renewed_by__id"))
        )
        queryset = queryset.select_related("ca", "subscriber")
        if self.action == "list":
            return queryset.only(*CERTIFICATE_LIST_FIELDS)
        return queryset.only(*CERTIFICATE_LIST_FIELDS, "certificate_pem", "chain_pem")

    def get_serializer_class(self):
        return s.CertificateSerializer if self.action == "list" else s.CertificateDetailSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "include_key",
                OpenApiTypes.BOOL,
                description="Add the private key (operators; audited). 403 for auditors.",
            ),
            REASON_PARAMETER,
        ],
        responses={200: s.BundleSerializer},
    )
    @action(detail=True, methods=["get"])
    def bundle(self, request, pk=None):
        """The certificate, its chain and both as one PEM bundle (without the key unless asked for)."""
        certificate = self.get_object()
        body = {
            "certificate": certificate.certificate_pem,
            "chain": certificate.chain_pem,
            "bundle": services.bundle_pem(certificate),
        }
        if _wants_key(request):
            _require_export(request, certificate)
            if certificate.has_private_key:
                body["private_key"] = services.export_private_key(
                    certificate, actor=self.actor, reason=_export_reason(request)
                )
        return _key_bearing(Response(s.BundleSerializer(body).data))

    @extend_schema(
        parameters=[REASON_PARAMETER],
        responses={200: s.PrivateKeySerializer, 404: OpenApiResponse(description="certmgr holds no key.")},
    )
    @action(detail=True, methods=["get"], url_path="private-key", url_name="private-key")
    def private_key(self, request, pk=None):
        """The certificate's private key (operators and administrators; audited)."""
        certificate = self.get_object()
        return _key_bearing(
            Response(
                {
                    "private_key": services.export_private_key(
                        certificate, actor=self.actor, reason=_export_reason(request)
                    )
                }
            )
        )

    @extend_schema(
        request=s.Pkcs12Serializer,
        responses={(200, "application/x-pkcs12"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["post"])
    def pkcs12(self, request, pk=None):
        """Certificate, chain and key as a password-protected PKCS#12 file (operators; audited)."""
        certificate = self.get_object()
        data = valid(s.Pkcs12Serializer, request)
        blob = services.export_pkcs12(
            certificate,
            password=data["password"],
            alias=data.get("alias", ""),
            actor=self.actor,
            reason=data.get("reason") or _export_reason(request),
        )
        name = "".join(
            c for c in (certificate.common_name or certificate.serial) if c.isalnum() or c in "-._"
        )
        response = HttpResponse(blob, content_type="application/x-pkcs12")
        response["Content-Disposition"] = f'attachment; filename="{name[:64] or "certificate"}.p12"'
        return _key_bearing(response)

    @extend_schema(request=s.RevokeSerializer, responses={200: s.CertificateDetailSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoke with an RFC 5280 reason; the CA's CRL is rebuilt at once."""
        certificate = self.get_object()
        data = valid(s.RevokeSerializer, request)
        services.revoke(certificate, reason=data["reason"], actor=self.actor)
        return Response(s.CertificateDetailSerializer(self.get_object()).data)

    @extend_schema(
        request=s.CertificateImportSerializer,
        responses={
            201: s.CertificateDetailSerializer,
            400: OpenApiResponse(description="Rejected, with the reason."),
            409: OpenApiResponse(description="Already in the inventory."),
        },
    )
    @action(detail=False, methods=["post"], url_path="import", url_name="import")
    def import_certificate(self, request):
        """Add an existing certificate (with its chain and, optionally, its key) to the inventory."""
        data = valid(s.CertificateImportSerializer, request)
        org = resolve_organization(request, data.get("organization"))
        pem = data["certificate"]
        if data.get("chain"):
            pem = pem.rstrip("\n") + "\n" + data["chain"]
        result = services.import_certificates(
            org, pem, key_pem=data.get("private_key") or None, source_name="api", actor=self.actor
        )
        if result.imported:
            certificate = self.get_queryset().get(pk=result.imported[0].pk)
            return Response(s.CertificateDetailSerializer(certificate).data, status=status.HTTP_201_CREATED)
        if result.duplicates:
            raise Conflict(
                f"this certificate is already in the inventory (SHA-256 {result.duplicates[0]})",
                field="certificate",
            )
        reason = result.rejected[0][1] if result.rejected else "the certificate was not imported"
        field = "private_key" if "private key" in reason else "certificate"
        raise ValidationError({field: [reason]})


def _export_reason(request) -> str:
    """The optional ``reason`` of a key export (query parameter), kept in its audit event."""
    return request.query_params.get("reason", "")[:500]


def _wants_key(request) -> bool:
    return request.query_params.get("include_key", "").lower() in ("1", "true", "yes")


def _require_export(request, certificate: Certificate) -> None:
    if not as_actor(request).can(Action.EXPORT_KEY, certificate.organization_id):
        from rest_framework.exceptions import PermissionDenied

        raise PermissionDenied("your role does not allow exporting private keys")


def _key_bearing(response: HttpResponse) -> HttpResponse:
    """An answer that may carry a private key is kept by no cache (browser, proxy, CDN)."""
    add_never_cache_headers(response)
    return response


# --- the seed API's paths ---------------------------------------------------------------------------------
class SeedRevokeView(TenantViewMixin, GenericAPIView):
    """``POST /api/v1/pki/certificates/<serial>/revoke`` as the seed API had it (serial in hex)."""

    base_queryset = Certificate.objects.all()
    serializer_class = s.SeedRevokeSerializer
    pagination_class = None
    filter_backends = []

    @extend_schema(
        request=s.SeedRevokeSerializer,
        responses={
            200: s.SeedRevokeResultSerializer,
            409: OpenApiResponse(description="Several of your certificates have this serial: use the id."),
        },
        operation_id="pki_certificates_revoke_by_serial",
    )
    def post(self, request, serial: str):
        data = valid(s.SeedRevokeSerializer, request)
        wanted = normalize_serial(serial)
        matches = list(self.get_queryset().filter(serial=wanted)[:2]) if wanted else []
        if not matches:
            raise NotFound("no certificate with this serial number")
        if len(matches) > 1:
            raise Conflict(
                "several certificates have this serial number (issued by different CAs): "
                "revoke by id with POST /api/v1/certificates/<id>/revoke/"
            )
        self.check_object_permissions(request, matches[0])
        certificate = services.revoke(matches[0], reason=data["revocationReason"], actor=self.actor)
        return Response(
            s.SeedRevokeResultSerializer(
                {
                    "message": "Successfully revoked certificate",
                    "serialNumber": certificate.serial,
                    "revokedAt": certificate.revoked_at,
                }
            ).data
        )


class SeedCaCrlsView(TenantViewMixin, GenericAPIView):
    """``GET /api/v1/pki/ca/<id>/crls``: the CA's current full CRL and its current delta CRL (each rebuilt
    first when near its nextUpdate), full first, each with ``"delta"`` and the public URL serving it. A
    relying party checks both (``openssl verify -crl_check -use_deltas -CRLfile full -CRLfile delta``)."""

    base_queryset = CertificateAuthority.objects.only(*CA_READ_FIELDS)
    serializer_class = s.SeedCrlSerializer
    pagination_class = None
    filter_backends = []

    @extend_schema(responses={200: s.SeedCrlSerializer(many=True)}, operation_id="pki_ca_crls_list")
    def get(self, request, pk: int):
        ca = self.get_object()
        if not (ca.is_internal and ca.certificate_pem):
            return Response([])
        crls = [services.current_crl(ca)]
        if ca.delta_crl_enabled:
            crls.append(services.current_delta_crl(ca))
        return Response(s.SeedCrlSerializer([s.seed_crl(crl, ca) for crl in crls], many=True).data)
