"""State changes of the PKI: CAs, policies, subscribers, issuance, revocation, CRLs.

Nothing signs, issues or revokes anywhere else. Each function checks the actor's role, changes rows in one
transaction with its audit event, and raises ServiceError / ValidationError / PolicyViolation on refusal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import get_script_prefix, reverse
from django.utils import timezone

from certmgr import audit
from certmgr.actors import as_actor
from certmgr.errors import Conflict, NotFound, PermissionDenied, ServiceError
from certmgr.models import AuditEvent, Organization
from certmgr.permissions import Action
from certmgr.services import require
from pki import alerts, renewal, x509
from pki import policy as policy_rules
from pki.models import (
    Certificate,
    CertificateAuthority,
    CertificateRequest,
    Crl,
    Policy,
    RevocationReason,
    Subscriber,
)

if TYPE_CHECKING:
    from acmeca.models import AcmeOrder

_DOTTED_OID = re.compile(r"^[0-2](\.\d+)+$")


class CaUnavailable(ServiceError):
    status = 409
    code = "ca_unavailable"


class PolicyRefused(ServiceError):
    status = 400
    code = "policy_violation"


class AlreadyRevoked(ServiceError):
    status = 409
    code = "already_revoked"


def _x509_error(exc: x509.X509Error, field: str | None = None) -> ValidationError:
    return ValidationError({field or "non_field_errors": [str(exc)]})


def crl_url(ca: CertificateAuthority) -> str:
    return settings.CERTMGR_BASE_URL + reverse("pki-crl", args=[ca.pk, "crl"])


def aia_url(ca: CertificateAuthority) -> str:
    return settings.CERTMGR_BASE_URL + reverse("pki-ca-cert", args=[ca.pk, "crt"])


# --- certificate authorities ----------------------------------------------------------------------------
def create_internal_ca(
    organization: Organization,
    *,
    name: str,
    kind: str,
    subject: dict,
    key_algorithm: str = "ec-p256",
    validity_days: int | None = None,
    max_path_length: int | None = None,
    parent: CertificateAuthority | None = None,
    actor: Any,
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
            subj = x509.Subject(**_subject_args(subject))
            key = x509.generate_key(x509.KeyAlgorithm(key_algorithm))
        except (TypeError, ValueError) as exc:
            raise ValidationError({"subject": [str(exc)]}) from exc
        with transaction.atomic():
            ca = CertificateAuthority(
                organization=organization,
                name=_name(name),
                kind=kind,
                parent=parent,
                subject=subject,
                key_algorithm=key_algorithm,
                max_path_length=max_path_length,
            )
            _unique_ca_name(ca)
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
                    )
            except x509.X509Error as exc:
                raise _x509_error(exc) from exc
            _store_ca_certificate(ca, cert, key)
            audit.record(
                actor,
                "ca.create",
                ca,
                kind=kind,
                key_algorithm=key_algorithm,
                serial=ca.serial,
                parent=parent.pk if parent else None,
            )
    return ca


DEFAULT_ROOT_DAYS, DEFAULT_INTERMEDIATE_DAYS = 3650, 1825


def _default_intermediate_days(parent: CertificateAuthority) -> int:
    left = (parent.not_after - timezone.now()).days - 1 if parent.not_after else DEFAULT_INTERMEDIATE_DAYS
    return max(1, min(DEFAULT_INTERMEDIATE_DAYS, left))


def import_ca(
    organization: Organization, *, name: str, certificate_pem: str, private_key_pem: str, actor: Any
) -> CertificateAuthority:
    """Bring an existing CA (certificate + key) under certmgr's management."""
    actor = as_actor(actor)
    with audit.failures(actor, "ca.import", organization, name=name):
        require(actor, Action.MANAGE, organization.pk)
        try:
            certs = x509.load_pem_certificates(certificate_pem)
        except x509.X509Error as exc:
            raise _x509_error(exc, "certificate") from exc
        try:
            key = x509.load_private_key(private_key_pem)
        except x509.X509Error as exc:
            raise _x509_error(exc, "private_key") from exc
        cert = certs[0]
        summary = x509.cert_summary(cert)
        try:
            subject = {k: v for k, v in asdict(x509.Subject.from_name(cert.subject)).items() if v}
        except x509.X509Error as exc:
            raise _x509_error(exc, "certificate") from exc
        if not summary.is_ca:
            raise ValidationError(
                {"certificate": ["This certificate is not a CA (basic constraints ca=false)."]}
            )
        if not x509.matches_key(cert, key):
            raise ValidationError({"private_key": ["The private key does not belong to this certificate."]})
        self_signed = summary.self_signed
        # An intermediate hangs under the CA that signed it when certmgr manages that one; otherwise the
        # PEM must carry its issuers, kept to complete the chains it issues.
        parent = None if self_signed else _managing_ca(organization, cert)
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
                name=_name(name),
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
            _unique_ca_name(ca)
            ca.save()
            _store_ca_certificate(ca, cert, key)
            audit.record(actor, "ca.import", ca, serial=ca.serial, subject=ca.subject_dn)
    return ca


def set_ca_status(ca: CertificateAuthority, status: str, *, actor: Any) -> CertificateAuthority:
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


def rename_ca(ca: CertificateAuthority, name: str, *, actor: Any) -> CertificateAuthority:
    actor = as_actor(actor)
    with audit.failures(actor, "ca.update", ca, name=name):
        require(actor, Action.MANAGE, ca.organization_id)
        name = _name(name)
        with transaction.atomic():
            locked = CertificateAuthority.objects.select_for_update().defer("private_key").get(pk=ca.pk)
            taken = CertificateAuthority.objects.filter(organization_id=locked.organization_id, name=name)
            if taken.exclude(pk=locked.pk).exists():
                raise Conflict(f"a CA named {name!r} already exists in this organization", field="name")
            if locked.name != name:
                locked.name = name
                locked.updated_at = timezone.now()
                locked.save(update_fields=["name", "updated_at"])
                audit.record(actor, "ca.update", locked, changed=["name"])
    return locked


def delete_ca(ca: CertificateAuthority, *, actor: Any) -> None:
    actor = as_actor(actor)
    with audit.failures(actor, "ca.delete", ca):
        require(actor, Action.MANAGE, ca.organization_id)
        with transaction.atomic():
            ca = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
            if (
                ca.certificates.exists()
                or ca.children.exists()
                or ca.subscribers.exists()
                or ca.acme_orders.exists()
            ):
                raise Conflict("this CA has certificates, subordinate CAs or subscribers: disable it instead")
            target = ("pki.certificateauthority", ca.pk, ca.name)
            ca.crls.all().delete()
            ca.delete()
            audit.record(actor, "ca.delete", target, organization=ca.organization_id)


def _subject_args(subject: dict) -> dict:
    allowed = {"common_name", "organization", "organizational_unit", "country", "state", "locality"}
    unknown = set(subject or {}) - allowed
    if unknown:
        raise ValueError(f"unknown subject fields: {', '.join(sorted(unknown))}")
    if not (subject or {}).get("common_name"):
        raise ValueError("common_name is required")
    return {k: v for k, v in subject.items() if v}


def _name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 100 or "\x00" in name:
        raise ValidationError({"name": ["Enter a name of 1 to 100 characters."]})
    return name


def _unique_ca_name(ca: CertificateAuthority) -> None:
    if CertificateAuthority.objects.filter(organization_id=ca.organization_id, name=ca.name).exists():
        raise Conflict(f"a CA named {ca.name!r} already exists in this organization", field="name")


def _store_ca_certificate(ca: CertificateAuthority, cert: cx509.Certificate, key) -> None:
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


# A CA's certificate, key and chain never change once made (a new CA is a new row), so each worker parses and
# decrypts them once instead of on every signature. Keyed by (id, serial) so a reused id cannot hit.
_MATERIAL: dict[tuple[int, str], CaMaterial] = {}


def ca_material(ca: CertificateAuthority) -> CaMaterial:
    cached = _MATERIAL.get((ca.pk, ca.serial))
    if cached is None:
        key_pem = CertificateAuthority.objects.filter(pk=ca.pk).values_list("private_key", flat=True).get()
        cached = CaMaterial(
            certificate=cx509.load_pem_x509_certificate(ca.certificate_pem.encode()),
            key=x509.load_private_key(key_pem),
            chain=tuple(ca_chain(ca)),
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


# --- issuance ---------------------------------------------------------------------------------------------
def policy_of(p: Policy) -> policy_rules.PolicyRules:
    return policy_rules.PolicyRules(
        name=p.name,
        common_name_patterns=p.common_name_patterns,
        san_patterns=p.san_patterns,
        allowed_san_types=p.allowed_san_types,
        allowed_key_algorithms=p.allowed_key_algorithms,
        max_validity_days=p.max_validity_days,
        key_usages=p.key_usages,
        extended_key_usages=p.extended_key_usages,
    )


def issue(
    subscriber: Subscriber,
    *,
    actor: Any,
    csr_pem: str | None = None,
    csr_key_pem: str | None = None,
    renewal_of: Certificate | None = None,
) -> Certificate | AcmeOrder:
    """Issue a certificate from ``subscriber`` (a new key, or the caller's CSR: then no key is stored,
    unless the CSR was generated here and ``csr_key_pem`` is its key).

    An internal CA signs at once and the certificate is returned. An external (ACME) CA answers later: the
    returned AcmeOrder is run by a worker, which stores the certificate through ``store_external``.

    The policy is checked on every issuance and every renewal, as it stands now. A refusal is audited and
    shown on the subscriber (last operation: failed).
    """
    actor = as_actor(actor)
    action = "certificate.renew" if renewal_of else "certificate.issue"
    try:
        with audit.failures(actor, action, subscriber):
            require(actor, Action.MANAGE, subscriber.organization_id)
            with transaction.atomic():
                return _issue_locked(subscriber, actor, action, csr_pem, csr_key_pem, renewal_of)
    except (ServiceError, ValidationError) as exc:
        # A permission refusal or a conflict (already renewed) says nothing about the subscriber's health.
        if not isinstance(exc, PermissionDenied | Conflict):
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            category = "invalid" if isinstance(exc, ValidationError) else exc.code
            note_issue_failure(subscriber.pk, category, f"{action} refused: {message}")
        raise


def retry_now(subscriber: Subscriber, *, actor: Any) -> Certificate | AcmeOrder:
    """An operator's "retry now": drop the backoff and renew the subscriber's current certificate at once
    (or issue a first one)."""
    actor = as_actor(actor)
    with audit.failures(actor, "subscriber.retry", subscriber):
        require(actor, Action.MANAGE, subscriber.organization_id)
        Subscriber.objects.filter(pk=subscriber.pk).update(next_attempt_at=None)
        current = (
            Certificate.objects.filter(subscriber=subscriber, next_renewal_at__isnull=False)
            .order_by("-not_after")
            .first()
        )
    return issue(subscriber, actor=actor, renewal_of=current)


def note_issue_failure(
    subscriber_id: int, category: str, message: str, *, retry_after: float | None = None
) -> None:
    """Show a failed issuance or renewal on the subscriber and push its next automatic attempt out
    (exponential backoff with jitter; never before the CA's Retry-After)."""
    now = timezone.now()
    failures = (
        Subscriber.objects.filter(pk=subscriber_id).values_list("renewal_failures", flat=True).first() or 0
    ) + 1
    delay = renewal.retry_delay(
        failures,
        base=settings.CERTMGR_RENEWAL_RETRY_BASE_SECONDS,
        cap=settings.CERTMGR_RENEWAL_RETRY_MAX_SECONDS,
    )
    delay = max(delay, retry_after or 0.0)
    Subscriber.objects.filter(pk=subscriber_id).update(
        last_operation_status=Subscriber.OperationStatus.FAILED,
        last_operation_message=message[:2000],
        last_operation_at=now,
        renewal_failures=failures,
        last_error_category=category[:100],
        next_attempt_at=now + timedelta(seconds=delay),
    )
    alerts.notify("renewal_failed", subscriber=subscriber_id, message=message)


def _note_issued(certificate: Certificate) -> None:
    """A new certificate of a subscriber: its earlier ones are no longer renewed (index
    ``cert_subscriber_renewing`` keeps this cheap however many certificates the subscriber had)."""
    if certificate.subscriber_id is None:
        return
    Certificate.objects.filter(
        subscriber_id=certificate.subscriber_id, next_renewal_at__isnull=False
    ).exclude(pk=certificate.pk).update(next_renewal_at=None)


# What a successful issuance writes on its (locked) subscriber: the last operation, and the failures are over.
_ISSUED_FIELDS = [
    "last_operation_status",
    "last_operation_message",
    "last_operation_at",
    "renewal_failures",
    "last_error_category",
    "next_attempt_at",
]


def _mark_issued(sub: Subscriber, message: str) -> None:
    sub.last_operation_status = Subscriber.OperationStatus.SUCCESS
    sub.last_operation_message = message
    sub.last_operation_at = timezone.now()
    sub.renewal_failures, sub.last_error_category, sub.next_attempt_at = 0, "", None
    sub.save(update_fields=_ISSUED_FIELDS)


def _issue_locked(subscriber, actor, action, csr_pem, csr_key_pem, renewal_of) -> Certificate | AcmeOrder:
    # One issuance at a time per subscriber.
    sub = (
        Subscriber.objects.select_for_update(of=("self",))
        .select_related("ca", "policy")
        .defer("ca__private_key")  # the signing key comes from ca_material(), decrypted once per worker
        .get(pk=subscriber.pk)
    )
    ca = sub.ca
    if sub.issuer_type == Subscriber.IssuerType.CA:
        if ca is None:
            raise ValidationError({"ca": ["This subscriber has no issuing CA."]})
        if ca.status != CertificateAuthority.Status.ACTIVE:
            raise CaUnavailable(f"CA {ca.name!r} is disabled and issues nothing", field="ca")
    if renewal_of is not None:
        _check_renewable(renewal_of, sub)
    if renewal_of is not None and sub.reuse_key and not csr_pem and renewal_of.private_key:
        key = x509.load_private_key(renewal_of.private_key)  # the subscriber keeps its key across renewals
        key_algorithm = x509.key_algorithm_of(key)
        public_key = key.public_key()
    else:
        key, public_key, key_algorithm = _subject_key(sub, csr_pem, csr_key_pem)
    if sub.policy is not None:
        try:
            policy_rules.check(policy_of(sub.policy), _policy_request(sub, str(key_algorithm)))
        except policy_rules.PolicyViolation as exc:
            raise PolicyRefused(str(exc), field=exc.field) from exc
    if ca is not None and not ca.is_internal:
        # An external CA answers later: start (or join) the order; the worker stores the certificate.
        from acmeca import orders

        return orders.start_order(
            sub, actor=actor, key=key, csr_pem=csr_pem if key is None else None, renewal_of=renewal_of
        )
    cert, chain = _sign(sub, ca, key, public_key)
    certificate = _store_certificate(
        sub.organization_id,
        cert,
        chain,
        key,
        source=Certificate.Source.SELF_SIGNED if ca is None else Certificate.Source.ISSUED,
        ca=ca,
        subscriber=sub,
        renewed_from=renewal_of,
    )
    _mark_issued(sub, f"issued serial {certificate.serial}")
    audit.record(
        actor,
        action,
        certificate,
        subscriber=sub.pk,
        serial=certificate.serial,
        ca=ca.pk if ca else None,
        key_stored=key is not None,
        renewed_from=renewal_of.pk if renewal_of else None,
    )
    alerts.notify("issued", certificate=certificate)
    return certificate


def _check_renewable(old: Certificate, sub: Subscriber) -> None:
    if old.subscriber_id != sub.pk:
        raise ValidationError({"renewal_of": ["That certificate was not issued from this subscriber."]})
    successor = Certificate.objects.filter(renewed_from=old).only("serial").first()
    if successor is not None:
        raise Conflict(f"this certificate was already renewed by serial {successor.serial}")


def _subject_key(sub: Subscriber, csr_pem: str | None, csr_key_pem: str | None):
    """(private key or None, public key, algorithm): a new key, or the CSR's (names checked)."""
    if not csr_pem:
        key = x509.generate_key(x509.KeyAlgorithm(sub.key_algorithm))
        return key, key.public_key(), sub.key_algorithm
    try:
        csr = x509.load_csr(csr_pem)
        info = x509.csr_info(csr)
    except x509.X509Error as exc:
        raise _x509_error(exc, "csr") from exc
    # The certificate carries the subscriber's names; a CSR asking for others is refused, not ignored.
    allowed = {n.lower() for n in [sub.common_name, *sub.sans] if n}
    asked = {n.lower() for n in [info.subject.common_name, *info.sans] if n}
    if asked - allowed:
        extra = ", ".join(sorted(asked - allowed))
        raise ValidationError({"csr": [f"the CSR asks for names this subscriber does not cover: {extra}"]})
    key = x509.load_private_key(csr_key_pem) if csr_key_pem else None
    return key, csr.public_key(), info.key_algorithm


def _policy_request(sub: Subscriber, key_algorithm: str) -> policy_rules.Request:
    return policy_rules.Request(
        common_name=sub.common_name,
        sans=list(sub.sans),
        key_algorithm=key_algorithm,
        validity_days=sub.validity_days,
        key_usages=list(sub.key_usages),
        extended_key_usages=list(sub.extended_key_usages),
    )


def _sign(sub: Subscriber, ca, key, public_key) -> tuple[cx509.Certificate, list[cx509.Certificate]]:
    subject = x509.Subject(common_name=sub.common_name or None, **{k: v for k, v in sub.subject.items() if v})
    usages = {
        "key_usages": list(sub.key_usages) or None,
        "extended_key_usages": list(sub.extended_key_usages),
    }
    try:
        if sub.issuer_type == Subscriber.IssuerType.SELF_SIGNED:
            if key is None:
                raise ValidationError({"csr": ["A self-signed certificate needs a key made here."]})
            cert = x509.build_self_signed_certificate(
                key=key, subject=subject, sans=list(sub.sans), validity_days=sub.validity_days, **usages
            )
            return cert, []
        material = ca_material(ca)
        crl, aia = _ca_urls(ca)
        cert = x509.build_leaf_certificate(
            csr_or_public_key=public_key,
            subject=subject,
            sans=list(sub.sans),
            issuer_cert=material.certificate,
            issuer_key=material.key,
            validity_days=sub.validity_days,
            crl_url=crl,
            aia_url=aia,
            **usages,
        ).certificate
        return cert, list(material.chain)
    except x509.X509Error as exc:
        raise _x509_error(exc) from exc


# (base URL, script prefix, CA id) -> (CRL URL, AIA URL): URL reversing costs as much as a signature's hash.
_CA_URLS: dict[tuple[str, str, int], tuple[str, str]] = {}


def _ca_urls(ca: CertificateAuthority) -> tuple[str, str]:
    key = (settings.CERTMGR_BASE_URL, get_script_prefix(), ca.pk)
    urls = _CA_URLS.get(key)
    if urls is None:
        if len(_CA_URLS) > 256:
            _CA_URLS.clear()
        urls = _CA_URLS[key] = (crl_url(ca), aia_url(ca))
    return urls


def _store_certificate(
    organization_id: int,
    cert: cx509.Certificate,
    chain: list[cx509.Certificate],
    key,
    *,
    source: str,
    ca=None,
    subscriber=None,
    renewed_from=None,
) -> Certificate:
    certificate = _certificate_row(
        organization_id,
        cert,
        "".join(x509.to_pem(c) for c in chain),
        key,
        source=source,
        ca=ca,
        subscriber=subscriber,
        renewed_from=renewed_from,
    )
    certificate.save(force_insert=True)
    _note_issued(certificate)
    return certificate


def _certificate_row(
    organization_id: int,
    cert: cx509.Certificate,
    chain_pem: str,
    key,
    *,
    source: str,
    ca=None,
    subscriber=None,
    renewed_from=None,
) -> Certificate:
    """The inventory row of ``cert`` (unsaved): its PEM, chain, key, fingerprints and summary fields."""
    summary = x509.cert_summary(cert)
    sha256, sha1 = summary.sha256, x509.fingerprints(cert).sha1
    return Certificate(
        organization_id=organization_id,
        ca=ca,
        subscriber=subscriber,
        source=source,
        serial=summary.serial,
        certificate_pem=x509.to_pem(cert),
        chain_pem=chain_pem,
        private_key=x509.private_key_to_pem(key) if key is not None else "",
        fingerprint_sha256=sha256,
        fingerprint_sha1=sha1,
        subject_dn=summary.subject[:1000],
        issuer_dn=summary.issuer[:1000],
        common_name=(summary.common_name or "")[:255],
        sans=list(summary.sans),
        names_text=" ".join(sorted({n.lower() for n in [summary.common_name or "", *summary.sans] if n})),
        key_algorithm=str(summary.key_algorithm),
        not_before=summary.not_before,
        not_after=summary.not_after,
        renewed_from=renewed_from,
        next_renewal_at=renewal.next_renewal_at(
            summary.not_before, summary.not_after, renew_before_days=subscriber.renew_before_days
        )
        if subscriber is not None
        else None,
    )


def store_external(
    *,
    organization_id: int,
    ca: CertificateAuthority,
    fullchain_pem: str,
    key_pem: str | None,
    subscriber_id: int | None,
    renewal_of_id: int | None,
    actor: Any,
) -> Certificate:
    """Put a certificate an external CA issued (leaf first, then its chain) into the inventory.

    Called by the ACME worker inside its own transaction, together with the order's final step, so an order
    never ends without its certificate or stores it twice. Audited as an issuance (or renewal).
    """
    try:
        certs = x509.load_pem_certificates(fullchain_pem)
    except x509.X509Error as exc:
        raise ServiceError(f"the CA returned no usable certificate: {exc}") from exc
    leaf, chain = certs[0], x509.order_chain(certs[0], certs[1:])
    key = x509.load_private_key(key_pem) if key_pem else None
    if key is not None and not x509.matches_key(leaf, key):
        raise ServiceError("the CA returned a certificate for another key")
    sub = Subscriber.objects.select_for_update().get(pk=subscriber_id) if subscriber_id else None
    renewal_of = Certificate.objects.filter(pk=renewal_of_id).first() if renewal_of_id else None
    if renewal_of is not None and Certificate.objects.filter(renewed_from=renewal_of).exists():
        renewal_of = None  # renewed meanwhile by another order: keep this certificate, unlinked
    certificate = _store_certificate(
        organization_id,
        leaf,
        chain,
        key,
        source=Certificate.Source.ACME,
        ca=ca,
        subscriber=sub,
        renewed_from=renewal_of,
    )
    if sub is not None:
        _mark_issued(sub, f"issued serial {certificate.serial} by {ca.name}")
    audit.record(
        actor,
        "certificate.renew" if renewal_of else "certificate.issue",
        certificate,
        subscriber=subscriber_id,
        serial=certificate.serial,
        ca=ca.pk,
        key_stored=key is not None,
        renewed_from=renewal_of.pk if renewal_of else None,
    )
    alerts.notify("issued", certificate=certificate)
    return certificate


# --- batch issuance ---------------------------------------------------------------------------------------
BATCH_MAX = 5000


@dataclass(frozen=True)
class BatchRequest:
    """One certificate of a batch: a new key from ``subscriber``, renewing ``renewal_of`` if given."""

    subscriber: Subscriber
    renewal_of: Certificate | None = None


class _Refusal:
    """Which subscriber a batch was working on, so a refusal is audited against it (as issue() does)."""

    subscriber: Subscriber | None = None


def issue_batch(requests: Iterable[BatchRequest | Subscriber], *, actor: Any) -> list[Certificate]:
    """Issue one certificate per request, all from internal CAs (or self-signed), in one transaction.

    For mass issuance and renewal sweeps: the actor's role is checked once per organization, each
    subscriber is locked once (in id order), the policy is checked as ``issue()`` checks it, and the
    certificates, the subscribers' last operation and one audit event per certificate (the same event
    ``issue()`` writes) are stored with multi-row statements. Every certificate gets a new key made here.

    All or nothing: one bad request (disabled or external CA, policy refusal, a certificate that is not
    the subscriber's or already renewed, ...) refuses the whole batch and nothing is issued; the refusal is
    audited against that request's subscriber. Returns the certificates in the order of ``requests``.
    """
    actor = as_actor(actor)
    batch = [r if isinstance(r, BatchRequest) else BatchRequest(r) for r in requests]
    if not batch:
        return []
    refusal = _Refusal()
    try:
        if len(batch) > BATCH_MAX:
            refusal.subscriber = batch[0].subscriber
            raise ValidationError({"requests": [f"Issue at most {BATCH_MAX} certificates in one batch."]})
        for org_id in sorted({r.subscriber.organization_id for r in batch}):
            refusal.subscriber = next(r.subscriber for r in batch if r.subscriber.organization_id == org_id)
            require(actor, Action.MANAGE, org_id)
        with transaction.atomic():
            return _issue_batch_locked(batch, actor, refusal)
    except (ServiceError, ValidationError, IntegrityError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        audit.record(
            actor,
            "certificate.issue_batch",
            refusal.subscriber,
            outcome=AuditEvent.Outcome.FAILURE,
            error=message,
            certificates=len(batch),
        )
        raise


def _issue_batch_locked(batch: list[BatchRequest], actor, refusal: _Refusal) -> list[Certificate]:
    subscribers = {
        sub.pk: sub
        for sub in Subscriber.objects.select_for_update(of=("self",))
        .select_related("ca", "policy")
        .defer("ca__private_key")  # the signing key comes from ca_material()
        .filter(pk__in={r.subscriber.pk for r in batch})
        .order_by("pk")  # rows are locked in this order: concurrent batches cannot deadlock on them
    }
    for request in batch:  # every subscriber's checks before any signing
        refusal.subscriber = request.subscriber
        sub = subscribers.get(request.subscriber.pk)
        if sub is None or sub.organization_id != request.subscriber.organization_id:
            raise ValidationError({"subscriber": ["Unknown subscriber."]})
        _check_batch_subscriber(sub)
    renewed: set[int] = set()
    for request in batch:
        if request.renewal_of is not None:
            refusal.subscriber = request.subscriber
            if request.renewal_of.pk in renewed:
                raise Conflict(f"certificate {request.renewal_of.serial} is renewed twice in this batch")
            renewed.add(request.renewal_of.pk)
            _check_renewable(request.renewal_of, subscribers[request.subscriber.pk])

    rows: list[Certificate] = []
    chain_pems: dict[int | None, str] = {}
    for request in batch:
        refusal.subscriber = request.subscriber
        sub = subscribers[request.subscriber.pk]
        key, public_key, _ = _subject_key(sub, None, None)
        cert, chain = _sign(sub, sub.ca, key, public_key)
        if sub.ca_id not in chain_pems:
            chain_pems[sub.ca_id] = "".join(x509.to_pem(c) for c in chain)
        rows.append(
            _certificate_row(
                sub.organization_id,
                cert,
                chain_pems[sub.ca_id],
                key,
                source=Certificate.Source.SELF_SIGNED if sub.ca is None else Certificate.Source.ISSUED,
                ca=sub.ca,
                subscriber=sub,
                renewed_from=request.renewal_of,
            )
        )
    Certificate.objects.bulk_create(rows)

    now = timezone.now()
    newest: dict[int, int] = {}
    for certificate in rows:  # the last certificate of a subscriber names its last operation
        sub = certificate.subscriber
        sub.last_operation_status = Subscriber.OperationStatus.SUCCESS
        sub.last_operation_message = f"issued serial {certificate.serial}"
        sub.last_operation_at = now
        sub.renewal_failures, sub.last_error_category, sub.next_attempt_at = 0, "", None
        newest[sub.pk] = certificate.pk
    Subscriber.objects.bulk_update(subscribers.values(), _ISSUED_FIELDS)
    # Only each subscriber's newest certificate is renewed from now on (as _note_issued does for one).
    Certificate.objects.filter(subscriber_id__in=newest, next_renewal_at__isnull=False).exclude(
        pk__in=newest.values()
    ).update(next_renewal_at=None)

    events: dict[tuple[int, str], list[tuple[Certificate, dict[str, Any]]]] = {}
    for certificate in rows:
        action = "certificate.renew" if certificate.renewed_from_id else "certificate.issue"
        events.setdefault((certificate.organization_id, action), []).append(
            (
                certificate,
                {
                    "subscriber": certificate.subscriber_id,
                    "serial": certificate.serial,
                    "ca": certificate.ca_id,
                    "key_stored": True,
                    "renewed_from": certificate.renewed_from_id,
                },
            )
        )
    for (org_id, action), targets in sorted(events.items()):
        audit.record_many(actor, action, targets, organization=org_id)
    alerts.notify("issued", certificate=rows)
    return rows


def _check_batch_subscriber(sub: Subscriber) -> None:
    """What ``_issue_locked`` checks before signing, for a new key from an internal CA or self-signed."""
    ca = sub.ca
    if sub.issuer_type == Subscriber.IssuerType.CA:
        if ca is None:
            raise ValidationError({"ca": ["This subscriber has no issuing CA."]})
        if ca.status != CertificateAuthority.Status.ACTIVE:
            raise CaUnavailable(f"CA {ca.name!r} is disabled and issues nothing", field="ca")
        if not ca.is_internal:
            raise CaUnavailable(
                f"CA {ca.name!r} is an external CA: its certificates are ordered one at a time", field="ca"
            )
    if sub.policy is not None:
        try:
            policy_rules.check(policy_of(sub.policy), _policy_request(sub, sub.key_algorithm))
        except policy_rules.PolicyViolation as exc:
            raise PolicyRefused(str(exc), field=exc.field) from exc


# --- revocation and CRLs ---------------------------------------------------------------------------------
def revoke(certificate: Certificate, *, reason: str, actor: Any) -> Certificate:
    actor = as_actor(actor)
    with audit.failures(actor, "certificate.revoke", certificate, reason=reason):
        require(actor, Action.MANAGE, certificate.organization_id)
        if reason not in RevocationReason.values:
            raise ValidationError({"reason": [f"Choose one of: {', '.join(RevocationReason.values)}."]})
        with transaction.atomic():
            certificate = (
                Certificate.objects.select_for_update(of=("self",))
                .select_related("ca")
                .get(pk=certificate.pk)
            )
            if certificate.status == Certificate.Status.REVOKED:
                raise AlreadyRevoked("this certificate is already revoked")
            if certificate.ca is None:
                raise ServiceError("this certificate's CA is not managed here: revoke it at its issuer")
            if certificate.ca.kind == CertificateAuthority.Kind.ACME:
                from acmeca.services import revoke_at_ca

                revoke_at_ca(certificate, reason)  # the CA first: nothing is marked if it says no
            certificate.status = Certificate.Status.REVOKED
            certificate.revoked_at = timezone.now()
            certificate.revocation_reason = reason
            certificate.save(update_fields=["status", "revoked_at", "revocation_reason"])
            audit.record(actor, "certificate.revoke", certificate, reason=reason, serial=certificate.serial)
            alerts.notify("revoked", certificate=certificate)
            if certificate.ca.is_internal:
                _build_crl(certificate.ca, actor)
    return certificate


def refresh_crl(ca: CertificateAuthority, *, actor: Any) -> Crl:
    actor = as_actor(actor)
    with audit.failures(actor, "crl.refresh", ca):
        require(actor, Action.MANAGE, ca.organization_id)
        with transaction.atomic():
            return _build_crl(ca, actor)


def current_crl(ca: CertificateAuthority) -> Crl:
    """The newest CRL, rebuilt first when none exists or it is past (or near) its nextUpdate."""
    from certmgr.actors import Actor

    crl = ca.crls.order_by("-number").first()
    if crl is None or crl.next_update <= timezone.now() + timedelta(minutes=5):
        with transaction.atomic():
            crl = _build_crl(ca, Actor.system("crl.serve"))
    return crl


def _crl_validity() -> timedelta:
    return timedelta(hours=settings.CERTMGR_CRL_VALIDITY_HOURS)


def _build_crl(ca: CertificateAuthority, actor) -> Crl:
    ca = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
    now = timezone.now()
    revoked = (
        Certificate.objects.filter(ca=ca, status=Certificate.Status.REVOKED, not_after__gt=now)
        .order_by("revoked_at")
        .values_list("serial", "revoked_at", "revocation_reason")
    )
    material = ca_material(ca)
    ca.crl_number += 1
    der = x509.build_crl(
        issuer_cert=material.certificate,
        issuer_key=material.key,
        revoked=[(int(serial, 16), at, reason) for serial, at, reason in revoked],
        this_update=now,
        next_update=now + _crl_validity(),
        crl_number=ca.crl_number,
    ).public_bytes(serialization.Encoding.DER)
    ca.save(update_fields=["crl_number"])
    crl = Crl.objects.create(
        ca=ca, number=ca.crl_number, this_update=now, next_update=now + _crl_validity(), der=der
    )
    audit.record(actor, "crl.publish", ca, number=crl.number, revoked=len(revoked))
    return crl


# --- policies and subscribers ----------------------------------------------------------------------------
POLICY_FIELDS = (
    "name",
    "description",
    "common_name_patterns",
    "san_patterns",
    "allowed_san_types",
    "allowed_key_algorithms",
    "max_validity_days",
    "key_usages",
    "extended_key_usages",
    "allow_ca",
)
SUBSCRIBER_FIELDS = (
    "name",
    "issuer_type",
    "ca",
    "policy",
    "common_name",
    "sans",
    "subject",
    "key_algorithm",
    "validity_days",
    "key_usages",
    "extended_key_usages",
    "auto_renew",
    "renew_before_days",
    "reuse_key",
)


def _check_policy(p: Policy) -> None:
    errors: dict[str, list[str]] = {}
    for field in ("common_name_patterns", "san_patterns"):
        for pattern in getattr(p, field):
            if problem := policy_rules.validate_pattern(pattern):
                errors.setdefault(field, []).append(problem)
    unknown = set(p.allowed_san_types) - {"dns", "ip", "email", "uri"}
    if unknown:
        errors["allowed_san_types"] = [f"unknown SAN types: {', '.join(sorted(unknown))}"]
    unknown = set(p.allowed_key_algorithms) - {a.value for a in x509.KeyAlgorithm}
    if unknown:
        errors["allowed_key_algorithms"] = [f"unknown key algorithms: {', '.join(sorted(unknown))}"]
    _check_usages(p, errors)
    if errors:
        raise ValidationError(errors)


def _check_usages(obj, errors: dict[str, list[str]]) -> None:
    for usage in obj.key_usages:
        if usage not in x509.KEY_USAGE_NAMES:
            errors.setdefault("key_usages", []).append(
                f"unknown key usage {usage!r} (one of: {', '.join(x509.KEY_USAGE_NAMES)})"
            )
    for usage in obj.extended_key_usages:
        if usage not in x509.EXTENDED_KEY_USAGES and not _DOTTED_OID.match(str(usage)):
            errors.setdefault("extended_key_usages", []).append(
                f"unknown extended key usage {usage!r} (a name such as server_auth, or a dotted OID)"
            )


def save_policy(
    organization: Organization | None, *, actor: Any, instance: Policy | None = None, **values: Any
) -> Policy:
    """Create (``instance`` None) or change a policy."""
    return _save_row(Policy, POLICY_FIELDS, _check_policy, organization, instance, values, actor)


def _save_row(model, allowed: tuple[str, ...], check, organization, instance, values: dict, actor):
    """Create or change a policy or subscriber: set the allowed fields, check, save, audit."""
    actor = as_actor(actor)
    label = model._meta.model_name
    action = f"{label}.update" if instance else f"{label}.create"
    org_id = instance.organization_id if instance else organization.pk
    with audit.failures(actor, action, instance or organization):
        require(actor, Action.MANAGE, org_id)
        row = instance or model(organization_id=org_id)
        for field, value in values.items():
            if field not in allowed:
                raise ValidationError({field: ["This field cannot be set."]})
            setattr(row, field, value)
        row.name = _name(row.name)
        check(row)
        try:
            with transaction.atomic():
                row.updated_at = timezone.now()
                row.save()
                audit.record(actor, action, row, changed=sorted(values))
        except IntegrityError as exc:
            raise Conflict(f"a {label} named {row.name!r} already exists", field="name") from exc
    return row


def _check_subscriber(s: Subscriber) -> None:
    errors: dict[str, list[str]] = {}
    if s.issuer_type == Subscriber.IssuerType.CA and s.ca is None:
        errors["ca"] = ["Choose the issuing CA (or issuer type self-signed)."]
    if s.ca is not None and s.ca.organization_id != s.organization_id:
        errors["ca"] = ["Unknown CA."]
    if s.policy is not None and s.policy.organization_id != s.organization_id:
        errors["policy"] = ["Unknown policy."]
    if not s.common_name and not s.sans:
        errors["common_name"] = ["Give a common name or at least one SAN."]
    try:
        x509.parse_sans(list(s.sans))
    except x509.X509Error as exc:
        errors["sans"] = [str(exc)]
    try:
        _subject_args({**s.subject, "common_name": s.common_name or "x"})
        x509.Subject(**{k: v for k, v in s.subject.items() if v}, common_name=s.common_name or None)
    except (TypeError, ValueError) as exc:
        errors["subject"] = [str(exc)]
    if s.key_algorithm not in {a.value for a in x509.KeyAlgorithm}:
        errors["key_algorithm"] = ["Unknown key algorithm."]
    if not 1 <= s.validity_days <= 36500:
        errors["validity_days"] = ["Enter 1 to 36500 days."]
    if s.renew_before_days is not None and s.renew_before_days >= s.validity_days:
        errors["renew_before_days"] = ["Must be shorter than the validity."]
    _check_usages(s, errors)
    if errors:
        raise ValidationError(errors)
    if s.policy is not None:
        try:
            policy_rules.check(
                policy_of(s.policy),
                policy_rules.Request(
                    common_name=s.common_name,
                    sans=list(s.sans),
                    key_algorithm=s.key_algorithm,
                    validity_days=s.validity_days,
                    key_usages=list(s.key_usages),
                    extended_key_usages=list(s.extended_key_usages),
                ),
            )
        except policy_rules.PolicyViolation as exc:
            raise PolicyRefused(str(exc), field=exc.field) from exc


def save_subscriber(
    organization: Organization | None, *, actor: Any, instance: Subscriber | None = None, **values: Any
) -> Subscriber:
    """Create (``instance`` None) or change a subscriber; a self-signed one has no CA."""
    if (
        values.get("issuer_type", instance.issuer_type if instance else "")
        == Subscriber.IssuerType.SELF_SIGNED
    ):
        values["ca"] = None
    return _save_row(Subscriber, SUBSCRIBER_FIELDS, _check_subscriber, organization, instance, values, actor)


def delete_object(obj: Policy | Subscriber | CertificateRequest, *, actor: Any) -> None:
    actor = as_actor(actor)
    action = f"{obj._meta.model_name}.delete"
    with audit.failures(actor, action, obj):
        require(actor, Action.MANAGE, obj.organization_id)
        target = (obj._meta.label_lower, obj.pk, str(obj))
        try:
            with transaction.atomic():
                obj.delete()
                audit.record(actor, action, target, organization=obj.organization_id)
        except IntegrityError as exc:
            raise Conflict(f"this {obj._meta.verbose_name} is in use") from exc


# --- CSRs ------------------------------------------------------------------------------------------------
def generate_csr(
    organization: Organization,
    *,
    name: str,
    common_name: str,
    sans: list[str],
    subject: dict | None = None,
    key_algorithm: str = "ec-p256",
    actor: Any,
) -> CertificateRequest:
    """Make a key pair and a CSR here; the key stays encrypted in certmgr."""
    actor = as_actor(actor)
    with audit.failures(actor, "csr.generate", organization, name=name):
        require(actor, Action.MANAGE, organization.pk)
        try:
            x509.parse_sans(list(sans))
        except x509.X509Error as exc:
            raise _x509_error(exc, "sans") from exc
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


def upload_csr(organization: Organization, *, name: str, csr_pem: str, actor: Any) -> CertificateRequest:
    actor = as_actor(actor)
    with audit.failures(actor, "csr.upload", organization, name=name):
        require(actor, Action.MANAGE, organization.pk)
        try:
            csr = x509.load_csr(csr_pem)
        except x509.X509Error as exc:
            raise _x509_error(exc, "csr") from exc
        return _store_csr(
            organization, name, csr, None, CertificateRequest.Source.UPLOADED, actor, "csr.upload"
        )


def _store_csr(organization, name, csr, key, source, actor, action) -> CertificateRequest:
    try:
        info = x509.csr_info(csr)
    except x509.X509Error as exc:
        raise _x509_error(exc, "csr") from exc
    request = CertificateRequest(
        organization=organization,
        name=_name(name),
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


def issue_from_csr(request: CertificateRequest, subscriber: Subscriber, *, actor: Any) -> Certificate:
    """Issue from a stored CSR; a CSR generated here passes its key on to the certificate."""
    if request.organization_id != subscriber.organization_id:
        raise ValidationError({"subscriber": ["Unknown subscriber."]})
    return issue(subscriber, actor=actor, csr_pem=request.csr_pem, csr_key_pem=request.private_key or None)


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
    actor: Any,
) -> ImportResult:
    """Add existing certificates to the inventory.

    ``pem_text`` holds one or more certificates; the first that is not a CA (or the first) is the leaf and the
    rest its chain. A ``key_pem`` is kept (encrypted) only if it matches the leaf. Certificates of a CA this
    organization manages are linked to it.
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
        ca = _managing_ca(organization, leaf)
        with transaction.atomic():
            try:
                with transaction.atomic():  # a savepoint: the same certificate imported concurrently
                    certificate = _store_certificate(
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


def _reject(result: ImportResult, organization, source_name: str, reason: str, actor) -> ImportResult:
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


def _managing_ca(organization: Organization, leaf: cx509.Certificate) -> CertificateAuthority | None:
    """The organization's internal CA whose key signed ``leaf``, if any."""
    for ca in (
        CertificateAuthority.objects.filter(organization=organization).internal().exclude(certificate_pem="")
    ):
        issuer = cx509.load_pem_x509_certificate(ca.certificate_pem.encode())
        if leaf.issuer == issuer.subject and x509.order_chain(leaf, [issuer]):
            return ca
    return None


def export_private_key(certificate: Certificate, *, actor: Any) -> str:
    """The certificate's private key as PEM. Needs the operator role; always audited."""
    actor = as_actor(actor)
    with audit.failures(actor, "certificate.export_key", certificate):
        require(actor, Action.EXPORT_KEY, certificate.organization_id)
        if not certificate.private_key:
            raise NotFound("certmgr holds no private key for this certificate (it was issued from a CSR)")
        with transaction.atomic():
            audit.record(
                actor, "certificate.export_key", certificate, serial=certificate.serial, format="pem"
            )
        return certificate.private_key


def export_pkcs12(certificate: Certificate, *, password: str, alias: str = "", actor: Any) -> bytes:
    actor = as_actor(actor)
    with audit.failures(actor, "certificate.export_key", certificate, format="pkcs12"):
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
                actor, "certificate.export_key", certificate, serial=certificate.serial, format="pkcs12"
            )
        return data


PKCS12_MIN_PASSWORD = 12


def bundle_pem(certificate: Certificate, *, with_key: bool = False, actor: Any = None) -> str:
    """Certificate + chain (+ the key, via export_private_key, when asked)."""
    parts = [certificate.certificate_pem, certificate.chain_pem]
    if with_key:
        parts.append(export_private_key(certificate, actor=actor))
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts if p)
