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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from certmgr import sql
from certmgr.actors import Actor, as_actor

if TYPE_CHECKING:
    from certmgr.actors import ActorSource
from certmgr.middleware import current as current_request
from certmgr.models import AuditChainHead, AuditEvent, Organization

# Keys whose values never enter the log, whatever a caller passes (defence in depth).
_SECRET_KEY = re.compile(r"(secret|password|passphrase|private|token|api_key|hmac|credential)", re.I)
REDACTED = "[redacted]"

HASHED_FIELDS = (
    "time", "organization_id", "chain", "sequence", "actor_type", "actor_id", "actor_label", "action",
    "target_type", "target_id", "target_repr", "outcome", "error", "details", "request_id", "ip",
    "user_agent", "prev_hash",
)  # fmt: skip


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


def compute_hash(event: AuditEvent) -> str:
    content = {}
    for name in HASHED_FIELDS:
        value = getattr(event, name)
        if name == "time":
            value = value.astimezone(datetime.UTC).isoformat(timespec="microseconds")
        content[name] = value
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    "RETURNING chain, sequence, last_hash"
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
    return AuditChainHead(chain=chain, sequence=row[1] - count, last_hash=row[2])


def _link(last: AuditEvent) -> sql.Statement:
    """The head's new last hash (its sequence was taken by ``_claim``)."""
    return sql.update_row(AuditChainHead(chain=last.chain, last_hash=last.hash), ["last_hash"])


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
    # No savepoint: the event lives or dies with the change around it.
    with transaction.atomic(savepoint=False):
        head = _claim(chain, claimed=claimed)
        event = _next_event(head, actor, org_id, action, target, outcome, error, details)
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
    with transaction.atomic(savepoint=False):
        head = _claim(org_id or 0, len(targets))
        for target, details in targets:
            event = _next_event(head, actor, org_id, action, target, AuditEvent.Outcome.SUCCESS, "", details)
            head.sequence, head.last_hash = event.sequence, event.hash
            events.append(event)
        sql.bulk_insert(events)
        sql.execute(_link(events[-1]))
    return events


def _next_event(
    head: AuditChainHead,
    actor: Actor,
    org_id: int | None,
    action: str,
    target: Any,
    outcome: str,
    error: str,
    details: dict[str, Any],
) -> AuditEvent:
    """The event that follows ``head`` (unsaved), with its hash."""
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
        **_target_fields(target),
    )
    # Round-trip details through JSON now, so the hash covers exactly what the database returns.
    event.details = json.loads(json.dumps(event.details))
    event.hash = compute_hash(event)
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


def verify(chains: list[int] | None = None) -> tuple[int, BrokenLink | None]:
    """Walk each chain in order; return (events checked, first broken link or None)."""
    checked = 0
    heads = AuditChainHead.objects.order_by("chain")
    if chains is not None:
        heads = heads.filter(chain__in=chains)
    seen_chains = set()
    for head in heads:
        seen_chains.add(head.chain)
        prev_hash, expected_seq = "", 1
        events = AuditEvent.objects.filter(chain=head.chain).order_by("sequence")
        for event in events.iterator(chunk_size=2000):
            checked += 1
            if event.sequence != expected_seq:
                return checked, BrokenLink(
                    head.chain,
                    None,
                    expected_seq,
                    f"events {expected_seq}..{event.sequence - 1} are missing (deleted)",
                )
            if event.prev_hash != prev_hash:
                return checked, BrokenLink(
                    head.chain, event.pk, event.sequence, "does not link to the previous event's hash"
                )
            if compute_hash(event) != event.hash:
                return checked, BrokenLink(
                    head.chain, event.pk, event.sequence, "content does not match its hash (altered)"
                )
            prev_hash, expected_seq = event.hash, event.sequence + 1
        if head.sequence != expected_seq - 1 or head.last_hash != prev_hash:
            return checked, BrokenLink(
                head.chain,
                None,
                expected_seq,
                f"chain head expects {head.sequence} events; the last ones are missing",
            )
    orphan = AuditEvent.objects.exclude(chain__in=seen_chains)
    if chains is not None:
        orphan = orphan.filter(chain__in=chains)
    stray = orphan.order_by("chain", "sequence").first()
    if stray is not None:
        return checked, BrokenLink(stray.chain, stray.pk, stray.sequence, "belongs to a chain with no head")
    return checked, None
