"""Generic HTTPS push: a signed JSON POST to a receiver certmgr does not otherwise know.

Signature (as Stripe's): ``Certmgr-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``
over the exact body bytes. ``Certmgr-Delivery`` is the same for every attempt of the same certificate to the
same name (idempotency); ``Certmgr-Event`` is ``deployed``, ``removed`` or ``ping``. 2xx is success; the
receiver may answer ``{"identifier": "..."}``, kept as the destination's identifier. The URL is https only
and reached through certmgr's outbound guard, without following redirects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import requests
from django.conf import settings

from certmgr import outbound
from certmgr.errors import OutboundRefused
from pki import x509
from syncs.choices import DestinationKind
from syncs.destinations import DestinationError, KindModule, Material, Pushed, register, scrub

SIGNATURE_HEADER = "Certmgr-Signature"
DELIVERY_HEADER = "Certmgr-Delivery"
EVENT_HEADER = "Certmgr-Event"
_EXCERPT = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value: t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, tolerance: int = 300, now: float | None = None) -> bool:
    """What a receiver does (documented in the guide; the tests' receiver uses its own copy)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def delivery_id(url: str, event: str, name: str, serial: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"certmgr-sync|{url}|{event}|{name}|{serial}"))


def clean_options(value: Any) -> dict[str, Any]:
    value = value or {}
    if not isinstance(value, dict):
        raise ValueError("Enter an object.")
    if value:
        raise ValueError(
            "A webhook destination has no options: the URL and signing secret are on its connection."
        )
    return {}


class WebhookBackend:
    def __init__(self, credentials: dict, *, region: str, options: dict):
        self.url = str(credentials.get("url", ""))
        self.secret = str(credentials.get("signing_secret", ""))
        self._session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = outbound.session()
        return self._session

    def post(self, event: str, payload: dict[str, Any], delivery: str) -> dict[str, Any]:
        if not self.url.startswith("https://"):
            raise DestinationError("the webhook URL must be https://", permanent=True)
        now = time.time()
        body = json.dumps(
            {
                "event": event,
                "delivery_id": delivery,
                "timestamp": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
                **payload,
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, int(now), body),
            DELIVERY_HEADER: delivery,
            EVENT_HEADER: event,
        }
        try:
            response = self.session.post(
                self.url,
                data=body,
                headers=headers,
                timeout=settings.CERTMGR_OUTBOUND_TIMEOUT,
                verify=settings.CERTMGR_SYNC_CA_BUNDLE or True,
                allow_redirects=False,
            )
        except OutboundRefused as exc:
            raise DestinationError(f"webhook {event}: {exc}", permanent=True) from None
        except requests.RequestException as exc:
            from dnsproviders.connection_checks import network_reason

            raise DestinationError(
                scrub(f"cannot reach the webhook at {self.url}: {network_reason(exc)}", self.secret)
            ) from None
        if not 200 <= response.status_code < 300:
            text = " ".join(response.text.split())[:_EXCERPT] or "(empty body)"
            raise DestinationError(
                scrub(f"the webhook answered HTTP {response.status_code} to {event}: {text}", self.secret)
            )
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}
        return answer if isinstance(answer, dict) else {}

    def push(self, material: Material, previous: str) -> Pushed:
        cert = x509.load_pem_certificates(material.certificate_pem)[0]
        prints = x509.fingerprints(cert)
        payload: dict[str, Any] = {
            "name": material.name,
            "subscriber": material.subscriber,
            "serial": material.serial,
            "not_after": material.not_after.isoformat(),
            "fingerprints": {"sha256": prints.sha256, "sha1": prints.sha1},
            "certificate": material.certificate_pem,
            "chain": material.chain_pem,
            "previous_identifier": previous,
        }
        if material.private_key_pem:
            payload["private_key"] = material.private_key_pem
        delivery = delivery_id(self.url, "deployed", material.name, material.serial)
        answer = self.post("deployed", payload, delivery)
        identifier = answer.get("identifier")
        return Pushed(str(identifier)[:500] if identifier else material.name, delivery)

    def fingerprint(self, identifier: str) -> str | None:
        raise DestinationError("a webhook receiver cannot be read back", permanent=True)

    def remove(self, identifier: str) -> None:
        self.post("removed", {"identifier": identifier}, delivery_id(self.url, "removed", identifier, ""))

    def test(self) -> str:
        self.post("ping", {}, str(uuid.uuid4()))
        return f"The webhook at {self.url} accepted a signed ping."


register(
    DestinationKind.WEBHOOK,
    KindModule(make=WebhookBackend, clean_options=clean_options, reads_back=False),
)
