"""One writer at a time per TXT record name: providers merge values by read-modify-write (Route53 UPSERT,
PowerDNS REPLACE, Cloudflare), so two workers presenting at one name at once could drop each other's value.
A PostgreSQL advisory lock per (connection, record name) serialises them across processes; SQLite has a single
writer anyway."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

from django.db import connection


def _key(connection_id: int | None, record_name: str) -> int:
    digest = hashlib.sha256(f"{connection_id}:{record_name.lower().rstrip('.')}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)  # a bigint advisory-lock key


@contextlib.contextmanager
def record_lock(connection_id: int | None, record_name: str) -> Iterator[None]:
    if connection.vendor != "postgresql":
        yield
        return
    key = _key(connection_id, record_name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
