"""The ACME enumerations, defined once for models, querysets, the flow and the doors.

Statuses carry RFC 8555's own words; ``OrderStep`` is where certmgr is in its own flow.
"""

from __future__ import annotations

from certmgr.choices import Choices


class AccountKeyKind(Choices):
    EC_P256 = "ec-p256", "ECDSA P-256"
    EC_P384 = "ec-p384", "ECDSA P-384"
    RSA_2048 = "rsa-2048", "RSA 2048"
    RSA_3072 = "rsa-3072", "RSA 3072"
    RSA_4096 = "rsa-4096", "RSA 4096"


ACCOUNT_KEY_KINDS = AccountKeyKind.choices


class ChallengeType(Choices):
    DNS_01 = "dns-01", "DNS-01"
    HTTP_01 = "http-01", "HTTP-01"


class AccountStatus(Choices):
    """RFC 8555 §7.1.2."""

    VALID = "valid", "Valid"
    DEACTIVATED = "deactivated", "Deactivated"
    REVOKED = "revoked", "Revoked"
    # Not RFC 8555's: the CA answered accountDoesNotExist (a CA reset, a staging wipe). Register again.
    INVALID = "invalid", "Invalid (unknown to the CA)"


class OrderStatus(Choices):
    """The order's status at the CA (RFC 8555 §7.1.6); "" before the CA has it."""

    NEW = "", "Not sent"
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    PROCESSING = "processing", "Processing"
    VALID = "valid", "Valid"
    INVALID = "invalid", "Invalid"


class OrderStep(Choices):
    """Where certmgr is in the flow."""

    QUEUED = "queued", "Queued"
    AUTHORIZING = "authorizing", "Proving control"
    WAITING_MANUAL = "waiting_manual", "Waiting for the DNS record"
    FINALIZING = "finalizing", "Finalizing"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STEPS = (OrderStep.DONE, OrderStep.FAILED, OrderStep.CANCELLED)
UNFINISHED_STEPS = tuple(step for step in OrderStep if step not in FINISHED_STEPS)


class ChallengeStatus(Choices):
    NOT_READY = "not_ready", "Not ready"  # record not in place (yet)
    READY = "ready", "Ready"  # record in place, answered or about to be
    VALID = "valid", "Valid"
    INVALID = "invalid", "Invalid"


def finished_status(status: str) -> str:
    """The status at the CA a failed or cancelled order shows: the CA's own last word when it was final
    (valid, invalid), otherwise invalid. certmgr gave the order up, and the CA turns it invalid when its
    authorizations are deactivated or expire: a failed order never reads "Pending"."""
    return status if status in (OrderStatus.VALID, OrderStatus.INVALID) else OrderStatus.INVALID
