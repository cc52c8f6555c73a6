"""The names of delegated DNS: subscribers whose ACME CA validates through a ``delegated`` connection.

Registered with :func:`dnsproviders.delegation.register_names_source` from ``AcmeCaConfig.ready()``:
certmgr's DNS server answers SOA and NS for their ``_acme-challenge`` names, and the connection's admin
page lists the NS record each of them needs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from dnsproviders.credentials import Kind
from pki.models import Subscriber


def subscriber_names(connection_id: int | None) -> Iterator[str]:
    rows = Subscriber.objects.filter(ca__acme__dns_connection__kind=Kind.DELEGATED)
    if connection_id is not None:
        rows = rows.filter(ca__acme__dns_connection_id=connection_id)
    for common_name, sans in rows.values_list("common_name", "sans"):
        for name in [common_name, *(sans or [])]:
            if isinstance(name, str) and name and _is_dns_name(name):
                yield name


def _is_dns_name(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        return ":" not in name and "@" not in name and "/" not in name
