"""DNS-01 providers: one module per kind behind one interface (``base.DnsProvider``)."""

from dnsproviders.providers.base import DnsProvider, ProviderError, RecordRef, provider_for

__all__ = ["DnsProvider", "ProviderError", "RecordRef", "provider_for"]
