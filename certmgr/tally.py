"""Counters kept in memory per process and added to a database table every few seconds: what the metrics
of hot request paths (OCSP answers, ACME server refusals) read as one total across every web process and
host, without a write on most requests.

A ``Tally`` counts by key; the request that finds ``interval()`` seconds passed since the last flush (and
the interpreter's exit) hands the counts to ``write``, which adds them to its table. On a database error
the counts are kept for the next attempt. A process killed with SIGKILL loses at most one interval."""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from django.db import DatabaseError, IntegrityError, models, transaction
from django.db.models import F

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class Tally(Generic[K]):
    def __init__(
        self,
        name: str,
        write: Callable[[dict[K, int]], None],
        interval: Callable[[], float],
        *,
        max_keys: int = 1000,
        overflow: Callable[[K], K] | None = None,
    ) -> None:
        """``write`` adds counts to the table; ``interval`` the seconds between writes (read each time, a
        setting); past ``max_keys`` keys, a new key is counted as ``overflow(key)`` (keys from URLs)."""
        self.name = name
        self.write = write
        self.interval = interval
        self.max_keys = max_keys
        self.overflow = overflow
        self.lock = threading.Lock()
        self.counts: dict[K, int] = {}
        self.flushed_at = time.monotonic()
        _TALLIES.add(self)

    def add(self, key: K, n: int = 1) -> bool:
        """Count; True when the counts are due to be written."""
        with self.lock:
            if key not in self.counts and len(self.counts) >= self.max_keys and self.overflow is not None:
                key = self.overflow(key)
            self.counts[key] = self.counts.get(key, 0) + n
            return time.monotonic() - self.flushed_at >= self.interval()

    def count(self, key: K, n: int = 1) -> None:
        """Count, and write the counts when due."""
        if self.add(key, n):
            self.flush()

    def take(self) -> dict[K, int]:
        with self.lock:
            counts, self.counts = self.counts, {}
            self.flushed_at = time.monotonic()
            return counts

    def give_back(self, counts: dict[K, int]) -> None:
        with self.lock:
            for key, n in counts.items():
                self.counts[key] = self.counts.get(key, 0) + n

    def flush(self, *, quiet: bool = False) -> None:
        counts = self.take()
        if not counts:
            return
        try:
            self.write(counts)
        except DatabaseError:
            if not quiet:
                logger.warning("%s counts not written; kept for the next attempt", self.name, exc_info=True)
            self.give_back(counts)


def add_to_row(model: type[models.Model], n: int, *, field: str = "count", **key: object) -> None:
    """``field += n`` on the row of ``model`` with ``key``, inserting it if there is none (another process
    may insert it first: then add to that one)."""
    for _ in range(3):
        if model._default_manager.filter(**key).update(**{field: F(field) + n}):
            return
        try:
            with transaction.atomic():
                model._default_manager.create(**key, **{field: n})
            return
        except IntegrityError:
            continue  # inserted meanwhile (then add to it), or a row it points to was just deleted


_TALLIES: weakref.WeakSet[Tally] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for tally in list(_TALLIES):
        with contextlib.suppress(Exception):  # the interpreter is going away: nothing to be done about it
            tally.flush(quiet=True)
