"""The worker side of an ACME order: one step at a time, each persisted before the next request.

``run_order(id)`` takes the order's lease (so two workers never drive one order), then loops: new order at
the CA -> present every challenge -> propagation check -> answer -> poll the authorizations -> finalize ->
poll the order -> download the chain -> store the certificate (with the order's last step, in one
transaction) -> remove the challenge records. Records are removed on every ending: success, failure, cancel.

A worker that dies mid-order leaves its lease to run out; the janitor then runs the order again, which
resumes from the stored order URL (the CA's view of the order and its authorizations is fetched first).
Transient problems (network, 5xx, rateLimited, a DNS server that times out) are retried with backoff;
permanent ones fail the order with the CA's own message.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import timedelta
from typing import Any

import dns.exception
import dns.rcode
import dns.resolver
import josepy as jose
from acme import challenges, messages
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.db import transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When
from django.utils import timezone

from acmeca import client as acme
from acmeca import services as acme_services
from acmeca.choices import finished_status
from acmeca.models import AcmeAuthorization, AcmeChallenge, AcmeOrder, AcmeSettings, ChallengeType
from certmgr import audit, outbound
from certmgr.actors import Actor
from certmgr.errors import OutboundRefused
from dnsproviders import caa, propagation
from dnsproviders.locks import record_lock
from dnsproviders.models import AppConnection
from dnsproviders.providers.base import DnsProvider, ProviderError, RecordRef, provider_for
from pki import alerts, renewal, x509
from pki import services as pki_services
from pki.services import operation_state

log = logging.getLogger(__name__)
WORKER = Actor.system("acme-worker")
Step, Status = AcmeOrder.Step, AcmeOrder.Status


class LeaseLost(Exception):
    """Another worker took the order over (this one stalled past its lease)."""


class OrderFailed(Exception):
    """A permanent failure: the order ends failed with ``message``."""

    def __init__(self, message: str, *, error_type: str = "", status: str = ""):
        super().__init__(message)
        self.message, self.error_type, self.status = message, error_type, status


class RetryLater(Exception):
    """A transient failure: try again after ``delay`` seconds."""

    def __init__(self, message: str, *, error_type: str = "", delay: float | None = None):
        super().__init__(message)
        self.message, self.error_type, self.delay = message, error_type, delay


def _lease() -> timedelta:
    return timedelta(seconds=settings.CERTMGR_ACME_LEASE_SECONDS)


# --- entry points ----------------------------------------------------------------------------------
def run_order(order_id: int, *, progress: Callable[[str], None] | None = None) -> AcmeOrder:
    """Drive one order as far as it can go now. Returns it as stored afterwards."""
    owner = uuid.uuid4().hex
    now = timezone.now()
    claimed = (
        AcmeOrder.objects.filter(pk=order_id)
        .unfinished()
        .exclude(step=Step.WAITING_MANUAL)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_owner=owner, lease_until=now + _lease(), heartbeat_at=now, next_attempt_at=None)
    )
    if claimed:
        runner = None
        try:
            order = AcmeOrder.objects.select_related("ca", "account").get(pk=order_id)
            runner = _Runner(order, owner, progress)
            runner.run()  # gives the lease back itself, with the request counters
        finally:
            if runner is None or not runner.released:
                mine = AcmeOrder.objects.filter(pk=order_id, lease_owner=owner)
                mine.update(lease_owner="", lease_until=None)
        if runner is not None and runner.account_lost and runner.settings.reregister_automatically:
            from django_q.tasks import async_task

            # A worker registers the new account and retries (``tasks.recover_lost_account``).
            async_task("acmeca.tasks.recover_lost_account", order_id, task_name=f"acme-recover-{order_id}")
    return AcmeOrder.objects.get(pk=order_id)


def cleanup_records(order: AcmeOrder, providers: dict[int, DnsProvider] | None = None) -> bool:
    """Remove every challenge record the order still has; True when none is left. Idempotent.

    A removal the provider refuses for a permanent reason (4xx: a revoked key, a deleted zone or connection)
    counts against ``CERTMGR_ACME_CLEANUP_MAX_ATTEMPTS``; at the limit cleanup stops (the reason shown on the
    order, one ``cleanup_failed`` alert) until an operator clears it. Network failures are retried always.

    ``providers``: DNS providers already built in this run, by connection id (else read from the database)."""
    left = False
    reasons: list[str] = []
    exhausted = False
    providers = {} if providers is None else providers
    for ch in order.challenges.filter(record_present=True):
        if ch.type == ChallengeType.DNS_01 and ch.provider_ref:
            try:
                connection_id = ch.provider_ref.get("connection")
                with record_lock(connection_id, ch.provider_ref.get("record_name", ch.record_name)):
                    if connection_id not in providers:
                        providers[connection_id] = _provider(connection_id)
                    providers[connection_id].cleanup(RecordRef.from_dict(ch.provider_ref))
            except (ProviderError, OutboundRefused, AppConnection.DoesNotExist) as exc:
                left = True
                reason = (
                    "the DNS connection was deleted"
                    if isinstance(exc, AppConnection.DoesNotExist)
                    else str(exc)
                )
                ch.error = f"could not remove the record: {reason}"[:2000]
                fields = ["error"]
                if not (isinstance(exc, ProviderError) and exc.transient):
                    ch.cleanup_attempts += 1
                    fields.append("cleanup_attempts")
                    exhausted |= ch.cleanup_attempts >= settings.CERTMGR_ACME_CLEANUP_MAX_ATTEMPTS
                ch.save(update_fields=fields)
                reasons.append(f"{ch.record_name}: {reason}")
                continue
        ch.record_present = False
        ch.save(update_fields=["record_present"])
    changes: dict[str, Any] = {}
    if order.cleanup_pending != left:
        changes["cleanup_pending"] = left
    error = "; ".join(reasons)[:4000]
    if order.cleanup_error != error:
        changes["cleanup_error"] = error
    if exhausted and order.cleanup_stopped_at is None:
        changes["cleanup_stopped_at"] = timezone.now()
    if changes:
        with transaction.atomic():
            AcmeOrder.objects.filter(pk=order.pk).update(**changes)
            for name, value in changes.items():
                setattr(order, name, value)
            if "cleanup_stopped_at" in changes:
                _cleanup_stopped(order)
    return not left


def _cleanup_stopped(order: AcmeOrder) -> None:
    """Audit and alert once: the janitor gives up on the order's records."""
    message = (
        f"ACME order {order.pk}: challenge records could not be removed after "
        f"{settings.CERTMGR_ACME_CLEANUP_MAX_ATTEMPTS} attempts and are left for an operator to remove "
        f"and clear: {order.cleanup_error}"
    )
    audit.record(WORKER, "acme.order.cleanup_stopped", order, outcome="failure", error=order.cleanup_error)
    alerts.notify(
        "cleanup_failed", certificate=order.certificate_id, subscriber=order.subscriber_id, message=message
    )


def _provider(connection: AppConnection | int) -> DnsProvider:
    if not isinstance(connection, AppConnection):
        connection = AppConnection.objects.get(pk=connection)
    return provider_for(
        connection.kind,
        connection.credentials,
        timeout=settings.CERTMGR_DNS_PROVIDER_TIMEOUT,
        connection_name=connection.name,
        organization_id=connection.organization_id,
        connection_id=connection.pk,
    )


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter for transient failures inside one order (settings)."""
    return renewal.retry_delay(
        attempt, base=settings.CERTMGR_ACME_RETRY_BASE_SECONDS, cap=settings.CERTMGR_ACME_RETRY_MAX_SECONDS
    )


# --- the runner ----------------------------------------------------------------------------------
class _Runner:
    def __init__(self, order: AcmeOrder, owner: str, progress: Callable[[str], None] | None):
        self.order = order
        self.owner = owner
        self.progress = progress or (lambda message: None)
        self.settings: AcmeSettings = AcmeSettings.objects.select_related("dns_connection").get(ca=order.ca)
        self._session: acme.AcmeSession | None = None  # opened by the first attempt of this run
        self.providers: dict[int, DnsProvider] = {}  # built once a run, by connection id
        self.authorized = False  # every authorization turned valid in this run: the order is ready
        self.submitted: messages.Order | None = None  # the CA's answer to this run's newOrder
        self.client_reusable = True  # False after a failure: the next order starts a new session
        self.released = False
        self.account_lost = False  # the CA answered accountDoesNotExist

    # -- persistence -----------------------------------------------------------------------------
    def save(self, **fields: Any) -> None:
        """Update the order's own row, only while this worker still holds the lease."""
        now = timezone.now()
        fields.setdefault("updated_at", now)
        fields["lease_until"] = now + _lease()
        fields["heartbeat_at"] = now
        if not AcmeOrder.objects.filter(pk=self.order.pk, lease_owner=self.owner).update(**fields):
            raise LeaseLost(f"order {self.order.pk} was taken over by another worker")
        for name, value in fields.items():
            setattr(self.order, name, value)

    def heartbeat(self) -> None:
        if self.order.heartbeat_at is None or timezone.now() - self.order.heartbeat_at > _lease() / 4:
            self.save()
        cancelled = AcmeOrder.objects.filter(pk=self.order.pk, step=Step.CANCELLED).exists()
        if cancelled:
            raise OrderFailed("cancelled", error_type="cancelled", status=Step.CANCELLED)

    def say(self, event: str, **details: Any) -> None:
        """Progress only (``manage.py issue`` shows it): steps the order's and challenges' rows record."""
        self.progress(f"{event}: " + ", ".join(f"{k}={v}" for k, v in details.items()))

    def note(self, event: str, **details: Any) -> None:
        """Progress and an audit event: what an operator reads in the trail (submitted, retry, waiting)."""
        self.say(event, **details)
        with transaction.atomic():
            audit.record(WORKER, f"acme.order.{event}", self.order, **details)

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            # A short wait is spent here, holding the lease; longer ones are resumed by the janitor.
            while (wait := self._attempt()) is not None:
                try:
                    self._pause(wait)
                except OrderFailed as exc:  # cancelled meanwhile
                    self.fail(exc.message, exc.error_type, exc.status)
                    return
        except LeaseLost as exc:
            log.warning("%s", exc)
        finally:
            self._release()
            if self._session is not None:
                _SESSIONS.give_back(self._session, reusable=self.client_reusable)

    def _attempt(self) -> float | None:
        """Drive the steps as far as they go. None when the order ended, waits for an operator or was handed
        to the janitor; else the seconds to wait before trying again in this run."""
        try:
            if self._session is None:
                self._session = self._client()
            while not self.order.finished:
                if self.order.step == Step.QUEUED:
                    self.new_order()
                elif self.order.step == Step.AUTHORIZING:
                    if not self.authorize():
                        return None  # waiting for an operator (manual DNS)
                elif self.order.step == Step.FINALIZING:
                    self.finalize()
                else:
                    return None
            return None
        except LeaseLost:
            raise
        except OrderFailed as exc:
            self.fail(exc.message, exc.error_type, exc.status)
        except RetryLater as exc:
            return self.retry_later(exc.message, exc.error_type, exc.delay)
        except Exception as exc:  # classify everything else: a CA problem, a provider, the network
            return self.handle(exc)
        return None

    def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 1.0))
            self.heartbeat()
        self.save(next_attempt_at=None)

    def _release(self) -> None:
        """Give the lease back (if it is still this worker's) and add this run's ACME requests to the order's
        counters (whoever holds the lease now): one UPDATE."""
        mine = Q(lease_owner=self.owner)
        fields: dict[str, Any] = {
            "lease_owner": Case(When(mine, then=Value("")), default=F("lease_owner")),
            "lease_until": Case(
                When(mine, then=Value(None, output_field=DateTimeField())), default=F("lease_until")
            ),
        }
        if self._session is not None:
            net = self._session.net
            fields.update(
                requests_ok=F("requests_ok") + net.responses["2xx"],
                requests_client_error=F("requests_client_error") + net.responses["4xx"],
                requests_server_error=F("requests_server_error") + net.responses["5xx"],
                bad_nonces=F("bad_nonces") + net.bad_nonces,
            )
        AcmeOrder.objects.filter(pk=self.order.pk).update(**fields)
        self.released = True

    def handle(self, exc: BaseException) -> float | None:
        self.client_reusable = False
        if isinstance(exc, ProviderError):
            message = f"DNS provider: {exc}"
            if exc.transient:
                return self.retry_later(message, "dnsProvider", None)
            self.fail(message, "dnsProvider")
            return None
        if isinstance(exc, propagation.PropagationError):
            self.fail(str(exc), "dnsPropagation")
            return None
        if isinstance(exc, OutboundRefused):
            self.fail(str(exc), "outboundRefused")
            return None
        problem = acme.classify(exc)
        if problem.kind == acme_services.LOST and self.order.account is not None:
            self.account_lost = True
            acme_services.mark_account_lost(self.order.account, detail=problem.detail, actor=WORKER)
            again = self.settings.reregister_automatically
            reason = problem.detail or problem.kind
            self.fail(
                f"the CA no longer knows the ACME account {self.order.account_id} ({reason})"
                + (": certmgr registers a new account and retries" if again else ": register it again"),
                problem.kind,
            )
            return None
        if problem.kind in {"protocol", "unexpected"} and not problem.is_acme_error:
            log.exception("ACME order %s: unexpected error", self.order.pk)
        message = problem.detail or str(problem)
        if problem.identifier:
            message = f"{problem.identifier}: {message}"
        if problem.transient:
            return self.retry_later(message, problem.kind, problem.retry_after)
        self.fail(message, problem.kind)
        return None

    def retry_later(self, message: str, error_type: str, delay: float | None) -> float | None:
        """Schedule the next attempt; returns the wait when it is short enough to spend in this run."""
        attempts = self.order.attempts + 1
        if attempts >= settings.CERTMGR_ACME_MAX_ATTEMPTS:
            self.fail(f"{message} (gave up after {attempts} attempts)", error_type, retry_after=delay)
            return None
        wait = max(delay or 0.0, backoff_seconds(attempts))
        self.save(
            attempts=attempts,
            error_type=error_type[:100],
            last_error=message[:4000],
            next_attempt_at=timezone.now() + timedelta(seconds=wait),
        )
        self.note("retry", attempt=attempts, error=message[:500], wait_seconds=round(wait, 1))
        return wait if wait <= settings.CERTMGR_ACME_INLINE_RETRY_SECONDS else None

    def fail(self, message: str, error_type: str, status: str = "", retry_after: float | None = None) -> None:
        if status == Step.CANCELLED:
            # cancel_order() recorded and audited the cancel; this run only stops and removes its records.
            cleanup_records(self.order, self.providers)
            self.progress("cancelled")
            return
        if not cleanup_records(self.order, self.providers):
            message += " (some challenge records could not be removed yet: the janitor retries)"
        with transaction.atomic():
            self.save(
                step=Step.FAILED,
                status=status or finished_status(self.order.status),
                error_type=error_type[:100],
                last_error=message[:4000],
                finished_at=timezone.now(),
                next_attempt_at=None,
            )
            if self.order.subscriber_id:
                operation_state.failed(
                    self.order.subscriber_id,
                    error_type or "acme",
                    f"ACME order {self.order.pk} failed: {message}",
                    retry_after=retry_after,
                )
            audit.record(
                WORKER,
                "acme.order.failed",
                self.order,
                outcome="failure",
                error=message,
                error_type=error_type,
            )
        self.progress(f"failed: {message}")

    # -- steps -----------------------------------------------------------------------------------
    def _client(self) -> acme.AcmeSession:
        account = self.order.account
        if account is None or account.status != account.Status.VALID:
            raise OrderFailed("the ACME account of this CA is missing or deactivated", error_type="account")
        return _SESSIONS.take(account, self.settings.tls_ca_bundle)

    @property
    def client(self) -> acme.AcmeSession:
        """This run's session with the CA (``_attempt`` opens it before any step)."""
        if self._session is None:
            raise RuntimeError("no ACME session yet")
        return self._session

    @property
    def account_key(self) -> jose.JWK:
        return self.client.account_key

    def new_order(self) -> None:
        order = self.order
        csr_pem = order.csr_pem  # made here, stored with the order URL (the CA has not seen it before)
        if not csr_pem:
            key = x509.load_private_key(order.private_key)
            names = [i["value"] for i in order.identifiers]
            dns_names = [n for n in names if not n.startswith("*.") and len(n) <= 64]
            subject = x509.Subject(common_name=dns_names[0] if dns_names else None)
            csr_pem = x509.to_pem(x509.build_csr(key, subject, names))
        replaces = ""
        if order.order_url:
            # An earlier run's newOrder was answered (its URL stored at once) but the run ended before
            # the authorizations were: continue that order at the CA rather than make a second one.
            orderr = self._resume_submitted()
        else:
            self._caa_preflight()
            self._dns_preflight()
            replaces = self._replaces()
            try:
                orderr = self._submit(replaces, csr_pem)
            except acme.AcmeProblem as exc:
                if not replaces or exc.kind != "alreadyReplaced":
                    raise
                replaces = ""  # another order already replaced it (RFC 9773 §5): order without the link
                orderr = self._submit(replaces, csr_pem)
        with transaction.atomic():
            self.save(
                order_url=orderr.uri or "",
                finalize_url=orderr.body.finalize or "",
                status=orderr.body.status.name,
                step=Step.AUTHORIZING,
            )
            for authzr in orderr.authorizations:
                self._store_authorization(authzr)
            audit.record(
                WORKER,
                "acme.order.submitted",
                order,
                order_url=order.order_url,
                status=order.status,
                replaces=replaces or None,
            )
        self.submitted = orderr.body
        self.say("submitted", order_url=order.order_url, status=order.status, replaces=replaces or None)

    def _caa_preflight(self) -> None:
        """Names whose CAA records certainly forbid this CA (for this account and challenge type) fail the
        order before anything is sent to the CA (RFC 8659, RFC 8657); unclear lookups leave it to the CA."""
        identifiers = [i.strip() for i in self.settings.caa_identifiers.split(",") if i.strip()]
        names = [i["value"] for i in self.order.identifiers if i["type"] == "dns"]
        if not identifiers or not names:
            return
        refusals = caa.preflight(
            names,
            caa.resolver_lookup(_resolver()),
            ca_identifiers=identifiers,
            account_uri=self.order.account.account_url if self.order.account else "",
            method=self.order.challenge_type,
        )
        if refusals:
            raise OrderFailed("; ".join(str(r) for r in refusals), error_type="caa")

    def _dns_preflight(self) -> None:
        """The DNS provider's own check before anything is sent to the CA (delegated DNS: the parent zone
        delegates every ``_acme-challenge`` name to certmgr's server); a certain refusal fails the order
        naming the record to create, an unclear lookup is retried."""
        if self.order.challenge_type != ChallengeType.DNS_01 or self.settings.dns_connection is None:
            return
        names = [i["value"] for i in self.order.identifiers if i["type"] == "dns"]
        provider = self._dns_provider()
        try:
            provider.preflight(names)
        except ProviderError as exc:
            if exc.transient:
                raise RetryLater(str(exc), error_type="dnsLookup") from exc
            raise OrderFailed(str(exc), error_type="dnsDelegation") from exc

    def _dns_provider(self) -> DnsProvider:
        connection = self.settings.dns_connection
        if connection is None:
            raise OrderFailed("this CA has no DNS connection for dns-01", error_type="configuration")
        if connection.pk not in self.providers:
            self.providers[connection.pk] = _provider(connection)
        return self.providers[connection.pk]

    def _replaces(self) -> str:
        """The ARI id of the certificate this order renews, when the same CA speaks ARI (RFC 9773 §5)."""
        old = self.order.renewal_of
        from acmeca.ari import cert_id

        if old is None or old.ca_id != self.order.ca_id or not self.client.offers("renewalInfo"):
            return ""

        return cert_id(old.certificate_pem)

    def _submit(self, replaces: str, csr_pem: str) -> messages.OrderResource:
        """newOrder with the stored identifiers (+ profile, + replaces), then its authorizations."""
        identifiers = [
            messages.Identifier(
                typ=messages.IDENTIFIER_IP if i["type"] == "ip" else messages.IDENTIFIER_FQDN,
                value=i["value"],
            )
            for i in self.order.identifiers
        ]
        orderr = self.client.new_order(identifiers, profile=self._profile(), replaces=replaces)
        # Stored before the next request: a retry or a resumed run continues this order (no second one).
        self.save(csr_pem=csr_pem, order_url=orderr.uri or "", finalize_url=orderr.body.finalize or "")
        return self._with_authorizations(orderr.body)

    def _profile(self) -> str:
        """The subscriber's ACME profile, else the CA's."""
        subscriber = self.order.subscriber
        options = subscriber.issuer_options if subscriber is not None else {}
        return options.get("profile") or self.settings.profile

    def _resume_submitted(self) -> messages.OrderResource:
        return self._with_authorizations(self.client.order(self.order.order_url).body)

    def _with_authorizations(self, body: messages.Order) -> messages.OrderResource:
        authorizations = [self.client.authorization(url)[0] for url in body.authorizations]
        return messages.OrderResource(body=body, uri=self.order.order_url, authorizations=authorizations)

    def _store_authorization(self, authzr: messages.AuthorizationResource) -> None:
        body = authzr.body
        authz = AcmeAuthorization.objects.create(
            order=self.order,
            identifier=body.identifier.value,
            wildcard=bool(body.wildcard),
            url=authzr.uri,
            status=body.status.name,
            expires=body.expires,
        )
        wanted = challenges.DNS01 if self.order.challenge_type == ChallengeType.DNS_01 else challenges.HTTP01
        challb = next((c for c in body.challenges if isinstance(c.chall, wanted)), None)
        if challb is None:
            if body.status == messages.STATUS_VALID:
                return  # reused authorization: nothing to prove
            offered = ", ".join(sorted({c.chall.typ for c in body.challenges})) or "none"
            raise OrderFailed(
                f"the CA offers no {self.order.challenge_type} challenge for {body.identifier.value} "
                f"(offered: {offered})",
                error_type="unsupportedChallenge",
            )
        chall = challb.chall
        if isinstance(chall, challenges.DNS01):
            name = propagation.challenge_name(body.identifier.value)
            value = chall.validation(self.account_key)
        else:
            name = "/" + chall.path.lstrip("/")
            value = chall.validation(self.account_key)
        AcmeChallenge.objects.create(
            organization_id=self.order.organization_id,
            order=self.order,
            authorization=authz,
            type=self.order.challenge_type,
            url=challb.uri,
            token=chall.encode("token"),
            record_name=name,
            record_value=value,
            status=AcmeChallenge.Status.VALID
            if body.status == messages.STATUS_VALID
            else AcmeChallenge.Status.NOT_READY,
        )

    def _fetch_order(self) -> messages.Order:
        body = self.client.order(self.order.order_url).body
        if body.status.name != self.order.status:
            self.save(status=body.status.name)
        if body.status == messages.STATUS_INVALID:
            raise OrderFailed(self._order_error(body), error_type="orderInvalid", status=Status.INVALID)
        return body

    def _order_error(self, body: messages.Order) -> str:
        """The CA's reason: the order's error, else the first invalid challenge's."""
        for authz in self.order.authorizations.all():
            abody = self.client.authorization(authz.url)[0].body
            for challb in abody.challenges:
                if challb.error is not None:
                    return f"{abody.identifier.value}: {challb.error.detail or challb.error.typ}"
        if body.error is not None:
            return body.error.detail or str(body.error.typ)
        return "the CA marked the order invalid without a reason"

    def authorize(self) -> bool:
        """Prove control of every name. False when the order now waits for an operator."""
        body, self.submitted = self.submitted or self._fetch_order(), None  # newOrder's answer is fresh
        if body.status != messages.STATUS_PENDING:
            self.save(step=Step.FINALIZING)
            return True
        todo = list(
            AcmeChallenge.objects.filter(order=self.order)
            .exclude(status=AcmeChallenge.Status.VALID)
            .select_related("authorization")
        )
        provider = None
        if self.order.challenge_type == ChallengeType.DNS_01:
            provider = self._dns_provider()
        for ch in todo:
            if ch.status == AcmeChallenge.Status.NOT_READY and not ch.answered_at:
                self._present(ch, provider)
        manual = provider is not None and not provider.automatic
        if manual and any(ch.confirmed_at is None for ch in todo):
            self.save(step=Step.WAITING_MANUAL)
            self.note("waiting_manual", records=len(todo))
            return False
        if provider is not None:
            self._wait_for_propagation([ch for ch in todo if not ch.answered_at])
        for ch in todo:
            if not ch.answered_at:
                self._answer(ch)
        self._poll_authorizations(todo)
        self.save(step=Step.FINALIZING)
        self.authorized = bool(todo)
        return True

    def _present(self, ch: AcmeChallenge, provider: DnsProvider | None) -> None:
        if provider is not None:
            resolver = _resolver()
            try:
                target = propagation.resolve_cname_target(ch.authorization.identifier, resolver=resolver)
            except propagation.CnameLoop:
                raise
            except propagation.PropagationError as exc:
                if _lookup_may_recover(exc.__cause__):  # no answer or SERVFAIL: the servers may be back soon
                    raise RetryLater(str(exc), error_type="dnsLookup") from exc
                raise
            # Marked present before the write, so a crash between the two still gets the record removed.
            ref: dict[str, Any] = {
                "record_name": target,
                "value": ch.record_value,
                "zone": self.settings.hosted_zone_id,
                "extra": {},
                "connection": self.settings.dns_connection_id,
            }
            ch.record_name, ch.provider_ref, ch.record_present = target.rstrip("."), ref, True
            ch.save(update_fields=["record_name", "provider_ref", "record_present"])
            try:
                with record_lock(self.settings.dns_connection_id, target):
                    written = provider.present(
                        target, ch.record_value, zone=self.settings.hosted_zone_id, ttl=ch.ttl
                    )
            except (ProviderError, OutboundRefused) as exc:
                if not getattr(exc, "transient", False):
                    # Refused (no zone holds the name, the key is refused): nothing was written, nothing
                    # to remove. A timeout may have written it: that one stays marked for cleanup.
                    ch.record_present, ch.error = False, f"could not write the record: {exc}"[:2000]
                    ch.save(update_fields=["record_present", "error"])
                raise
            ch.provider_ref = {**written.as_dict(), "connection": self.settings.dns_connection_id}
        else:
            ch.record_present = True  # served by certmgr's own /.well-known/acme-challenge/ view
        ch.status = AcmeChallenge.Status.READY
        ch.error = ""
        ch.save(update_fields=["provider_ref", "record_present", "status", "error"])
        # Audited: a record written at a DNS provider with the organization's credentials is a change.
        self.note("challenge_ready", type=ch.type, record=ch.record_name)

    def _wait_for_propagation(self, todo: list[AcmeChallenge]) -> None:
        if not todo:
            return
        servers = propagation.servers_from_environ()
        deadline = time.monotonic() + self.settings.propagation_timeout
        stop = (
            threading.Event()
        )  # set when this run ends early (a cancel): the checks stop at their next pause

        def pause(seconds: float) -> None:
            if stop.wait(seconds):
                raise propagation.PropagationError("stopped")

        def wait(ch: AcmeChallenge):
            return propagation.wait_for_txt(
                ch.provider_ref.get("record_name") or ch.record_name,
                ch.record_value,
                servers=servers,
                resolver=None if servers else _resolver(),
                # Servers learned from a zone's NS records are the zone owner's to choose: vetted like any
                # outbound address (the configured CERTMGR_DNS_RESOLVERS are the operator's own).
                address_check=None if servers else outbound.check_host,
                interval=self.settings.propagation_interval,
                deadline=deadline,
                sleep=pause,
            )

        self.progress(f"propagation: waiting for {len(todo)} TXT record(s)")
        with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
            futures = [pool.submit(wait, ch) for ch in todo]
            try:
                # Back as soon as every check is done; renew the lease while they take longer.
                while futures_wait(futures, timeout=2.0).not_done:
                    self.heartbeat()
            except BaseException:
                stop.set()
                raise
            for f in futures:
                f.result()  # re-raises PropagationTimeout naming the servers that lacked the value

    def _answer(self, ch: AcmeChallenge) -> None:
        token = jose.b64decode(ch.token)
        chall = (
            challenges.DNS01(token=token)
            if ch.type == ChallengeType.DNS_01
            else challenges.HTTP01(token=token)
        )
        self.client.answer(ch.url, chall)
        ch.answered_at = timezone.now()
        ch.save(update_fields=["answered_at"])

    def _poll_authorizations(self, todo: list[AcmeChallenge]) -> None:
        pending = {ch.authorization.url: ch for ch in todo}
        for delay in _poll_delays(settings.CERTMGR_ACME_POLL_TIMEOUT):
            for url, ch in list(pending.items()):
                authzr, retry_after = self.client.authorization(url)
                body = authzr.body
                status = body.status.name
                if status == "pending" or status == "processing":
                    delay.honour(retry_after)
                    continue
                AcmeAuthorization.objects.filter(url=url, order=self.order).update(status=status)
                challb = next((c for c in body.challenges if c.uri == ch.url), None)
                del pending[url]
                if status == "valid":
                    ch.status, ch.validated_at = AcmeChallenge.Status.VALID, timezone.now()
                    ch.save(update_fields=["status", "validated_at"])
                    self.say("challenge_valid", identifier=body.identifier.value)
                    continue
                reason = (
                    (challb.error.detail or str(challb.error.typ))
                    if challb is not None and challb.error is not None
                    else f"authorization {status}"
                )
                ch.status, ch.error = AcmeChallenge.Status.INVALID, reason[:2000]
                ch.save(update_fields=["status", "error"])
                error_type = (
                    str(challb.error.typ).rsplit(":", 1)[-1]
                    if challb is not None and challb.error
                    else status
                )
                raise OrderFailed(
                    f"{body.identifier.value}: {reason}", error_type=error_type, status=Status.INVALID
                )
            if not pending:
                return
            self.heartbeat()
        raise RetryLater("the CA did not finish validating in time", error_type="timeout")

    def finalize(self) -> None:
        body = self._finalize_now() if self.authorized else None
        if body is None:
            body = self._fetch_order()
            if body.status == messages.STATUS_PENDING:
                self.save(step=Step.AUTHORIZING)
                return
            if body.status == messages.STATUS_READY:
                body = self.client.finalize(self.order.finalize_url, self.order.csr_pem)
                self.save(status=body.status.name)
                self.say("finalize", status=self.order.status)
        for delay in _poll_delays(settings.CERTMGR_ACME_POLL_TIMEOUT):
            if body.status == messages.STATUS_VALID and body.certificate:
                break
            if body.status == messages.STATUS_INVALID:
                raise OrderFailed(self._order_error(body), error_type="orderInvalid", status=Status.INVALID)
            fetched = self.client.order(self.order.order_url)
            body = fetched.body
            delay.honour(fetched.retry_after)
            self.heartbeat()
        else:
            raise RetryLater("the CA did not issue the certificate in time", error_type="timeout")
        self.save(status=Status.VALID, certificate_url=body.certificate)
        self._download()

    def _finalize_now(self) -> messages.Order | None:
        """Finalize without asking for the order first: this run saw its last authorization turn valid, which
        makes the order ready (RFC 8555 §7.1.6). None when the CA says it is not (orderNotReady)."""
        self.authorized = False
        try:
            body = self.client.finalize(self.order.finalize_url, self.order.csr_pem)
        except acme.AcmeProblem as exc:
            if exc.kind != "orderNotReady":
                raise
            return None
        self.save(status=body.status.name)
        self.say("finalize", status=self.order.status)
        return body

    def _download(self) -> None:
        chains = self.client.download(
            self.order.certificate_url, alternates=bool(self.settings.preferred_chain)
        )
        fullchain = choose_chain(chains, self.settings.preferred_chain)
        with transaction.atomic():
            locked = AcmeOrder.objects.select_for_update().get(pk=self.order.pk)
            if locked.lease_owner != self.owner:
                raise LeaseLost(f"order {self.order.pk} was taken over by another worker")
            if locked.certificate_id is None:
                certificate = pki_services.complete_external(
                    organization_id=self.order.organization_id,
                    ca=self.order.ca,
                    fullchain_pem=fullchain,
                    key_pem=self.order.private_key or None,
                    subscriber_id=self.order.subscriber_id,
                    renewal_of_id=self.order.renewal_of_id,
                    actor=WORKER,
                    csr_pem=self.order.csr_pem,
                )
                self.save(
                    certificate=certificate,
                    step=Step.DONE,
                    finished_at=timezone.now(),
                    error_type="",
                    last_error="",
                )
                audit.record(
                    WORKER,
                    "acme.order.valid",
                    self.order,
                    certificate=certificate.pk,
                    serial=certificate.serial,
                )
        self.progress(f"issued: certificate {self.order.certificate_id}")
        if not cleanup_records(self.order, self.providers):
            self.note("cleanup_pending")


def choose_chain(chains: list[str], preferred_issuer: str) -> str:
    """The chain whose top certificate's issuer (or subject) CN is ``preferred_issuer``; else the default."""
    if preferred_issuer:
        wanted = preferred_issuer.strip().lower()
        for pem in chains:
            try:
                certs = x509.load_pem_certificates(pem)
            except x509.X509Error:
                continue
            top = certs[-1]
            names = {
                str(a.value).lower() for a in [*top.issuer, *top.subject] if a.oid == NameOID.COMMON_NAME
            }
            if wanted in names:
                return pem
    return chains[0]


def _lookup_may_recover(cause: BaseException | None) -> bool:
    """A timeout or SERVFAIL is worth retrying; REFUSED everywhere (nobody serves the name) is not."""
    if isinstance(cause, dns.exception.Timeout):
        return True
    if isinstance(cause, dns.resolver.NoNameservers):
        errors = cause.kwargs.get("errors") or []
        answers = [e[4] for e in errors if len(e) > 4 and e[4] is not None]
        return len(answers) < len(errors) or any(a.rcode() == dns.rcode.SERVFAIL for a in answers)
    return False


def _resolver() -> dns.resolver.Resolver:
    """For CNAME delegation lookups: the configured servers (split horizon, tests) or the system's."""
    servers = propagation.servers_from_environ()
    if not servers:
        return dns.resolver.Resolver()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [ip for ip, _ in servers]
    resolver.port = servers[0][1]
    resolver.lifetime = 5.0
    return resolver


class _Delay:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def honour(self, asked: float | None) -> None:
        """A Retry-After (seconds) longer than our own pause wins."""
        if asked is not None:
            self.seconds = max(self.seconds, min(asked, 60.0))


def _poll_delays(timeout: float):
    """Prompt polling: 10 ms doubling up to 1 s (or what the CA asks), until ``timeout`` seconds passed.

    Yields a ``_Delay`` before each round; the pause happens after the round, when the caller continues.
    """
    end = time.monotonic() + timeout
    pause = 0.01  # a fast CA (or a retried step) is done within tens of milliseconds
    while time.monotonic() < end:
        delay = _Delay(pause)
        yield delay
        time.sleep(max(0.0, min(delay.seconds, end - time.monotonic())))
        pause = min(1.0, pause * 2)


class _SessionPool:
    """ACME sessions kept for the next order of this thread (a worker process runs one order after another):
    the directory, the TLS connection and the last nonce carry over, saving a directory GET, a newNonce and
    a TLS handshake an order. One session per account key, CA bundle and outbound guard setting; a session
    is dropped after ``MAX_AGE`` seconds (the directory is read again) and after any failed run."""

    MAX_AGE = 300.0
    SIZE = 8

    def __init__(self) -> None:
        self.local = threading.local()

    def _idle(self) -> dict[tuple, tuple[acme.AcmeSession, float]]:
        if not hasattr(self.local, "idle"):
            self.local.idle, self.local.out = {}, {}
        return self.local.idle

    @staticmethod
    def _key(account, tls_ca_bundle: str) -> tuple:
        return (
            account.directory_url,
            account.account_url,
            hashlib.sha256(account.private_key.encode()).hexdigest(),  # a rollover starts a new session
            tls_ca_bundle,
            tuple(settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS),  # connections were vetted under this list
        )

    def take(self, account, tls_ca_bundle: str) -> acme.AcmeSession:
        key, idle = self._key(account, tls_ca_bundle), self._idle()
        session, opened = idle.pop(key, (None, 0.0))
        if session is not None and time.monotonic() - opened >= self.MAX_AGE:
            session.close()
            session = None
        if session is None:
            session = acme.open_session(
                directory_url=account.directory_url,
                account_key=acme.account_key_from_pem(account.private_key),
                account_uri=account.account_url,
                tls_ca_bundle=tls_ca_bundle,
            )
            opened = time.monotonic()
        else:
            session.net.responses.clear()  # the order's counters are this run's requests
            session.net.bad_nonces = session.net.posts = 0
        self.local.out[id(session)] = (key, opened)
        return session

    def give_back(self, session: acme.AcmeSession, *, reusable: bool) -> None:
        idle = self._idle()
        key, opened = self.local.out.pop(id(session), (None, 0.0))
        if not reusable or key is None or key in idle:
            session.close()
            return
        while len(idle) >= self.SIZE:
            idle.pop(next(iter(idle)))[0].close()
        idle[key] = (session, opened)

    def clear(self) -> None:
        """Close this thread's idle sessions."""
        idle = self._idle()
        while idle:
            idle.popitem()[1][0].close()


_SESSIONS = _SessionPool()


def stalled_orders(now=None) -> list[int]:
    return list(AcmeOrder.objects.stalled(now=now or timezone.now()).values_list("pk", flat=True)[:500])


def deactivate_authorizations(order: AcmeOrder) -> None:
    """Best effort on cancel: tell the CA the pending authorizations are abandoned (RFC 8555 §7.5.2)."""
    pending = list(order.authorizations.filter(status="pending"))
    account = order.account
    if not pending or account is None or not order.order_url:
        return
    acme_settings = AcmeSettings.objects.filter(ca_id=order.ca_id).first()
    try:
        session = acme.open_session(
            directory_url=account.directory_url,
            account_key=acme.account_key_from_pem(account.private_key),
            account_uri=account.account_url,
            tls_ca_bundle=acme_settings.tls_ca_bundle if acme_settings else "",
        )
    except Exception as exc:  # the order is cancelled here whatever the CA says
        log.warning("order %s: cannot reach the CA to deactivate authorizations: %s", order.pk, exc)
        return
    try:
        for authz in pending:
            try:
                session.deactivate_authorization(authz.url)
                authz.status = "deactivated"
                authz.save(update_fields=["status"])
            except Exception as exc:
                log.warning("order %s: authorization %s not deactivated: %s", order.pk, authz.url, exc)
    finally:
        session.close()
