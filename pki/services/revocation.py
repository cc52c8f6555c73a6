"""Revocation and CRLs. The issuer backend revokes at its CA first (outside any row lock); pki marks the
certificate, audits it and lets the backend publish: an internal CA with delta CRLs on (the default) has a
worker publish, after the commit, a new full CRL and a new delta CRL of its anchor; with them off it publishes
a new full CRL at once.

Full and delta CRLs (RFC 5280 §5.2.4) share the CA's one CRL number sequence (``CertificateAuthority.
crl_number``, moved on under the CA row's lock), so numbers only ever increase, whichever kind is built.

Anchors: the full CRLs the schedule builds (and *Publish CRL*, a delta CRL setting change, a fetch near the
newest one's nextUpdate) are the CA's anchors; every delta CRL names the newest anchor as its BaseCRLNumber
and lists every revocation since it. The full CRLs a revocation publishes are not anchors: a relying party
that reads only full CRLs fetches them, one that cached the anchor (until its nextUpdate, as Windows does)
combines it with the delta, which RFC 5280 allows with any complete CRL numbered at or above the base. So
a delta does not move its base on every revocation, and both kinds of relying party see a revocation
within one worker task.
"""

from __future__ import annotations

import functools
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
from pki import alerts, issuers, signals, x509
from pki.models import (
    Certificate,
    CertificateAuthority,
    Crl,
    RevocationReason,
)
from pki.services import ocsp
from pki.services.cas import ca_material, crl_url, delta_crl_url
from pki.services.common import (
    AlreadyRevoked,
)


def revoke(certificate: Certificate, *, reason: str, actor: Actor) -> Certificate:
    """Revoke with an RFC 5280 reason. The certificate's issuer revokes at its CA first (no row lock is
    held during that network call, and nothing is marked if the CA says no); then the certificate is marked,
    audited and alerted in one transaction, in which an internal CA publishes its revocation
    (``publish_revocation``)."""
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
            if current.ca.is_internal:
                lock_for_revocation(current.ca)
            certificate.status = Certificate.Status.REVOKED
            certificate.revoked_at = timezone.now()
            certificate.revocation_reason = reason
            certificate.next_renewal_at = None  # a revoked certificate is never renewed
            certificate.save(update_fields=["status", "revoked_at", "revocation_reason", "next_renewal_at"])
            audit.record(actor, "certificate.revoke", certificate, reason=reason, serial=certificate.serial)
            alerts.notify("revoked", certificate=certificate)
            backend.after_revoke(certificate, actor)
            ocsp.after_revoke(current.ca, [certificate.serial])
            signals.send_on_commit(signals.certificates_revoked, Certificate, [certificate])
    return certificate


# --- CRLs --------------------------------------------------------------------------------------------------
# A delta CRL lists the revocations from this long before its base's thisUpdate: listing a certificate the
# base lists too is harmless, and it covers clocks of web and worker hosts a little apart.
DELTA_OVERLAP = timedelta(minutes=5)


def lock_for_revocation(ca: CertificateAuthority) -> tuple[int, bool]:
    """In a revocation's transaction, before the revocation time is taken: the CA row's lock, which every CRL
    build holds too. So a revocation commits before a CRL build starts (which lists it) or is timed after the
    build's thisUpdate (a delta of that base lists it); never missed by both. Returns the CA's CRL number and
    whether its delta CRLs are on."""
    number, deltas = (
        CertificateAuthority.objects.select_for_update()
        .values_list("crl_number", "delta_crl_enabled")
        .get(pk=ca.pk)
    )
    return int(number), bool(deltas)


def publish_revocation(ca: CertificateAuthority, actor: Actor) -> None:
    """In a revocation's transaction (the CA row locked by ``lock_for_revocation``): with delta CRLs on, a
    worker publishes a new full CRL and a new delta CRL after the commit (``publish_after_revocation``); with
    them off, a new full CRL is published at once."""
    number, deltas = lock_for_revocation(ca)
    if deltas:
        transaction.on_commit(functools.partial(enqueue_delta_crl, ca.pk, number))
    else:
        locked = _locked(ca)
        _publish(locked, actor)
        _prune(locked, actor)


def enqueue_delta_crl(ca_id: int, after_number: int) -> None:
    from django_q.tasks import async_task

    async_task("pki.tasks.refresh_delta_crl", ca_id, after_number, task_name="pki.refresh_delta_crl")


def publish_after_revocation(ca: CertificateAuthority, after_number: int, actor: Actor) -> list[Crl]:
    """The worker's half of ``publish_revocation``: a new full CRL (every revoked, unexpired certificate)
    and, with delta CRLs on, a new delta CRL of the anchor (every revocation since it), numbered after the
    full one so the two combine. Nothing (an empty list) when a full CRL and, deltas on, a delta CRL numbered
    above ``after_number`` (the CA's number when the revocation committed) were built since: they list it.
    Then the superseded rows are pruned (``prune_crls``)."""
    with transaction.atomic():
        locked = _locked(ca)
        full = _latest(locked, delta=False)
        covered = full is not None and full.number > after_number
        if locked.delta_crl_enabled:
            delta = _latest(locked, delta=True)
            covered = covered and delta is not None and delta.number > after_number
        if covered:
            return []
        built = _publish(locked, actor)
        _prune(locked, actor)
        return built


def _publish(locked: CertificateAuthority, actor: Actor) -> list[Crl]:
    """A revocation's CRLs: a full CRL that is not an anchor and, deltas on, a delta of the anchor. The full
    CRL is a new anchor instead when there is no usable one (``_usable_anchor``)."""
    anchor = _usable_anchor(locked)
    if anchor is None:
        anchor = _build(locked, actor, base=None, anchor=True)
        built = [anchor]
    else:
        built = [_build(locked, actor, base=None, anchor=False)]
    if locked.delta_crl_enabled:
        built.append(_build(locked, actor, base=anchor))
    return built


def set_delta_crl(ca: CertificateAuthority, *, enabled: bool, actor: Actor) -> CertificateAuthority:
    """Turn a private CA's delta CRLs on or off. Either way a new full CRL is published at once (on: it points
    at the delta CRLs and a first delta is built; off: it lists every revocation, as each one will)."""
    actor = as_actor(actor)
    with audit.failures(actor, "ca.update", ca, delta_crl_enabled=enabled):
        require(actor, Action.MANAGE, ca.organization_id)
        if not ca.is_internal:
            raise ValidationError(
                {"delta_crl_enabled": ["Only a private (internal) CA publishes CRLs here."]}
            )
        with transaction.atomic():
            locked = _locked(ca)
            if locked.delta_crl_enabled != enabled:
                locked.delta_crl_enabled = enabled
                locked.updated_at = timezone.now()
                locked.save(update_fields=["delta_crl_enabled", "updated_at"])
                audit.record(actor, "ca.update", locked, changed=["delta_crl_enabled"])
                if locked.certificate_pem:
                    _build_base_and_delta(locked, actor)
    return locked


def refresh_crl(ca: CertificateAuthority, *, actor: Actor) -> Crl:
    """Publish a new anchor full CRL now (and, with delta CRLs on, a delta CRL of it); returns the full
    CRL."""
    actor = as_actor(actor)
    with audit.failures(actor, "crl.refresh", ca):
        require(actor, Action.MANAGE, ca.organization_id)
        with transaction.atomic():
            return _build_base_and_delta(_locked(ca), actor)


def refresh_delta_crl(ca: CertificateAuthority, *, actor: Actor) -> Crl:
    """Publish a new delta CRL of the anchor (the schedule, for a delta near its nextUpdate)."""
    actor = as_actor(actor)
    with audit.failures(actor, "crl.refresh", ca, delta=True):
        require(actor, Action.MANAGE, ca.organization_id)
        with transaction.atomic():
            return build_delta_crl(ca, actor)


def _near_end(crl: Crl) -> bool:
    return crl.next_update <= timezone.now() + timedelta(minutes=5)


def current_crl(ca: CertificateAuthority) -> Crl:
    """The newest full CRL (an anchor or a revocation's), rebuilt first (as an anchor) when none exists or
    it is past (or near) its nextUpdate."""
    return _current_base(ca, with_der=True)


def _current_base(ca: CertificateAuthority, *, with_der: bool) -> Crl:
    crl = _latest(ca, delta=False, with_der=with_der)
    if crl is None or _near_end(crl):
        with transaction.atomic():
            crl = build_crl(ca, Actor.system("crl.serve"))
    return crl


def current_delta_crl(ca: CertificateAuthority) -> Crl:
    """The newest delta CRL, rebuilt first when there is none, when it does not name the newest anchor (or
    that anchor is not usable, ``_usable_anchor``), when a full CRL numbered above it was built (deltas
    off, each revocation's full CRL: the delta is rebuilt to list it too), or when it is past (or near) its
    nextUpdate. Served whether the CA's delta CRLs are on or not: certificates issued while they were on
    point here."""
    full = _current_base(ca, with_der=False)
    anchor = _usable_anchor(ca)
    delta = _latest(ca, delta=True, with_der=True)
    if (
        delta is None
        or anchor is None
        or delta.base_number != anchor.number
        or delta.number < full.number
        or _near_end(delta)
    ):
        with transaction.atomic():
            delta = build_delta_crl(ca, Actor.system("crl.serve"))
    return delta


def _latest(
    ca: CertificateAuthority, *, delta: bool, anchor: bool | None = None, with_der: bool = False
) -> Crl | None:
    crls = ca.crls.filter(delta=delta).order_by("-number")
    if anchor is not None:
        crls = crls.filter(anchor=anchor)
    return (crls if with_der else crls.defer("der")).first()


def _usable_anchor(ca: CertificateAuthority) -> Crl | None:
    """The CA's newest anchor, unless there is none, it was built before delta CRLs (no count, and no IDP:
    OpenSSL only combines a delta with a full CRL of the same Issuing Distribution Point) or it is past (or
    near) its nextUpdate: then a new anchor is built before a delta names one."""
    anchor = _latest(ca, delta=False, anchor=True)
    if anchor is None or anchor.entries is None or _near_end(anchor):
        return None
    return anchor


def prune_crls(ca: CertificateAuthority, *, actor: Actor) -> int:
    """Delete the CA's superseded CRL rows no relying party can still use (``_prune``); returns how many."""
    with transaction.atomic():
        return _prune(_locked(ca), as_actor(actor))


def _prune(locked: CertificateAuthority, actor: Actor) -> int:
    """Delete delta CRLs and non-anchor full CRLs that are past their nextUpdate (no relying party may use
    them any more) and not the newest of their kind (what the public URLs serve). Anchors stay: the history
    of full CRLs the schedule built, as before delta CRLs, and the base the newest delta names. So a CA keeps
    at most a validity's worth of revocation-built CRLs (``CERTMGR_CRL_VALIDITY_HOURS``, deltas
    ``CERTMGR_DELTA_CRL_VALIDITY_HOURS``) rather than one full CRL per revocation for ever."""
    served = [crl.pk for crl in (_latest(locked, delta=False), _latest(locked, delta=True)) if crl]
    stale = Crl.objects.filter(ca=locked, anchor=False, next_update__lte=timezone.now())
    stale = stale.exclude(pk__in=served)
    numbers = list(stale.order_by("number").values_list("number", flat=True))
    if not numbers:
        return 0
    Crl.objects.filter(ca=locked, number__in=numbers).delete()
    audit.record(actor, "crl.prune", locked, count=len(numbers), first=numbers[0], last=numbers[-1])
    return len(numbers)


def _crl_validity() -> timedelta:
    return timedelta(hours=settings.CERTMGR_CRL_VALIDITY_HOURS)


def _delta_crl_validity() -> timedelta:
    return timedelta(hours=settings.CERTMGR_DELTA_CRL_VALIDITY_HOURS)


def _locked(ca: CertificateAuthority) -> CertificateAuthority:
    return CertificateAuthority.objects.select_for_update().get(pk=ca.pk)


def build_crl(ca: CertificateAuthority, actor: Actor) -> Crl:
    """A new anchor full CRL of ``ca`` (inside the caller's transaction): every revoked, unexpired
    certificate."""
    return _build(_locked(ca), actor, base=None, anchor=True)


def build_delta_crl(ca: CertificateAuthority, actor: Actor) -> Crl:
    """A new delta CRL of ``ca`` (inside the caller's transaction) naming its newest anchor (a new anchor
    built first when there is no usable one)."""
    return _build_delta(_locked(ca), actor)


def _build_delta(locked: CertificateAuthority, actor: Actor) -> Crl:
    anchor = _usable_anchor(locked)
    if anchor is None:
        anchor = _build(locked, actor, base=None, anchor=True)
    return _build(locked, actor, base=anchor)


def _build_base_and_delta(locked: CertificateAuthority, actor: Actor) -> Crl:
    base = _build(locked, actor, base=None, anchor=True)
    if locked.delta_crl_enabled:
        _build(locked, actor, base=base)
    return base


def _scoped(ca: CertificateAuthority) -> bool:
    """Whether the CA's CRLs carry an Issuing Distribution Point naming the URL its certificates name as CRL
    distribution point: only an intermediate made here, every certificate of which names that URL. A CRL
    whose IDP has a distributionPoint covers, for OpenSSL, only certificates whose CDP names it: a root's
    CRLs have none, since ``openssl verify -crl_check_all`` checks the self-signed root (which names no CDP)
    against its own CRL and would fail with "different CRL scope"; an imported CA's neither, since the
    certificates it issued before may name another URL."""
    return ca.kind == CertificateAuthority.Kind.INTERNAL_INTERMEDIATE and not ca.imported


def _build(ca: CertificateAuthority, actor: Actor, *, base: Crl | None, anchor: bool = False) -> Crl:
    """A full CRL (``base`` None; an anchor or not) or a delta CRL of the anchor ``base``, numbered next in
    the CA's one sequence. ``ca`` is the caller's locked row (its ``crl_number`` moves on here). A full CRL
    of a CA with delta CRLs on points at them (Freshest CRL). All carry the same Issuing Distribution Point
    (``_scoped``)."""
    now = timezone.now()
    revoked = Certificate.objects.filter(ca=ca, status=Certificate.Status.REVOKED, not_after__gt=now)
    if base is not None:
        revoked = revoked.filter(revoked_at__gte=base.this_update - DELTA_OVERLAP)
    rows = list(revoked.order_by("revoked_at").values_list("serial", "revoked_at", "revocation_reason"))
    material = ca_material(ca)
    next_update = now + (_crl_validity() if base is None else _delta_crl_validity())
    ca.crl_number += 1
    der = x509.build_crl(
        issuer_cert=material.certificate,
        issuer_key=material.key,
        # revoked_at is set on every revoked row (revoke() writes both together)
        revoked=[(int(serial, 16), at or now, reason) for serial, at, reason in rows],
        this_update=now,
        next_update=next_update,
        crl_number=ca.crl_number,
        distribution_point=crl_url(ca) if _scoped(ca) else None,
        freshest_crl=delta_crl_url(ca) if base is None and ca.delta_crl_enabled else None,
        delta_of=None if base is None else base.number,
    ).public_bytes(serialization.Encoding.DER)
    ca.save(update_fields=["crl_number"])
    crl = Crl.objects.create(
        ca=ca,
        number=ca.crl_number,
        delta=base is not None,
        anchor=base is None and anchor,
        base_number=None if base is None else base.number,
        entries=len(rows),
        this_update=now,
        next_update=next_update,
        der=der,
    )
    if base is None:
        audit.record(actor, "crl.publish", ca, number=crl.number, revoked=len(rows), anchor=crl.anchor)
    else:
        audit.record(actor, "crl.publish", ca, number=crl.number, revoked=len(rows), delta_of=base.number)
    return crl


def revoke_many(certificates: Iterable[Certificate], *, reason: str, actor: Actor) -> int:
    """Revoke many certificates at once (a mass re-issue's replaced ones): certificates of issuers that
    revoke at their CA go one by one through ``revoke``; the others are marked in one statement per CA,
    audited together, and each CA publishes once (``publish_revocation``). Returns how many were revoked."""
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
        with transaction.atomic():
            # the certificates' rows, then the CA's (the order revoke() takes them in)
            marked = list(
                Certificate.objects.select_for_update(of=("self",))
                .filter(pk__in=[c.pk for c in certs])
                .exclude(status=Certificate.Status.REVOKED)
                .order_by("pk")
            )
            if ca.is_internal:
                lock_for_revocation(ca)
            now = timezone.now()
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
            if ca.is_internal:
                publish_revocation(ca, actor)
            ocsp.after_revoke(ca, [c.serial for c in marked])
            signals.send_on_commit(signals.certificates_revoked, Certificate, marked)
        count += len(marked)
    return count
