"""Fixtures of the Azure Key Vault and webhook kinds (tests/syncs/conftest.py imports them): the Key Vault
mock and a signature-verifying webhook receiver, each a real HTTPS server on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.syncs import keyvault_mock as mock
from tests.syncs.https_servers import https_server, resolve_test_domain_to_loopback, tls_files

SECRET = "whsec-3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e"


@pytest.fixture
def kv(tmp_path, settings, monkeypatch):
    resolve_test_domain_to_loopback(monkeypatch)
    with mock.key_vault(tmp_path / "kv") as vault:
        settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
        settings.CERTMGR_SYNC_CA_BUNDLE = str(vault.tls.ca_file)  # type: ignore[union-attr]
        settings.CERTMGR_AZURE_AUTHORITY_HOST = f"{mock.AUTHORITY_HOST}:{vault.port}"
        settings.CERTMGR_AZURE_VAULT_SUFFIXES = [mock.VAULT_SUFFIX]
        yield vault


@dataclass
class Receiver:
    url: str = ""
    answers: list[tuple[int, Any]] = field(default_factory=list)  # (status, JSON) per request, then 200
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    rejected: int = 0


def verified(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, as docs/guide/syncs.md gives it."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/hooks/certs" or not verified(
                SECRET, self.headers.get("Certmgr-Signature", "t=0,v1="), body
            ):
                receiver.rejected += 1
                status, answer = 401, {"error": "bad signature"}
            else:
                receiver.deliveries.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                status, answer = receiver.answers.pop(0) if receiver.answers else (200, None)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def receiver(tmp_path, settings):
    tls = tls_files(tmp_path / "tls", ["127.0.0.1"])
    rx = Receiver()
    with https_server(handler(rx), tls) as server:
        settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
        settings.CERTMGR_SYNC_CA_BUNDLE = str(tls.ca_file)
        rx.url = f"https://127.0.0.1:{server.server_address[1]}/hooks/certs"
        yield rx
