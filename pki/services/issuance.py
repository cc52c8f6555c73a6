"""Issuance: one authorize step and one record step behind every door.

``issue()`` locks the subscriber, ``authorize()`` checks the request (CA usable, renewal allowed, key or CSR,
the policy with every violation at once) and hands it to the issuer backend of the CA's kind
(``pki.issuers``): an internal CA signs now and ``record()`` stores the certificate; an external CA answers
``Pending`` and its app ends the work through ``complete_external()``, which records the same way. Batch
issuance (``pki.services.batch``) authorizes each request like this and records them all at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from cryptography import x509 as cx509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.urls import get_script_prefix

from certmgr import audit, sql
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict, PermissionDenied, ServiceError
from certmgr.permissions import Action
from certmgr.services import require
from pki import alerts, issuers, renewal, signals, x509
from pki import policy as policy_rules
from pki.issuers import IssuanceRequest, Issued, Outcome
from pki.models import AlertRule, Certificate, CertificateAuthority, Policy, Subscriber
from pki.querysets import SubscriberQuerySet
from pki.services import ocsp, operation_state
from pki.services.cas import aia_url, ca_material, crl_url, delta_crl_url, ocsp_url
from pki.services.common import CaUnavailable, PolicyRefused, x509_error

ISSUE, RENEW = "certificate.issue", "certificate.renew"


# --- the doors' entry points ------------------------------------------------------------------------------
def issue(
    subscriber: Subscriber,
    *,
    actor: Actor,
    csr_pem: str | None = None,
    csr_key_pem: str | None = None,
    renewal_of: Certificate | None = None,
) -> Outcome:
    """Issue a certificate from ``subscriber``: a new key, the current one (``reuse_key`` renewals) or the
    caller's CSR (then no key is stored, unless the CSR was generated here and ``csr_key_pem`` is its key).

    Answers ``Issued`` when the CA signed at once, ``Pending`` when its issuer works on (an ACME order).
    The policy is checked on every issuance and every renewal, as it stands now. A refusal is audited and
    shown on the subscriber (last operation: failed).
    """
    actor = as_actor(actor)
    action = RENEW if renewal_of else ISSUE
    try:
        with audit.failures(actor, action, subscriber):
            require(actor, Action.MANAGE, subscriber.organization_id)
            with transaction.atomic():
                request = authorize(
                    lock_subscriber(subscriber.pk),
                    actor=actor,
                    action=action,
                    csr_pem=csr_pem,
                    csr_key_pem=csr_key_pem,
                    renewal_of=renewal_of,
                )
                return issuers.backend_for(request.ca).start(request)
    except (ServiceError, ValidationError) as exc:
        # A permission refusal or a conflict (already renewed) says nothing about the subscriber's health.
        if not isinstance(exc, PermissionDenied | Conflict):
            operation_state.failed(
                subscriber.pk, failure_category(exc), f"{action} refused: {error_text(exc)}"
            )
        raise


def retry_now(subscriber: Subscriber, *, actor: Actor) -> Outcome:
    """An operator's "retry now": drop the backoff and renew the subscriber's current certificate at once
    (or issue a first one)."""
    actor = as_actor(actor)
    with audit.failures(actor, "subscriber.retry", subscriber):
        require(actor, Action.MANAGE, subscriber.organization_id)
        operation_state.retry_now(subscriber.pk)
    return issue(subscriber, actor=actor, renewal_of=current_certificate(subscriber))


def current_certificate(subscriber: Subscriber) -> Certificate | None:
    """The certificate the sweep would renew next: the subscriber's newest one still planned."""
    return (
        Certificate.objects.filter(subscriber=subscriber, next_renewal_at__isnull=False)
        .order_by("-not_after")
        .first()
    )


def failure_category(exc: Exception) -> str:
    return "invalid" if isinstance(exc, ValidationError) else getattr(exc, "code", "error")


def error_text(exc: Exception) -> str:
    return "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)


# --- authorize ------------------------------------------------------------------------------------------
def lock_subscriber(subscriber_id: int) -> Subscriber:
    """The subscriber row, locked for this transaction (one issuance at a time per subscriber), with its CA
    and policy; the CA's key stays out (``ca_material`` decrypts it once per worker)."""
    return cast(Subscriber, _LOCK_SUBSCRIBER.get(subscriber_id))


def locking_subscribers() -> SubscriberQuerySet[Subscriber]:
    """Subscribers locked for issuance, with their CA and policy, and ``has_issued_alerts``: whether their
    organization has an enabled ``issued`` alert rule now (read with the lock, so ``record`` asks for the
    rules only when there are some)."""
    return (
        Subscriber.objects.select_for_update(of=("self",))
        .select_related("ca", "policy")
        .defer("ca__private_key")
        .annotate(
            has_issued_alerts=Exists(
                AlertRule.objects.filter(
                    organization_id=OuterRef("organization_id"), event=AlertRule.Event.ISSUED, enabled=True
                )
            )
        )
        .order_by()
    )


_LOCK_SUBSCRIBER = sql.Prepared(lambda subscriber_id: locking_subscribers().filter(pk=subscriber_id))


def authorize(
    sub: Subscriber,
    *,
    actor: Actor,
    action: str = ISSUE,
    csr_pem: str | None = None,
    csr_key_pem: str | None = None,
    renewal_of: Certificate | None = None,
) -> IssuanceRequest:
    """Everything an issuance must pass, on a locked subscriber (``check``), then the request an issuer
    backend takes (``Approved.request``: the key is made once nothing can refuse any more)."""
    approved = check(sub, csr_pem=csr_pem, csr_key_pem=csr_key_pem, renewal_of=renewal_of)
    return approved.request(actor=actor, action=action)


@dataclass(frozen=True)
class Approved:
    """A request that passed every check. ``key``/``public_key`` are None when certmgr makes a new key."""

    subscriber: Subscriber
    key_algorithm: str
    key: x509.PrivateKey | None = None
    public_key: x509.PublicKey | None = None
    csr_pem: str | None = None
    renewal_of: Certificate | None = None

    def request(self, *, actor: Actor, action: str) -> IssuanceRequest:
        key, public_key = self.key, self.public_key
        if key is None and public_key is None:
            try:
                key = x509.generate_key(x509.KeyAlgorithm(self.key_algorithm))
            except ValueError as exc:
                raise ValidationError({"key_algorithm": [str(exc)]}) from exc
        sub = self.subscriber
        return IssuanceRequest(
            subscriber=sub,
            ca=sub.ca if sub.issuer_type == Subscriber.IssuerType.CA else None,
            actor=actor,
            action=action,
            key=key,
            public_key=public_key if public_key is not None else key.public_key(),  # type: ignore[union-attr]
            key_algorithm=self.key_algorithm,
            csr_pem=self.csr_pem,
            renewal_of=self.renewal_of,
        )


def check(
    sub: Subscriber,
    *,
    csr_pem: str | None = None,
    csr_key_pem: str | None = None,
    renewal_of: Certificate | None = None,
) -> Approved:
    """The CA is usable, the renewal is allowed, the key or CSR is the subscriber's, and the policy allows
    it all (every violation reported at once)."""
    check_issuer(sub)
    if renewal_of is not None:
        check_renewable(renewal_of, sub)
        if not csr_pem and not renewal_of.private_key:
            # Issued from the caller's CSR: certmgr has no key to renew with, and a key of its own would be
            # useless to the server holding the original one. The stored CSR is sent again.
            csr_pem = renewal_csr(sub, renewal_of)
    if csr_pem:
        public_key, key_algorithm = _csr_key(sub, csr_pem)
        key = x509.load_private_key(csr_key_pem) if csr_key_pem else None
        check_policy(sub, key_algorithm, keeps_renewed_key=_same_key(public_key, renewal_of))
        return Approved(sub, key_algorithm, key, public_key, csr_pem, renewal_of)
    if renewal_of is not None and sub.reuse_key and renewal_of.private_key and not _new_key_required(sub):
        key = x509.load_private_key(renewal_of.private_key)  # the subscriber keeps its key across renewals
        key_algorithm = str(x509.key_algorithm_of(key))
        check_policy(sub, key_algorithm)
        return Approved(sub, key_algorithm, key, key.public_key(), None, renewal_of)
    check_policy(sub, sub.key_algorithm)
    return Approved(sub, sub.key_algorithm, renewal_of=renewal_of)


class NewCsrNeeded(ServiceError):
    """A renewal of a certificate issued from the caller's CSR cannot go on without a new CSR."""

    status = 409
    code = "new_csr_needed"


def _new_key_required(sub: Subscriber) -> bool:
    return sub.policy is not None and sub.policy.new_key_at_renewal


def renewal_csr(sub: Subscriber, old: Certificate) -> str:
    """The CSR a renewal of ``old`` (issued from the caller's CSR) sends again; NewCsrNeeded when the policy
    demands a new key or certmgr kept no CSR (certificates issued before it did)."""
    if _new_key_required(sub):
        assert sub.policy is not None
        raise NewCsrNeeded(policy_rules.new_csr_needed(sub.policy.name), field="csr")
    if not old.csr_pem:
        raise NewCsrNeeded(
            f"a new CSR is needed: certificate {old.serial} was issued from a CSR certmgr did not keep",
            field="csr",
        )
    return old.csr_pem


def renewal_plan(sub: Subscriber) -> str:
    """What the next renewal of the subscriber's current certificate does with its key, for people."""
    current = current_certificate(sub)
    if current is None:
        return "No certificate to renew yet."
    if not current.private_key:
        try:
            renewal_csr(sub, current)
        except NewCsrNeeded as exc:
            return f"Needs a new CSR: {exc.message.removeprefix('a new CSR is needed: ')}."
        return "Renews with the key of the CSR you supplied."
    if sub.reuse_key and not _new_key_required(sub):
        return "Renews with the current key."
    return "Renews with a new key made by certmgr."


def _same_key(public_key: x509.PublicKey, old: Certificate | None) -> bool:
    if old is None:
        return False
    try:
        return x509.has_public_key(x509.load_pem_certificates(old.certificate_pem)[0], public_key)
    except x509.X509Error:
        return False


def issuer_of(sub: Subscriber) -> issuers.IssuerBackend:
    """The backend that issues the subscriber's certificates (its CA's kind, or self-signed)."""
    return issuers.backend_for(sub.ca if sub.issuer_type == Subscriber.IssuerType.CA else None)


def check_issuer(sub: Subscriber) -> None:
    """The subscriber has a CA that issues now (or is self-signed), and the CA's issuer is installed."""
    if sub.issuer_type != Subscriber.IssuerType.CA:
        if sub.ca_certificate:
            raise ValidationError({"ca_certificate": ["A self-signed CA is a root: create it as a CA."]})
        return
    ca = sub.ca
    if ca is None:
        raise ValidationError({"ca": ["This subscriber has no issuing CA."]})
    if ca.status != CertificateAuthority.Status.ACTIVE:
        raise CaUnavailable(f"CA {ca.name!r} is disabled and issues nothing", field="ca")
    try:
        backend = issuers.backend_for(ca)
    except LookupError as exc:
        raise CaUnavailable(str(exc), field="ca") from None
    if sub.ca_certificate and not backend.signs_locally:
        raise ValidationError({"ca_certificate": [f"CA {ca.name!r} does not issue CA certificates."]})


def check_renewable(old: Certificate, sub: Subscriber) -> None:
    if old.subscriber_id != sub.pk:
        raise ValidationError({"renewal_of": ["That certificate was not issued from this subscriber."]})
    successor = Certificate.objects.filter(renewed_from=old).only("serial").first()
    if successor is not None:
        raise Conflict(f"this certificate was already renewed by serial {successor.serial}")


def _csr_key(sub: Subscriber, csr_pem: str) -> tuple[x509.PublicKey, str]:
    """The CSR's public key and algorithm; a CSR asking for names the subscriber does not cover is refused,
    not silently narrowed (the certificate carries the subscriber's names)."""
    try:
        csr = x509.load_csr(csr_pem)
        info = x509.csr_info(csr)
    except x509.X509Error as exc:
        raise x509_error(exc, "csr") from exc
    allowed = {n.lower() for n in [sub.common_name, *sub.sans] if n}
    asked = {n.lower() for n in [info.subject.common_name, *info.sans] if n}
    if asked - allowed:
        extra = ", ".join(sorted(asked - allowed))
        raise ValidationError({"csr": [f"the CSR asks for names this subscriber does not cover: {extra}"]})
    return cast(x509.PublicKey, csr.public_key()), str(info.key_algorithm)  # csr_info refused the others


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
        allow_ca=p.allow_ca,
        new_key_at_renewal=p.new_key_at_renewal,
    )


def certified_names(sub: Subscriber) -> list[str]:
    """The SANs an end-entity certificate carries: the subscriber's, and its common name if they lack it
    (clients match names against the SANs only; a CN outside them would be a name nobody checks)."""
    names = list(sub.sans)
    if sub.common_name and not sub.ca_certificate:
        names.append(sub.common_name)  # parse_sans drops it again when a SAN already says the same
    return names


def policy_request(sub: Subscriber, key_algorithm: str) -> policy_rules.Request:
    return policy_rules.Request(
        common_name=sub.common_name,
        sans=list(sub.sans),
        key_algorithm=key_algorithm,
        validity_days=sub.validity_days,
        key_usages=list(sub.key_usages),
        extended_key_usages=list(sub.extended_key_usages),
        ca_certificate=sub.ca_certificate,
    )


def check_policy(sub: Subscriber, key_algorithm: str, *, keeps_renewed_key: bool = False) -> None:
    """Refuse with every rule of the subscriber's policy the request breaks, each under its field."""
    if sub.policy is None:
        if sub.ca_certificate:
            raise PolicyRefused(
                "a CA certificate is only issued under a policy that allows CA certificates",
                field="ca_certificate",
            )
        return
    try:
        request = policy_request(sub, key_algorithm)
        if keeps_renewed_key:
            request = dataclasses.replace(request, keeps_renewed_key=True)
        policy_rules.check(policy_of(sub.policy), request)
    except policy_rules.PolicyViolation as exc:
        raise PolicyRefused.of(exc) from exc


# --- enrollment doors (the ACME server) ------------------------------------------------------------------
@dataclass(frozen=True)
class Enrollment:
    """A certificate an enrollment door asks of an internal CA for a caller's CSR: the names the door has
    proved, the policy and validity of its profile. No subscriber: the client renews by enrolling again."""

    organization_id: int
    ca: CertificateAuthority
    policy: Policy | None
    csr_pem: str
    names: list[str]  # DNS names and IP addresses (see _enrolled_common_name for the subject)
    validity_days: int
    # The window the client asked for (ACME notBefore/notAfter), already within validity_days; None: from
    # now for validity_days.
    not_before: datetime | None = None
    not_after: datetime | None = None


def _enrolled_common_name(names: Sequence[str]) -> str:
    """The first DNS name that fits a CN (64 characters), else none. Never an IP address: RFC 8738
    certificates carry it in the SAN only (like Let's Encrypt's), since clients read the CN as a DNS name
    (certbot 5.8 stops after issuance on a CN of 127.0.0.1: "is an IP address")."""
    return next((n for n in names if len(n) <= 64 and not isinstance(x509.parse_san(n), cx509.IPAddress)), "")


def enroll(
    enrollment: Enrollment, *, actor: Actor, then: Callable[[Certificate], None] | None = None
) -> Certificate:
    """Sign ``enrollment`` with its internal CA under the same checks and bookkeeping as every issuance
    (CA usable, CSR key, the policy with every violation at once; inventory, audit, alerts, OCSP).

    ``then`` is the door's own last step (an ACME order turning valid), run in the same transaction as the
    certificate's insert: the door never ends without its certificate or stores it twice. A refusal is
    audited. The certificate is described by a subscriber that is never saved: the same fields the policy
    check and the signer read for a subscriber's certificates."""
    actor = as_actor(actor)
    ca = enrollment.ca
    with audit.failures(actor, ISSUE, ca):
        require(actor, Action.MANAGE, enrollment.organization_id)
        if ca.organization_id != enrollment.organization_id:
            raise ValidationError({"ca": ["Unknown CA."]})
        names = list(enrollment.names)
        if not names:
            raise ValidationError({"sans": ["A certificate needs at least one name."]})
        policy = enrollment.policy
        template = Subscriber(
            organization_id=enrollment.organization_id,
            name="(enrollment)",
            issuer_type=Subscriber.IssuerType.CA,
            ca=ca,
            policy=policy,
            common_name=_enrolled_common_name(names),
            sans=names,
            validity_days=enrollment.validity_days,
            key_usages=[],
            extended_key_usages=list(policy.extended_key_usages)
            if policy and policy.extended_key_usages
            else ["server_auth"],
        )
        check_issuer(template)
        if not issuers.backend_for(ca).signs_locally:
            raise CaUnavailable(f"CA {ca.name!r} is not a private CA certmgr signs with", field="ca")
        public_key, key_algorithm = _csr_key(template, enrollment.csr_pem)
        check_policy(template, key_algorithm)
        request = IssuanceRequest(
            subscriber=template,
            ca=ca,
            actor=actor,
            action=ISSUE,
            key=None,
            public_key=public_key,
            key_algorithm=key_algorithm,
            csr_pem=enrollment.csr_pem,
            not_before=enrollment.not_before,
            not_after=enrollment.not_after,
        )
        with transaction.atomic():
            cert, chain_pem = sign(request)
            signed = Signed(
                enrollment.organization_id, cert, chain_pem, None, Certificate.Source.ISSUED, ca=ca
            )
            certificate = record([signed], actor=actor)[0]
            if then is not None:
                then(certificate)
            return certificate


# --- sign (internal CAs and self-signed) -------------------------------------------------------------------
def sign(request: IssuanceRequest) -> tuple[cx509.Certificate, str]:
    """The certificate of a request an internal CA (or the key itself) signs, and its chain's PEM."""
    sub = request.subscriber
    subject = x509.Subject(common_name=sub.common_name or None, **{k: v for k, v in sub.subject.items() if v})
    usages: dict[str, Any] = {
        "key_usages": list(sub.key_usages) or None,
        "extended_key_usages": list(sub.extended_key_usages),
    }
    try:
        if request.ca is None:
            if request.key is None:
                raise ValidationError({"csr": ["A self-signed certificate needs a key made here."]})
            cert = x509.build_self_signed_certificate(
                key=request.key,
                subject=subject,
                sans=certified_names(sub),
                validity_days=sub.validity_days,
                **usages,
            )
            return cert, ""
        material = ca_material(request.ca)
        crl, aia, ocsp_at, delta = ca_urls(request.ca)
        if sub.ca_certificate:
            try:
                cert = x509.build_ca_certificate(
                    subject=subject,
                    key=request.public_key,
                    issuer_cert=material.certificate,
                    issuer_key=material.key,
                    validity_days=sub.validity_days,
                    max_path_length=sub.ca_path_length,
                    crl_url=crl,
                    aia_url=aia,
                    ocsp_url=ocsp_at,
                    delta_crl_url=delta,
                )
            except x509.X509Error as exc:  # the issuing CA's own path length is the usual reason
                raise x509_error(exc, "ca_path_length") from exc
            return cert, material.chain_pem
        cert = x509.build_leaf_certificate(
            csr_or_public_key=request.public_key,
            subject=subject,
            sans=certified_names(sub),
            issuer_cert=material.certificate,
            issuer_key=material.key,
            validity_days=sub.validity_days,
            crl_url=crl,
            aia_url=aia,
            ocsp_url=ocsp_at,
            delta_crl_url=delta,
            not_before=request.not_before,
            not_after=request.not_after,
            **usages,
        ).certificate
        return cert, material.chain_pem
    except x509.X509Error as exc:
        raise x509_error(exc) from exc


# (base URL, script prefix, CA id, OCSP on, deltas on) -> (CRL URL, AIA caIssuers URL, OCSP URL or None,
# delta CRL URL or None): URL reversing costs as much as a signature's hash.
_CA_URLS: dict[tuple[str, str, int, bool, bool], tuple[str, str, str | None, str | None]] = {}


def ca_urls(ca: CertificateAuthority) -> tuple[str, str, str | None, str | None]:
    """The URLs a certificate of ``ca`` carries; the OCSP one only while the CA's responder is on, the delta
    CRL one (Freshest CRL) only while its delta CRLs are."""
    key = (settings.CERTMGR_BASE_URL, get_script_prefix(), ca.pk, ca.ocsp_enabled, ca.delta_crl_enabled)
    urls = _CA_URLS.get(key)
    if urls is None:
        if len(_CA_URLS) > 256:
            _CA_URLS.clear()
        urls = _CA_URLS[key] = (
            crl_url(ca),
            aia_url(ca),
            ocsp_url(ca) if ca.ocsp_enabled else None,
            delta_crl_url(ca) if ca.delta_crl_enabled else None,
        )
    return urls


# --- record -------------------------------------------------------------------------------------------
@dataclass
class Signed:
    """A certificate to record: what was signed, for whom, and how it is audited."""

    organization_id: int
    certificate: cx509.Certificate
    chain_pem: str
    key: x509.PrivateKey | None
    source: str
    ca: CertificateAuthority | None = None
    subscriber: Subscriber | None = None  # locked by the caller
    renewal_of: Certificate | None = None
    message: str = ""  # the subscriber's last operation, e.g. "issued serial 1a2b"
    csr_pem: str = ""  # the caller's CSR when ``key`` is None: kept for renewals


def signed_request(
    request: IssuanceRequest, cert: cx509.Certificate, chain_pem: str, *, source: str
) -> Signed:
    """What an issuer signed for ``request``, to record (the caller's CSR kept when certmgr has no key)."""
    return Signed(
        request.subscriber.organization_id,
        cert,
        chain_pem,
        request.key,
        source=source,
        ca=request.ca,
        subscriber=request.subscriber,
        renewal_of=request.renewal_of,
        csr_pem=(request.csr_pem or "") if request.key is None else "",
    )


def record(signed: Sequence[Signed], *, actor: Actor) -> list[Certificate]:
    """Put signed certificates into the inventory with everything an issuance means: the subscriber's last
    operation, older certificates off the renewal plan, one audit event each (issue or renew), the alert.
    One statement per kind of write, however many certificates."""
    rows = [
        certificate_row(
            s.organization_id,
            s.certificate,
            s.chain_pem,
            s.key,
            source=s.source,
            ca=s.ca,
            subscriber=s.subscriber,
            renewed_from=s.renewal_of,
            csr_pem=s.csr_pem,
        )
        for s in signed
    ]
    subscribers: dict[int, Subscriber] = {}
    for item, row in zip(signed, rows, strict=True):
        if item.subscriber is not None:
            operation_state.set_succeeded(item.subscriber, item.message or f"issued serial {row.serial}")
            subscribers[item.subscriber.pk] = item.subscriber
    claimed: tuple[Any, ...] | None = None
    if len(rows) == 1:
        # One round trip: the row, its subscriber's last operation, the supersede (PostgreSQL runs the side
        # writes on the statement's snapshot, so the new row is never taken off the plan) and the claim of
        # the audit chain's next link.
        side = [operation_state.succeeded_statement(sub) for sub in subscribers.values()]
        if rows[0].subscriber_id is not None:
            side.append(supersede_statement(rows[0].subscriber_id))
        [(pk, *claim)] = sql.execute(sql.insert(rows[0]), *side, also=audit.claim(rows[0].organization_id))
        claimed = tuple(claim)
        sql.saved(rows[0], [(pk,)])
    else:
        sql.bulk_insert(rows)
        operation_state.succeeded(subscribers.values())
        supersede(rows)
    events: dict[tuple[int, str], list[tuple[Certificate, dict[str, Any]]]] = {}
    for row in rows:
        action = RENEW if row.renewed_from_id else ISSUE
        events.setdefault((row.organization_id, action), []).append(
            (
                row,
                {
                    "subscriber": row.subscriber_id,
                    "serial": row.serial,
                    "ca": row.ca_id,
                    "key_stored": bool(row.private_key),
                    "renewed_from": row.renewed_from_id,
                },
            )
        )
    for (org_id, action), targets in sorted(events.items()):
        if len(targets) == 1:
            audit.record(actor, action, targets[0][0], claimed=claimed, **targets[0][1])
        else:
            audit.record_many(actor, action, targets, organization=org_id)
    if not all(getattr(s.subscriber, "has_issued_alerts", None) is False for s in signed):
        alerts.notify("issued", certificate=rows if len(rows) > 1 else rows[0])
    ocsp.after_issue([(s.ca, row.serial) for s, row in zip(signed, rows, strict=True) if s.ca is not None])
    signals.send_on_commit(signals.certificates_recorded, Certificate, rows)  # syncs deploy them
    return rows


# Take the subscriber's certificates off the renewal plan: sent with the new one's insert, which it cannot
# see (``certmgr.sql.execute``).
supersede_statement = sql.PreparedUpdate(
    lambda subscriber_id: Certificate.objects.filter(
        subscriber_id=subscriber_id, next_renewal_at__isnull=False
    ),
    next_renewal_at=None,
)


def supersede(rows: Sequence[Certificate]) -> None:
    """Only each subscriber's newest certificate is renewed from now on (index ``cert_subscriber_renewing``
    keeps this cheap however many certificates a subscriber had)."""
    newest = {row.subscriber_id: row.pk for row in rows if row.subscriber_id is not None}
    if not newest:
        return
    older = Certificate.objects.filter(next_renewal_at__isnull=False).exclude(pk__in=newest.values())
    if len(newest) == 1:
        older = older.filter(subscriber_id=next(iter(newest)))
    else:
        older = older.filter(subscriber_id__in=newest)
    older.update(next_renewal_at=None)


def store_certificate(
    organization_id: int,
    cert: cx509.Certificate,
    chain: list[cx509.Certificate],
    key: x509.PrivateKey | None,
    *,
    source: str,
    ca: CertificateAuthority | None = None,
) -> Certificate:
    """Insert a certificate that is no issuance (an import): no subscriber, no issuance bookkeeping."""
    row = certificate_row(
        organization_id, cert, "".join(x509.to_pem(c) for c in chain), key, source=source, ca=ca
    )
    row.save(force_insert=True)
    return row


def certificate_row(
    organization_id: int,
    cert: cx509.Certificate,
    chain_pem: str,
    key: x509.PrivateKey | None,
    *,
    source: str,
    ca: CertificateAuthority | None = None,
    subscriber: Subscriber | None = None,
    renewed_from: Certificate | None = None,
    csr_pem: str = "",
) -> Certificate:
    """The inventory row of ``cert`` (unsaved): its PEM, chain, key (or the caller's CSR), fingerprints and
    summary fields."""
    summary = x509.inventory_fields(cert)
    sha256, sha1 = summary.sha256, summary.sha1
    return Certificate(
        organization_id=organization_id,
        ca=ca,
        subscriber=subscriber,
        source=source,
        serial=summary.serial,
        certificate_pem=x509.to_pem(cert),
        chain_pem=chain_pem,
        private_key=x509.private_key_to_pem(key) if key is not None else "",
        csr_pem=csr_pem if key is None else "",
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


# --- external completion ----------------------------------------------------------------------------------
def complete_external(
    *,
    organization_id: int,
    ca: CertificateAuthority,
    fullchain_pem: str,
    key_pem: str | None,
    subscriber_id: int | None,
    renewal_of_id: int | None,
    actor: Actor,
    csr_pem: str = "",
) -> Certificate:
    """Record a certificate an external CA issued (leaf first, then its chain) for a ``Pending`` issuance.
    ``csr_pem``: the caller's CSR (when ``key_pem`` is None), kept so a renewal sends it again.

    Its issuer calls this inside its own transaction, together with its last step, so the work never ends
    without its certificate or stores it twice. Recorded like any issuance (or renewal).
    """
    try:
        certs = x509.load_pem_certificates(fullchain_pem)
    except x509.X509Error as exc:
        raise ServiceError(f"the CA returned no usable certificate: {exc}") from exc
    leaf, chain = certs[0], x509.order_chain(certs[0], certs[1:])
    key = x509.load_private_key(key_pem) if key_pem else None
    if key is not None and not x509.matches_key(leaf, key):
        raise ServiceError("the CA returned a certificate for another key")
    sub = lock_subscriber(subscriber_id) if subscriber_id else None
    renewal_of = Certificate.objects.filter(pk=renewal_of_id).first() if renewal_of_id else None
    if renewal_of is not None and Certificate.objects.filter(renewed_from=renewal_of).exists():
        renewal_of = None  # renewed meanwhile by another order: keep this certificate, unlinked
    signed = Signed(
        organization_id,
        leaf,
        "".join(x509.to_pem(c) for c in chain),
        key,
        source=Certificate.Source.ACME,
        ca=ca,
        subscriber=sub,
        renewal_of=renewal_of,
        csr_pem=csr_pem if key is None else "",
    )
    signed.message = f"issued serial {x509.serial_hex(leaf.serial_number)} by {ca.name}"
    return record([signed], actor=actor)[0]


def issued(certificate: Certificate) -> Issued:
    return Issued(certificate)
