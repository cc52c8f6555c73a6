"""The ACME server's enumerations (RFC 8555's own words) for the models, protocol modules and doors."""

from __future__ import annotations

from certmgr.choices import Choices


class ChallengeType(Choices):
    HTTP_01 = "http-01", "HTTP-01"
    DNS_01 = "dns-01", "DNS-01"
    TLS_ALPN_01 = "tls-alpn-01", "TLS-ALPN-01"  # RFC 8737


class IdentifierType(Choices):
    DNS = "dns", "DNS name"
    IP = "ip", "IP address"  # RFC 8738


class AccountStatus(Choices):
    """RFC 8555 §7.1.2."""

    VALID = "valid", "Valid"
    DEACTIVATED = "deactivated", "Deactivated"
    REVOKED = "revoked", "Revoked"


class OrderStatus(Choices):
    """RFC 8555 §7.1.6."""

    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    PROCESSING = "processing", "Processing"
    VALID = "valid", "Valid"
    INVALID = "invalid", "Invalid"


class AuthorizationStatus(Choices):
    PENDING = "pending", "Pending"
    VALID = "valid", "Valid"
    INVALID = "invalid", "Invalid"
    DEACTIVATED = "deactivated", "Deactivated"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class ChallengeStatus(Choices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    VALID = "valid", "Valid"
    INVALID = "invalid", "Invalid"
