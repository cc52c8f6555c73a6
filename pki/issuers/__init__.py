"""Issuer backends by CA kind: the registry and the per-row accessor (see ``pki.issuers.base``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pki.issuers.base import (
    CaAdminExtension,
    CaApiExtension,
    IssuanceFailed,
    IssuanceRequest,
    Issued,
    IssuerBackend,
    Outcome,
    Pending,
    PublicationHint,
    SubscriberOption,
)

if TYPE_CHECKING:
    from pki.models import CertificateAuthority

SELF_SIGNED = "self-signed"  # the pseudo-kind of subscribers without a CA

__all__ = [
    "SELF_SIGNED",
    "CaAdminExtension",
    "CaApiExtension",
    "IssuanceFailed",
    "IssuanceRequest",
    "Issued",
    "IssuerBackend",
    "Outcome",
    "Pending",
    "PublicationHint",
    "SubscriberOption",
    "backend_for",
    "backend_for_kind",
    "backends",
    "register",
]

_BACKENDS: dict[str, IssuerBackend] = {}


def register(backend: IssuerBackend) -> IssuerBackend:
    """Serve ``backend.kinds`` with ``backend`` (an app's ``ready()`` calls this once)."""
    for kind in backend.kinds:
        _BACKENDS[kind] = backend
    return backend


def backend_for_kind(kind: str) -> IssuerBackend:
    try:
        return _BACKENDS[kind]
    except KeyError:
        raise LookupError(f"no issuer backend serves CA kind {kind!r}: is its app installed?") from None


def backend_for(ca: CertificateAuthority | None) -> IssuerBackend:
    """The backend that issues for ``ca`` (None: self-signed)."""
    return backend_for_kind(SELF_SIGNED if ca is None else str(ca.kind))


def backends() -> list[IssuerBackend]:
    """Every registered backend, once each."""
    return list({id(b): b for b in _BACKENDS.values()}.values())
