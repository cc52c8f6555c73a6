"""Revocation and CRLs. The issuer backend revokes at its CA first (outside any row lock); pki marks the
certificate, audits it and lets the backend publish (internal CAs rebuild their CRL).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import ServiceError
from certmgr.permissions import Action
from certmgr.services import require
from pki import alerts, issuers, x509
from pki.models import (
    Certificate,
    CertificateAuthority,
    Crl,
    RevocationReason,
)
from pki.services import ocsp
from pki.services.cas import ca_material
from pki.services.common import (
    AlreadyRevoked,
)


def revoke(certificate: Certificate, *, reason: str, actor: Actor) -> Certificate:
    """Revoke with an RFC 5280 reason. The certificate's issuer revokes at its CA first (no row lock is
    held during that network call, and nothing is marked if the CA says no); then the certificate is marked,
    audited and alerted in one transaction, in which an internal CA publishes its new CRL."""
    actor = as_actor(actor)
    with audit.failures(actor, "certificate.revoke", certificate, reason=reason):
        require(actor, Action.MANAGE, certificate.organization_id)
        if reason not in RevocationReason.values:
            raise ValidationError({"reason": [f"Choose one of: {', '.join(RevocationReason.values)}."]})
        current = Certificate.objects.select_related("ca").get(pk=certificate.pk)
        if current.status == Certificate.Status.REVOKED:
            raise AlreadyRevoked("this certificate is already revoked")
        if current.ca is None:
            raise ServiceError("this certificate's CA is not managed here: revoke it at its issuer")
        backend = issuers.backend_for(current.ca)
        backend.revoke_at_issuer(current, reason)
        with transaction.atomic():
            certificate = (
                Certificate.objects.select_for_update(of=("self",))
                .select_related("ca")
                .get(pk=certificate.pk)
            )
            if certificate.status == Certificate.Status.REVOKED:
                raise AlreadyRevoked("this certificate is already revoked")  # by a concurrent call
            certificate.status = Certificate.Status.REVOKED
            certificate.revoked_at = timezone.now()
            certificate.revocation_reason = reason
            certificate.next_renewal_at = None  # a revoked certificate is never renewed
            certificate.save(update_fields=["status", "revoked_at", "revocation_reason", "next_renewal_at"])
            audit.record(actor, "certificate.revoke", certificate, reason=reason, serial=certificate.serial)
            alerts.notify("revoked", certificate=certificate)
            backend.after_revoke(certificate, actor)
            ocsp.after_revoke(current.ca, [certificate.serial])
    return certificate


def refresh_crl(ca: CertificateAuthority, *, actor: Actor) -> Crl:
    actor = as_actor(actor)
    with audit.failures(actor, "crl.refresh", ca):
        require(actor, Action.MANAGE, ca.organization_id)
        with transaction.atomic():
            return build_crl(ca, actor)


def current_crl(ca: CertificateAuthority) -> Crl:
    """The newest CRL, rebuilt first when none exists or it is past (or near) its nextUpdate."""
    crl = ca.crls.order_by("-number").first()
    if crl is None or crl.next_update <= timezone.now() + timedelta(minutes=5):
        with transaction.atomic():
            crl = build_crl(ca, Actor.system("crl.serve"))
    return crl


def _crl_validity() -> timedelta:
    return timedelta(hours=settings.CERTMGR_CRL_VALIDITY_HOURS)


def build_crl(ca: CertificateAuthority, actor: Actor) -> Crl:
    """A new CRL of ``ca`` (inside the caller's transaction): every revoked certificate not yet expired."""
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
        # revoked_at is set on every revoked row (revoke() writes both together)
        revoked=[(int(serial, 16), at or now, reason) for serial, at, reason in revoked],
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


def revoke_many(certificates: Iterable[Certificate], *, reason: str, actor: Actor) -> int:
    """Revoke many certificates at once (a mass re-issue's replaced ones): certificates of issuers that
    revoke at their CA go one by one through ``revoke``; the others are marked in one statement per CA,
    audited together, and each CA publishes one CRL. Returns how many were revoked."""
    actor = as_actor(actor)
    by_ca: dict[int, list[Certificate]] = {}
    count = 0
    for cert in certificates:
        if cert.ca_id is None:
            continue
        backend = issuers.backend_for(cert.ca)
        if not backend.signs_locally:
            try:
                revoke(cert, reason=reason, actor=actor)
                count += 1
            except ServiceError:
                pass  # refused at the CA: audited by revoke itself
            continue
        by_ca.setdefault(cert.ca_id, []).append(cert)
    for ca_id, certs in by_ca.items():
        ca = CertificateAuthority.objects.get(pk=ca_id)
        require(actor, Action.MANAGE, ca.organization_id)
        now = timezone.now()
        with transaction.atomic():
            marked = list(
                Certificate.objects.select_for_update(of=("self",))
                .filter(pk__in=[c.pk for c in certs])
                .exclude(status=Certificate.Status.REVOKED)
            )
            Certificate.objects.filter(pk__in=[c.pk for c in marked]).update(
                status=Certificate.Status.REVOKED,
                revoked_at=now,
                revocation_reason=reason,
                next_renewal_at=None,
            )
            audit.record_many(
                actor,
                "certificate.revoke",
                [(c, {"reason": reason, "serial": c.serial}) for c in marked],
                organization=ca.organization_id,
            )
            for c in marked:
                c.status, c.revoked_at, c.revocation_reason = Certificate.Status.REVOKED, now, reason
                c.next_renewal_at = None
            alerts.notify("revoked", certificate=marked)
            build_crl(ca, actor)
            ocsp.after_revoke(ca, [c.serial for c in marked])
        count += len(marked)
    return count
