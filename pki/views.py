"""Public, unauthenticated endpoints relying parties fetch: CRLs (CDP), CA certificates (AIA caIssuers) and
OCSP (AIA OCSP)."""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from pki import services
from pki.models import CertificateAuthority, Crl
from pki.services import ocsp as ocsp_service


def _internal_ca(pk: int) -> CertificateAuthority:
    ca = get_object_or_404(CertificateAuthority.objects.internal(), pk=pk)
    if not ca.certificate_pem:
        raise Http404
    return ca


@require_GET
def crl(request, pk: int, fmt: str):
    """The CA's current full CRL (rebuilt first if it is at or near its nextUpdate), from storage. ``fmt``:
    crl (DER) or pem."""
    return _serve_crl(request, services.current_crl(_internal_ca(pk)), fmt)


@require_GET
def delta_crl(request, pk: int, fmt: str):
    """The CA's current delta CRL (the Freshest CRL of its certificates and full CRLs), like ``crl``."""
    return _serve_crl(request, services.current_delta_crl(_internal_ca(pk)), fmt)


def _serve_crl(request, current: Crl, fmt: str) -> HttpResponse:
    """A stored CRL. A cache may keep it ``CERTMGR_CRL_MAX_AGE_SECONDS``, never past its nextUpdate; the ETag
    (CA, CRL number, format: full and delta CRLs share the numbers) answers a revalidation with 304."""
    etag = f'"crl-{current.ca_id}-{current.number}-{fmt}"'
    remaining = int((current.next_update - timezone.now()).total_seconds())
    max_age = max(0, min(settings.CERTMGR_CRL_MAX_AGE_SECONDS, remaining))
    if etag in (request.headers.get("If-None-Match") or ""):
        response = HttpResponse(status=304)
    else:
        der = bytes(current.der)
        if fmt == "pem":
            response = HttpResponse(content_type="application/x-pem-file")
            response.write(cx509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM))
        else:
            response = HttpResponse(der, content_type="application/pkix-crl")
    response["ETag"] = etag
    response["Cache-Control"] = f"public, max-age={max_age}"
    response["Last-Modified"] = http_date(current.this_update.timestamp())
    response["Expires"] = http_date(current.next_update.timestamp())
    return response


@require_GET
def ca_certificate(request, pk: int, fmt: str):
    """The CA certificate, DER at .crt (what AIA caIssuers points to), PEM at .pem."""
    ca = _internal_ca(pk)
    if fmt == "pem":
        return HttpResponse(ca.certificate_pem, content_type="application/x-pem-file")
    der = cx509.load_pem_x509_certificate(ca.certificate_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    return HttpResponse(der, content_type="application/pkix-cert")


@csrf_exempt
@require_http_methods(["GET", "POST"])
def ocsp_responder(request, pk: int, encoded: str):
    """RFC 6960 OCSP: POST the DER request (application/ocsp-request) to /ocsp/<ca>/, or GET it base64 after
    that path (RFC 5019 §5). Stored answers carry RFC 5019 §6 caching headers (max-age never past their
    nextUpdate; the ETag is the response's hash); garbage gets malformedRequest."""
    if request.method == "POST":
        der = request.body if not encoded else b""
    else:
        try:
            der = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            der = b""
    answer = ocsp_service.answer(int(pk), der)
    ocsp_service.count_answer(int(pk), answer)
    response = HttpResponse(answer.der, content_type="application/ocsp-response")
    if answer.this_update is None or answer.next_update is None:
        response["Cache-Control"] = "no-store"
        return response
    etag = f'"{hashlib.sha256(answer.der).hexdigest()[:32]}"'
    if request.method == "GET" and etag in (request.headers.get("If-None-Match") or ""):
        response = HttpResponse(status=304)
    max_age = max(0, int((answer.next_update - timezone.now()).total_seconds()))
    response["Cache-Control"] = f"max-age={max_age}, public, no-transform, must-revalidate"
    response["Expires"] = http_date(answer.next_update.timestamp())
    response["Last-Modified"] = http_date(answer.this_update.timestamp())
    response["ETag"] = etag
    return response
