"""Public, unauthenticated endpoints relying parties fetch: CRLs (CDP) and CA certificates (AIA)."""

from __future__ import annotations

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from pki import services
from pki.models import CertificateAuthority


def _internal_ca(pk: int) -> CertificateAuthority:
    ca = get_object_or_404(CertificateAuthority.objects.internal(), pk=pk)
    if not ca.certificate_pem:
        raise Http404
    return ca


@require_GET
def crl(request, pk: int, fmt: str):
    """The CA's current CRL (rebuilt first if it is at or past its nextUpdate). ``fmt``: crl (DER) or pem."""
    current = services.current_crl(_internal_ca(pk))
    der = bytes(current.der)
    response = HttpResponse(content_type="application/pkix-crl")
    if fmt == "pem":
        response = HttpResponse(content_type="application/x-pem-file")
        der = cx509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
    response.write(der)
    response["Cache-Control"] = "public, max-age=300"
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
