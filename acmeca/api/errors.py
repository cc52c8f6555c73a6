"""How the ACME doors of the API name a service's errors: by their path in the request body."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from acmeca import services
from certmgr.api.validation import renamed_errors
from certmgr.errors import OutboundRefused, ServiceError

ACME_SETTINGS_FIELDS = {*services.SETTINGS_FIELDS, "account_key_kind"}


def acme_settings_path(field: str) -> str:
    """Where an ACME setting named by a service sits in the request body of /cas/."""
    return f"acme.{field}" if field in ACME_SETTINGS_FIELDS else field


@contextmanager
def acme_ca_errors() -> Iterator[None]:
    """Errors of registering / editing an ACME CA, named by their path in the body (``acme.<field>``)."""
    try:
        with renamed_errors(acme_settings_path):
            yield
    except ServiceError as exc:
        if isinstance(exc, OutboundRefused) and not exc.field:
            exc.field = "acme.directory_url"
        raise
