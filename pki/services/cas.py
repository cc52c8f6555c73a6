"""Certificate authorities: create (roots and intermediates, keys made here), import, enable/disable,
rename, delete; and each CA's signing material, parsed and decrypted once per worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from cryptography import x509 as cx509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict
from certmgr.models import Organization
from certmgr.permissions import Action
from certmgr.services import audited_delete, require
from pki import issuers, x509
from pki.models import (
    CertificateAuthority,
)
from pki.services.common import (
    CaUnavailable,
    check_unique_ca_name,
    clean_name,
    subject_args,
    x509_error,
)


def crl_url(ca: CertificateAuthority) -> str:
    base: str = settings.CERTMGR_BASE_URL
    return base + reverse("pki-crl", args=[ca.pk, "crl"])


def delta_crl_url(ca: CertificateAuthority) -> str:
    """The CA's current delta CRL (DER; ``.pem`` beside it): the Freshest CRL of its certificates and CRLs."""
    base: str = settings.CERTMGR_BASE_URL
    return base + reverse("pki-delta-crl", args=[ca.pk, "crl"])


def _delta_crl_url(ca: CertificateAuthority) -> str | None:
    return delta_crl_url(ca) if ca.delta_crl_enabled else None


def aia_url(ca: CertificateAuthority) -> str:
    base: str = settings.CERTMGR_BASE_URL
    return base + reverse("pki-ca-cert", args=[ca.pk, "crt"])


def ocsp_url(ca: CertificateAuthority) -> str:
    """The CA's OCSP responder (pki.services.ocsp), whether it is on or not."""
    base: str = settings.CERTMGR_BASE_URL
    return base + reverse("pki-ocsp", kwargs={"pk": ca.pk, "encoded": ""})


def _ocsp_url(ca: CertificateAuthority) -> str | None:
    return ocsp_url(ca) if ca.ocsp_enabled else None


# --- certificate authorities ----------------------------------------------------------------------------
def create_internal_ca(
    organization: Organization,
    *,
    name: str,
    kind: str,
    subject: Mapping[str, str | None],
    key_algorithm: str = "ec-p256",
    validity_days: int | None = None,
    max_path_length: int | None = None,
    parent: CertificateAuthority | None = None,
    ocsp_enabled: bool = False,
    delta_crl_enabled: bool = True,
    actor: Actor,
) -> CertificateAuthority:
    """A new internal root or intermediate; its key is made here and never leaves.

    Without ``validity_days`` a root gets 10 years and an intermediate 5, cut to end before its parent.
    """
    actor = as_actor(actor)
    with audit.failures(actor, "ca.create", organization, name=name, kind=kind):
        require(actor, Action.MANAGE, organization.pk)
        if kind not in (
            CertificateAuthority.Kind.INTERNAL_ROOT,
            CertificateAuthority.Kind.INTERNAL_INTERMEDIATE,
        ):
            raise ValidationError({"kind": ["Choose internal-root or internal-intermediate."]})
        if kind == CertificateAuthority.Kind.INTERNAL_INTERMEDIATE:
            if parent is None:
                raise ValidationError({"parent": ["An intermediate CA needs a parent CA."]})
            if parent.organization_id != organization.pk or not parent.is_internal:
                raise ValidationError(
                    {"parent": ["The parent must be an internal CA of the same organization."]}
                )
            if parent.status != CertificateAuthority.Status.ACTIVE:
                raise CaUnavailable(f"parent CA {parent.name!r} is disabled", field="parent")
        elif parent is not None:
            raise ValidationError({"parent": ["A root CA has no parent."]})
        if validity_days is None:
            validity_days = DEFAULT_ROOT_DAYS if parent is None else _default_intermediate_days(parent)
        if max_path_length is None and parent is not None and parent.max_path_length is not None:
            # The longest path the parent allows; a parent with path length 0 is refused while signing.
            max_path_length = max(parent.max_path_length - 1, 0)
        if not 1 <= validity_days <= 36500:
            raise ValidationError({"validity_days": ["Enter 1 to 36500 days."]})
        try:
            subj = x509.Subject(**subject_args(subject))
            key = x509.generate_key(x509.KeyAlgorithm(key_algorithm))
        except (TypeError, ValueError) as exc:
            raise ValidationError({"subject": [str(exc)]}) from exc
        with transaction.atomic():
            ca = CertificateAuthority(
                organization=organization,
                name=clean_name(name),
                kind=kind,
                parent=parent,
                subject=subject,
                key_algorithm=key_algorithm,
                max_path_length=max_path_length,
                ocsp_enabled=ocsp_enabled,
                delta_crl_enabled=delta_crl_enabled,
            )
            check_unique_ca_name(ca)
            ca.save()  # the id goes into the CRL and AIA URLs
            try:
                if parent is None:
                    cert = x509.build_ca_certificate(
                        subject=subj,
                        key=key,
                        validity_days=validity_days,
                        max_path_length=max_path_length,
                        crl_url=None,
                        aia_url=None,
                    )
                else:
                    material = ca_material(parent)
                    cert = x509.build_ca_certificate(
                        subject=subj,
                        key=key,
                        issuer_cert=material.certificate,
                        issuer_key=material.key,
                        validity_days=validity_days,
                        max_path_length=max_path_length,
                        crl_url=crl_url(parent),
                        aia_url=aia_url(parent),
                        ocsp_url=_ocsp_url(parent),
                        delta_crl_url=_delta_crl_url(parent),
                    )
            except x509.X509Error as exc:
                raise x509_error(exc) from exc
            _store_ca_certificate(ca, cert, key)
            audit.record(
                actor,
                "ca.create",
                ca,
                kind=kind,
                key_algorithm=key_algorithm,
                serial=ca.serial,
                parent=parent.pk if parent else None,
                ocsp_enabled=ocsp_enabled,
                delta_crl_enabled=delta_crl_enabled,
            )
    return ca


DEFAULT_ROOT_DAYS, DEFAULT_INTERMEDIATE_DAYS = 3650, 1825


def _default_intermediate_days(parent: CertificateAuthority) -> int:
    left = (parent.not_after - timezone.now()).days - 1 if parent.not_after else DEFAULT_INTERMEDIATE_DAYS
    return max(1, min(DEFAULT_INTERMEDIATE_DAYS, left))


def import_ca(
    organization: Organization, *, name: str, certificate_pem: str, private_key_pem: str, actor: Actor
) -> CertificateAuthority:
    """Bring an existing CA (certificate + key) under certmgr's management."""
    actor = as_actor(actor)
    with audit.failures(actor, "ca.import", organization, name=name):
        require(actor, Action.MANAGE, organization.pk)
        try:
            certs = x509.load_pem_certificates(certificate_pem)
        except x509.X509Error as exc:
            raise x509_error(exc, "certificate") from exc
        try:
            key = x509.load_private_key(private_key_pem)
        except x509.X509Error as exc:
            raise x509_error(exc, "private_key") from exc
        cert = certs[0]
        summary = x509.cert_summary(cert)
        try:
            subject = {k: v for k, v in asdict(x509.Subject.from_name(cert.subject)).items() if v}
        except x509.X509Error as exc:
            raise x509_error(exc, "certificate") from exc
        if not summary.is_ca:
            raise ValidationError(
                {"certificate": ["This certificate is not a CA (basic constraints ca=false)."]}
            )
        if not x509.matches_key(cert, key):
            raise ValidationError({"private_key": ["The private key does not belong to this certificate."]})
        self_signed = summary.self_signed
        # An intermediate hangs under the CA that signed it when certmgr manages that one; otherwise the
        # PEM must carry its issuers, kept to complete the chains it issues.
        parent = None if self_signed else managing_ca(organization, cert)
        issuers = [] if self_signed or parent else x509.order_chain(cert, certs[1:])
        if not self_signed and parent is None and not issuers:
            raise ValidationError(
                {
                    "certificate": [
                        "This is an intermediate CA: import its parent CA first, or include the issuing CA "
                        "certificates after it in the PEM."
                    ]
                }
            )
        if summary.key_algorithm is None:
            raise ValidationError({"private_key": [f"Unsupported CA key: {summary.key_description}."]})
        with transaction.atomic():
            ca = CertificateAuthority(
                organization=organization,
                name=clean_name(name),
                imported=True,
                kind=CertificateAuthority.Kind.INTERNAL_ROOT
                if self_signed
                else CertificateAuthority.Kind.INTERNAL_INTERMEDIATE,
                parent=parent,
                chain_pem="".join(x509.to_pem(c) for c in issuers),
                max_path_length=summary.path_length,
                subject=subject,
                key_algorithm=summary.key_algorithm,
            )
            check_unique_ca_name(ca)
            ca.save()
            _store_ca_certificate(ca, cert, key)
            audit.record(actor, "ca.import", ca, serial=ca.serial, subject=ca.subject_dn)
    return ca


def set_ca_status(ca: CertificateAuthority, status: str, *, actor: Actor) -> CertificateAuthority:
    actor = as_actor(actor)
    action = "ca.enable" if status == CertificateAuthority.Status.ACTIVE else "ca.disable"
    with audit.failures(actor, action, ca):
        require(actor, Action.MANAGE, ca.organization_id)
        with transaction.atomic():
            ca = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
            ca.status = status
            ca.updated_at = timezone.now()
            ca.save(update_fields=["status", "updated_at"])
            audit.record(actor, action, ca)
    return ca


def rename_ca(ca: CertificateAuthority, name: str, *, actor: Actor) -> CertificateAuthority:
    actor = as_actor(actor)
    with audit.failures(actor, "ca.update", ca, name=name):
        require(actor, Action.MANAGE, ca.organization_id)
        name = clean_name(name)
        with transaction.atomic():
            locked = CertificateAuthority.objects.select_for_update().defer("private_key").get(pk=ca.pk)
            if set_name(locked, name):
                locked.save(update_fields=["name", "updated_at"])
                audit.record(actor, "ca.update", locked, changed=["name"])
    return locked


def set_name(locked: CertificateAuthority, name: str) -> bool:
    """Give a CA (its row locked by the caller's transaction) a new, unused name; True if it changed.
    The caller saves the row and audits the change (with whatever else it changed)."""
    taken = CertificateAuthority.objects.filter(organization_id=locked.organization_id, name=name)
    if taken.exclude(pk=locked.pk).exists():
        raise Conflict(f"a CA named {name!r} already exists in this organization", field="name")
    if locked.name == name:
        return False
    locked.name = name
    locked.updated_at = timezone.now()
    return True


def delete_ca(ca: CertificateAuthority, *, actor: Actor) -> None:
    def prepare(locked: CertificateAuthority) -> None:
        if locked.certificates.exists() or locked.children.exists() or locked.subscribers.exists():
            raise Conflict("this CA has certificates, subordinate CAs or subscribers: disable it instead")
        blockers = issuers.backend_for(locked).delete_blockers(locked)
        if blockers:
            raise Conflict(f"{'; '.join(blockers)}: disable the CA instead")
        locked.crls.all().delete()

    audited_delete(ca, actor=actor, action="ca.delete", lock=True, prepare=prepare)


def _store_ca_certificate(ca: CertificateAuthority, cert: cx509.Certificate, key: x509.PrivateKey) -> None:
    summary = x509.cert_summary(cert)
    ca.certificate_pem = x509.to_pem(cert)
    ca.private_key = x509.private_key_to_pem(key)
    ca.serial = summary.serial
    ca.subject_dn = summary.subject[:500]
    ca.not_before, ca.not_after = summary.not_before, summary.not_after
    ca.save()


@dataclass(frozen=True)
class CaMaterial:
    certificate: cx509.Certificate
    key: x509.PrivateKey
    chain: tuple[cx509.Certificate, ...]  # the CA's certificate and its issuers, up to the root
    chain_pem: str  # the same, as the PEM every certificate it signs carries


# A CA's certificate, key and chain never change once made (a new CA is a new row), so each worker parses and
# decrypts them once instead of on every signature. Keyed by (id, serial) so a reused id cannot hit.
_MATERIAL: dict[tuple[int, str], CaMaterial] = {}


def ca_material(ca: CertificateAuthority) -> CaMaterial:
    cached = _MATERIAL.get((ca.pk, ca.serial))
    if cached is None:
        # only the key column: the caller's instance may have it deferred
        key_pem = CertificateAuthority.objects.only("private_key").get(pk=ca.pk).private_key
        chain = tuple(ca_chain(ca))
        cached = CaMaterial(
            certificate=cx509.load_pem_x509_certificate(ca.certificate_pem.encode()),
            key=x509.load_private_key(key_pem),
            chain=chain,
            chain_pem="".join(x509.to_pem(c) for c in chain),
        )
        if len(_MATERIAL) > 256:
            _MATERIAL.clear()
        _MATERIAL[(ca.pk, ca.serial)] = cached
    return cached


def ca_chain(ca: CertificateAuthority) -> list[cx509.Certificate]:
    """The CA's certificate followed by its issuers up to the root."""
    chain, current = [], ca
    while True:
        chain.append(cx509.load_pem_x509_certificate(current.certificate_pem.encode()))
        if current.parent_id is None:
            if current.chain_pem:
                chain.extend(x509.load_pem_certificates(current.chain_pem))
            return chain
        # Parents without their keys: building a chain needs certificates only.
        current = CertificateAuthority.objects.defer("private_key").get(pk=current.parent_id)


def managing_ca(organization: Organization, leaf: cx509.Certificate) -> CertificateAuthority | None:
    """The organization's internal CA whose key signed ``leaf``, if any."""
    for ca in (
        CertificateAuthority.objects.filter(organization=organization).internal().exclude(certificate_pem="")
    ):
        issuer = cx509.load_pem_x509_certificate(ca.certificate_pem.encode())
        if leaf.issuer == issuer.subject and x509.order_chain(leaf, [issuer]):
            return ca
    return None
