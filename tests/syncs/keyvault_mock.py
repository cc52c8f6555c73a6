"""An HTTP mock of the documented Entra ID and Key Vault REST requests that certmgr's Key Vault
destination makes through the real azure-identity and azure-keyvault-certificates clients.

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token``
  (client credentials): a token only for the registered client id and secret;
- Key Vault (``https://<vault>.vault.certmgr.test:<port>``): an unauthenticated request gets the 401
  challenge (``WWW-Authenticate: Bearer authorization=..., resource=...``); requests carrying a token this
  mock did not issue get 401 too; ``POST /certificates/{name}/import``, ``GET /certificates/{name}[/{v}]``,
  ``GET /certificates``, ``DELETE /certificates/{name}``: each import is a new version.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.syncs.https_servers import Tls, https_server, tls_files

TENANT = "0b8c7f3e-1d2a-4c5b-9e6f-7a8b9c0d1e2f"
CLIENT_ID = "5f4e3d2c-1b0a-4f9e-8d7c-6b5a4f3e2d1c"
CLIENT_SECRET = "kv~secret-Q8x2Lr7vN4mT9pW1zY6cB3dF5gH0jK"
AUTHORITY_HOST = "login.certmgr.test"
VAULT_SUFFIX = "vault.certmgr.test"


@dataclass
class Version:
    version: str
    cer: bytes  # DER of the leaf
    tags: dict[str, str]
    body: dict[str, Any]  # the import request's JSON
    key_der: bytes  # what the PKCS#12 carried (to check it matches)


@dataclass
class KeyVault:
    port: int = 0
    tls: Tls | None = None
    tokens: set[str] = field(default_factory=set)
    certificates: dict[str, list[Version]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, bool]] = field(default_factory=list)  # method, path, authenticated
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def authority(self) -> str:
        return f"https://{AUTHORITY_HOST}:{self.port}"

    def vault_url(self, name: str = "kv-certmgr") -> str:
        return f"https://{name}.{VAULT_SUFFIX}:{self.port}"

    def bundle(self, host: str, name: str, v: Version) -> dict[str, Any]:
        base = f"https://{host}"
        thumb = base64.urlsafe_b64encode(hashlib.sha1(v.cer).digest()).rstrip(b"=").decode()
        return {
            "id": f"{base}/certificates/{name}/{v.version}",
            "kid": f"{base}/keys/{name}/{v.version}",
            "sid": f"{base}/secrets/{name}/{v.version}",
            "x5t": thumb,
            "cer": base64.b64encode(v.cer).decode(),
            "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000},
            "tags": v.tags,
            "policy": {
                "id": f"{base}/certificates/{name}/policy",
                "secret_props": {
                    "contentType": v.body.get("policy", {}).get("secret_props", {}).get("contentType")
                },
            },
        }


def _handler(kv: KeyVault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def read_body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def host(self) -> str:
            return (self.headers.get("Host") or "").lower()

        # --- Entra ID ---------------------------------------------------------------------------------
        def identity(self, method: str, path: str) -> None:
            base = kv.authority
            if method == "GET" and path == f"/{TENANT}/v2.0/.well-known/openid-configuration":
                return self.send_json(
                    200,
                    {
                        "authorization_endpoint": f"{base}/{TENANT}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{base}/{TENANT}/oauth2/v2.0/token",
                        "issuer": f"{base}/{TENANT}/v2.0",
                        "device_authorization_endpoint": f"{base}/{TENANT}/oauth2/v2.0/devicecode",
                    },
                )
            if method == "POST" and path == f"/{TENANT}/oauth2/v2.0/token":
                form = parse_qs(self.read_body().decode())
                kv.token_requests.append(form)
                one = {k: v[0] for k, v in form.items()}
                if one.get("grant_type") != "client_credentials":
                    return self.send_json(400, {"error": "unsupported_grant_type"})
                if one.get("client_id") != CLIENT_ID or one.get("client_secret") != CLIENT_SECRET:
                    return self.send_json(
                        401,
                        {
                            "error": "invalid_client",
                            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure "
                            "the secret being sent in the request is the client secret value.",
                            "error_codes": [7000215],
                        },
                    )
                token = secrets.token_urlsafe(32)
                with kv.lock:
                    kv.tokens.add(token)
                return self.send_json(
                    200,
                    {
                        "token_type": "Bearer",
                        "expires_in": 3599,
                        "ext_expires_in": 3599,
                        "access_token": token,
                    },
                )
            return self.send_json(404, {"error": "not_found"})

        # --- Key Vault --------------------------------------------------------------------------------
        def vault(self, method: str, path: str, query: dict[str, list[str]]) -> None:
            auth = self.headers.get("Authorization") or ""
            token = auth[7:] if auth.startswith("Bearer ") else ""
            ok = token in kv.tokens
            kv.requests.append((method, path, ok))
            body = self.read_body()
            if not ok:
                return self.send_json(
                    401,
                    {
                        "error": {
                            "code": "Unauthorized",
                            "message": "AKV10000: Request is missing a Bearer or PoP token.",
                        }
                    },
                    {
                        "WWW-Authenticate": f'Bearer authorization="{kv.authority}/{TENANT}", '
                        f'resource="https://{VAULT_SUFFIX}:{kv.port}"'
                    },
                )
            if not query.get("api-version"):
                return self.send_json(
                    400, {"error": {"code": "BadParameter", "message": "api-version missing"}}
                )
            parts = [p for p in path.split("/") if p]
            host = self.host()
            if method == "POST" and len(parts) == 3 and parts[0] == "certificates" and parts[2] == "import":
                return self.import_(host, parts[1], json.loads(body))
            if method == "GET" and parts == ["certificates"]:
                items = [
                    {"id": f"https://{host}/certificates/{n}", "x5t": kv.bundle(host, n, vs[-1])["x5t"]}
                    for n, vs in kv.certificates.items()
                    if n not in kv.deleted
                ]
                top = int((query.get("maxresults") or ["25"])[0])
                return self.send_json(200, {"value": items[:top], "nextLink": None})
            if method == "GET" and len(parts) in (2, 3) and parts[0] == "certificates":
                versions = [] if parts[1] in kv.deleted else kv.certificates.get(parts[1], [])
                if len(parts) == 3 and parts[2]:
                    versions = [v for v in versions if v.version == parts[2]]
                if not versions:
                    return self.send_json(
                        404,
                        {
                            "error": {
                                "code": "CertificateNotFound",
                                "message": f"A certificate with (name/id) {parts[1]} was not found.",
                            }
                        },
                    )
                return self.send_json(200, kv.bundle(host, parts[1], versions[-1]))
            if method == "DELETE" and len(parts) == 2 and parts[0] == "certificates":
                if parts[1] not in kv.certificates or parts[1] in kv.deleted:
                    return self.send_json(
                        404, {"error": {"code": "CertificateNotFound", "message": "not found"}}
                    )
                kv.deleted.add(parts[1])
                answer = kv.bundle(host, parts[1], kv.certificates[parts[1]][-1])
                answer["recoveryId"] = f"https://{host}/deletedcertificates/{parts[1]}"
                return self.send_json(200, answer)
            if method == "GET" and len(parts) == 2 and parts[0] == "deletedcertificates":
                if parts[1] in kv.deleted:
                    return self.send_json(200, kv.bundle(host, parts[1], kv.certificates[parts[1]][-1]))
                return self.send_json(404, {"error": {"code": "CertificateNotFound", "message": "not found"}})
            return self.send_json(
                404, {"error": {"code": "NotFound", "message": f"no route {method} {path}"}}
            )

        def import_(self, host: str, name: str, body: dict[str, Any]) -> None:
            try:
                raw = base64.b64decode(body["value"], validate=True)
                password = body.get("pwd") or None
                key, cert, _chain = pkcs12.load_key_and_certificates(
                    raw, password.encode() if password else None
                )
                assert cert is not None and key is not None
            except Exception as exc:
                return self.send_json(
                    400,
                    {
                        "error": {
                            "code": "BadParameter",
                            "message": f"Invalid certificate: {type(exc).__name__}",
                        }
                    },
                )
            content_type = body.get("policy", {}).get("secret_props", {}).get("contentType")
            if content_type not in (None, "application/x-pkcs12"):
                return self.send_json(400, {"error": {"code": "BadParameter", "message": "content type"}})
            version = Version(
                uuid.uuid4().hex,
                cert.public_bytes(serialization.Encoding.DER),
                dict(body.get("tags") or {}),
                body,
                key.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
            with kv.lock:
                kv.certificates.setdefault(name, []).append(version)
                kv.deleted.discard(name)
            return self.send_json(200, kv.bundle(host, name, version))

        def dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            host = self.host().split(":")[0]
            if host == AUTHORITY_HOST:
                return self.identity(method, url.path)
            if host.endswith("." + VAULT_SUFFIX):
                return self.vault(method, url.path, parse_qs(url.query))
            return self.send_json(421, {"error": f"unknown host {host}"})

        def do_GET(self) -> None:
            self.dispatch("GET")

        def do_POST(self) -> None:
            self.dispatch("POST")

        def do_DELETE(self) -> None:
            self.dispatch("DELETE")

    return Handler


@contextmanager
def key_vault(directory: Path) -> Iterator[KeyVault]:
    kv = KeyVault()
    kv.tls = tls_files(directory, [AUTHORITY_HOST, f"*.{VAULT_SUFFIX}"])
    with https_server(_handler(kv), kv.tls) as server:
        kv.port = server.server_address[1]
        yield kv
