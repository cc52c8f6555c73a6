"""Akamai Edge DNS DNS-01 provider (connection kind ``akamai``): the Edge DNS API v2 with EdgeGrid signatures.

A record set is one name and type with all its values (``rdata``), read and written whole at
``/config-dns/v2/zones/{zone}/names/{name}/types/TXT``: GET it, add or remove one value, PUT it back; POST
creates it when there is none yet, DELETE removes it with its last value. Values of other orders stay.

Edge DNS answers 409 Conflict when the zone changed under a write (another change to the zone was being
applied, or the record set was created meanwhile): the record set is read again and the change re-applied, at
most ``MAX_ATTEMPTS`` times, after which the error is transient (the order retries later). Writers of one
name inside certmgr are serialised by the caller's record lock (``dnsproviders.locks``). A 401 (the API
client's credentials are wrong, expired or revoked) is never retried: it names the connection to fix.

The zone is the longest parent of the name that Edge DNS knows (``GET /config-dns/v2/zones/{zone}``); only
primary zones hold record sets that the API may write.
"""

from __future__ import annotations

import random
import time
from urllib.parse import quote

import requests

from dnsproviders import edgegrid
from dnsproviders.connection_checks import akamai_refusal, excerpt, request_error
from dnsproviders.providers.base import DnsProvider, ProviderError, RecordRef, absolute
from dnsproviders.providers.powerdns import quote_txt, unquote_txt

API = "/config-dns/v2"
#: Read-modify-write rounds when Edge DNS answers 409 Conflict.
MAX_ATTEMPTS = 5
#: Pause before re-reading after a 409: base seconds times the attempt, plus up to the same again at random.
CONFLICT_PAUSE_SECONDS = 0.2


class _Conflict(ProviderError):
    """HTTP 409: the zone or record set changed meanwhile; read again and retry."""

    def __init__(self, message: str):
        super().__init__(message, transient=True)


class _Missing(ProviderError):
    """HTTP 404."""


class Provider(DnsProvider):
    kind = "akamai"

    def __init__(self, credentials: dict, *, timeout: float = 10.0, **context):
        super().__init__(credentials, timeout=timeout, **context)
        missing = [
            k for k in ("host", "client_token", "client_secret", "access_token") if not credentials.get(k)
        ]
        if missing:
            raise ProviderError(f"Akamai credentials lack {', '.join(missing)}.")
        self.base = edgegrid.base_url(credentials)

    # --- HTTP ----------------------------------------------------------------------------------------

    def _who(self) -> str:
        return f"Akamai connection {self.connection_name!r}" if self.connection_name else "Akamai"

    def _call(self, step: str, method: str, path: str, *, ok: tuple[int, ...], **kwargs) -> requests.Response:
        url = self.base + API + path
        with edgegrid.session(self.credentials) as s:  # OutboundRefused propagates unchanged
            try:
                r = s.request(
                    method,
                    url,
                    params=edgegrid.params(self.credentials),
                    timeout=(self.timeout, self.timeout),
                    allow_redirects=False,
                    **kwargs,
                )
            except requests.RequestException as exc:
                message = request_error("Akamai", self.base, exc, self.timeout).message
                raise ProviderError(f"{self._who()}: {step} failed: {message}", transient=True) from exc
        if r.status_code in ok:
            return r
        what = f"{self._who()}: {step} (HTTP {r.status_code})"
        detail = excerpt(edgegrid.problem(r)) or "(empty body)"
        if r.status_code in (401, 403):
            # Never retried: the same credentials fail the same way until someone edits the connection.
            raise ProviderError(f"{self._who()}: {step}: {akamai_refusal(r)}")
        if r.status_code == 404:
            raise _Missing(f"{what}: {detail}")
        if r.status_code == 409:
            raise _Conflict(f"{what}: {detail}")
        if 300 <= r.status_code < 400:
            raise ProviderError(f"{what}: a redirect to {excerpt(r.headers.get('Location', '?'), 300)}")
        raise ProviderError(f"{what}: {detail}", transient=r.status_code == 429 or r.status_code >= 500)

    @staticmethod
    def _path(zone: str, name: str) -> str:
        return f"/zones/{quote(zone, safe='')}/names/{quote(name, safe='')}/types/TXT"

    # --- zones ---------------------------------------------------------------------------------------

    def find_zone(self, record_name: str) -> str:
        name = absolute(record_name)
        labels = name.rstrip(".").split(".")
        for i in range(len(labels) - 1):  # never ask for a bare TLD
            candidate = ".".join(labels[i:])
            try:
                r = self._call(
                    f"looking up zone {candidate}", "GET", f"/zones/{quote(candidate, safe='')}", ok=(200,)
                )
            except _Missing:
                continue
            data = _json(r)
            kind = str(data.get("type") or "PRIMARY").upper()
            if kind != "PRIMARY":
                raise ProviderError(
                    f"{self._who()}: the Edge DNS zone {candidate} holding {name} is a {kind} zone: only "
                    "primary zones take record changes through the API."
                )
            return str(data.get("zone") or candidate).lower().rstrip(".")
        raise ProviderError(f"{self._who()}: no Edge DNS zone visible to this API client holds {name}")

    # --- record sets ---------------------------------------------------------------------------------

    def _get(self, zone: str, name: str) -> dict | None:
        try:
            r = self._call(f"reading the TXT record set {name}.", "GET", self._path(zone, name), ok=(200,))
        except _Missing:
            return None
        data = _json(r)
        if not isinstance(data.get("rdata"), list):
            raise ProviderError(f"{self._who()}: the TXT record set {name}. came back without rdata: {data}")
        return data

    def _retrying(self, name: str, attempt_once) -> None:
        last: ProviderError | None = None
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                time.sleep(CONFLICT_PAUSE_SECONDS * attempt * (1 + random.random()))  # noqa: S311
            try:
                attempt_once()
                return
            except (_Conflict, _Missing) as exc:  # changed or removed meanwhile: read again
                last = exc
        raise ProviderError(
            f"{self._who()}: the TXT record set {name}. kept changing during {MAX_ATTEMPTS} attempts "
            f"(last: {last})",
            transient=True,
        )

    def present(self, record_name: str, value: str, *, zone: str = "", ttl: int = 60) -> RecordRef:
        fqdn = absolute(record_name)
        name = fqdn.rstrip(".")
        zone = zone or self.find_zone(fqdn)

        def once() -> None:
            current = self._get(zone, name)
            if current is None:
                body = {"name": name, "type": "TXT", "ttl": ttl, "rdata": [quote_txt(value)]}
                try:
                    self._call(
                        f"creating the TXT record set {fqdn}",
                        "POST",
                        self._path(zone, name),
                        ok=(201,),
                        json=body,
                    )
                except _Missing as exc:  # the record set's absence was read; a 404 now is the zone's
                    raise ProviderError(f"{exc} (is the Edge DNS zone {zone} still there?)") from None
                return
            rdata = [str(v) for v in current["rdata"]]
            if value in {unquote_txt(v) for v in rdata}:
                return
            body = {
                "name": name,
                "type": "TXT",
                "ttl": int(current.get("ttl") or ttl),
                "rdata": [*rdata, quote_txt(value)],
            }
            self._call(
                f"adding to the TXT record set {fqdn}", "PUT", self._path(zone, name), ok=(200,), json=body
            )

        self._retrying(name, once)
        return RecordRef(fqdn, value, zone)

    def cleanup(self, ref: RecordRef) -> None:
        fqdn = absolute(ref.record_name)
        name = fqdn.rstrip(".")
        zone = ref.zone or self.find_zone(fqdn)

        def once() -> None:
            current = self._get(zone, name)
            if current is None:
                return
            rdata = [str(v) for v in current["rdata"]]
            remaining = [v for v in rdata if unquote_txt(v) != ref.value]
            if len(remaining) == len(rdata):
                return
            if remaining:
                body = {"name": name, "type": "TXT", "ttl": int(current.get("ttl") or 60), "rdata": remaining}
                self._call(
                    f"removing from the TXT record set {fqdn}",
                    "PUT",
                    self._path(zone, name),
                    ok=(200,),
                    json=body,
                )
                return
            try:
                self._call(
                    f"deleting the TXT record set {fqdn}", "DELETE", self._path(zone, name), ok=(204, 200)
                )
            except _Missing:
                return  # gone already

        self._retrying(name, once)


def _json(response: requests.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ProviderError(
            f"Akamai answered HTTP {response.status_code} without a JSON object: "
            f"{excerpt(response.text) or '(empty body)'}"
        )
    return data
