"""State changes of certificate syncs. Every door (admin, API, command, tasks, pki's signals) calls these.

A sync run is one certificate pushed to (or removed from) one destination under one name. Runs are made
after each issuance and renewal (pki's ``certificates_recorded``, after commit), on demand (``sync_now``),
by the drift check, and on revocation or expiry; a worker runs each one (``run_sync``), retries it with
backoff, raises one ``sync_failed`` alert on its first failure, and keeps ``Deployment`` (what is where,
since when) in step. Private keys are read only to push them, never logged or audited.
"""

from __future__ import annotations

import logging
import os
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict, ServiceError
from certmgr.jobs import JobReport
from certmgr.models import Organization
from certmgr.permissions import Action
from certmgr.services import audited_delete, record_test_outcome, require
from dnsproviders import services as connections
from dnsproviders.models import AppConnection
from pki import alerts, renewal
from pki.deployment import FIELDS as DEPLOYMENT_FIELDS
from pki.models import Certificate, Subscriber
from pki.policy import name_matches, validate_pattern
from syncs import destinations, ssh
from syncs.choices import (
    BATCHED,
    CONNECTION_KIND,
    NEEDS_PRIVATE_KEY,
    DestinationKind,
    RunAction,
    RunStatus,
    RunTrigger,
    deployment_state,
)
from syncs.models import Deployment, SyncDestination, SyncRule, SyncRun

log = logging.getLogger(__name__)

WORKER = Actor.system("task syncs")
LEASE = timedelta(minutes=5)  # a run whose worker died is due again after this
LEASE_KEEP_EVERY = LEASE / 3  # a batch still running renews its runs' lease this often
OPEN = (RunStatus.PENDING, RunStatus.RUNNING)
PLACEHOLDERS = ("subscriber", "common_name", "serial", "id")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9/_+=.@-]+")


# --- validation ------------------------------------------------------------------------------------------
def _text(field: str, value: Any, max_length: int, *, required: bool = False) -> str:
    value = str(value or "").strip()
    if required and not value:
        raise ValidationError({field: ["This field is required."]})
    if len(value) > max_length or "\x00" in value:
        raise ValidationError({field: [f"Enter at most {max_length} characters, without NUL."]})
    return value


def _kind(kind: str) -> DestinationKind:
    if kind not in DestinationKind.values:
        raise ValidationError({"kind": [f"Choose one of: {', '.join(DestinationKind.values)}."]})
    return DestinationKind(kind)


def _connection(org_id: int, kind: DestinationKind, connection: AppConnection | None) -> AppConnection:
    if connection is None or connection.organization_id != org_id:
        raise ValidationError({"connection": ["Choose an app connection of this organization."]})
    if connection.kind != CONNECTION_KIND[kind]:
        raise ValidationError(
            {"connection": [f"A {kind.label} destination needs an {CONNECTION_KIND[kind]} connection."]}
        )
    return connection


_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


def _region(value: Any, kind: DestinationKind | None = None) -> str:
    value = _text("region", value, 32)
    if value and kind is not None and CONNECTION_KIND[kind] != "aws":
        raise ValidationError({"region": [f"A {kind.label} destination has no region: leave it empty."]})
    if value and not _REGION.match(value):
        raise ValidationError({"region": ["Enter an AWS region such as eu-west-1, or leave it empty."]})
    return value


def _options(kind: DestinationKind, value: Any) -> dict[str, Any]:
    try:
        return destinations.REGISTRY[kind].clean_options(value)
    except ValueError as exc:
        raise ValidationError({"options": [str(exc)]}) from exc


def _schema(value: Any) -> str:
    value = _text("name_schema", value, 200, required=True)
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(value) if f is not None]
        bad = [f for f in fields if f not in PLACEHOLDERS]
    except ValueError as exc:
        raise ValidationError({"name_schema": [f"Not a name schema: {exc}."]}) from exc
    if bad:
        raise ValidationError(
            {
                "name_schema": [
                    f"Unknown placeholder {{{bad[0]}}}; use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}."
                ]
            }
        )
    return value


def _patterns(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.splitlines()
    if not isinstance(value, list | tuple):
        raise ValidationError({"name_patterns": ["Enter a list of name patterns."]})
    cleaned = [str(p).strip() for p in value if str(p).strip()]
    for p in cleaned:
        if (why := validate_pattern(p)) is not None:
            raise ValidationError({"name_patterns": [why]})
    return cleaned


def _check_key_rule(destination: SyncDestination, include_private_key: bool) -> None:
    if not include_private_key and destination.kind in NEEDS_PRIVATE_KEY:
        raise ValidationError(
            {
                "include_private_key": [
                    f"{DestinationKind(destination.kind).label} imports a certificate only with its private "
                    "key: include the key, or choose another destination."
                ]
            }
        )


def _duplicate(name: str) -> Conflict:
    return Conflict(f"a sync destination named {name!r} already exists in this organization", field="name")


def _summary(d: SyncDestination) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "connection": d.connection_id,
        "region": d.region,
        "options": d.options,
        "enabled": d.enabled,
    }


def _rule_summary(r: SyncRule) -> dict[str, Any]:
    return {
        "destination": r.destination_id,
        "subscriber": r.subscriber_id,
        "name_patterns": r.name_patterns,
        "name_schema": r.name_schema,
        "include_private_key": r.include_private_key,
        "remove_on_expiry_or_revocation": r.remove_on_expiry_or_revocation,
        "enabled": r.enabled,
    }


# --- destinations ----------------------------------------------------------------------------------------
def create_destination(
    organization: Organization,
    *,
    name: str,
    kind: str,
    connection: AppConnection | None,
    region: str = "",
    options: dict[str, Any] | None = None,
    enabled: bool = True,
    actor: Actor,
) -> SyncDestination:
    actor = as_actor(actor)
    with audit.failures(actor, "sync_destination.create", organization, name=name, kind=kind):
        require(actor, Action.MANAGE, organization.pk)
        name = _text("name", name, 100, required=True)
        k = _kind(kind)
        dest = SyncDestination(
            organization=organization,
            name=name,
            kind=k,
            connection=_connection(organization.pk, k, connection),
            region=_region(region, k),
            options=_options(k, options),
            enabled=bool(enabled),
        )
        try:
            with transaction.atomic():
                if SyncDestination.objects.filter(organization=organization, name=name).exists():
                    raise _duplicate(name)
                dest.save(force_insert=True)
                audit.record(actor, "sync_destination.create", dest, **_summary(dest))
        except IntegrityError as exc:
            raise _duplicate(name) from exc
    return dest


_DESTINATION_EDITABLE = ("name", "connection", "region", "options", "enabled")


def update_destination(destination: SyncDestination, *, actor: Actor, **changes: Any) -> SyncDestination:
    actor = as_actor(actor)
    with audit.failures(actor, "sync_destination.update", destination):
        require(actor, Action.MANAGE, destination.organization_id)
        unknown = set(changes) - set(_DESTINATION_EDITABLE)
        if unknown:
            raise ValidationError({k: ["This field cannot be changed."] for k in sorted(unknown)})
        try:
            with transaction.atomic():
                dest = SyncDestination.objects.select_for_update().get(pk=destination.pk)
                k = DestinationKind(dest.kind)
                changed = []
                if "name" in changes:
                    name = _text("name", changes["name"], 100, required=True)
                    if name != dest.name:
                        if SyncDestination.objects.filter(
                            organization_id=dest.organization_id, name=name
                        ).exists():
                            raise _duplicate(name)
                        dest.name = name
                        changed.append("name")
                new = {
                    "connection": lambda v: _connection(dest.organization_id, k, v),
                    "region": lambda v: _region(v, k),
                    "options": lambda v: _options(k, v),
                    "enabled": bool,
                }
                for field, clean in new.items():
                    if field in changes:
                        value = clean(changes[field])
                        if value != getattr(dest, field):
                            setattr(dest, field, value)
                            changed.append(field)
                dest.updated_at = timezone.now()
                dest.save()
                audit.record(actor, "sync_destination.update", dest, changed=changed, **_summary(dest))
        except IntegrityError as exc:
            raise _duplicate(str(changes.get("name", ""))) from exc
    return dest


def delete_destination(destination: SyncDestination, *, actor: Actor) -> None:
    """Deletes the destination, its rules, runs and deployment records; what was pushed stays there."""
    certificates: set[int] = set()

    def prepare(locked: SyncDestination) -> None:
        certificates.update(locked.runs.values_list("certificate_id", flat=True))

    audited_delete(
        destination,
        actor=actor,
        action="sync_destination.delete",
        lock=True,
        prepare=prepare,
        after=lambda _: refresh_deployment_states(certificates),  # its places no longer count
        details={"kind": destination.kind},
    )


_BACKENDS: dict[tuple[Any, ...], tuple[float, destinations.Backend]] = {}
_BACKENDS_LOCK = threading.Lock()
BACKEND_TTL = 600.0  # seconds a worker keeps a destination's client (below an assumed role's 900 s)


def backend(destination: SyncDestination, *, cached: bool = True) -> destinations.Backend:
    """The destination's client. A worker keeps it for ``BACKEND_TTL`` (building a boto3 client costs more
    than a push); any change of the destination or its connection makes a new one."""
    conn = destination.connection
    cached = cached and destination.kind not in BATCHED  # those hold a session for one batch
    key = (
        destination.pk,
        destination.updated_at,
        conn.pk,
        conn.updated_at,
        os.environ.get("AWS_ENDPOINT_URL"),
    )
    now = time.monotonic()
    if cached:
        with _BACKENDS_LOCK:
            hit = _BACKENDS.get(key)
        if hit is not None and now - hit[0] < BACKEND_TTL:
            return hit[1]
    made = destinations.backend_for(
        destination.kind, conn.credentials, region=destination.region, options=destination.options
    )
    if cached:
        with _BACKENDS_LOCK:
            for old in [
                k for k, (at, _) in _BACKENDS.items() if k[0] == destination.pk or now - at >= BACKEND_TTL
            ]:
                del _BACKENDS[old]
            _BACKENDS[key] = (now, made)
    return made


@dataclass(frozen=True)
class TestResult:
    ok: bool
    message: str


def test_destination(destination: SyncDestination, *, actor: Actor) -> TestResult:
    """One cheap authenticated call at the destination (list one certificate or secret); recorded."""
    actor = as_actor(actor)
    with audit.failures(actor, "sync_destination.test", destination):
        require(actor, Action.MANAGE, destination.organization_id)
    try:
        b = backend(destination, cached=False)
        result = TestResult(True, b.test())
        _pin_first_sight(destination, b)
    except destinations.DestinationError as exc:
        result = TestResult(False, exc.message)
    record_test_outcome(
        destination, ok=result.ok, message=result.message, actor=actor, action="sync_destination.test"
    )
    return result


# --- rules -----------------------------------------------------------------------------------------------
def _subscriber(org_id: int, subscriber: Subscriber | None) -> Subscriber | None:
    if subscriber is not None and subscriber.organization_id != org_id:
        raise ValidationError({"subscriber": ["Unknown subscriber."]})
    return subscriber


def create_rule(
    destination: SyncDestination,
    *,
    actor: Actor,
    subscriber: Subscriber | None = None,
    name_patterns: Sequence[str] | str = (),
    name_schema: str = "{subscriber}",
    include_private_key: bool = True,
    remove_on_expiry_or_revocation: bool = False,
    enabled: bool = True,
) -> SyncRule:
    actor = as_actor(actor)
    with audit.failures(actor, "sync_rule.create", destination):
        require(actor, Action.MANAGE, destination.organization_id)
        _check_key_rule(destination, include_private_key)
        rule = SyncRule(
            organization_id=destination.organization_id,
            destination=destination,
            subscriber=_subscriber(destination.organization_id, subscriber),
            name_patterns=_patterns(name_patterns),
            name_schema=_schema(name_schema),
            include_private_key=bool(include_private_key),
            remove_on_expiry_or_revocation=bool(remove_on_expiry_or_revocation),
            enabled=bool(enabled),
        )
        with transaction.atomic():
            rule.save(force_insert=True)
            audit.record(actor, "sync_rule.create", rule, **_rule_summary(rule))
    return rule


_RULE_EDITABLE = (
    "subscriber",
    "name_patterns",
    "name_schema",
    "include_private_key",
    "remove_on_expiry_or_revocation",
    "enabled",
)


def update_rule(rule: SyncRule, *, actor: Actor, **changes: Any) -> SyncRule:
    actor = as_actor(actor)
    with audit.failures(actor, "sync_rule.update", rule):
        require(actor, Action.MANAGE, rule.organization_id)
        unknown = set(changes) - set(_RULE_EDITABLE)
        if unknown:
            raise ValidationError({k: ["This field cannot be changed."] for k in sorted(unknown)})
        with transaction.atomic():
            row = SyncRule.objects.select_for_update().select_related("destination").get(pk=rule.pk)
            clean: dict[str, Callable[[Any], Any]] = {
                "subscriber": lambda v: _subscriber(row.organization_id, v),
                "name_patterns": _patterns,
                "name_schema": _schema,
                "include_private_key": bool,
                "remove_on_expiry_or_revocation": bool,
                "enabled": bool,
            }
            changed = []
            for field, fn in clean.items():
                if field in changes:
                    value = fn(changes[field])
                    if value != getattr(row, field):
                        setattr(row, field, value)
                        changed.append(field)
            _check_key_rule(row.destination, row.include_private_key)
            row.updated_at = timezone.now()
            row.save()
            audit.record(actor, "sync_rule.update", row, changed=changed, **_rule_summary(row))
    return row


def delete_rule(rule: SyncRule, *, actor: Actor) -> None:
    audited_delete(
        rule,
        actor=actor,
        action="sync_rule.delete",
        label=str(rule.pk),
        details={"destination": rule.destination_id},
    )


# --- which certificates go where -------------------------------------------------------------------------
def _names(cert: Certificate) -> list[str]:
    return [n for n in [cert.common_name, *(cert.sans or [])] if n]


def rule_matches(rule: SyncRule, cert: Certificate) -> bool:
    if cert.organization_id != rule.organization_id:
        return False
    if rule.subscriber_id is not None and cert.subscriber_id != rule.subscriber_id:
        return False
    if rule.name_patterns:
        return any(name_matches(n, p) for n in _names(cert) for p in rule.name_patterns)
    return True


def name_at_destination(rule: SyncRule, cert: Certificate, subscriber_name: str = "") -> str:
    """The rule's name schema for ``cert``, in the characters AWS names allow (``*.`` -> ``wildcard.``)."""
    label = subscriber_name or cert.common_name or cert.serial
    values = {
        "subscriber": label,
        "common_name": cert.common_name or label,
        "serial": cert.serial,
        "id": cert.pk,
    }
    text = rule.name_schema.format(**values).replace("*.", "wildcard.")
    return _NAME_CHARS.sub("-", text).strip("-")[:255] or f"certificate-{cert.pk}"


def _live_rules(org_ids: Iterable[int]) -> list[SyncRule]:
    return list(
        SyncRule.objects.filter(organization_id__in=set(org_ids), enabled=True, destination__enabled=True)
        .select_related("destination", "subscriber")
        .order_by("pk")
    )


def _deployable(cert: Certificate, now: datetime) -> bool:
    return cert.status == Certificate.Status.ACTIVE and cert.not_after > now


def _new_runs(
    pairs: Iterable[tuple[SyncRule, Certificate]],
    trigger: str,
    now: datetime,
    *,
    to_workers: bool = True,
    also_refresh: Iterable[int] = (),
) -> list[SyncRun]:
    """Insert one pending push run per (rule, certificate); older open runs to the same name are superseded.
    The certificates involved (and ``also_refresh``) get their deployment state in the same transaction.
    Runs are handed to workers on commit (``to_workers=False``: the caller runs them itself)."""
    runs: list[SyncRun] = []
    seen: set[tuple[int, str]] = set()
    for rule, cert in pairs:
        name = name_at_destination(
            rule, cert, cert.subscriber.name if cert.subscriber_id and cert.subscriber else ""
        )
        if (rule.destination_id, name) in seen:
            continue  # two rules send it to the same place: one run
        seen.add((rule.destination_id, name))
        runs.append(
            SyncRun(
                organization_id=cert.organization_id,
                destination_id=rule.destination_id,
                rule=rule,
                certificate=cert,
                name=name,
                include_private_key=rule.include_private_key,
                action=RunAction.PUSH,
                trigger=trigger,
                next_attempt_at=now,
                serial=cert.serial,
            )
        )
    if not runs:
        refresh_deployment_states(also_refresh)
        return runs
    with transaction.atomic():
        stale = Q()
        for run in runs:
            stale |= Q(destination_id=run.destination_id, name=run.name)
        superseded = SyncRun.objects.filter(stale, status=RunStatus.PENDING, action=RunAction.PUSH)
        touched = {*also_refresh, *superseded.values_list("certificate_id", flat=True)}
        superseded.update(
            status=RunStatus.SUPERSEDED,
            finished_at=now,
            next_attempt_at=None,
            error="a newer run took its place",
        )
        SyncRun.objects.bulk_create(runs, batch_size=1000)
        refresh_deployment_states(touched | {r.certificate_id for r in runs})
        ids = [r.pk for r in runs]
        if to_workers:
            transaction.on_commit(lambda: enqueue(ids))
    return runs


def enqueue(run_ids: Sequence[int]) -> None:
    """Hand committed runs to workers (a lost task is picked up by the ``run_due`` schedule)."""
    from django_q.tasks import async_task

    batches = batched_runs(run_ids)
    for dest_id, pks in batches.items():
        async_task("syncs.tasks.run_batch", pks, task_name=f"sync-batch-{dest_id}-{pks[0]}", group="syncs")
    batched = {pk for pks in batches.values() for pk in pks}
    for pk in run_ids:
        if pk not in batched:
            async_task("syncs.tasks.run_sync", pk, task_name=f"sync-run-{pk}", group="syncs")


def batched_runs(run_ids: Sequence[int]) -> dict[int, list[int]]:
    """The runs among ``run_ids`` of destinations run as one batch (``BATCHED`` kinds), per destination."""
    batches: dict[int, list[int]] = {}
    if not run_ids:
        return batches
    rows = SyncRun.objects.filter(pk__in=list(run_ids), destination__kind__in=list(BATCHED))
    for pk, dest_id in rows.order_by("pk").values_list("pk", "destination_id"):
        batches.setdefault(dest_id, []).append(pk)
    return batches


def _matching_pairs(certificates: Sequence[Certificate]) -> list[tuple[SyncRule, Certificate]]:
    """(rule, certificate) for every live rule each certificate matches (its subscriber loaded)."""
    rules = _live_rules(c.organization_id for c in certificates)
    if not rules:
        return []
    subscribers = {
        s.pk: s
        for s in Subscriber.objects.filter(pk__in={c.subscriber_id for c in certificates if c.subscriber_id})
    }
    pairs = []
    for cert in certificates:
        if cert.subscriber_id:
            cert.subscriber = subscribers.get(cert.subscriber_id)
        pairs += [(rule, cert) for rule in rules if rule_matches(rule, cert)]
    return pairs


def on_certificates_recorded(sender: Any, certificates: Sequence[Certificate], **kwargs: Any) -> None:
    """pki's ``certificates_recorded`` (after commit): a run per destination each new certificate goes to;
    what they renew is refreshed too (a renewed certificate's unconfirmed places no longer count)."""
    pairs = _matching_pairs(certificates)
    if pairs:
        renewed = [c.renewed_from_id for c in certificates if c.renewed_from_id is not None]
        _new_runs(pairs, RunTrigger.ISSUANCE, timezone.now(), also_refresh=renewed)


def on_certificates_revoked(sender: Any, certificates: Sequence[Certificate], **kwargs: Any) -> None:
    """pki's ``certificates_revoked`` (after commit): removal runs where a rule says so."""
    _removals(
        Deployment.objects.present().filter(certificate__in=[c.pk for c in certificates]),
        RunTrigger.REVOCATION,
        timezone.now(),
    )


def _removals(deployments: Any, trigger: str, now: datetime) -> list[SyncRun]:
    deployments = list(deployments.select_related("certificate", "destination"))
    if not deployments:
        return []
    rules = _live_rules(d.organization_id for d in deployments)
    runs = []
    for dep in deployments:
        rule = next(
            (
                r
                for r in rules
                if r.destination_id == dep.destination_id
                and r.remove_on_expiry_or_revocation
                and rule_matches(r, dep.certificate)
            ),
            None,
        )
        if (
            rule is None
            or SyncRun.objects.filter(
                destination_id=dep.destination_id, name=dep.name, action=RunAction.REMOVE, status__in=OPEN
            ).exists()
        ):
            continue
        runs.append(
            SyncRun(
                organization_id=dep.organization_id,
                destination_id=dep.destination_id,
                rule=rule,
                certificate=dep.certificate,
                name=dep.name,
                include_private_key=False,
                action=RunAction.REMOVE,
                trigger=trigger,
                next_attempt_at=now,
                serial=dep.certificate.serial,
                identifier=dep.identifier,
            )
        )
    with transaction.atomic():
        SyncRun.objects.bulk_create(runs)
        ids = [r.pk for r in runs]
        transaction.on_commit(lambda: enqueue(ids))
    return runs


def current_certificates(rule: SyncRule, now: datetime) -> list[Certificate]:
    """What ``rule`` deploys now: each subscriber's newest usable certificate that matches, and every
    usable matching certificate without a subscriber (imports)."""
    rows = (
        Certificate.objects.filter(
            organization_id=rule.organization_id, status=Certificate.Status.ACTIVE, not_after__gt=now
        )
        .select_related("subscriber")
        .defer("private_key", "csr_pem")
        .order_by("subscriber_id", "-not_after", "-id")
    )
    if rule.subscriber_id is not None:
        rows = rows.filter(subscriber_id=rule.subscriber_id)
    newest: list[Certificate] = []
    seen: set[int] = set()
    for cert in rows.iterator(chunk_size=2000):
        if cert.subscriber_id is not None:
            if cert.subscriber_id in seen:
                continue
            seen.add(cert.subscriber_id)
        if rule_matches(rule, cert):
            newest.append(cert)
    return newest


def sync_now(
    *,
    actor: Actor,
    destination: SyncDestination | None = None,
    certificate: Certificate | None = None,
    trigger: str = RunTrigger.MANUAL,
    to_workers: bool = True,
) -> list[SyncRun]:
    """ "Sync now": push the current certificates of a destination's rules (or one certificate to every
    destination it goes to), whatever is there already. Runs are handed to workers on commit
    (``to_workers=False``: the caller runs them, as ``manage.py sync`` does)."""
    actor = as_actor(actor)
    target: Any = destination if destination is not None else certificate
    if target is None:
        raise ValidationError({"destination": ["Name a destination or a certificate."]})
    now = timezone.now()
    with audit.failures(actor, "sync.now", target):
        require(actor, Action.MANAGE, target.organization_id)
        if certificate is not None:
            cert = (
                Certificate.objects.select_related("subscriber").defer("private_key").get(pk=certificate.pk)
            )
            if not _deployable(cert, now):
                raise ServiceError("this certificate is revoked or expired: it is not deployed")
            rules = [r for r in _live_rules([cert.organization_id]) if rule_matches(r, cert)]
            if destination is not None:
                rules = [r for r in rules if r.destination_id == destination.pk]
            pairs = [(r, cert) for r in rules]
        else:
            assert destination is not None
            if not destination.enabled:
                raise ServiceError("this destination is disabled")
            rules = [
                r for r in _live_rules([destination.organization_id]) if r.destination_id == destination.pk
            ]
            pairs = [(r, c) for r in rules for c in current_certificates(r, now)]
        with transaction.atomic():
            runs = _new_runs(pairs, trigger, now, to_workers=to_workers)
            audit.record(actor, "sync.now", target, runs=len(runs))
    return runs


def retry_run(run: SyncRun, *, actor: Actor) -> SyncRun:
    """Try a failed run again now, with a new round of attempts."""
    actor = as_actor(actor)
    with audit.failures(actor, "sync_run.retry", run):
        require(actor, Action.MANAGE, run.organization_id)
        with transaction.atomic():
            row = SyncRun.objects.select_for_update().get(pk=run.pk)
            if row.status not in (RunStatus.FAILED, RunStatus.PENDING):
                raise Conflict(f"this run is {row.status}: only failed or waiting runs are retried")
            row.status, row.attempts, row.next_attempt_at, row.finished_at = (
                RunStatus.PENDING,
                0,
                timezone.now(),
                None,
            )
            row.alerted = False
            row.save(update_fields=["status", "attempts", "next_attempt_at", "finished_at", "alerted"])
            refresh_deployment_states([row.certificate_id])  # failed -> deploying
            audit.record(
                actor, "sync_run.retry", row, certificate=row.certificate_id, destination=row.destination_id
            )
            transaction.on_commit(lambda: enqueue([row.pk]))
    return row


# --- running ---------------------------------------------------------------------------------------------
def _retry_delay(attempts: int) -> float:
    return renewal.retry_delay(
        attempts, base=settings.CERTMGR_SYNC_RETRY_BASE_SECONDS, cap=settings.CERTMGR_SYNC_RETRY_MAX_SECONDS
    )


def _claim(pk: int, now: datetime) -> bool:
    due = Q(status=RunStatus.PENDING) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    stalled = Q(status=RunStatus.RUNNING, lease_until__lt=now)
    return bool(
        SyncRun.objects.filter(due | stalled, pk=pk).update(
            status=RunStatus.RUNNING, lease_until=now + LEASE, started_at=now, attempts=F("attempts") + 1
        )
    )


def claim_batch(run_ids: Sequence[int], now: datetime) -> list[int]:
    """Take the due runs among ``run_ids`` for this worker, all in one statement: rows another worker is
    claiming are skipped (``skip_locked``) and rows it claimed are running under its lease, so a second
    claimer of the same batch gets none of them, not an interleaved half."""
    due = Q(status=RunStatus.PENDING) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    stalled = Q(status=RunStatus.RUNNING, lease_until__lt=now)
    with transaction.atomic():
        free = list(
            SyncRun.objects.select_for_update(skip_locked=True)
            .filter(due | stalled, pk__in=list(run_ids))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        SyncRun.objects.filter(pk__in=free).update(
            status=RunStatus.RUNNING, lease_until=now + LEASE, started_at=now, attempts=F("attempts") + 1
        )
    return free


def _keep_lease(runs: Sequence[SyncRun], now: datetime) -> None:
    """A batch that outlasts its lease keeps it: no other worker re-claims runs this one is still on."""
    SyncRun.objects.filter(pk__in=[r.pk for r in runs], status=RunStatus.RUNNING).update(
        lease_until=now + LEASE
    )


def _material(run: SyncRun, cert: Certificate) -> destinations.Material:
    return destinations.Material(
        name=run.name,
        certificate_pem=cert.certificate_pem,
        chain_pem=cert.chain_pem,
        private_key_pem=cert.private_key if run.include_private_key else "",
        serial=cert.serial,
        fingerprint_sha256=cert.fingerprint_sha256,
        not_after=cert.not_after,
        subscriber=cert.subscriber.name if cert.subscriber_id and cert.subscriber else "",
        names=tuple(_names(cert)),
    )


def run_sync(run_id: int, *, now: datetime | None = None) -> SyncRun | None:
    """Run one due run: push (or remove) and record the outcome, then its certificate's deployment state.
    None when it is not due or taken."""
    now = now or timezone.now()
    if SyncRun.objects.filter(pk=run_id, destination__kind__in=list(BATCHED)).exists():
        done = run_batch([run_id], now=now)  # an SSH run alone: still pushed, reloaded and read back
        return done[0] if done else None
    if not _claim(run_id, now):
        return None
    run = _run_claimed(run_id, now)
    refresh_deployment_states([run.certificate_id])
    return run


def _run_claimed(run_id: int, now: datetime) -> SyncRun:
    run = SyncRun.objects.select_related("destination__connection", "certificate__subscriber").get(pk=run_id)
    cert, dest = run.certificate, run.destination
    deployment = Deployment.objects.filter(destination_id=dest.pk, name=run.name).first()
    if run.action == RunAction.PUSH:
        why_not = _skip_reason(run, cert, deployment, now)
        if why_not:
            return _finish(run, RunStatus.SUPERSEDED, error=why_not, now=now)
    try:
        if not dest.enabled:
            raise destinations.DestinationError("the destination is disabled", permanent=True)
        if run.action == RunAction.REMOVE:
            if (
                deployment is not None
                and deployment.removed_at is None
                and deployment.certificate_id == cert.pk
            ):
                backend(dest).remove(deployment.identifier)
            pushed = destinations.Pushed(run.identifier)
        else:
            if run.include_private_key and not cert.private_key:
                raise destinations.DestinationError(
                    "certmgr does not hold this certificate's private key", permanent=True
                )
            previous = (
                deployment.identifier if deployment is not None and deployment.removed_at is None else ""
            )
            pushed = backend(dest).push(_material(run, cert), previous)
    except destinations.DestinationError as exc:
        return _failed(run, exc, now)
    except ServiceError as exc:  # e.g. the connection's credentials cannot be decrypted
        return _failed(run, destinations.DestinationError(str(exc), permanent=True), now)
    return _succeeded(run, cert, deployment, pushed, now)


def _pin_first_sight(destination: SyncDestination, b: destinations.Backend) -> None:
    """Trust on first use: the host key an SSH host showed, pinned on its connection when none was."""
    if (
        isinstance(b, ssh.SshBackend)
        and b.first_sight
        and b.host_key
        and not connections.pin_host_key(destination.connection, b.host_key, actor=WORKER)
    ):
        raise destinations.DestinationError(
            "another session pinned a different host key meanwhile: nothing is trusted", permanent=True
        )


def run_batch(run_ids: Sequence[int], *, now: datetime | None = None) -> list[SyncRun]:
    """Run the due runs among ``run_ids`` (of ``BATCHED`` destinations) together, per destination: one
    session, every push or removal, then one finishing step (the SSH reload and TLS read-back). A failing
    finish fails every run whose files it was to make live, with its error; they are retried with backoff."""
    now = now or timezone.now()
    claimed = claim_batch(run_ids, now)
    runs = list(
        SyncRun.objects.select_related("destination__connection", "certificate__subscriber")
        .filter(pk__in=claimed)
        .order_by("pk")
    )
    per_destination: dict[int, list[SyncRun]] = {}
    for run in runs:
        per_destination.setdefault(run.destination_id, []).append(run)
    done: list[SyncRun] = []
    for group in per_destination.values():
        done += _run_one_batch(group, now)
    refresh_deployment_states(run.certificate_id for run in done)
    return done


def _run_one_batch(runs: list[SyncRun], now: datetime) -> list[SyncRun]:
    dest = runs[0].destination
    deployments = {
        d.name: d for d in Deployment.objects.filter(destination_id=dest.pk, name__in=[r.name for r in runs])
    }
    done: list[SyncRun] = []
    pushed: list[tuple[SyncRun, Deployment | None, destinations.Pushed]] = []
    try:
        if not dest.enabled:
            raise destinations.DestinationError("the destination is disabled", permanent=True)
        b = backend(dest)
        if isinstance(b, ssh.SshBackend):
            b.open()
        _pin_first_sight(dest, b)
    except (destinations.DestinationError, ServiceError) as exc:
        error = (
            exc if isinstance(exc, destinations.DestinationError) else destinations.DestinationError(str(exc))
        )
        return [_failed(run, error, now) for run in runs]
    started = time.monotonic()
    keep_at = started + LEASE_KEEP_EVERY.total_seconds()
    try:
        for run in runs:
            if time.monotonic() >= keep_at:
                _keep_lease(runs, now + timedelta(seconds=time.monotonic() - started))
                keep_at = time.monotonic() + LEASE_KEEP_EVERY.total_seconds()
            cert, deployment = run.certificate, deployments.get(run.name)
            if run.action == RunAction.PUSH:
                why_not = _skip_reason(run, cert, deployment, now)
                if why_not:
                    done.append(_finish(run, RunStatus.SUPERSEDED, error=why_not, now=now))
                    continue
            try:
                if run.action == RunAction.REMOVE:
                    if (
                        deployment is not None
                        and deployment.removed_at is None
                        and deployment.certificate_id == cert.pk
                    ):
                        b.remove(deployment.identifier)
                    result = destinations.Pushed(run.identifier)
                else:
                    if run.include_private_key and not cert.private_key:
                        raise destinations.DestinationError(
                            "certmgr does not hold this certificate's private key", permanent=True
                        )
                    live = deployment is not None and deployment.removed_at is None
                    previous = deployment.identifier if deployment is not None and live else ""
                    result = b.push(_material(run, cert), previous)
            except destinations.DestinationError as exc:
                done.append(_failed(run, exc, now))
                continue
            except ServiceError as exc:  # e.g. the certificate's key cannot be decrypted
                done.append(_failed(run, destinations.DestinationError(str(exc), permanent=True), now))
                continue
            pushed.append((run, deployment, result))
        finish = getattr(b, "finish", None)
        if pushed and finish is not None:
            finish()
    except destinations.DestinationError as exc:
        return done + [_failed(run, exc, now) for run, _, _ in pushed]
    finally:
        close = getattr(b, "close", None)
        if close is not None:
            close()
    return done + [_succeeded(run, run.certificate, dep, result, now) for run, dep, result in pushed]


def _skip_reason(run: SyncRun, cert: Certificate, deployment: Deployment | None, now: datetime) -> str:
    if not _deployable(cert, now):
        return "the certificate is revoked or expired: not deployed"
    if deployment is not None and deployment.removed_at is None and deployment.certificate_id != cert.pk:
        there = (
            Certificate.objects.filter(pk=deployment.certificate_id).values_list("not_after", "pk").first()
        )
        if there is not None and there > (cert.not_after, cert.pk):
            return "a newer certificate is deployed there already"
    return ""


def _finish(run: SyncRun, status: str, *, error: str = "", now: datetime) -> SyncRun:
    run.status, run.error, run.finished_at, run.next_attempt_at, run.lease_until = (
        status,
        error,
        now,
        None,
        None,
    )
    run.save(update_fields=["status", "error", "finished_at", "next_attempt_at", "lease_until"])
    return run


def _audit_details(run: SyncRun) -> dict[str, Any]:
    return {
        "destination": run.destination_id,
        "name": run.name,
        "serial": run.serial,
        "attempt": run.attempts,
        "run": run.pk,
        "operation": run.action,
        "identifier": run.identifier,
        "version": run.version,
        "private_key_included": run.include_private_key,
    }


def _succeeded(
    run: SyncRun, cert: Certificate, deployment: Deployment | None, pushed: destinations.Pushed, now: datetime
) -> SyncRun:
    with transaction.atomic():
        run.identifier, run.version, run.serial = pushed.identifier[:500], pushed.version[:100], cert.serial
        run.status, run.error, run.finished_at, run.next_attempt_at, run.lease_until = (
            RunStatus.SUCCEEDED,
            "",
            now,
            None,
            None,
        )
        run.save(
            update_fields=[
                "serial",
                "identifier",
                "version",
                "status",
                "error",
                "finished_at",
                "next_attempt_at",
                "lease_until",
            ]
        )
        if run.action == RunAction.REMOVE:
            Deployment.objects.filter(
                destination_id=run.destination_id, name=run.name, certificate_id=cert.pk
            ).update(removed_at=now)
        else:
            same = (
                deployment is not None
                and deployment.certificate_id == cert.pk
                and deployment.removed_at is None
            )
            values = {
                "organization_id": run.organization_id,
                "certificate_id": cert.pk,
                "identifier": run.identifier,
                "version": run.version,
                "fingerprint_sha256": cert.fingerprint_sha256,
                "deployed_at": deployment.deployed_at if same and deployment is not None else now,
                "checked_at": now,
                "drift": "",
                "removed_at": None,
            }
            # one statement: the row read before the push, or a new one (a concurrent first push of the
            # same name loses the unique constraint and updates instead)
            kept = deployment is not None and Deployment.objects.filter(pk=deployment.pk).update(**values)
            if not kept:
                try:
                    with transaction.atomic():
                        Deployment.objects.create(destination_id=run.destination_id, name=run.name, **values)
                except IntegrityError:
                    Deployment.objects.filter(destination_id=run.destination_id, name=run.name).update(
                        **values
                    )
        action = "certificate.sync_remove" if run.action == RunAction.REMOVE else "certificate.sync"
        audit.record(WORKER, action, cert, **_audit_details(run))
    log.info(
        "sync run %s: %s %s at %s (%s)", run.pk, run.action, run.serial, run.destination_id, run.identifier
    )
    return run


def _failed(run: SyncRun, exc: destinations.DestinationError, now: datetime) -> SyncRun:
    message = destinations.scrub(exc.message)[:4000]
    final = exc.permanent or run.attempts >= settings.CERTMGR_SYNC_MAX_ATTEMPTS
    with transaction.atomic():
        run.error, run.lease_until = message, None
        if final:
            run.status, run.finished_at, run.next_attempt_at = RunStatus.FAILED, now, None
        else:
            run.status = RunStatus.PENDING
            run.next_attempt_at = now + timedelta(seconds=_retry_delay(run.attempts))
        first = not run.alerted
        run.alerted = True
        run.save(
            update_fields=["error", "lease_until", "status", "finished_at", "next_attempt_at", "alerted"]
        )
        action = "certificate.sync_remove" if run.action == RunAction.REMOVE else "certificate.sync"
        audit.record(
            WORKER,
            action,
            run.certificate,
            outcome="failure",
            error=message,
            final=final,
            **_audit_details(run),
        )
        if first:  # one alert per run, at its first failure; the run's page shows the retries
            text = f"{run.destination.name}: {message}" + ("" if final else " (retried with backoff)")
            alerts.notify("sync_failed", certificate=run.certificate, message=text)
    log.warning(
        "sync run %s failed (attempt %s%s): %s", run.pk, run.attempts, ", final" if final else "", message
    )
    return run


def due_runs(now: datetime, limit: int = 5000) -> list[int]:
    due = Q(status=RunStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=RunStatus.RUNNING, lease_until__lt=now
    )
    return list(
        SyncRun.objects.filter(due).order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit]
    )


def run_due(
    report: JobReport, *, now: datetime | None = None, progress: Callable[[str], None] | None = None
) -> None:
    """Run every due run here (retries whose time came, runs whose worker died or whose task was lost)."""
    now = now or timezone.now()
    say = progress or (lambda message: None)
    due = due_runs(now)
    batches = batched_runs(due)
    batched = {pk for pks in batches.values() for pk in pks}
    done = [r for pks in batches.values() for r in run_batch(pks, now=now)]
    done += [r for pk in due if pk not in batched and (r := run_sync(pk, now=now)) is not None]
    if healed := refresh_deployment_states(stale_deployment_states()):
        report.add("states_refreshed", healed)
    for run in done:
        report.add(run.status)
        say(
            f"run {run.pk}: {run.name} at destination {run.destination_id}: {run.status}"
            + (f": {run.error}" if run.error else "")
        )


def check_drift(
    report: JobReport,
    *,
    now: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    organization_ids: Iterable[int] | None = None,
) -> list[SyncRun]:
    """Re-read every destination: a deployment whose certificate differs there (or is gone), a current
    certificate that is not there, and a revoked or expired one a rule removes, each get a run."""
    now = now or timezone.now()
    say = progress or (lambda message: None)
    rules = list(
        SyncRule.objects.filter(enabled=True, destination__enabled=True)
        .select_related("destination__connection", "subscriber")
        .order_by("destination_id", "pk")
    )
    if organization_ids is not None:
        rules = [r for r in rules if r.organization_id in set(organization_ids)]
    open_names = set(
        SyncRun.objects.filter(status__in=OPEN, action=RunAction.PUSH).values_list("destination_id", "name")
    )
    deployments = {
        (d.destination_id, d.name): d
        for d in Deployment.objects.present().filter(destination__in={r.destination_id for r in rules})
    }
    wanted: list[tuple[SyncRule, Certificate]] = []
    drifted: list[Deployment] = []
    backends: dict[int, destinations.Backend] = {}
    for rule in rules:
        for cert in current_certificates(rule, now):
            name = name_at_destination(rule, cert, cert.subscriber.name if cert.subscriber else "")
            key = (rule.destination_id, name)
            if key in open_names:
                continue
            dep = deployments.get(key)
            if dep is None or dep.certificate_id != cert.pk:
                open_names.add(key)
                wanted.append((rule, cert))
                report.add("missing")
                say(f"missing: {cert.serial} at {rule.destination.name} as {name}")
                continue
            module = destinations.REGISTRY.get(rule.destination.kind)
            if module is not None and not module.reads_back:
                report.add("not_readable")  # a webhook: what the receiver holds cannot be read back
                continue
            try:
                if rule.destination_id not in backends:
                    backends[rule.destination_id] = backend(rule.destination)
                b = backends[rule.destination_id]
                if isinstance(b, ssh.SshBackend):  # what its TLS endpoint serves, where one is configured
                    there, where = b.drift_fingerprint(dep.identifier, _names(cert))
                else:
                    there, where = b.fingerprint(dep.identifier), "certificate there"
            except (destinations.DestinationError, ServiceError) as exc:
                report.error(f"{rule.destination.name}: {name}: {exc}")
                continue
            dep.checked_at = now
            if there != cert.fingerprint_sha256:
                dep.drift = "gone" if there is None else f"{where}: {there or 'not a certificate'}"
                drifted.append(dep)
                open_names.add(key)
                wanted.append((rule, cert))
                report.add("drifted")
                say(f"drifted: {name} at {rule.destination.name}: {dep.drift}")
            else:
                dep.drift = ""
                report.add("in_step")
    for b in backends.values():
        if isinstance(b, ssh.SshBackend):
            b.close()
    Deployment.objects.bulk_update(
        [d for d in deployments.values() if d.checked_at == now], ["checked_at", "drift"], batch_size=1000
    )
    runs = _new_runs(wanted, RunTrigger.DRIFT, now)
    expired = Deployment.objects.present().filter(
        Q(certificate__not_after__lte=now) | Q(certificate__status=Certificate.Status.REVOKED)
    )
    removals = _removals(expired, RunTrigger.EXPIRY, now)
    report.add("runs", len(runs) + len(removals))
    return runs + removals


# --- what is deployed where -------------------------------------------------------------------------------
def deployments_of(
    certificate: Certificate | None = None, subscriber: Subscriber | None = None
) -> list[Deployment]:
    rows = (
        Deployment.objects.present()
        .select_related("destination", "certificate")
        .order_by("destination__name", "name")
    )
    if certificate is not None:
        rows = rows.filter(certificate=certificate)
    if subscriber is not None:
        rows = rows.filter(certificate__subscriber=subscriber)
    return list(rows[:200])


def undeployed_renewals(certificates: Any = None) -> Any:
    """Renewed certificates (of ``certificates``, default all) that some destination does not confirm yet
    (deployment state deploying or failed): renewal is done only when every destination has the new
    certificate."""
    rows = Certificate.objects.all() if certificates is None else certificates
    return rows.undeployed_renewals()


# --- deployment state of certificates (pki shows it; kept here) -------------------------------------------
State = Certificate.DeploymentState
DEPLOYED_ACTION = "certificate.deployed"


def refresh_deployment_states(certificate_ids: Iterable[int]) -> int:
    """Derive each certificate's deployment state from its push runs and store what changed; the move to
    deployed (the last destination confirmed the serial) is audited once, as ``certificate.deployed``.
    The certificates are locked meanwhile: concurrent workers confirming its last two destinations
    serialize here, and the second sees the first's run. Returns how many changed."""
    ids = sorted(set(certificate_ids))
    if not ids:
        return 0
    changed = 0
    with transaction.atomic():
        for start in range(0, len(ids), 1000):
            changed += _refresh_states(ids[start : start + 1000])
    return changed


def _refresh_states(ids: list[int]) -> int:
    from django.db.models import Exists, OuterRef

    certs = list(
        Certificate.objects.select_for_update(of=("self",))
        .filter(pk__in=ids)
        .order_by("pk")
        .annotate(replaced=Exists(Certificate.objects.filter(renewed_from=OuterRef("pk"))))
        .only(  # and what the audit event's target label reads (Certificate.__str__)
            "id",
            "organization_id",
            "serial",
            "common_name",
            "subject_dn",
            "renewed_from_id",
            *DEPLOYMENT_FIELDS,
        )
    )
    runs: dict[int, dict[tuple[int, str], list[tuple[str, datetime | None]]]] = {}
    for cert_id, dest_id, name, status, finished in SyncRun.objects.filter(
        certificate_id__in=ids, action=RunAction.PUSH
    ).values_list("certificate_id", "destination_id", "name", "status", "finished_at"):
        runs.setdefault(cert_id, {}).setdefault((dest_id, name), []).append((status, finished))
    deployed: dict[int, list[tuple[Certificate, dict[str, Any]]]] = {}
    changed = []
    for cert in certs:
        new = deployment_state(runs.get(cert.pk, {}), replaced=getattr(cert, "replaced", False))
        if new == tuple(getattr(cert, f) for f in DEPLOYMENT_FIELDS):
            continue
        if new[0] == State.DEPLOYED and cert.deployment_state != State.DEPLOYED:
            deployed.setdefault(cert.organization_id, []).append(
                (
                    cert,
                    {
                        "serial": cert.serial,
                        "destinations": new[1],
                        "renewed_from": cert.renewed_from_id,
                        "deployed_at": new[3].isoformat() if new[3] else None,
                    },
                )
            )
        for field, value in zip(DEPLOYMENT_FIELDS, new, strict=True):
            setattr(cert, field, value)
        changed.append(cert)
    # one UPDATE per distinct outcome: a batch's certificates share it (its runs finish at one ``now``)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for cert in changed:
        groups.setdefault(tuple(getattr(cert, f) for f in DEPLOYMENT_FIELDS), []).append(cert.pk)
    for values, pks in groups.items():
        Certificate.objects.filter(pk__in=pks).update(**dict(zip(DEPLOYMENT_FIELDS, values, strict=True)))
    for org_id, targets in sorted(deployed.items()):
        audit.record_many(WORKER, DEPLOYED_ACTION, targets, organization=org_id)
    return len(changed)


def stale_deployment_states() -> list[int]:
    """Certificates said to be deploying with no open run left (a worker died between its run and the
    state): the ``run_due`` schedule refreshes them."""
    from django.db.models import Exists, OuterRef

    open_runs = SyncRun.objects.filter(certificate=OuterRef("pk"), action=RunAction.PUSH, status__in=OPEN)
    return list(
        Certificate.objects.filter(deployment_state=State.DEPLOYING)
        .filter(~Exists(open_runs))
        .values_list("pk", flat=True)[:5000]
    )


def plan_destinations(certificates: Sequence[Certificate]) -> dict[int, int]:
    """pki's deployment planner (``pki.deployment``): how many destinations each new certificate goes to,
    counted as ``on_certificates_recorded`` will make its runs (one per destination and name)."""
    places: dict[int, set[tuple[int, str]]] = {}
    for rule, cert in _matching_pairs(certificates):
        name = name_at_destination(
            rule, cert, cert.subscriber.name if cert.subscriber_id and cert.subscriber else ""
        )
        places.setdefault(cert.pk, set()).add((rule.destination_id, name))
    return {pk: len(p) for pk, p in places.items()}
