"""State changes of ACME orders: start, direct issuance, retry, refresh, cancel, manual confirmation, revoke.

The work itself happens in ``acmeca.flow`` on a django-q2 worker; these functions check the actor, change the
rows with their audit event, and enqueue the worker once the transaction has committed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from acmeca.choices import finished_status
from acmeca.models import AcmeChallenge, AcmeOrder, AcmeSettings, ChallengeType
from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict, ServiceError
from certmgr.permissions import Action
from certmgr.services import audited_delete, require
from pki import services as pki_services
from pki import x509
from pki.issuers import Outcome
from pki.models import Certificate, CertificateAuthority, Subscriber
from pki.services import operation_state

Step = AcmeOrder.Step


# Orders started inside ``foreground()`` are not handed to a worker: the caller runs them (acme_order).
_FOREGROUND: ContextVar[list[int] | None] = ContextVar("acme_foreground", default=None)
# The order a retry starts over: set by ``retry_order`` around the issuance it calls (which reaches
# ``_create`` through pki's issue and the ACME issuer), so the new order is linked to the one it retries.
_RETRY_OF: ContextVar[AcmeOrder | None] = ContextVar("acme_retry_of", default=None)


@contextlib.contextmanager
def foreground() -> Iterator[list[int]]:
    """Start orders without a worker; yields the list of their ids. A dead caller's order is still found
    by the janitor (it holds no lease and has no retry time)."""
    kept: list[int] = []
    token = _FOREGROUND.set(kept)
    try:
        yield kept
    finally:
        _FOREGROUND.reset(token)


def enqueue(order_id: int) -> None:
    """Hand the order to a worker once the surrounding transaction has committed."""
    kept = _FOREGROUND.get()
    if kept is not None:
        kept.append(order_id)
        return
    transaction.on_commit(lambda: resume(order_id))


def resume(order_id: int) -> None:
    """Hand an order that is committed already to a worker now (the janitor resuming it). A second run of
    one order is harmless: the lease lets only one worker drive it."""
    from django_q.tasks import async_task

    async_task("acmeca.tasks.run_order", order_id, task_name=f"acme-order-{order_id}", group="acme")


def identifiers_for(names: list[str], challenge_type: str) -> list[dict[str, str]]:
    """ACME identifiers for ``names`` (lower-cased, de-duplicated); refuses what the challenge can't prove."""
    result: list[dict[str, str]] = []
    seen: set[str] = set()
    for raw in names:
        name = str(raw).strip().lower().rstrip(".")
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            ipaddress.ip_address(name)
            kind = "ip"
        except ValueError:
            kind = "dns"
        if "@" in name or (":" in name and kind != "ip") or "/" in name:
            raise ValidationError(
                {"sans": [f"{raw!r}: an ACME CA certifies DNS names and IP addresses only"]}
            )
        if kind == "ip" and challenge_type == ChallengeType.DNS_01:
            raise ValidationError({"sans": [f"{raw}: IP addresses can only be proven with http-01"]})
        if name.startswith("*.") and challenge_type == ChallengeType.HTTP_01:
            raise ValidationError({"sans": [f"{raw}: wildcard names can only be proven with dns-01"]})
        if kind == "dns":
            try:
                x509.parse_sans([name])
            except x509.X509Error as exc:
                raise ValidationError({"sans": [str(exc)]}) from exc
        result.append({"type": kind, "value": name})
    if not result:
        raise ValidationError({"sans": ["Give at least one DNS name."]})
    if len(result) > 100:
        raise ValidationError({"sans": ["An ACME order takes at most 100 names."]})
    return result


def _acme_settings(ca: CertificateAuthority) -> AcmeSettings:
    try:
        acme_settings = AcmeSettings.objects.select_related("account").get(ca=ca)
    except AcmeSettings.DoesNotExist:
        raise ServiceError(f"CA {ca.name!r} has no ACME settings", field="ca") from None
    account = acme_settings.account
    if account is None or account.status != account.Status.VALID:
        raise Conflict(f"CA {ca.name!r} has no active ACME account: edit the CA to register one", field="ca")
    return acme_settings


def _create(
    *,
    ca: CertificateAuthority,
    names: list[str],
    actor: Actor,
    key: x509.PrivateKey | None = None,
    csr_pem: str | None = None,
    subscriber: Subscriber | None = None,
    renewal_of: Certificate | None = None,
) -> AcmeOrder:
    acme_settings = _acme_settings(ca)
    options = subscriber.issuer_options if subscriber is not None else {}
    challenge_type = options.get("challenge_type") or acme_settings.challenge_type
    identifiers = identifiers_for(names, challenge_type)
    if csr_pem:
        try:
            info = x509.csr_info(x509.load_csr(csr_pem))
        except x509.X509Error as exc:
            raise ValidationError({"csr": [str(exc)]}) from exc
        asked = {n.lower() for n in [info.subject.common_name, *info.sans] if n}
        if asked != {i["value"] for i in identifiers}:
            raise ValidationError({"csr": ["The CSR must ask for exactly the names of the order."]})
    retry_of = _RETRY_OF.get()
    order = AcmeOrder.objects.create(
        organization_id=ca.organization_id,
        ca=ca,
        account=acme_settings.account,
        subscriber=subscriber,
        renewal_of=renewal_of,
        retry_of=retry_of,
        identifiers=identifiers,
        challenge_type=challenge_type,
        csr_pem=csr_pem or "",
        private_key=x509.private_key_to_pem(key) if key is not None else "",
        requested_by=actor.label[:200],
    )
    audit.record(
        actor,
        "acme.order.create",
        order,
        ca=ca.pk,
        subscriber=subscriber.pk if subscriber else None,
        names=[i["value"] for i in identifiers],
        renewal_of=renewal_of.pk if renewal_of else None,
        retry_of=retry_of.pk if retry_of else None,
    )
    enqueue(order.pk)
    return order


def start_order(
    subscriber: Subscriber,
    *,
    actor: Actor,
    key: x509.PrivateKey | None = None,
    csr_pem: str | None = None,
    renewal_of: Certificate | None = None,
) -> AcmeOrder:
    """The ACME half of ``pki.services.issue``: called with the subscriber row locked and checked.

    One order at a time per subscriber: while one is unfinished it is returned instead of a second.
    """
    actor = as_actor(actor)
    running = AcmeOrder.objects.filter(subscriber=subscriber).unfinished().first()
    if running is not None:
        return running
    names = [n for n in [subscriber.common_name, *subscriber.sans] if n]
    assert subscriber.ca is not None  # the ACME issuer serves subscribers of an ACME CA only
    order = _create(
        ca=subscriber.ca,
        names=names,
        actor=actor,
        key=key,
        csr_pem=csr_pem,
        subscriber=subscriber,
        renewal_of=renewal_of,
    )
    operation_state.pending(subscriber.pk, f"ACME order {order.pk} started")
    return order


def start_direct_order(
    ca: CertificateAuthority,
    names: list[str],
    *,
    actor: Actor,
    key_algorithm: str = "ec-p256",
    csr_pem: str | None = None,
    csr_key_pem: str | None = None,
) -> AcmeOrder:
    """Order a certificate from an ACME CA by names alone (the CA must allow direct issuance).

    With ``csr_pem`` the CSR is sent as it is; ``csr_key_pem`` (a CSR generated in certmgr) passes its key on
    to the certificate, as issuing from a stored CSR does for internal CAs."""
    actor = as_actor(actor)
    with audit.failures(actor, "acme.order.create", ca, names=[str(n)[:255] for n in names[:20]]):
        require(actor, Action.MANAGE, ca.organization_id)
        if ca.kind != CertificateAuthority.Kind.ACME:
            raise ValidationError({"ca": ["Direct issuance by names is for ACME CAs."]})
        if ca.status != CertificateAuthority.Status.ACTIVE:
            raise ServiceError(f"CA {ca.name!r} is disabled and issues nothing", field="ca")
        if not _acme_settings(ca).direct_issuance:
            raise Conflict(f"direct issuance is off for CA {ca.name!r}: use a subscriber", field="ca")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValidationError({"names": ["Give a list of names."]})
        try:
            if csr_pem:
                key = x509.load_private_key(csr_key_pem) if csr_key_pem else None
            else:
                key = x509.generate_key(x509.KeyAlgorithm(key_algorithm))
        except (ValueError, x509.X509Error) as exc:
            raise ValidationError({"key_algorithm": [str(exc)]}) from exc
        if key is not None and csr_pem:
            csr_key = x509.load_csr(csr_pem).public_key()
            if csr_key.public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
                raise ValidationError({"csr": ["The key does not belong to this CSR."]})
        with transaction.atomic():
            return _create(ca=ca, names=names, actor=actor, key=key, csr_pem=csr_pem)


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _locked(order: AcmeOrder) -> AcmeOrder:
    return AcmeOrder.objects.select_for_update().get(pk=order.pk)


def retry_order(order: AcmeOrder, *, actor: Actor) -> Outcome:
    """Run an unfinished order now; a failed or cancelled one starts over (as a new order, or as whatever
    the subscriber's CA issues now)."""
    from acmeca.handles import pending

    actor = as_actor(actor)
    with audit.failures(actor, "acme.order.retry", order):
        require(actor, Action.MANAGE, order.organization_id)
        with transaction.atomic():
            order = _locked(order)
            if order.step == Step.DONE:
                raise Conflict("this order is done: it issued its certificate")
            if not order.finished:
                order.next_attempt_at = None
                order.save(update_fields=["next_attempt_at"])
                audit.record(actor, "acme.order.retry", order)
                enqueue(order.pk)
                return pending(order)
        with _retrying(order):
            if order.subscriber is not None:
                renewal = order.renewal_of
                if renewal is not None and Certificate.objects.filter(renewed_from=renewal).exists():
                    renewal = None
                return pki_services.issue(order.subscriber, actor=actor, renewal_of=renewal)
            # A direct order starts over with the same CSR and key (nothing was issued for them).
            key = x509.load_private_key(order.private_key) if order.private_key else None
            with transaction.atomic():
                return pending(
                    _create(
                        ca=order.ca, names=order.names, actor=actor, key=key, csr_pem=order.csr_pem or None
                    )
                )


@contextlib.contextmanager
def _retrying(order: AcmeOrder) -> Iterator[None]:
    token = _RETRY_OF.set(order)
    try:
        yield
    finally:
        _RETRY_OF.reset(token)


def retry_chain(order: AcmeOrder) -> list[AcmeOrder]:
    """The orders one retry chain holds, first to last, that ``order`` is part of (each retry points at
    the order it retries; a chain is short, so it is walked row by row)."""
    fields = ("id", "step", "status", "created_at", "retry_of_id", "organization_id")
    first = order
    seen = {order.pk}
    while first.retry_of_id is not None and first.retry_of_id not in seen:
        earlier = AcmeOrder.objects.filter(pk=first.retry_of_id).only(*fields).first()
        if earlier is None:
            break
        seen.add(earlier.pk)
        first = earlier
    chain = [first]
    while len(chain) < 100:
        later = AcmeOrder.objects.filter(retry_of_id=chain[-1].pk).only(*fields).order_by("id").first()
        if later is None or later.pk in {o.pk for o in chain}:
            break
        chain.append(later)
    return chain


def refresh_order(order: AcmeOrder, *, actor: Actor) -> AcmeOrder:
    """Ask the CA for the order's state now (through the worker) unless a worker holds it."""
    actor = as_actor(actor)
    with audit.failures(actor, "acme.order.refresh", order):
        require(actor, Action.MANAGE, order.organization_id)
        if order.finished:
            raise Conflict(f"this order is {order.get_step_display().lower()}: nothing to refresh")
        with transaction.atomic():
            audit.record(actor, "acme.order.refresh", order)
            enqueue(order.pk)
    return order


def cancel_order(order: AcmeOrder, *, actor: Actor) -> AcmeOrder:
    """Stop the order: its challenge records are removed, its authorizations deactivated at the CA."""
    from acmeca import flow

    actor = as_actor(actor)
    with audit.failures(actor, "acme.order.cancel", order):
        require(actor, Action.MANAGE, order.organization_id)
        with transaction.atomic():
            order = _locked(order)
            if order.finished:
                raise Conflict(f"this order is already {order.get_step_display().lower()}")
            order.step = Step.CANCELLED
            order.status = finished_status(order.status)  # its authorizations are deactivated below
            order.finished_at = order.updated_at = timezone.now()
            order.last_error = f"cancelled by {actor.label}"[:4000]
            order.save(update_fields=["step", "status", "finished_at", "updated_at", "last_error"])
            if order.subscriber_id:
                operation_state.cleared(order.subscriber_id, f"ACME order {order.pk} cancelled")
            audit.record(actor, "acme.order.cancel", order)
        flow.cleanup_records(order)
        flow.deactivate_authorizations(order)
    return order


def confirm_manual_records(order: AcmeOrder, *, actor: Actor) -> AcmeOrder:
    """An operator says the TXT records shown for a manual DNS order now exist: check them and go on."""
    actor = as_actor(actor)
    with audit.failures(actor, "acme.order.confirm", order):
        require(actor, Action.MANAGE, order.organization_id)
        with transaction.atomic():
            order = _locked(order)
            if order.step != Step.WAITING_MANUAL:
                raise Conflict("this order is not waiting for manual DNS records")
            AcmeChallenge.objects.filter(order=order, confirmed_at__isnull=True).update(
                confirmed_at=timezone.now()
            )
            order.step = Step.AUTHORIZING
            order.save(update_fields=["step"])
            audit.record(actor, "acme.order.confirm", order)
            enqueue(order.pk)
    return order


def clear_cleanup(order: AcmeOrder, *, actor: Actor) -> AcmeOrder:
    """An operator takes over the challenge records certmgr could not remove (removed them by hand, or they
    are harmless): the order has none left to remove, the janitor stops trying. Audited with the records."""
    actor = as_actor(actor)
    with audit.failures(actor, "acme.order.cleanup_clear", order):
        require(actor, Action.MANAGE, order.organization_id)
        with transaction.atomic():
            order = _locked(order)
            if not order.cleanup_pending:
                raise Conflict("this order has no challenge record left to remove")
            left = order.challenges.filter(record_present=True)
            records = sorted(left.values_list("record_name", flat=True))
            left.update(record_present=False)
            order.cleanup_pending, order.cleanup_stopped_at, order.cleanup_error = False, None, ""
            order.updated_at = timezone.now()
            order.save(update_fields=["cleanup_pending", "cleanup_stopped_at", "cleanup_error", "updated_at"])
            audit.record(actor, "acme.order.cleanup_clear", order, records=records)
    return order


def delete_order(order: AcmeOrder, *, actor: Actor) -> None:
    """Remove a finished order's record (its certificate stays in the inventory)."""

    def prepare(row: AcmeOrder) -> None:
        if not row.finished or row.cleanup_pending:
            raise Conflict("only a finished order with no challenge record left can be deleted")

    audited_delete(order, actor=actor, action="acme.order.delete", prepare=prepare)


def drive(
    order_id: int, *, progress: Callable[[str], None] | None = None, deadline: float | None = None
) -> AcmeOrder:
    """Run the order in this process until it ends (sleeping through the retry times the flow sets), or
    follow it while a worker holds it; returns it as stored at the end, or when ``deadline`` (a
    ``time.monotonic()`` value) passes."""
    from acmeca import flow

    say = progress or (lambda message: None)
    order = AcmeOrder.objects.get(pk=order_id)
    while not order.finished and (deadline is None or time.monotonic() < deadline):
        order = flow.run_order(order.pk, progress=progress)
        if order.finished or order.step == Step.WAITING_MANUAL:
            return order
        now = timezone.now()
        if order.lease_until and order.lease_until > now:
            # Another worker holds it (the lease keeps this process out): follow it instead.
            say(f"a worker is running order {order.pk}; following it")
            order = _follow(order, say, deadline)
            continue
        wait = (order.next_attempt_at - now).total_seconds() if order.next_attempt_at else 0.0
        if wait > 0:
            say(f"retry in {wait:.1f}s (attempt {order.attempts}): {order.last_error}")
            time.sleep(wait if deadline is None else max(0.0, min(wait, deadline - time.monotonic())))
    return order


def _follow(order: AcmeOrder, say: Callable[[str], None], deadline: float | None) -> AcmeOrder:
    step = order.step
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.2)
        order.refresh_from_db()
        if order.step != step:
            step = order.step
            say(f"step: {order.get_step_display().lower()}")
        if order.finished or not order.lease_until or order.lease_until <= timezone.now():
            return order
    return order
