"""Batch issuance: many certificates from internal CAs in one transaction, for mass issuance, the renewal
sweep and the re-issue of every certificate of a CA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict, ServiceError
from certmgr.models import AuditEvent
from certmgr.permissions import Action
from certmgr.services import require
from pki import issuers
from pki.models import (
    Certificate,
    CertificateAuthority,
    RevocationReason,
    Subscriber,
)
from pki.services import issuance
from pki.services.common import (
    CaUnavailable,
)

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


def issue_batch(requests: Iterable[BatchRequest | Subscriber], *, actor: Actor) -> list[Certificate]:
    """Issue one certificate per request, all from internal CAs (or self-signed), in one transaction.

    For mass issuance and renewal sweeps: the actor's role is checked once per organization, each
    subscriber is locked once (in id order), the policy is checked as ``issue()`` checks it, and the
    certificates, the subscribers' last operation and one audit event per certificate (the same event
    ``issue()`` writes) are stored with multi-row statements (``issuance.record``). Keys are made here (or
    kept, for subscribers that reuse their key).

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


def _issue_batch_locked(batch: list[BatchRequest], actor: Actor, refusal: _Refusal) -> list[Certificate]:
    subscribers = {
        sub.pk: sub
        for sub in issuance.locking_subscribers()
        .filter(pk__in={r.subscriber.pk for r in batch})
        .order_by("pk")  # rows are locked in this order: concurrent batches cannot deadlock on them
    }
    approved: list[issuance.Approved] = []
    renewed: set[int] = set()
    for request in batch:  # every request's checks before any key is made or anything signed
        refusal.subscriber = request.subscriber
        sub = subscribers.get(request.subscriber.pk)
        if sub is None or sub.organization_id != request.subscriber.organization_id:
            raise ValidationError({"subscriber": ["Unknown subscriber."]})
        issuance.check_issuer(sub)
        ca = sub.ca if sub.issuer_type == Subscriber.IssuerType.CA else None
        if not issuers.backend_for(ca).signs_locally:
            assert ca is not None  # a self-signed subscriber signs locally; check_issuer gave this one a CA
            raise CaUnavailable(
                f"CA {ca.name!r} is an external CA: its certificates are ordered one at a time",
                field="ca",
            )
        if request.renewal_of is not None:
            if request.renewal_of.pk in renewed:
                raise Conflict(f"certificate {request.renewal_of.serial} is renewed twice in this batch")
            renewed.add(request.renewal_of.pk)
        approved.append(issuance.check(sub, renewal_of=request.renewal_of))

    signed: list[issuance.Signed] = []
    for request, ok in zip(batch, approved, strict=True):
        refusal.subscriber = request.subscriber
        action = issuance.RENEW if request.renewal_of else issuance.ISSUE
        checked = ok.request(actor=actor, action=action)
        cert, chain_pem = issuance.sign(checked)
        source = Certificate.Source.SELF_SIGNED if checked.ca is None else Certificate.Source.ISSUED
        signed.append(issuance.signed_request(checked, cert, chain_pem, source=source))
    return issuance.record(signed, actor=actor)


# --- re-issue every certificate of a CA -------------------------------------------------------------------
@dataclass
class ReissueReport:
    reissued: int = 0  # signed now (internal CAs)
    ordered: int = 0  # handed to an external issuer (e.g. an ACME order)
    revoked: int = 0  # replaced certificates revoked
    failed: list[tuple[int, str]] = dataclass_field(default_factory=list)  # (certificate id, why)


REISSUE_CHUNK = 500


def reissue_ca(
    ca: CertificateAuthority,
    *,
    actor: Actor,
    to_ca: CertificateAuthority | None = None,
    revoke_reason: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReissueReport:
    """Re-issue the current certificate of every subscriber of ``ca``: what an organization needs after a
    CA key compromise (with ``to_ca``: the subscribers move to that CA first) or a misissuance.

    Internal CAs sign in batches of ``REISSUE_CHUNK`` (one transaction each; a chunk that is refused is
    retried one certificate at a time, so one bad subscriber costs only its own certificate); external CAs
    get one order per subscriber. With ``revoke_reason`` every replaced certificate is revoked once its
    successor exists, and each internal CA publishes one CRL at the end. The result is audited
    (``ca.reissue.finished``) with its counts and the first failures."""
    actor = as_actor(actor)
    say = progress or (lambda message: None)
    report = ReissueReport()
    with audit.failures(actor, "ca.reissue", ca, to_ca=to_ca.pk if to_ca else None):
        check_reissue(ca, actor=actor, to_ca=to_ca, revoke_reason=revoke_reason)
        with transaction.atomic():
            audit.record(actor, "ca.reissue", ca, to_ca=to_ca.pk if to_ca else None, revoke=revoke_reason)
    if to_ca is not None:
        from pki.services.profiles import save_subscriber

        for sub in Subscriber.objects.filter(ca=ca).order_by("pk"):
            save_subscriber(None, actor=actor, instance=sub, ca=to_ca)
    current = reissue_candidates(ca).select_related("subscriber").order_by("pk")
    replaced: list[Certificate] = []
    ids = list(current.values_list("pk", flat=True))
    for start in range(0, len(ids), REISSUE_CHUNK):
        chunk = list(current.filter(pk__in=ids[start : start + REISSUE_CHUNK]))
        local = [c for c in chunk if _signs_locally(_subscriber(c))]
        try:
            issue_batch([BatchRequest(_subscriber(c), renewal_of=c) for c in local], actor=actor)
            report.reissued += len(local)
            replaced.extend(local)
        except (ServiceError, ValidationError) as exc:
            say(f"a batch was refused ({exc}); re-issuing its certificates one at a time")
            chunk = local + [c for c in chunk if c not in local]
            local = []
        for cert in (c for c in chunk if c not in local):
            try:
                outcome = issuance.issue(_subscriber(cert), actor=actor, renewal_of=cert)
            except (ServiceError, ValidationError) as exc:
                report.failed.append((cert.pk, issuance.error_text(exc)))
                continue
            if outcome.certificate is not None:
                report.reissued += 1
                replaced.append(cert)
            else:
                report.ordered += 1
        say(f"{min(start + REISSUE_CHUNK, len(ids))}/{len(ids)} certificates handled")
    if revoke_reason is not None:
        from pki.services.revocation import revoke_many

        report.revoked = revoke_many(replaced, reason=revoke_reason, actor=actor)
    with transaction.atomic():
        audit.record(
            actor,
            "ca.reissue.finished",
            ca,
            outcome="failure" if report.failed else "success",
            reissued=report.reissued,
            ordered=report.ordered,
            revoked=report.revoked,
            failed=len(report.failed),
            failures=[f"certificate {pk}: {why}" for pk, why in report.failed[:20]],
        )
    return report


def reissue_candidates(ca: CertificateAuthority) -> QuerySet[Certificate]:
    """What a re-issue of ``ca`` replaces: each subscriber's current (newest, still planned) certificate."""
    return Certificate.objects.filter(
        ca=ca, status=Certificate.Status.ACTIVE, subscriber__isnull=False, next_renewal_at__isnull=False
    )


def check_reissue(
    ca: CertificateAuthority,
    *,
    actor: Actor,
    to_ca: CertificateAuthority | None = None,
    revoke_reason: str | None = None,
) -> None:
    """Refuse a re-issue that cannot start (role, reason, target CA): before a worker is asked to run it."""
    actor = as_actor(actor)
    require(actor, Action.MANAGE, ca.organization_id)
    if revoke_reason is not None and revoke_reason not in RevocationReason.values:
        raise ValidationError({"revoke_reason": [f"Choose one of: {', '.join(RevocationReason.values)}."]})
    if ca.status != CertificateAuthority.Status.ACTIVE and to_ca is None:
        raise CaUnavailable(
            f"CA {ca.name!r} is disabled and issues nothing: choose a CA to move its subscribers to",
            field="to_ca",
        )
    if to_ca is not None:
        if to_ca.organization_id != ca.organization_id or to_ca.pk == ca.pk:
            raise ValidationError({"to_ca": ["Choose another CA of the same organization."]})
        if to_ca.status != CertificateAuthority.Status.ACTIVE:
            raise CaUnavailable(f"CA {to_ca.name!r} is disabled and issues nothing", field="to_ca")


def start_reissue(
    ca: CertificateAuthority,
    *,
    actor: Actor,
    to_ca: CertificateAuthority | None = None,
    revoke_reason: str | None = None,
) -> None:
    """Check a re-issue now and run it in a worker once this transaction commits (a CA can have many
    thousands of certificates: no door waits for it). Its result is the ``ca.reissue.finished`` event."""
    actor = as_actor(actor)
    with audit.failures(actor, "ca.reissue", ca, to_ca=to_ca.pk if to_ca else None):
        check_reissue(ca, actor=actor, to_ca=to_ca, revoke_reason=revoke_reason)
    user_id = actor.user.pk if actor.user is not None else None
    token_id = actor.token.pk if actor.token is not None else None

    def send() -> None:
        from django_q.tasks import async_task

        async_task(
            "pki.tasks.reissue_ca",
            ca.pk,
            user_id=user_id,
            token_id=token_id,
            to_ca_id=to_ca.pk if to_ca else None,
            revoke_reason=revoke_reason,
            task_name=f"ca-reissue-{ca.pk}",
            group="pki",
        )

    transaction.on_commit(send)


def _subscriber(cert: Certificate) -> Subscriber:
    """A re-issue candidate's subscriber (``reissue_candidates`` has only certificates that have one)."""
    assert cert.subscriber is not None
    return cert.subscriber


def _signs_locally(sub: Subscriber) -> bool:
    return issuance.issuer_of(sub).signs_locally
