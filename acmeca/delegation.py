"""The names of delegated DNS: subscribers whose ACME CA validates through a ``delegated`` connection, and
the names of unfinished orders at such a CA (orders by names alone have no subscriber).

Registered with :func:`dnsproviders.delegation.register_names_source` from ``AcmeCaConfig.ready()``:
certmgr's DNS server answers SOA and NS for their ``_acme-challenge`` names, and the connection's admin
page lists the NS record each of them needs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from acmeca.models import AcmeOrder
from dnsproviders.credentials import Kind
from pki.models import Subscriber


def subscriber_names(connection_id: int | None) -> Iterator[str]:
    rows = Subscriber.objects.filter(ca__acme__dns_connection__kind=Kind.DELEGATED)
    orders = AcmeOrder.objects.unfinished().filter(ca__acme__dns_connection__kind=Kind.DELEGATED)
    if connection_id is not None:
        rows = rows.filter(ca__acme__dns_connection_id=connection_id)
        orders = orders.filter(ca__acme__dns_connection_id=connection_id)
    for common_name, sans in rows.values_list("common_name", "sans"):
        for name in [common_name, *(sans or [])]:
            if isinstance(name, str) and name and _is_dns_name(name):
                yield name
    if connection_id is None:  # the DNS server: names being validated now, with or without a subscriber
        for identifiers in orders.values_list("identifiers", flat=True):
            for identifier in identifiers or []:
                if isinstance(identifier, dict) and identifier.get("type") == "dns":
                    yield str(identifier.get("value", ""))


def _is_dns_name(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        return ":" not in name and "@" not in name and "/" not in name
