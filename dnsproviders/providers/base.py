"""The interface every DNS-01 provider implements.

A provider writes ``_acme-challenge`` TXT values and removes them again. Values are *merged*: presenting a
value keeps the values already there (an apex and its wildcard share one record name; two orders may touch
the same name at once), and cleanup removes only its own value, so concurrent orders never clobber each other.
Cleanup is idempotent: a value already gone is success, so it can run again after a crash.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import import_module


class ProviderError(Exception):
    """The provider refused or failed. ``transient`` errors (timeouts, 5xx, throttling) are worth retrying."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class RecordRef:
    """What cleanup needs to find the value again; stored on the challenge row as JSON (``as_dict``)."""

    record_name: str  # absolute, with the trailing dot
    value: str
    zone: str = ""  # the provider's zone name or id (Route53 hosted zone id, Cloudflare zone id, ...)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"record_name": self.record_name, "value": self.value, "zone": self.zone, "extra": self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> RecordRef:
        return cls(data["record_name"], data["value"], data.get("zone", ""), dict(data.get("extra") or {}))


class DnsProvider(ABC):
    kind: str = ""
    #: False for providers whose records an operator creates by hand (``manual``).
    automatic: bool = True
    #: The app connection's name, for errors that tell which connection to fix (set by ``provider_for``).
    connection_name: str = ""

    def __init__(
        self,
        credentials: dict,
        *,
        timeout: float = 10.0,
        organization_id: int | None = None,
        connection_id: int | None = None,
    ):
        self.credentials = credentials
        self.timeout = timeout
        # The connection's owner: providers that keep records in certmgr's database (``delegated``) need it.
        self.organization_id = organization_id
        self.connection_id = connection_id

    def preflight(self, names: list[str]) -> None:
        """Before an order reaches the CA: raise ProviderError when the challenges of ``names`` (the
        order's DNS names, wildcards included) certainly cannot validate. Nothing to check by default."""
        return None

    @abstractmethod
    def find_zone(self, record_name: str) -> str:
        """The zone (name or provider id) holding ``record_name``; ProviderError if none is managed here."""

    @abstractmethod
    def present(self, record_name: str, value: str, *, zone: str = "", ttl: int = 60) -> RecordRef:
        """Add ``value`` to the TXT record ``record_name`` (other values stay)."""

    @abstractmethod
    def cleanup(self, ref: RecordRef) -> None:
        """Remove exactly ``ref.value`` from ``ref.record_name``; nothing to remove is success."""


def absolute(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


_MODULES = {
    "powerdns": "dnsproviders.providers.powerdns",
    "rfc2136": "dnsproviders.providers.rfc2136",
    "manual": "dnsproviders.providers.manual",
    "aws": "dnsproviders.providers.route53",
    "cloudflare": "dnsproviders.providers.cloudflare",
    "acme-dns": "dnsproviders.providers.acmedns",
    "akamai": "dnsproviders.providers.akamai",
    "delegated": "dnsproviders.providers.delegated",
}


def provider_for(kind: str, credentials: dict, *, connection_name: str = "", **kwargs) -> DnsProvider:
    try:
        module = import_module(_MODULES[kind])
    except KeyError:
        raise ProviderError(f"no DNS-01 provider for connection kind {kind!r}") from None
    provider = module.Provider(credentials, **kwargs)
    provider.connection_name = connection_name
    return provider
