"""An Entra ID (Azure AD) credential from an Azure app connection, through certmgr's outbound guard.

azure-identity sends the client secret to ``CERTMGR_AZURE_AUTHORITY_HOST`` only (a setting, not a typed
URL). Its HTTP goes through azure-core's ``RequestsTransport`` on ``certmgr.outbound.session()``: the
guarded adapter (no loopback, private or metadata addresses unless allowed) and no proxy from the
environment.
"""

from __future__ import annotations

from typing import Any

from azure.core.pipeline.transport import RequestsTransport
from django.conf import settings

from certmgr import outbound

PUBLIC_AUTHORITY = "login.microsoftonline.com"
KEY_VAULT_SCOPE = "https://vault.azure.net/.default"


def transport(timeout: float = 30.0) -> RequestsTransport:
    """azure-core's requests transport on a guarded session; trusts CERTMGR_SYNC_CA_BUNDLE when set."""
    return RequestsTransport(
        session=outbound.session(),
        session_owner=True,
        connection_verify=settings.CERTMGR_SYNC_CA_BUNDLE or True,
        connection_timeout=min(timeout, 10.0),
        read_timeout=timeout,
    )


def authority() -> str:
    host = str(settings.CERTMGR_AZURE_AUTHORITY_HOST).strip().rstrip("/")
    return host if host.startswith("https://") else f"https://{host}"


def credential(credentials: dict, *, timeout: float = 30.0) -> Any:
    """A ClientSecretCredential for the connection (tenant, client id, secret)."""
    from azure.identity import ClientSecretCredential

    custom = authority() != f"https://{PUBLIC_AUTHORITY}"
    return ClientSecretCredential(
        str(credentials.get("tenant_id", "")),
        str(credentials.get("client_id", "")),
        str(credentials.get("client_secret", "")),
        authority=authority(),
        # MSAL asks the public cloud whether an authority is known; a configured one is trusted as is.
        disable_instance_discovery=custom,
        transport=transport(timeout),
        retry_total=1,  # the sync run itself retries with backoff
    )
