"""Certificate signing requests: generated here (the key stays encrypted) or uploaded."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography import x509 as cx509
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict
from certmgr.models import Organization
from certmgr.permissions import Action
from certmgr.services import require
from pki import x509
from pki.choices import CsrSource
from pki.issuers import Outcome
from pki.models import (
    CertificateRequest,
    Subscriber,
)
from pki.services.common import (
    clean_name,
    x509_error,
)
from pki.services.issuance import issue


# --- CSRs ------------------------------------------------------------------------------------------------
def generate_csr(
    organization: Organization,
    *,
    name: str,
    common_name: str,
    sans: list[str],
    subject: Mapping[str, str | None] | None = None,
    key_algorithm: str = "ec-p256",
    actor: Actor,
) -> CertificateRequest:
    """Make a key pair and a CSR here; the key stays encrypted in certmgr."""
    actor = as_actor(actor)
    with audit.failures(actor, "csr.generate", organization, name=name):
        require(actor, Action.MANAGE, organization.pk)
        try:
            x509.parse_sans(list(sans))
        except x509.X509Error as exc:
            raise x509_error(exc, "sans") from exc
        try:
            subj = x509.Subject(
                common_name=common_name or None, **{k: v for k, v in (subject or {}).items() if v}
            )
            key = x509.generate_key(x509.KeyAlgorithm(key_algorithm))
            csr = x509.build_csr(key, subj, list(sans))
        except (TypeError, ValueError) as exc:
            raise ValidationError({"subject": [str(exc)]}) from exc
        return _store_csr(
            organization, name, csr, key, CertificateRequest.Source.GENERATED, actor, "csr.generate"
        )


def upload_csr(organization: Organization, *, name: str, csr_pem: str, actor: Actor) -> CertificateRequest:
    actor = as_actor(actor)
    with audit.failures(actor, "csr.upload", organization, name=name):
        require(actor, Action.MANAGE, organization.pk)
        try:
            csr = x509.load_csr(csr_pem)
        except x509.X509Error as exc:
            raise x509_error(exc, "csr") from exc
        return _store_csr(
            organization, name, csr, None, CertificateRequest.Source.UPLOADED, actor, "csr.upload"
        )


def _store_csr(
    organization: Organization,
    name: str,
    csr: cx509.CertificateSigningRequest,
    key: x509.PrivateKey | None,
    source: CsrSource,
    actor: Actor,
    action: str,
) -> CertificateRequest:
    try:
        info = x509.csr_info(csr)
    except x509.X509Error as exc:
        raise x509_error(exc, "csr") from exc
    request = CertificateRequest(
        organization=organization,
        name=clean_name(name),
        source=source,
        csr_pem=x509.to_pem(csr),
        private_key=x509.private_key_to_pem(key) if key is not None else "",
        common_name=(info.subject.common_name or "")[:255],
        sans=list(info.sans),
        subject_dn=str(info.subject)[:1000],
        key_algorithm=str(info.key_algorithm),
    )
    try:
        with transaction.atomic():
            request.save()
            audit.record(actor, action, request, key_algorithm=request.key_algorithm)
    except IntegrityError as exc:
        raise Conflict(f"a CSR named {request.name!r} already exists", field="name") from exc
    return request


def issue_from_csr(request: CertificateRequest, subscriber: Subscriber, *, actor: Actor) -> Outcome:
    """Issue from a stored CSR; a CSR generated here passes its key on to the certificate."""
    if request.organization_id != subscriber.organization_id:
        raise ValidationError({"subscriber": ["Unknown subscriber."]})
    return issue(subscriber, actor=actor, csr_pem=request.csr_pem, csr_key_pem=request.private_key or None)
