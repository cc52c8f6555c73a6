"""DNS-01 through the PowerDNS HTTP API (``/api/v1/servers/<server_id>/zones``).

PowerDNS only replaces whole rrsets (``PATCH`` with ``changetype: REPLACE`` or ``DELETE``) and has no
conditional update, so adding or removing one TXT value is a read-modify-write. Two writers of the same name
could otherwise lose each other's value (both read ``[]``, both write their own value, the last one wins).
Two defences:

* within one process, writers of the same record name take a lock, so threads never interleave;
* across processes, every write is verified: after the PATCH the rrset is read again (after a short,
  jittered pause that lets a concurrent stale write land) and the change is re-applied until the own value is
  present (present) or absent (cleanup). A writer that stops verifying can still be overwritten by a stale
  write of a slower process; the propagation check then notices the missing value before the CA is asked.
"""

from __future__ import annotations

import random
import threading
import time
from urllib.parse import quote

import requests

from certmgr import outbound
from dnsproviders.connection_checks import body_excerpt, excerpt, powerdns_base, request_error
from dnsproviders.providers.base import DnsProvider, ProviderError, RecordRef, absolute

#: Read-verify-rewrite rounds before giving up (transient) on a record that keeps being overwritten.
MAX_ROUNDS = 8
#: Pause after a write before verifying it: base seconds plus up to the same again at random.
SETTLE_SECONDS = 0.05

_locks_guard = threading.Lock()
_locks: dict[tuple[str, str], threading.Lock] = {}


def _lock_for(key: tuple[str, str]) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _jitter() -> float:
    return 1 + random.random()  # noqa: S311 - spreads retries, nothing secret


def quote_txt(value: str) -> str:
    """TXT content as PowerDNS expects it: one quoted character-string, ``"`` and ``\\`` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_txt(content: str) -> str:
    """The text of a TXT record's content (quoted strings joined, escapes resolved)."""
    content = content.strip()
    if not content.startswith('"'):
        return content
    out, i, inside = [], 0, False
    while i < len(content):
        ch = content[i]
        if ch == '"':
            inside = not inside
        elif inside and ch == "\\" and i + 1 < len(content):
            nxt = content[i + 1 : i + 4]
            if nxt.isdigit() and len(nxt) == 3:
                out.append(chr(int(nxt)))
                i += 3
            else:
                out.append(content[i + 1])
                i += 1
        elif inside:
            out.append(ch)
        i += 1
    return "".join(out)


class _ServerBusy(ProviderError):
    """HTTP 429/5xx: PowerDNS answered but could not do it now (its SQL backend locked, overloaded...)."""


class Provider(DnsProvider):
    kind = "powerdns"

    def __init__(self, credentials: dict, *, timeout: float = 10.0, **context):
        super().__init__(credentials, timeout=timeout, **context)
        try:
            self.base = powerdns_base(str(credentials["api_url"]))
            self.api_key = str(credentials["api_key"])
        except KeyError as exc:
            raise ProviderError(f"PowerDNS credentials lack {exc.args[0]!r}.") from None
        self.server_id = str(credentials.get("server_id") or "localhost")
        self.server_url = f"{self.base}/api/v1/servers/{quote(self.server_id, safe='')}"

    # --- HTTP ----------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        url = self.server_url + path
        with outbound.session() as s:  # OutboundRefused propagates unchanged
            try:
                r = s.request(
                    method,
                    url,
                    headers={"X-API-Key": self.api_key, "Accept": "application/json"},
                    timeout=(self.timeout, self.timeout),
                    allow_redirects=False,
                    **kwargs,
                )
            except requests.RequestException as exc:
                message = request_error("PowerDNS", url, exc, self.timeout).message
                raise ProviderError(self._scrub(message), transient=True) from exc
        if r.status_code < 300:
            return r
        what = f"PowerDNS {method} {url}"
        if 300 <= r.status_code < 400:
            location = excerpt(r.headers.get("Location", "?"), 300)
            raise ProviderError(
                f"{what} answered with a redirect (HTTP {r.status_code}) to {location}: "
                "set the API URL to the final address."
            )
        detail = self._scrub(body_excerpt(r))
        if r.status_code in (401, 403):
            raise ProviderError(f"PowerDNS refused the API key (HTTP {r.status_code}): {detail}")
        if r.status_code == 429 or r.status_code >= 500:
            raise _ServerBusy(f"{what} failed with HTTP {r.status_code}: {detail}", transient=True)
        if r.status_code == 404:
            detail += f" (no server {self.server_id!r} or no such zone there)"
        raise ProviderError(f"{what} was refused with HTTP {r.status_code}: {detail}")

    def _json(self, r: requests.Response, what: str):
        try:
            return r.json()
        except ValueError:
            raise ProviderError(
                f"PowerDNS answered {what} with something that is not JSON: {excerpt(r.text)}"
            ) from None

    def _scrub(self, message: str) -> str:
        return message.replace(self.api_key, "[redacted]") if len(self.api_key) >= 4 else message

    @staticmethod
    def _zone_path(zone: str) -> str:
        return "/zones/" + quote(zone, safe="=.")

    # --- interface -----------------------------------------------------------------------------------

    def find_zone(self, record_name: str) -> str:
        name = absolute(record_name)
        zones = self._json(self._call("GET", "/zones"), "the zone list")
        if not isinstance(zones, list):
            raise ProviderError(f"PowerDNS answered the zone list with {excerpt(str(zones))}")
        best: dict | None = None
        for z in zones:
            zname = absolute(str(z.get("name") or "")) if isinstance(z, dict) else ""
            holds = zname and (name == zname or name.endswith("." + zname))
            if holds and (best is None or len(zname) > len(absolute(best["name"]))):
                best = z
        if best is None:
            raise ProviderError(
                f"No zone on PowerDNS server {self.server_id!r} at {self.base} holds {name} "
                f"({len(zones)} zone(s) there)."
            )
        return str(best.get("id") or best["name"])

    def present(self, record_name: str, value: str, *, zone: str = "", ttl: int = 60) -> RecordRef:
        name = absolute(record_name)
        zone = zone or self.find_zone(name)
        self._converge(zone, name, value, want=True, ttl=ttl)
        return RecordRef(name, value, zone)

    def cleanup(self, ref: RecordRef) -> None:
        name = absolute(ref.record_name)
        zone = ref.zone or self.find_zone(name)
        self._converge(zone, name, ref.value, want=False, ttl=60)

    # --- read-modify-write ---------------------------------------------------------------------------

    def _read(self, zone: str, name: str) -> tuple[list[str], int | None]:
        """The TXT contents (verbatim) at ``name`` and the rrset's TTL."""
        r = self._call("GET", self._zone_path(zone), params={"rrset_name": name, "rrset_type": "TXT"})
        data = self._json(r, f"the zone {zone}")
        for rrset in (data.get("rrsets") or []) if isinstance(data, dict) else []:
            if absolute(str(rrset.get("name", ""))) == name and rrset.get("type") == "TXT":
                contents = [str(rec.get("content", "")) for rec in rrset.get("records") or []]
                return contents, rrset.get("ttl")
        return [], None

    def _write(self, zone: str, name: str, contents: list[str], ttl: int) -> None:
        if contents:
            rrset = {
                "name": name,
                "type": "TXT",
                "ttl": ttl,
                "changetype": "REPLACE",
                "records": [{"content": c, "disabled": False} for c in contents],
            }
        else:
            rrset = {"name": name, "type": "TXT", "changetype": "DELETE"}
        self._call("PATCH", self._zone_path(zone), json={"rrsets": [rrset]})

    def _converge(self, zone: str, name: str, value: str, *, want: bool, ttl: int) -> None:
        """Make ``value`` present (``want``) or absent at ``name``, leaving other values alone."""
        with _lock_for((self.server_url, name)):
            busy: _ServerBusy | None = None
            for round_ in range(MAX_ROUNDS):
                try:
                    contents, current_ttl = self._read(zone, name)
                    has = any(unquote_txt(c) == value for c in contents)
                    if has == want:
                        return
                    if want:
                        new = list(dict.fromkeys([*contents, quote_txt(value)]))
                        new_ttl = ttl
                    else:
                        new = [c for c in contents if unquote_txt(c) != value]
                        new_ttl = int(current_ttl or ttl)
                    self._write(zone, name, new, new_ttl)
                except _ServerBusy as exc:
                    # e.g. gsqlite3's "database is locked" under concurrent writers: back off, try again.
                    busy = exc
                    time.sleep(min(2.0, SETTLE_SECONDS * 2**round_) * _jitter())
                    continue
                time.sleep(SETTLE_SECONDS * _jitter())
            contents, _ = self._read(zone, name)
            if any(unquote_txt(c) == value for c in contents) == want:
                return
            if busy is not None:
                raise busy
        action = "add the value to" if want else "remove the value from"
        raise ProviderError(
            f"Could not {action} the TXT record {name} on PowerDNS: concurrent writers kept replacing it.",
            transient=True,
        )
