"""Delegated DNS-01 (connection kind ``delegated``): certmgr answers the challenges itself.

The operator creates ``_acme-challenge.<name>. NS <CERTMGR_DNS_SERVER_NAME>`` once per name; no DNS
provider credentials exist. ``present`` stores the value as a live
:class:`~dnsproviders.models.DelegatedChallenge` row, which ``manage.py dns_server`` answers; ``cleanup``
deletes it. ``preflight`` checks, before an order, that the parent zone's servers delegate every
challenge name to certmgr (:func:`dnsproviders.propagation.check_delegation`).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from certmgr import outbound
from dnsproviders import propagation
from dnsproviders.delegation import server_name
from dnsproviders.models import DelegatedChallenge
from dnsproviders.providers.base import DnsProvider, ProviderError, RecordRef, absolute


class Provider(DnsProvider):
    kind = "delegated"

    def find_zone(self, record_name: str) -> str:
        return ""  # the delegated name is its own zone at certmgr's server

    def _organization(self) -> int:
        if self.organization_id is None:
            raise ProviderError("a delegated connection needs its organization (internal error)")
        return self.organization_id

    def present(self, record_name: str, value: str, *, zone: str = "", ttl: int = 60) -> RecordRef:
        name = absolute(record_name)
        expires = timezone.now() + timedelta(hours=settings.CERTMGR_DNS_CHALLENGE_HOURS)
        DelegatedChallenge.objects.update_or_create(
            organization_id=self._organization(),
            name=name,
            value=value,
            defaults={"ttl": ttl, "expires": expires, "connection_id": self.connection_id},
        )
        return RecordRef(name, value, "", {"served_by": server_name()})

    def cleanup(self, ref: RecordRef) -> None:
        DelegatedChallenge.objects.filter(
            organization_id=self._organization(), name=absolute(ref.record_name), value=ref.value
        ).delete()

    def preflight(self, names: list[str]) -> None:
        target = server_name()
        if not target:
            raise ProviderError(
                "delegated DNS needs CERTMGR_DNS_SERVER_NAME: the host name of certmgr's DNS server, the "
                "target of the _acme-challenge NS records"
            )
        servers = propagation.servers_from_environ()
        resolver = None if servers else _resolver(self.timeout)
        problems: list[str] = []
        for record in dict.fromkeys(propagation.challenge_name(n) for n in names):
            try:
                propagation.check_delegation(
                    record,
                    target,
                    servers=servers,
                    resolver=resolver,
                    # Servers found from the zone's NS records are the zone owner's choice: vetted
                    # like every outbound address (CERTMGR_DNS_RESOLVERS are the operator's own).
                    address_check=None if servers else outbound.check_host,
                    timeout=min(self.timeout, 5.0),
                )
            except propagation.DelegationMissing as exc:
                problems.append(str(exc))
            except propagation.PropagationError as exc:
                raise ProviderError(
                    f"cannot check the delegation of {record}: {exc}", transient=True
                ) from exc
        if problems:
            raise ProviderError(" ".join(problems))


def _resolver(timeout: float):
    import dns.resolver

    resolver = dns.resolver.Resolver()
    resolver.lifetime = min(timeout, 10.0)
    return resolver
