"""Calls to Akamai's APIs with an Akamai app connection: EdgeGrid signatures (``edgegrid-python``).

Each request is signed with the client secret (HMAC-SHA256 over method, URL, the POST body's hash, a
timestamp and a nonce, EG1-HMAC-SHA256); the client and access tokens travel in the ``Authorization`` header
and the secret never does. Shared by the provider (``providers.akamai``) and the connection test.
"""

from __future__ import annotations

from typing import Any

import requests
from akamai.edgegrid import EdgeGridAuth

from certmgr import outbound

#: The largest request body EdgeGrid hashes (the library's and Akamai's default).
MAX_BODY = 131072


def base_url(credentials: dict) -> str:
    return f"https://{str(credentials['host']).strip().lower().rstrip('/')}"


def session(credentials: dict) -> requests.Session:
    """A guarded session (the host is typed by a user, even if it must be under akamaiapis.net) that signs
    every request with the connection's EdgeGrid credentials."""
    s = outbound.session()
    s.auth = EdgeGridAuth(
        client_token=str(credentials["client_token"]),
        client_secret=str(credentials["client_secret"]),
        access_token=str(credentials["access_token"]),
        max_body=MAX_BODY,
    )
    s.headers["Accept"] = "application/json"
    return s


def params(credentials: dict, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Query parameters: ``accountSwitchKey`` when the connection acts for another account."""
    out = dict(extra or {})
    if credentials.get("account_switch_key"):
        out["accountSwitchKey"] = credentials["account_switch_key"]
    return out


def problem(response: requests.Response) -> str:
    """Akamai's error answer (an RFC 7807 problem: title, detail) as one text; the body when it is none.
    Callers shorten it (``connection_checks.excerpt``)."""
    try:
        data = response.json()
    except ValueError:
        return response.text
    if not isinstance(data, dict):
        return response.text
    parts = [str(data[k]).strip() for k in ("title", "detail") if data.get(k)]
    return ": ".join(dict.fromkeys(parts)) or response.text
