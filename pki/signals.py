"""What pki tells the apps above it, which it does not import (``syncs`` listens).

Sent after the transaction that made the change commits, never inside it: a listener's work (or failure)
neither slows nor undoes an issuance or a revocation, and a listener never sees a change that rolled back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.dispatch import Signal

log = logging.getLogger(__name__)

# sender=Certificate, certificates=[Certificate, ...]: new certificates in the inventory (issued, renewed,
# completed by an external CA, batches), once their transaction committed.
certificates_recorded = Signal()
# sender=Certificate, certificates=[Certificate, ...]: certificates revoked, once committed.
certificates_revoked = Signal()


def send_on_commit(signal: Signal, sender: type, certificates: Sequence[Any]) -> None:
    """Send ``signal`` after commit when anyone listens (no cost otherwise); a listener's error is logged."""
    if certificates and signal.has_listeners(sender):
        transaction.on_commit(functools.partial(_send, signal, sender, list(certificates)))


def _send(signal: Signal, sender: type, certificates: list[Any]) -> None:
    for receiver, result in signal.send_robust(sender=sender, certificates=certificates):
        if isinstance(result, Exception):
            log.error("pki signal receiver %r failed", receiver, exc_info=result)
