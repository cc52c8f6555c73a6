"""tls-alpn-01 (RFC 8737) without Django: the handshake and the check of the certificate it brings.

The validator connects to a vetted address, offers exactly the ``acme-tls/1`` protocol with the identifier as
SNI (an IP identifier's reverse-DNS name, RFC 8738 §6), validates no chain (the certificate is self-signed by
design), and requires of the certificate the server presents: the ALPN protocol selected, exactly one
subjectAltName equal to the identifier, and the critical id-pe-acmeIdentifier extension whose value is the DER
OCTET STRING of SHA-256(key authorization) (§3).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

ALPN = "acme-tls/1"
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


class TlsAlpnError(Exception):
    """Why a tls-alpn-01 answer does not prove control (a detail for people); ``problem`` is the RFC 8555 type
    (``connection`` before a certificate was seen, ``incorrectResponse`` or ``unauthorized`` after)."""

    def __init__(self, problem: str, detail: str):
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.seen: Seen | None = None  # what the handshake brought, when there was one


@dataclass
class Seen:
    """What the handshake brought back, kept in the challenge's validation record."""

    alpn: str | None = None
    certificate: bytes = b""
    tls_version: str | None = None
    sans: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"alpn": self.alpn, "tls_version": self.tls_version, "san": self.sans}


def server_name(identifier: str) -> str:
    """The SNI for an identifier: the DNS name itself, or an IP address's in-addr.arpa / ip6.arpa name."""
    try:
        ip = ipaddress.ip_address(identifier)
    except ValueError:
        return identifier.rstrip(".").lower()
    return ip.reverse_pointer


def expected_value(key_authorization: str) -> bytes:
    """The extension's value: DER OCTET STRING (tag 4, length 32) of SHA-256(key authorization)."""
    return b"\x04\x20" + hashlib.sha256(key_authorization.encode("ascii")).digest()


def _sans(cert: x509.Certificate) -> tuple[list[str], list[x509.GeneralName]]:
    try:
        names = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return [], []
    return [str(n.value) for n in names], names


def check_certificate(der: bytes, identifier: str, key_authorization: str) -> list[str]:
    """The certificate's subjectAltNames when it proves control of ``identifier``; TlsAlpnError otherwise."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise TlsAlpnError("incorrectResponse", f"the certificate presented does not parse: {exc}") from None
    shown, names = _sans(cert)
    if len(names) != 1:
        raise TlsAlpnError(
            "incorrectResponse",
            f"the certificate must name exactly one subjectAltName, {identifier}; it names "
            f"{len(names)}: {', '.join(shown) or 'none'}",
        )
    name = names[0]
    try:
        ip = ipaddress.ip_address(identifier)
    except ValueError:
        matches = isinstance(name, x509.DNSName) and name.value.lower().rstrip(".") == identifier.lower()
    else:
        matches = isinstance(name, x509.IPAddress) and name.value == ip
    if not matches:
        raise TlsAlpnError(
            "incorrectResponse", f"the certificate's subjectAltName is {shown[0]}, not {identifier}"
        )
    try:
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    except x509.ExtensionNotFound:
        raise TlsAlpnError(
            "incorrectResponse", "the certificate has no acmeIdentifier extension (1.3.6.1.5.5.7.1.31)"
        ) from None
    if not ext.critical:
        raise TlsAlpnError(
            "incorrectResponse", "the acmeIdentifier extension (1.3.6.1.5.5.7.1.31) is not critical"
        )
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    if not hmac.compare_digest(ext.value.value, expected_value(key_authorization)):
        raise TlsAlpnError(
            "unauthorized",
            f"the acmeIdentifier extension holds {ext.value.value.hex()}, not the DER OCTET STRING of "
            f"SHA-256 of the key authorization ({expected_value(key_authorization).hex()})",
        )
    return shown


def handshake(address: str, port: int, identifier: str, *, timeout: float) -> Seen:
    """A TLS handshake with ``address`` (already vetted: no name is resolved here) offering only acme-tls/1
    with the identifier's SNI; what the server presented. TlsAlpnError ``connection`` when there is no
    handshake or the server does not select acme-tls/1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed by design: the extension proves control, not a chain
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8737 §4
    context.set_alpn_protocols([ALPN])
    seen = Seen()
    try:
        with (
            socket.create_connection((address, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name(identifier)) as tls,
        ):
            seen.alpn = tls.selected_alpn_protocol()
            seen.tls_version = tls.version()
            seen.certificate = tls.getpeercert(binary_form=True) or b""
    except (OSError, ssl.SSLError) as exc:
        raise TlsAlpnError("connection", f"TLS handshake with {_where(address, port)}: {exc}") from None
    if seen.alpn != ALPN:
        raise TlsAlpnError(
            "connection",
            f"{_where(address, port)} did not select the {ALPN} protocol (it selected {seen.alpn or 'none'})",
        )
    if not seen.certificate:
        raise TlsAlpnError("connection", f"{_where(address, port)} presented no certificate")
    return seen


def validate(address: str, port: int, identifier: str, key_authorization: str, *, timeout: float) -> Seen:
    """Handshake and check; ``Seen`` (with the SANs) when the answer proves control, TlsAlpnError if not.
    The error carries what was seen so far in ``seen`` for the record."""
    seen = handshake(address, port, identifier, timeout=timeout)
    try:
        seen.sans = check_certificate(seen.certificate, identifier, key_authorization)
    except TlsAlpnError as exc:
        with contextlib.suppress(ValueError):  # the record says what the certificate named, if anything
            seen.sans = _sans(x509.load_der_x509_certificate(seen.certificate))[0]
        exc.seen = seen
        raise
    return seen


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
