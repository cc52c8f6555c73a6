"""Delegated DNS (connection kind ``delegated``): which names certmgr's DNS server is authoritative for.

A name is delegated when it has a live challenge (:class:`~dnsproviders.models.DelegatedChallenge`) or
could have one: a name of a subscriber whose CA uses a delegated connection. Subscribers live in ``pki``
and their CAs' DNS connections in ``acmeca``, above this app: ``acmeca`` registers a *names source* from its
``AppConfig.ready()`` (:func:`register_names_source`), as ``pki``'s issuer seam does the other way round.

A source is ``source(connection_id)``: the names (``example.com``, ``*.example.com``) certified through the
delegated connection ``connection_id``, or through every delegated connection when it is None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from dnsproviders import propagation
from dnsproviders.credentials import Kind
from dnsproviders.dns_answers import Snapshot
from dnsproviders.models import AppConnection, DelegatedChallenge

NamesSource = Callable[[int | None], Iterable[str]]
_SOURCES: list[NamesSource] = []


def register_names_source(source: NamesSource) -> None:
    if source not in _SOURCES:
        _SOURCES.append(source)


def delegated_names(connection_id: int | None = None) -> list[str]:
    """Every name certified through a delegated connection (``connection_id``, or all of them)."""
    names: dict[str, None] = {}
    for source in _SOURCES:
        names.update(dict.fromkeys(str(n).strip().lower().rstrip(".") for n in source(connection_id)))
    return sorted(n for n in names if n)


def server_name() -> str:
    """CERTMGR_DNS_SERVER_NAME, absolute; "" when not configured."""
    name = (settings.CERTMGR_DNS_SERVER_NAME or "").strip().lower()
    return "" if not name else name if name.endswith(".") else name + "."


def required_record(name: str, target: str | None = None) -> str:
    """The NS record the operator creates for ``name`` (a wildcard shares its base's record)."""
    target = target if target is not None else server_name()
    return f"{propagation.challenge_name(name)} NS {target or '<CERTMGR_DNS_SERVER_NAME>'}"


def required_records(connection: AppConnection) -> list[str]:
    """One NS record per challenge name of the subscribers behind ``connection`` (de-duplicated)."""
    if connection.kind != Kind.DELEGATED:
        return []
    return list(dict.fromkeys(required_record(n) for n in delegated_names(connection.pk)))


def load_snapshot() -> Snapshot:
    """What the DNS server answers now: the delegated names and every organization's live values, read in
    one transaction that never queues behind a lock."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # A migration or a TRUNCATE holding a table: give up within 0.1 s and keep answering from
                # the last snapshot (the server refreshes again shortly), rather than wait holding the
                # other tables' locks, which deadlocks against a statement locking them in another order.
                cursor.execute("SET LOCAL lock_timeout = '100ms'")
        rows = list(DelegatedChallenge.objects.live(timezone.now()).values_list("name", "value", "ttl"))
        zones = [propagation.challenge_name(n) for n in delegated_names()]
    return Snapshot.build(zones, rows)
