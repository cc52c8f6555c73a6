"""ACME Renewal Information (RFC 9773) on the server side. Pure: certificate identifiers and the suggested
window of a certificate (its lifetime's renewal rules from ``pki.renewal``; in the past once revoked, so
clients renew at once)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta

from cryptography import x509

from acmeserver.problems import malformed
from pki import renewal


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def cert_id(cert: x509.Certificate) -> str:
    """base64url(AKI keyIdentifier) "." base64url(the serial's DER INTEGER bytes)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier or b""
    serial = cert.serial_number
    return f"{_b64(aki)}.{_b64(serial.to_bytes((serial.bit_length() + 8) // 8, 'big'))}"


def parse_cert_id(text: str) -> tuple[bytes, int]:
    """(AKI keyIdentifier, serial number) of a certificate identifier; malformed otherwise."""
    parts = text.split(".")
    if len(parts) != 2 or not all(parts) or any("=" in p for p in parts):
        raise malformed("a certificate identifier is base64url(AKI).base64url(serial)")
    try:
        aki, serial = (base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in parts)
    except (binascii.Error, ValueError):
        raise malformed("the certificate identifier is not base64url") from None
    if not serial or serial[0] & 0x80:
        raise malformed("the certificate identifier's serial is not a positive DER integer")
    return aki, int.from_bytes(serial, "big")


def suggested_window(
    not_before: datetime,
    not_after: datetime,
    *,
    revoked: bool,
    now: datetime,
    early_renewal_at: datetime | None = None,
) -> tuple[datetime, datetime]:
    """When to renew: from the default renewal time (two thirds of the lifetime, half for short ones) to the
    emergency time; a revoked certificate's window lies in the past, and so does one an operator asked to
    renew early (a mass re-issue, from ``early_renewal_at``: the same window on every ask)."""
    if revoked:
        return now - timedelta(hours=2), now - timedelta(hours=1)
    if early_renewal_at is not None:
        at = min(early_renewal_at, now)
        return at - timedelta(hours=2), at - timedelta(hours=1)
    start = renewal.default_renewal_time(not_before, not_after)
    return start, max(start + timedelta(minutes=1), renewal.emergency_time(not_before, not_after))
