"""Signed checkpoints of the audit chains, kept where the database role cannot rewrite them.

Every ``CERTMGR_AUDIT_CHECKPOINT_MINUTES`` the ``certmgr.audit_checkpoints`` schedule writes, for each chain
whose head moved, one checkpoint: chain, organization, sequence, head hash, time and the id of the audit key
whose HMAC-SHA256 signs it (under a label of its own, so a checkpoint can never pass for an event's link).
It goes to a directory (``CERTMGR_AUDIT_CHECKPOINT_DIR``: one file per chain and sequence, created with
``O_EXCL`` and never rewritten), optionally to an S3 bucket (conditional writes that never overwrite; turn on
the bucket's Object Lock to keep them from deletion too), and to the organization's alert channels
(``checkpoint_written``: pki's alert rules for ``audit_checkpoint`` listen; certmgr imports no app above it).

``manage.py verify_audit_log --checkpoints DIR`` compares the database with them (``compare``): a truncated
log, a cut tail, a removed chain or a chain recomputed after an edit no longer matches what was signed.
HMAC rather than a public-key signature: the audit keys already live outside the database, and a checkpoint
forged with a stolen key can add a file but not erase or change the earlier ones that contradict the edit.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.dispatch import Signal
from django.utils import timezone

from certmgr import audit, audit_keys
from certmgr.jobs import JobReport, run_job
from certmgr.models import AuditChainHead

log = logging.getLogger(__name__)

VERSION = 1
_LABEL = b"certmgr audit checkpoint v1\n"

# Sent once per new checkpoint (``checkpoint=``), after it is stored.
checkpoint_written = Signal()


class CheckpointError(Exception):
    """A checkpoint that cannot be read, or whose signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    chain: int
    organization: int | None
    sequence: int
    head_hash: str
    time: str  # ISO 8601, UTC
    key_id: str
    version: int = VERSION
    signature: str = ""

    @property
    def name(self) -> str:
        """Where it is stored, relative to the directory or the bucket prefix."""
        return f"chain-{self.chain}/{self.sequence:012d}.json"

    def _message(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "signature"}
        return _LABEL + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, key: audit_keys.AuditKey) -> Checkpoint:
        unsigned = replace(self, key_id=key.key_id, signature="")
        return replace(unsigned, signature=key.mac(unsigned._message()))

    def check_signature(self) -> None:
        key = audit_keys.find(self.key_id)
        if key is None:
            raise CheckpointError(f"signed by audit key {self.key_id!r}, which is not in CERTMGR_AUDIT_KEYS")
        if not hmac.compare_digest(key.mac(self._message()), self.signature):
            raise CheckpointError("its signature does not verify (altered or forged)")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        try:
            fields = json.loads(data)
            checkpoint = cls(**fields)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"not a certmgr audit checkpoint ({exc})") from exc
        if checkpoint.version != VERSION:
            raise CheckpointError(f"checkpoint version {checkpoint.version!r} is not {VERSION}")
        if not isinstance(checkpoint.chain, int) or not isinstance(checkpoint.sequence, int):
            raise CheckpointError("its chain and sequence must be integers")
        return checkpoint


class Store(Protocol):
    def put(self, checkpoint: Checkpoint) -> bool:
        """Store it unless one for that chain and sequence exists; True when stored now."""
        ...

    def read(self) -> Iterator[tuple[str, bytes]]:
        """Every stored checkpoint, as (where, content)."""
        ...


class DirectoryStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def put(self, checkpoint: Checkpoint) -> bool:
        target = self.path / checkpoint.name
        target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
        except FileExistsError:
            return False
        try:
            os.write(fd, checkpoint.to_json())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def read(self) -> Iterator[tuple[str, bytes]]:
        if not self.path.is_dir():
            raise CheckpointError(f"checkpoint directory {self.path} does not exist")
        for file in sorted(self.path.glob("chain-*/*.json")):
            yield str(file), file.read_bytes()


class S3Store:
    """Checkpoints as objects under a prefix, written with ``If-None-Match: *`` (never overwritten)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket, self.prefix = bucket, prefix
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def put(self, checkpoint: Checkpoint) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + checkpoint.name,
                Body=checkpoint.to_json(),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _EXISTS:
                return False
            raise
        return True

    def read(self) -> Iterator[tuple[str, bytes]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for item in page.get("Contents", []):
                if item["Key"].endswith(".json"):
                    body = self.client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                    yield f"s3://{self.bucket}/{item['Key']}", body


_EXISTS = ("PreconditionFailed", "ConditionalRequestConflict")  # S3's answers when the key exists


def configured_stores() -> list[Store]:
    stores: list[Store] = [DirectoryStore(settings.CERTMGR_AUDIT_CHECKPOINT_DIR)]
    if settings.CERTMGR_AUDIT_CHECKPOINT_S3_BUCKET:
        stores.append(
            S3Store(settings.CERTMGR_AUDIT_CHECKPOINT_S3_BUCKET, settings.CERTMGR_AUDIT_CHECKPOINT_S3_PREFIX)
        )
    return stores


def open_store(location: str) -> Store:
    """A store named on the command line: a directory, or ``s3://bucket/prefix``."""
    if location.startswith("s3://"):
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        return S3Store(bucket, prefix)
    return DirectoryStore(location)


# --- writing -------------------------------------------------------------------------------------------
def run() -> dict[str, int]:
    """The schedule's task."""
    return run_job("audit_checkpoints", write_checkpoints).counts


def write_checkpoints(
    report: JobReport | None = None, *, stores: list[Store] | None = None, now: datetime | None = None
) -> list[Checkpoint]:
    """Checkpoint every chain head not checkpointed at its sequence yet; answers the new checkpoints."""
    report = report or JobReport()
    stores = configured_stores() if stores is None else stores
    key = audit_keys.signing_key()
    stamp = (now or timezone.now()).astimezone(UTC).isoformat(timespec="seconds")
    written = []
    for head in AuditChainHead.objects.filter(sequence__gt=0).order_by("chain").iterator():
        checkpoint = Checkpoint(
            chain=head.chain,
            organization=head.chain or None,
            sequence=head.sequence,
            head_hash=head.last_hash,
            time=stamp,
            key_id=key.key_id,
        ).signed(key)
        new = False
        for store in stores:
            try:
                new = store.put(checkpoint) or new
            except Exception as exc:  # one store down must not stop the others, nor the other chains
                log.exception("audit checkpoint of chain %s not stored in %r", head.chain, store)
                report.error(f"chain {head.chain}: {type(store).__name__}: {exc}")
        if new:
            report.add("checkpoints")
            written.append(checkpoint)
            checkpoint_written.send(sender=Checkpoint, checkpoint=checkpoint)
    return written


# --- verifying -----------------------------------------------------------------------------------------
def load(store: Store) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints whose signature verifies, and a problem line for each one that does not."""
    found, problems = [], []
    for where, data in store.read():
        try:
            checkpoint = Checkpoint.from_json(data)
            checkpoint.check_signature()
        except CheckpointError as exc:
            problems.append(f"checkpoint {where}: {exc}")
            continue
        found.append(checkpoint)
    return found, problems


def compare(checkpoints: list[Checkpoint], chains: list[int] | None = None) -> list[audit.ChainState]:
    """Walk the chains (those of the database and those the checkpoints name) and mark each one that
    contradicts a checkpoint, at its first broken sequence."""
    by_chain: dict[int, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        by_chain.setdefault(checkpoint.chain, []).append(checkpoint)
    anchored = {chain: {c.sequence for c in found} for chain, found in by_chain.items()}
    states = audit.verify_chains(chains, anchored)
    for state in states:
        _contradictions(state, sorted(by_chain.get(state.chain, []), key=lambda c: c.sequence))
    return states


def _contradictions(state: audit.ChainState, checkpoints: list[Checkpoint]) -> None:
    matched = 0  # the last checkpointed sequence the database still agrees with
    for checkpoint in checkpoints:
        seq, when = checkpoint.sequence, checkpoint.time
        if state.broken is not None and state.broken.sequence <= seq:
            return  # the walk stopped before this checkpoint: its earlier break is the first one
        if state.head is None and state.checked == 0:
            state.fail(None, 1, f"chain removed: no events, no head; the checkpoint of {when} signed {seq}")
            return
        if seq > state.last_sequence:
            first = state.last_sequence + 1
            state.fail(
                None, first, f"events {first}..{seq} are missing: checkpoint of {when} signed {seq} events"
            )
            return
        if state.hashes.get(seq) != checkpoint.head_hash:
            state.fail(
                None,
                matched + 1,
                f"the chain differs from the checkpoint of {when} at sequence {seq}: rewritten at or after "
                f"sequence {matched + 1}",
            )
            return
        matched = seq
