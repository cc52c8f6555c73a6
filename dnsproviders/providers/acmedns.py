"""acme-dns DNS-01 provider (connection kind ``acme-dns``).

acme-dns serves the TXT values of one registered subdomain; the user delegates with a CNAME
``_acme-challenge.<domain>. CNAME <subdomain>.<acme-dns zone>.`` (see :func:`required_cname`). ``present``
calls the update API; acme-dns keeps the two most recent values of a subdomain, so an apex and its
wildcard validate together (a third concurrent value would push out the oldest). There is nothing to
remove: ``cleanup`` is a no-op, and ``find_zone`` returns "" (acme-dns has no zones to choose from).

The API URL is user-typed: requests go through :func:`certmgr.outbound.session`, and
:class:`~certmgr.errors.OutboundRefused` propagates unchanged.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from certmgr import outbound
from dnsproviders.connection_checks import body_excerpt, network_reason
from dnsproviders.providers.base import DnsProvider, ProviderError, RecordRef, absolute


def cname_target(credentials: dict, fulldomain: str | None = None) -> str:
    """Where the ``_acme-challenge`` CNAME points: acme-dns's ``fulldomain`` when known.

    acme-dns's registration answers ``fulldomain`` (``<subdomain>.<acme-dns zone>``). When neither the
    argument nor the credentials carry it, it is derived as ``<subdomain>.<host of api_url>``: the usual
    acme-dns setup serves its API on the host name of its own zone (``auth.example.org``). That is a
    guess, so the admin should show it as such when it was derived.
    """
    full = fulldomain or credentials.get("fulldomain")
    if not full:
        host = (urlsplit(str(credentials.get("api_url") or "").strip()).hostname or "").lower()
        full = f"{credentials.get('subdomain', '')}.{host}"
    return absolute(str(full))


def required_cname(record_name: str, credentials: dict, fulldomain: str | None = None) -> tuple[str, str]:
    """The CNAME the user must create: (``_acme-challenge.<domain>.``, ``<subdomain>.<acme-dns zone>.``)."""
    return absolute(record_name), cname_target(credentials, fulldomain)


class Provider(DnsProvider):
    kind = "acme-dns"

    def find_zone(self, record_name: str) -> str:
        return ""

    def present(self, record_name: str, value: str, *, zone: str = "", ttl: int = 60) -> RecordRef:
        c = self.credentials
        url = f"{str(c['api_url']).strip().rstrip('/')}/update"
        headers = {"X-Api-User": c["username"], "X-Api-Key": c["password"]}
        body = {"subdomain": c["subdomain"], "txt": value}
        with outbound.session() as s:  # OutboundRefused propagates
            try:
                r = s.post(
                    url,
                    headers=headers,
                    json=body,
                    timeout=(self.timeout, self.timeout),
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                raise ProviderError(
                    f"acme-dns update at {url} failed: {network_reason(exc)}", transient=True
                ) from exc
        if r.is_redirect or 300 <= r.status_code < 400:
            raise ProviderError(
                f"acme-dns answered with a redirect (HTTP {r.status_code}) to "
                f"{r.headers.get('Location', '?')}: set the final URL in the connection"
            )
        if r.status_code in (401, 403):
            raise ProviderError(
                f"acme-dns refused the credentials (HTTP {r.status_code}: {body_excerpt(r)}): wrong "
                "username or password, a subdomain that is not this account's, or an allowfrom list that "
                "excludes certmgr"
            )
        if r.status_code != 200:
            transient = r.status_code == 429 or r.status_code >= 500
            raise ProviderError(
                f"acme-dns answered HTTP {r.status_code}: {body_excerpt(r)}", transient=transient
            )
        return RecordRef(absolute(record_name), value, "", {"cname_target": cname_target(c)})

    def cleanup(self, ref: RecordRef) -> None:
        """Nothing to remove: acme-dns keeps only the two latest values and rotates ours out."""
