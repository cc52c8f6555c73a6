"""The audit keys: HMAC-SHA256 keys from ``CERTMGR_AUDIT_KEYS``, never stored in the database.

The first key links new events and signs checkpoints; every key verifies, so a new key is put first and the
old ones stay listed as long as events or checkpoints made with them must verify. A key is named by its id,
a short fingerprint that the events and checkpoints carry (the id reveals nothing of the key). With DEBUG on
and no key configured, a key is derived from SECRET_KEY (development only), as the encryption key is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MISSING_KEY_MESSAGE = (
    "CERTMGR_AUDIT_KEYS is not set. Generate a key with 'manage.py generate_audit_key' and set "
    "CERTMGR_AUDIT_KEYS to it (keep it out of the database and its backups)."
)
MIN_KEY_LENGTH = 32


@dataclass(frozen=True)
class AuditKey:
    key_id: str
    secret: bytes
    # An HMAC state with the key already absorbed: ``copy()`` is cheaper than keying a new one per event.
    state: hmac.HMAC

    def mac(self, message: bytes) -> str:
        h = self.state.copy()
        h.update(message)
        return h.hexdigest()


def generate_key() -> str:
    return secrets.token_urlsafe(32)


def key_id(secret: bytes) -> str:
    return hashlib.sha256(b"certmgr-audit-key-id:" + secret).hexdigest()[:16]


def _configured() -> tuple[str, ...]:
    keys = tuple(k.strip() for k in settings.CERTMGR_AUDIT_KEYS if k.strip())
    if not keys and settings.DEBUG:
        keys = (hashlib.sha256(b"certmgr-dev-audit:" + settings.SECRET_KEY.encode()).hexdigest(),)
    return keys


@cache
def _keys(configured: tuple[str, ...]) -> tuple[AuditKey, ...]:
    if not configured:
        raise ImproperlyConfigured(MISSING_KEY_MESSAGE)
    short = [i + 1 for i, k in enumerate(configured) if len(k) < MIN_KEY_LENGTH]
    if short:
        raise ImproperlyConfigured(
            f"CERTMGR_AUDIT_KEYS: key {short[0]} is shorter than {MIN_KEY_LENGTH} characters; generate keys "
            "with 'manage.py generate_audit_key'."
        )
    found = []
    for text in configured:
        secret = text.encode()
        found.append(AuditKey(key_id(secret), secret, hmac.new(secret, digestmod=hashlib.sha256)))
    return tuple(found)


def keys() -> tuple[AuditKey, ...]:
    return _keys(_configured())


def signing_key() -> AuditKey:
    """The key that links new events and signs checkpoints (the first configured)."""
    return keys()[0]


def find(wanted: str) -> AuditKey | None:
    """The configured key with id ``wanted``, if it is still configured."""
    return next((k for k in keys() if k.key_id == wanted), None)
