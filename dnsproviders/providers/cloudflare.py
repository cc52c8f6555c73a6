"""Cloudflare DNS-01 provider (connection kind ``cloudflare``), API v4 with a scoped API token.

Cloudflare keeps one DNS record per TXT value, so values merge naturally: ``present`` creates a record for
its value (an identical existing record counts as success) and ``cleanup`` deletes only the record(s)
whose content is its value.
"""

from __future__ import annotations

import requests

from dnsproviders.connection_checks import USER_AGENT, excerpt, network_reason
from dnsproviders.providers.base import DnsProvider, ProviderError, RecordRef, absolute

API_URL = "https://api.cloudflare.com/client/v4"
# "An identical record already exists." / "The record already exists."
ALREADY_EXISTS_CODES = {81057, 81058}
# "Record does not exist."
NOT_FOUND_CODES = {81044}


def _unquote(content: str) -> str:
    content = str(content or "")
    if len(content) >= 2 and content[0] == content[-1] == '"':
        return content[1:-1]
    return content


class CloudflareError(ProviderError):
    def __init__(self, message: str, *, transient: bool = False, codes: frozenset = frozenset()):
        super().__init__(message, transient=transient)
        self.codes = codes


class Provider(DnsProvider):
    kind = "cloudflare"

    def _request(self, step: str, method: str, path: str, **kwargs) -> dict:
        url = API_URL + path
        headers = {"Authorization": f"Bearer {self.credentials['api_token']}", "User-Agent": USER_AGENT}
        # A fixed public endpoint, not a user-typed one: a plain session (which honours proxy settings).
        with requests.Session() as s:
            try:
                r = s.request(
                    method,
                    url,
                    headers=headers,
                    timeout=(self.timeout, self.timeout),
                    allow_redirects=False,
                    **kwargs,
                )
            except requests.RequestException as exc:
                raise CloudflareError(
                    f"Cloudflare {step} failed: {network_reason(exc)}", transient=True
                ) from exc
        transient = r.status_code == 429 or r.status_code >= 500
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CloudflareError(
                f"Cloudflare {step} failed (HTTP {r.status_code}): {excerpt(r.text) or '(empty body)'}",
                transient=transient,
            )
        if data.get("success") is not True or r.status_code >= 400:
            errors = [e for e in data.get("errors") or [] if isinstance(e, dict)]
            texts = [
                f"{e.get('message')} (code {e.get('code')})" if e.get("code") else str(e.get("message"))
                for e in errors
                if e.get("message")
            ]
            detail = "; ".join(texts) or excerpt(r.text)
            raise CloudflareError(
                f"Cloudflare refused {step} (HTTP {r.status_code}): {detail}",
                transient=transient,
                codes=frozenset(e.get("code") for e in errors),
            )
        return data

    def find_zone(self, record_name: str) -> str:
        labels = absolute(record_name).rstrip(".").split(".")
        for i in range(len(labels) - 1):  # never ask for a bare TLD
            candidate = ".".join(labels[i:])
            data = self._request(f"looking up zone {candidate}", "GET", "/zones", params={"name": candidate})
            for zone in data.get("result") or []:
                if str(zone.get("name", "")).lower() == candidate:
                    return str(zone["id"])
        raise ProviderError(f"no Cloudflare zone visible to this API token holds {absolute(record_name)}")

    def present(self, record_name: str, value: str, *, zone: str = "", ttl: int = 60) -> RecordRef:
        name = absolute(record_name)
        zone = zone or self.find_zone(name)
        body = {"type": "TXT", "name": name.rstrip("."), "content": value, "ttl": ttl}
        try:
            data = self._request(
                f"creating the TXT record {name}", "POST", f"/zones/{zone}/dns_records", json=body
            )
        except CloudflareError as exc:
            if exc.codes & ALREADY_EXISTS_CODES:
                return RecordRef(name, value, zone)
            raise
        record_id = (data.get("result") or {}).get("id")
        return RecordRef(name, value, zone, {"record_id": record_id} if record_id else {})

    def cleanup(self, ref: RecordRef) -> None:
        name = absolute(ref.record_name)
        zone = ref.zone or self.find_zone(name)
        data = self._request(
            f"looking up the TXT record {name}",
            "GET",
            f"/zones/{zone}/dns_records",
            params={"type": "TXT", "name": name.rstrip("."), "content": ref.value},
        )
        for record in data.get("result") or []:
            if _unquote(record.get("content")) != ref.value or record.get("type", "TXT") != "TXT":
                continue
            try:
                self._request(
                    f"deleting the TXT record {name}", "DELETE", f"/zones/{zone}/dns_records/{record['id']}"
                )
            except CloudflareError as exc:
                if not exc.codes & NOT_FOUND_CODES:
                    raise
