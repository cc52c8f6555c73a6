"""Manual DNS-01: an operator creates the TXT record by hand.

``present`` only describes the record to create (no network); the order waits until an operator confirms,
then the propagation check looks for it. ``cleanup`` does nothing: the operator removes the record.
"""

from __future__ import annotations

from dnsproviders.providers.base import DnsProvider, RecordRef, absolute


class Provider(DnsProvider):
    kind = "manual"
    automatic = False

    def find_zone(self, record_name: str) -> str:
        return ""  # the propagation check finds the zone by its SOA walk

    def present(self, record_name: str, value: str, *, zone: str = "", ttl: int = 60) -> RecordRef:
        name = absolute(record_name)
        return RecordRef(
            name,
            value,
            zone,
            extra={
                "type": "TXT",
                "ttl": ttl,
                "instructions": f'Create the DNS record: {name} {ttl} IN TXT "{value}" '
                "(keep any other TXT value at that name).",
            },
        )

    def cleanup(self, ref: RecordRef) -> None:
        return None
