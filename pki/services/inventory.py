"""The inventory's imports and exports: existing certificates in, certificates and keys out (audited)."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field

from cryptography import x509 as cx509
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import NotFound
from certmgr.models import Organization
from certmgr.permissions import Action
from certmgr.services import require
from pki import x509
from pki.models import (
    Certificate,
)
from pki.services import issuance
from pki.services.cas import managing_ca


# --- import and export -----------------------------------------------------------------------------------
@dataclass
class ImportResult:
    imported: list[Certificate] = dataclass_field(default_factory=list)
    duplicates: list[str] = dataclass_field(default_factory=list)  # fingerprints already in the inventory
    rejected: list[tuple[str, str]] = dataclass_field(default_factory=list)  # (source, reason)


def import_certificates(
    organization: Organization,
    pem_text: str,
    *,
    key_pem: str | None = None,
    source_name: str = "upload",
    each: bool = False,
    actor: Actor,
) -> ImportResult:
    """Add existing certificates to the inventory.

    ``pem_text`` holds one or more certificates; the first that is not a CA (or the first) is the leaf and the
    rest its chain. A ``key_pem`` is kept (encrypted) only if it matches the leaf. Certificates of a CA this
    organization manages are linked to it.

    A bundle of CA certificates that are not one chain (a trust store such as
    ``/etc/ssl/certs/ca-certificates.crt``), or any text with ``each``, is imported one certificate at a
    time: each is its own entry (no chain, no key), and a rejected one names its position and subject.
    """
    actor = as_actor(actor)
    result = ImportResult()
    with audit.failures(actor, "certificate.import", organization, source=source_name[:200]):
        require(actor, Action.MANAGE, organization.pk)
        try:
            certs = x509.load_pem_certificates(pem_text)
        except x509.X509Error as exc:
            return _reject(result, organization, source_name, str(exc), actor)
        leaf = next((c for c in certs if not x509.cert_summary(c).is_ca), certs[0])
        others = [c for c in certs if c is not leaf]
        chain = x509.order_chain(leaf, others)
        if len(certs) > 1 and not key_pem and (each or _unrelated_cas(certs, leaf, chain)):
            return _import_each(organization, certs, source_name, actor)
        if each and key_pem:
            return _reject(
                result, organization, source_name, "a private key cannot go with one-by-one import", actor
            )
        if len(chain) < len(others):
            stray = [str(x509.cert_summary(c).subject) for c in others if c not in chain]
            return _reject(
                result,
                organization,
                source_name,
                f"the chain does not link to the certificate: {'; '.join(stray)[:500]}",
                actor,
            )
        key = None
        if key_pem:
            try:
                key = x509.load_private_key(key_pem)
            except x509.X509Error as exc:
                return _reject(result, organization, source_name, f"private key: {exc}", actor)
            if not x509.matches_key(leaf, key):
                return _reject(
                    result,
                    organization,
                    source_name,
                    "the private key does not belong to the certificate",
                    actor,
                )
        summary = x509.cert_summary(leaf)
        if summary.key_algorithm is None:
            return _reject(
                result, organization, source_name, f"unsupported key: {summary.key_description}", actor
            )
        sha256 = summary.sha256
        if Certificate.objects.filter(organization=organization, fingerprint_sha256=sha256).exists():
            result.duplicates.append(sha256)
            return result
        ca = managing_ca(organization, leaf)
        with transaction.atomic():
            try:
                with transaction.atomic():  # a savepoint: the same certificate imported concurrently
                    certificate = issuance.store_certificate(
                        organization.pk, leaf, chain, key, source=Certificate.Source.IMPORTED, ca=ca
                    )
            except IntegrityError:
                result.duplicates.append(sha256)
                return result
            if certificate.not_after <= timezone.now():
                Certificate.objects.filter(pk=certificate.pk).update(status=Certificate.Status.EXPIRED)
                certificate.status = Certificate.Status.EXPIRED
            audit.record(
                actor,
                "certificate.import",
                certificate,
                source=source_name[:200],
                serial=certificate.serial,
                key_stored=key is not None,
                ca=ca.pk if ca else None,
            )
        result.imported.append(certificate)
    return result


def _unrelated_cas(
    certs: list[cx509.Certificate], leaf: cx509.Certificate, chain: list[cx509.Certificate]
) -> bool:
    """A trust store rather than a chain: every certificate is a CA and they do not all link to the first."""
    return len(chain) < len(certs) - 1 and all(x509.cert_summary(c).is_ca for c in certs)


def _import_each(
    organization: Organization, certs: list[cx509.Certificate], source_name: str, actor: Actor
) -> ImportResult:
    result = ImportResult()
    for number, cert in enumerate(certs, start=1):
        subject = x509.cert_summary(cert).subject
        one = import_certificates(
            organization, x509.to_pem(cert), source_name=f"{source_name} #{number} ({subject})", actor=actor
        )
        result.imported += one.imported
        result.duplicates += one.duplicates
        result.rejected += one.rejected
    return result


def _reject(
    result: ImportResult, organization: Organization, source_name: str, reason: str, actor: Actor
) -> ImportResult:
    """A rejected import is an audited failure too."""
    result.rejected.append((source_name, reason))
    with transaction.atomic():
        audit.record(
            actor,
            "certificate.import",
            organization,
            outcome="failure",
            error=reason,
            source=source_name[:200],
        )
    return result


EXPORT_REASON_MAX = 500


def _export_reason(reason: str | None) -> str:
    """Why the key leaves certmgr, as the audit event keeps it (one line, capped)."""
    text = " ".join(str(reason or "").split())
    if "\x00" in text:
        raise ValidationError({"reason": ["The reason contains a NUL character."]})
    return text[:EXPORT_REASON_MAX]


def export_private_key(certificate: Certificate, *, actor: Actor, reason: str = "") -> str:
    """The certificate's private key as PEM. Needs the operator role; always audited, with the reason
    the exporter gave."""
    actor = as_actor(actor)
    reason = _export_reason(reason)
    with audit.failures(actor, "certificate.export_key", certificate, reason=reason):
        require(actor, Action.EXPORT_KEY, certificate.organization_id)
        if not certificate.private_key:
            raise NotFound("certmgr holds no private key for this certificate (it was issued from a CSR)")
        with transaction.atomic():
            audit.record(
                actor,
                "certificate.export_key",
                certificate,
                serial=certificate.serial,
                format="pem",
                reason=reason,
            )
        return certificate.private_key


def export_pkcs12(
    certificate: Certificate, *, password: str, alias: str = "", actor: Actor, reason: str = ""
) -> bytes:
    actor = as_actor(actor)
    reason = _export_reason(reason)
    with audit.failures(actor, "certificate.export_key", certificate, format="pkcs12", reason=reason):
        require(actor, Action.EXPORT_KEY, certificate.organization_id)
        if len(password or "") < PKCS12_MIN_PASSWORD:
            raise ValidationError({"password": [f"Use at least {PKCS12_MIN_PASSWORD} characters."]})
        if not certificate.private_key:
            raise NotFound("certmgr holds no private key for this certificate (it was issued from a CSR)")
        leaf = cx509.load_pem_x509_certificate(certificate.certificate_pem.encode())
        chain = x509.load_pem_certificates(certificate.chain_pem) if certificate.chain_pem else []
        data = x509.pkcs12(
            cert=leaf,
            key=x509.load_private_key(certificate.private_key),
            chain=chain,
            password=password,
            alias=(alias or certificate.common_name or certificate.serial)[:64],
        )
        with transaction.atomic():
            audit.record(
                actor,
                "certificate.export_key",
                certificate,
                serial=certificate.serial,
                format="pkcs12",
                reason=reason,
            )
        return data


PKCS12_MIN_PASSWORD = 12


def bundle_pem(
    certificate: Certificate, *, with_key: bool = False, actor: Actor | None = None, reason: str = ""
) -> str:
    """Certificate + chain (+ the key, via export_private_key, when asked)."""
    parts = [certificate.certificate_pem, certificate.chain_pem]
    if with_key:
        if actor is None:
            raise TypeError("exporting the key needs the actor (the export is audited)")
        parts.append(export_private_key(certificate, actor=actor, reason=reason))
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts if p)
