"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key list, and model fields using it.

``CERTMGR_ENCRYPTION_KEYS`` lists Fernet keys; the first encrypts, every key decrypts, so a new key is
put first and ``manage.py rotate_encryption_keys`` re-encrypts the stored values before the old key is
dropped. With DEBUG on and no key configured, a key is derived from SECRET_KEY (development only).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.db.models.query_utils import DeferredAttribute

from certmgr.errors import ServiceError

if TYPE_CHECKING:
    from django.db.models.expressions import Combinable

MISSING_KEY_MESSAGE = (
    "CERTMGR_ENCRYPTION_KEYS is not set. Generate a key with 'manage.py generate_encryption_key' "
    "and set CERTMGR_ENCRYPTION_KEYS to it."
)


class DecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


def configured_keys() -> list[str]:
    keys = [k.strip() for k in settings.CERTMGR_ENCRYPTION_KEYS if k.strip()]
    if not keys and settings.DEBUG:
        digest = hashlib.sha256(b"certmgr-dev-encryption:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return keys


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured(MISSING_KEY_MESSAGE)
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "CERTMGR_ENCRYPTION_KEYS holds an invalid key: each key must be 32 url-safe base64-encoded "
            "bytes, as printed by 'manage.py generate_encryption_key'."
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(configured_keys()))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError(
            "a stored secret cannot be decrypted with any key in CERTMGR_ENCRYPTION_KEYS"
        ) from exc


def rotate(token: str) -> str:
    """Re-encrypt ``token`` under the first key (it may have been made with any configured key)."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("a stored secret cannot be decrypted with any configured key") from exc


class RawToken(str):
    """An already-encrypted value, stored as is (used by key rotation)."""


class Unreadable(RawToken):
    """A stored token no configured key decrypts, as loaded. Saving the row keeps it as it is (it may become
    readable again when its key is configured); reading the attribute raises ``SecretUnreadable``."""


class SecretUnreadable(ServiceError, DecryptionError):
    """One object's secret cannot be decrypted: that object's pages and actions refuse, its lists render."""

    status = 409
    code = "secret_undecryptable"


def has_secret(obj: models.Model, name: str) -> bool:
    """Whether ``obj.<name>`` holds a secret, readable or not, without decrypting it."""
    value = obj.__dict__[name] if name in obj.__dict__ else getattr(obj, name)
    return value not in (None, "")


def unreadable_secret(obj: models.Model, name: str) -> SecretUnreadable | None:
    """The error reading ``obj.<name>`` would raise, without raising it: for pages that show what they can."""
    try:
        getattr(obj, name)
    except SecretUnreadable as exc:
        return exc
    return None


class _SecretAttribute(DeferredAttribute):
    """The model attribute of an encrypted field: names the object whose secret cannot be decrypted. A data
    descriptor (it has ``__set__``), so that reading the attribute always passes through it."""

    def __set__(self, instance, value):
        instance.__dict__[self.field.attname] = value

    def __get__(self, instance, cls=None):
        if instance is None:
            return self
        value = super().__get__(instance, cls)
        if isinstance(value, Unreadable):
            meta = instance._meta
            raise SecretUnreadable(
                f"the {self.field.verbose_name} of {meta.verbose_name} {instance.pk} cannot be decrypted "
                "with the configured keys (CERTMGR_ENCRYPTION_KEYS): restore the key it was encrypted with, "
                "or replace the secret"
            )
        return value


# How an encrypted value is written by dumpdata and the serializers: its ciphertext (a fresh Fernet token),
# marked so that loaddata stores it back as is. A dump never carries plaintext, and loads under the same keys.
DUMP_PREFIX = "fernet:"


class EncryptedMixin:
    """Stores the Fernet token in a text column; the model attribute holds the plaintext."""

    descriptor_class: type[DeferredAttribute] = _SecretAttribute

    def to_plaintext(self, value: Any) -> str:
        return value

    def from_plaintext(self, text: str) -> Any:
        return text

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        try:
            return self.from_plaintext(decrypt(value))
        except DecryptionError:
            return Unreadable(value)

    def pre_save(self, model_instance, add):
        # the stored value, not the attribute: saving a row must not fail on a secret nobody touched
        if self.attname in model_instance.__dict__:  # type: ignore[attr-defined]
            return model_instance.__dict__[self.attname]  # type: ignore[attr-defined]
        return super().pre_save(model_instance, add)  # type: ignore[misc]

    def get_prep_value(self, value):
        if isinstance(value, RawToken):
            return str(value)
        if value is None or value == "":
            return value
        return encrypt(self.to_plaintext(value))

    def value_to_string(self, obj) -> str:
        attname = self.attname  # type: ignore[attr-defined]
        # the stored value: a dump carries an unreadable secret's token as it is (loaddata refuses it)
        value = obj.__dict__[attname] if attname in obj.__dict__ else self.value_from_object(obj)  # type: ignore[attr-defined]
        if value is None or value == "":
            return value
        token = str(value) if isinstance(value, RawToken) else encrypt(self.to_plaintext(value))
        return DUMP_PREFIX + token

    def to_python(self, value):
        if isinstance(value, str) and value.startswith(DUMP_PREFIX):
            token = value[len(DUMP_PREFIX) :]
            try:
                decrypt(token)  # a dump made under other keys must not load as garbage
            except DecryptionError as exc:
                raise ValidationError(str(exc)) from exc
            return RawToken(token)
        return self.parse(value)

    def parse(self, value: Any) -> Any:
        return value


class EncryptedTextField(EncryptedMixin, models.TextField):
    description = "Text encrypted at rest"


class EncryptedJSONField(EncryptedMixin, models.TextField):
    """A JSON object encrypted at rest as one token (credentials of an app connection)."""

    description = "JSON encrypted at rest"

    # For django-stubs' plugin: the attribute holds the decoded object, not the column's text (the stubs
    # pin TextField's to str, so narrowing them here is flagged as an override).
    _pyi_private_set_type: dict[str, Any] | Combinable  # type: ignore[assignment]
    _pyi_private_get_type: dict[str, Any]  # type: ignore[assignment]

    def to_plaintext(self, value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)

    def from_plaintext(self, text: str) -> Any:
        return json.loads(text)

    def parse(self, value: Any) -> Any:
        if isinstance(value, str) and value:
            return json.loads(value)
        return value


def encrypted_fields() -> Iterator[tuple[type[models.Model], models.Field[Any, Any]]]:
    """Every (model, field) pair holding an encrypted value, across all installed apps."""
    from django.apps import apps

    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedMixin):
                yield model, field
