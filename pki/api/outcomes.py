"""How the API answers an issuance: 201 with the certificate, or 202 with the pending handle to poll."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.response import Response

from pki.api.serializers import CertificateDetailSerializer
from pki.issuers import Outcome, Pending


class PendingIssuanceSerializer(serializers.Serializer):
    """Issuance goes on at the CA's issuer (e.g. an ACME order a worker runs): poll ``status_url``. The
    issuer adds the id of what runs under its own name (an ACME order's as ``order``)."""

    status = serializers.CharField(allow_blank=True, help_text="The issuer's own status word.")
    step = serializers.CharField(help_text="Where the work is; see the resource at status_url.")
    status_url = serializers.SerializerMethodField(help_text="GET it to follow the issuance.")

    def get_status_url(self, pending: Pending) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(pending.api_url) if request is not None else pending.api_url

    def to_representation(self, instance: Pending) -> dict:
        body = super().to_representation(instance)
        # The issuer's own fields (an ACME order's id as "order"), for clients of that issuer.
        return {**instance.api_fields, **body}


ISSUED = OpenApiResponse(CertificateDetailSerializer, description="Issued now (internal CA, self-signed).")
PENDING = OpenApiResponse(
    PendingIssuanceSerializer, description="Under way at the CA's issuer: poll status_url."
)


def outcome_response(request, outcome: Outcome) -> Response:
    if outcome.certificate is not None:
        return Response(CertificateDetailSerializer(outcome.certificate).data, status=status.HTTP_201_CREATED)
    body = PendingIssuanceSerializer(outcome, context={"request": request}).data
    return Response(body, status=status.HTTP_202_ACCEPTED)
