"""The audit log: one writer (``record``), hash-chained per organization, and its verifier.

``record`` must run inside the transaction of the change it records (services call it there), so a
change is never committed without its event. Failed attempts are recorded by ``failures()`` after
the failed transaction has rolled back, so the failure itself is not lost with it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from certmgr import audit_keys, sql
from certmgr.actors import Actor, as_actor

if TYPE_CHECKING:
    from certmgr.actors import ActorSource
from certmgr.middleware import current as current_request
from certmgr.models import AuditChainHead, AuditEvent, Organization

# Keys whose values never enter the log, whatever a caller passes (defence in depth).
_SECRET_KEY = re.compile(r"(secret|password|passphrase|private|token|api_key|hmac|credential)", re.I)
REDACTED = "[redacted]"

# What an event's link covers. Keyed links (HMAC-SHA256 under an audit key) also cover which algorithm and
# key made them; legacy links (unkeyed SHA-256, written before keys existed) cover the first list only.
HASHED_FIELDS = (
    "time", "organization_id", "chain", "sequence", "actor_type", "actor_id", "actor_label", "action",
    "target_type", "target_id", "target_repr", "outcome", "error", "details", "request_id", "ip",
    "user_agent", "prev_hash",
)  # fmt: skip
KEYED_FIELDS = (*HASHED_FIELDS, "algorithm", "key_id")
LEGACY = AuditEvent.Algorithm.LEGACY_SHA256
KEYED = AuditEvent.Algorithm.HMAC_SHA256
KEY_ROTATED = "audit.key_rotated"
KEYS_ACTOR = Actor.system("audit keys")


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): (REDACTED if _SECRET_KEY.search(str(k)) else scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _clean(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return _clean(str(value))


def _clean(text: str) -> str:
    # PostgreSQL text and jsonb refuse NUL characters; keep them visible instead of failing the write.
    return text.replace("\x00", "\\0")


def _canonical(event: AuditEvent, fields: tuple[str, ...]) -> bytes:
    content = {}
    for name in fields:
        value = getattr(event, name)
        if name == "time":
            value = value.astimezone(datetime.UTC).isoformat(timespec="microseconds")
        content[name] = value
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class UnknownAuditKey(Exception):
    """An event names an audit key that is not (or no longer) in CERTMGR_AUDIT_KEYS."""


def compute_hash(event: AuditEvent, key: audit_keys.AuditKey | None = None) -> str:
    """The link of ``event``: its HMAC under the key it names (or ``key``), or the legacy SHA-256."""
    if event.algorithm == LEGACY:
        return hashlib.sha256(_canonical(event, HASHED_FIELDS)).hexdigest()
    if event.algorithm != KEYED:
        raise ValueError(f"unknown audit link algorithm {event.algorithm!r}")
    key = key or audit_keys.find(event.key_id)
    if key is None:
        raise UnknownAuditKey(f"audit key {event.key_id!r} is not in CERTMGR_AUDIT_KEYS")
    return key.mac(_canonical(event, KEYED_FIELDS))


def _target_fields(target: Any) -> dict[str, str]:
    if target is None:
        return {}
    if isinstance(target, models.Model):
        return {
            "target_type": target._meta.label_lower,
            "target_id": str(target.pk or ""),
            "target_repr": _clean(str(target))[:300],
        }
    if isinstance(target, tuple):  # (type, id, text) for things that are not rows, or rows now deleted
        kind, pk, text = target
        return {"target_type": kind, "target_id": str(pk), "target_repr": _clean(str(text))[:300]}
    raise TypeError(f"unsupported audit target {target!r}")


def _organization_of(target: Any) -> int | None:
    if isinstance(target, Organization):
        return target.pk
    return getattr(target, "organization_id", None)


_CLAIM = (
    f"UPDATE {AuditChainHead._meta.db_table} SET sequence = sequence + %s WHERE chain = %s "  # noqa: S608
    "RETURNING chain, sequence, last_hash, key_id"
)  # a table name from the model, no input


def claim(chain: int, count: int = 1) -> sql.Statement:
    """The statement that locks the chain head and takes its next ``count`` sequence numbers
    (``UPDATE ... RETURNING``), for a service to send along its own writes: hand its row to ``record``
    (``claimed=``). ``record`` then makes the last new event's hash the head's, in the same transaction."""
    return sql.Statement(_CLAIM, (count, chain))


def _claim(chain: int, count: int = 1, claimed: tuple[Any, ...] | None = None) -> AuditChainHead:
    """The chain head as it was before the ``count`` sequence numbers taken by ``claim`` (sent here, or
    by the caller: ``claimed`` is its row), which the new events follow."""
    row = claimed if claimed is not None and claimed[0] == chain else None  # (None, ...): no head yet
    if row is None:
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM, [count, chain])
            row = cursor.fetchone()
            if row is None:
                AuditChainHead.objects.bulk_create([AuditChainHead(chain=chain)], ignore_conflicts=True)
                cursor.execute(_CLAIM, [count, chain])
                row = cursor.fetchone()
    return AuditChainHead(chain=chain, sequence=row[1] - count, last_hash=row[2], key_id=row[3])


def _rotation(head: AuditChainHead, key: audit_keys.AuditKey, org_id: int | None) -> AuditEvent | None:
    """When the chain's last event was linked by another key (or unkeyed, before keys), the event that
    records the change of key, linked by the new one; it takes one more sequence number (the head is
    locked by ``_claim`` already). ``head`` then stands after it."""
    if head.sequence == 0 or head.key_id == key.key_id:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, [1, head.chain])
    previous = {"from_key": head.key_id} if head.key_id else {"from_algorithm": LEGACY.value}
    event = _next_event(
        head, key, KEYS_ACTOR, org_id, KEY_ROTATED, None, AuditEvent.Outcome.SUCCESS, "",
        {**previous, "to_key": key.key_id},
    )  # fmt: skip
    head.sequence, head.last_hash, head.key_id = event.sequence, event.hash, key.key_id
    return event


def _link(last: AuditEvent) -> sql.Statement:
    """The head's new last hash and key (its sequence was taken by ``_claim``)."""
    row = AuditChainHead(chain=last.chain, last_hash=last.hash, key_id=last.key_id)
    return sql.update_row(row, ["last_hash", "key_id"])


def _append(event: AuditEvent) -> None:
    """Insert the event claimed by ``_claim`` and link the head to it (one round trip)."""
    sql.saved(event, sql.execute(sql.insert(event), _link(event)))


def record(
    who: ActorSource,
    action: str,
    target: Any = None,
    *,
    organization: Organization | int | None = None,
    outcome: str = AuditEvent.Outcome.SUCCESS,
    error: str = "",
    claimed: tuple[Any, ...] | None = None,
    **details: Any,
) -> AuditEvent:
    """Append one event. ``organization`` defaults to the target's organization. ``claimed`` is the row
    that ``claim(chain)`` answered, when the caller sent it with its own writes in this transaction."""
    actor: Actor = as_actor(who)
    if isinstance(organization, Organization):
        organization = organization.pk
    org_id = organization if organization is not None else _organization_of(target)
    chain = org_id or 0
    key = audit_keys.signing_key()
    # No savepoint: the event lives or dies with the change around it.
    with transaction.atomic(savepoint=False):
        head = _claim(chain, claimed=claimed)
        rotated = _rotation(head, key, org_id)
        if rotated is not None:
            sql.saved(rotated, sql.execute(sql.insert(rotated)))
        event = _next_event(head, key, actor, org_id, action, target, outcome, error, details)
        _append(event)
    return event


def record_many(
    who: ActorSource,
    action: str,
    targets: Iterable[tuple[Any, dict[str, Any]]],
    *,
    organization: Organization | int,
) -> list[AuditEvent]:
    """Append one success event per ``(target, details)`` to one organization's chain, in order.

    The same events, hashes and chain as that many ``record()`` calls, under one lock of the chain head and
    one multi-row insert: for services that change many rows of one organization in one transaction.
    """
    actor: Actor = as_actor(who)
    org_id = organization.pk if isinstance(organization, Organization) else organization
    targets = list(targets)
    events: list[AuditEvent] = []
    if not targets:
        return events
    key = audit_keys.signing_key()
    with transaction.atomic(savepoint=False):
        head = _claim(org_id or 0, len(targets))
        rotated = _rotation(head, key, org_id)
        for target, details in targets:
            event = _next_event(
                head, key, actor, org_id, action, target, AuditEvent.Outcome.SUCCESS, "", details
            )
            head.sequence, head.last_hash = event.sequence, event.hash
            events.append(event)
        sql.bulk_insert([rotated, *events] if rotated is not None else events)
        sql.execute(_link(events[-1]))
    return events


def _next_event(
    head: AuditChainHead,
    key: audit_keys.AuditKey,
    actor: Actor,
    org_id: int | None,
    action: str,
    target: Any,
    outcome: str,
    error: str,
    details: dict[str, Any],
) -> AuditEvent:
    """The event that follows ``head`` (unsaved), linked by ``key``."""
    ctx = current_request.get()
    event = AuditEvent(
        time=timezone.now(),
        organization_id=org_id,
        chain=head.chain,
        sequence=head.sequence + 1,
        actor_type=actor.kind,
        actor_id=actor.actor_id,
        actor_label=_clean(actor.label)[:200],
        action=action,
        outcome=outcome,
        error=_clean(str(error))[:4000],
        details=scrub(details),
        request_id=ctx.request_id,
        ip=ctx.ip,
        user_agent=ctx.user_agent,
        prev_hash=head.last_hash,
        algorithm=KEYED,
        key_id=key.key_id,
        **_target_fields(target),
    )
    # Round-trip details through JSON now, so the link covers exactly what the database returns.
    event.details = json.loads(json.dumps(event.details))
    event.hash = compute_hash(event, key)
    return event


@contextmanager
def failures(
    who: ActorSource, action: str, target: Any = None, *, organization=None, **details: Any
) -> Iterator[None]:
    """Record a failure event if the block raises a user-facing error, then re-raise it.

    Use it outside the service's transaction: the failed change rolls back, its failure stays logged.
    """
    from django.core.exceptions import ValidationError

    from certmgr.errors import ServiceError

    try:
        yield
    except (ServiceError, ValidationError, IntegrityError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        record(
            who,
            action,
            target,
            organization=organization,
            outcome=AuditEvent.Outcome.FAILURE,
            error=message,
            **details,
        )
        raise


# --- verification ----------------------------------------------------------------------------------
@dataclass
class BrokenLink:
    chain: int
    event_id: int | None
    sequence: int
    problem: str

    def __str__(self) -> str:
        where = (
            f"chain {self.chain} ({'no organization' if self.chain == 0 else f'organization {self.chain}'})"
        )
        event = f"event id {self.event_id}" if self.event_id is not None else "missing event"
        return f"{where}, sequence {self.sequence}, {event}: {self.problem}"


@dataclass
class ChainState:
    """One chain as the database holds it, walked from sequence 1 to its first broken link."""

    chain: int
    head: AuditChainHead | None
    checked: int = 0
    legacy: int = 0  # unkeyed links accepted (all before the chain's first keyed link)
    last_sequence: int = 0  # the last event walked (all before it link up)
    broken: BrokenLink | None = None
    hashes: dict[int, str] = field(default_factory=dict)  # the links at the sequences asked for (checkpoints)

    def fail(self, event_id: int | None, sequence: int, problem: str) -> None:
        """Keep the earliest broken sequence of the chain."""
        if self.broken is None or sequence < self.broken.sequence:
            self.broken = BrokenLink(self.chain, event_id, sequence, problem)


def _problem(event: AuditEvent, keyed_before: bool, previous_key: str) -> str | None:
    """What is wrong with ``event``'s own link (its position in the chain checked by the caller)."""
    if event.algorithm == LEGACY:
        if keyed_before:
            return "unkeyed link after keyed ones (relinked without the audit key)"
        return None if compute_hash(event) == event.hash else "content does not match its hash (altered)"
    try:
        if compute_hash(event) != event.hash:
            return "content does not match its HMAC (altered, or relinked without the audit key)"
    except UnknownAuditKey:
        return f"linked by audit key {event.key_id!r}, which is not in CERTMGR_AUDIT_KEYS"
    except ValueError as exc:
        return str(exc)
    if event.sequence > 1 and event.key_id != previous_key:
        expected = {"from_key": previous_key} if previous_key else {"from_algorithm": LEGACY.value}
        if event.action != KEY_ROTATED or event.details != {**expected, "to_key": event.key_id}:
            before = previous_key or "(unkeyed)"
            return f"linked by audit key {event.key_id} after key {before} without a key rotation event"
    return None


def walk(chain: int, head: AuditChainHead | None, wanted: Iterable[int] = ()) -> ChainState:
    state = ChainState(chain, head)
    wanted = set(wanted)
    prev_hash, previous_key, keyed = "", "", False
    for event in AuditEvent.objects.filter(chain=chain).order_by("sequence").iterator(chunk_size=2000):
        state.checked += 1
        expected = state.last_sequence + 1
        if head is None:
            state.fail(event.pk, event.sequence, "belongs to a chain with no head")
        elif event.sequence != expected:
            state.fail(None, expected, f"events {expected}..{event.sequence - 1} are missing (deleted)")
        elif event.prev_hash != prev_hash:
            state.fail(event.pk, event.sequence, "does not link to the previous event's hash")
        elif (problem := _problem(event, keyed, previous_key)) is not None:
            state.fail(event.pk, event.sequence, problem)
        if state.broken is not None:
            return state
        if event.sequence in wanted:
            state.hashes[event.sequence] = event.hash
        state.legacy += event.algorithm == LEGACY
        keyed = keyed or event.algorithm != LEGACY
        prev_hash, previous_key, state.last_sequence = event.hash, event.key_id, event.sequence
    if head is not None and (head.sequence != state.last_sequence or head.last_hash != prev_hash):
        state.fail(
            None,
            state.last_sequence + 1,
            f"chain head expects {head.sequence} events; the last ones are missing",
        )
    return state


def verify_chains(
    chains: Iterable[int] | None = None, anchored: dict[int, set[int]] | None = None
) -> list[ChainState]:
    """Walk every chain the database knows (heads, events), and those in ``anchored`` (chain: sequences
    whose links to collect, from checkpoints), in chain order."""
    anchored = anchored or {}
    heads = {h.chain: h for h in AuditChainHead.objects.all()}
    known = set(heads) | set(anchored)
    known |= set(AuditEvent.objects.exclude(chain__in=heads).values_list("chain", flat=True).distinct())
    if chains is not None:
        known &= set(chains)
    return [walk(chain, heads.get(chain), anchored.get(chain, ())) for chain in sorted(known)]


def verify(chains: list[int] | None = None) -> tuple[int, BrokenLink | None]:
    """Walk each chain in order; return (events checked, first broken link or None)."""
    states = verify_chains(chains)
    broken = [s.broken for s in states if s.broken is not None]
    return sum(s.checked for s in states), (broken[0] if broken else None)
