"""The outbound guard: certmgr reaches only public addresses on behalf of what a user typed.

Endpoints typed by users (PowerDNS and acme-dns URLs, RFC 2136 servers, later ACME directories and
webhooks) could point at loopback, the private network or a cloud metadata service (SSRF). Every such
call resolves the host itself, drops addresses that are not globally routable unless their network is
listed in ``CERTMGR_OUTBOUND_ALLOWED_NETWORKS``, and connects to a vetted address only, so a DNS
answer that changes between check and connect (rebinding) gains nothing.

A caller with its own allow-list names its setting (``setting=``): the ACME server's validator
(``CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS``) and single sign-on (``CERTMGR_OIDC_ALLOWED_NETWORKS``), so an
operator opens an internal network to one purpose only, and a refusal names the setting that would allow it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

import requests
import urllib3.connection
import urllib3.connectionpool
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager

from certmgr.errors import OutboundRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SETTING = "CERTMGR_OUTBOUND_ALLOWED_NETWORKS"


@cache
def _allowed_networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def allowed_networks(setting: str = SETTING) -> tuple:
    """The networks beyond the public internet that the allow-list ``setting`` opens (read on every call,
    so a changed setting applies to the next connection)."""
    return _allowed_networks(tuple(getattr(settings, setting)))


# Special-purpose ranges Python's ``is_global`` still calls global (3.11), and the IPv6 forms that carry an
# IPv4 address inside them (6to4, Teredo, NAT64): the embedded address decides.
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(net)
    for net in ("192.0.0.0/24", "192.88.99.0/24", "100.64.0.0/10", "198.18.0.0/15", "2001:db8::/32")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # (server, client): the client is where packets go
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal_reason(ip: IPAddress, allowed: Iterable = ()) -> str | None:
    """Why ``ip`` may not be reached, or None when it may."""
    allowed = tuple(allowed)
    if any(ip in net for net in allowed):
        return None
    inner = _embedded_ipv4(ip)
    if inner is not None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return refusal_reason(inner, allowed)
        reason = refusal_reason(inner, allowed)
        return f"an IPv6 address carrying {reason}" if reason else None
    if any(ip in net for net in _NOT_PUBLIC):
        return "not a public address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "not a public address"
    return None


def vetted_addresses(host: str, port: int, *, setting: str = SETTING) -> list[tuple]:
    """Resolve ``host`` and return the getaddrinfo entries that the allow-list ``setting`` lets us connect to.

    Raises OutboundRefused naming the setting when every address is refused.
    """
    allowed = allowed_networks(setting)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundRefused(f"cannot resolve host {host!r}: {exc.strerror or exc}") from exc
    usable: list[tuple[Any, ...]] = []
    refused: list[str] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        reason = refusal_reason(ip, allowed)
        if reason:
            refused.append(reason)
        else:
            usable.append(info)
    if not usable:
        # The reason, not the address: a refusal must not tell the caller what a name resolves to inside.
        raise OutboundRefused(
            f"refusing to connect to {host!r}: it resolves to {' and '.join(dict.fromkeys(refused))}. "
            f"Add the network to {setting} to allow it."
        )
    return usable


def check_host(host: str, port: int = 0) -> list[str]:
    """Vet a host for non-HTTP protocols (DNS); returns the IP addresses to use, in resolver order."""
    return list(dict.fromkeys(info[4][0] for info in vetted_addresses(host, port or 53)))


def create_connection(
    host: str, port: int, timeout=None, source_address=None, socket_options=None, *, setting: str = SETTING
):
    """socket.create_connection, but only to addresses vetted under the allow-list ``setting``."""
    last_error: OSError | None = None
    for family, socktype, proto, _, sockaddr in vetted_addresses(host, port, setting=setting):
        sock = socket.socket(family, socktype, proto)
        try:
            for opt in socket_options or ():
                sock.setsockopt(*opt)
            # typeshed leaves out the (private, real) sentinel that urllib3 passes for "no timeout".
            if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            last_error = exc
            sock.close()
    raise last_error or OSError(f"cannot connect to {host}:{port}")


if TYPE_CHECKING:
    from requests import PreparedRequest, Response

    _Connection = urllib3.connection.HTTPConnection  # the mixin goes in front of one
else:
    _Connection = object


class _GuardedConnectionMixin(_Connection):
    setting: str = SETTING  # the allow-list (see ``session(setting=)``)

    def _new_conn(self):
        try:
            return create_connection(
                self._dns_host,
                self.port,
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
                setting=self.setting,
            )
        except OutboundRefused:
            raise
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc


class GuardedHTTPConnection(_GuardedConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _GuardedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


@cache
def _pool_classes(setting: str) -> dict[str, type]:
    """The pool classes of a guard under the allow-list ``setting`` (subclasses that carry it to the
    connections), made once per setting."""
    if setting == SETTING:
        return {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
    pools: dict[str, type] = {}
    for scheme, pool, conn in (
        ("http", _GuardedHTTPPool, GuardedHTTPConnection),
        ("https", _GuardedHTTPSPool, GuardedHTTPSConnection),
    ):
        connection = type(conn.__name__, (conn,), {"setting": setting})
        pools[scheme] = type(pool.__name__, (pool,), {"ConnectionCls": connection})
    return pools


class GuardedAdapter(HTTPAdapter):
    def __init__(self, *args: Any, setting: str = SETTING, **kwargs: Any) -> None:
        self._pools = _pool_classes(setting)  # before HTTPAdapter.__init__, which makes the pool manager
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        self.poolmanager = PoolManager(num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pools)

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        try:
            return super().send(request, *args, **kwargs)
        except requests.ConnectionError as exc:
            # urllib3 wraps our refusal; hand the clear one back to the caller.
            cause = exc.__context__
            while cause is not None:
                if isinstance(cause, OutboundRefused):
                    raise cause from None
                cause = cause.__context__
            raise


def session(*, setting: str = SETTING) -> requests.Session:
    """A requests session for user-typed URLs: guarded, no proxies from the environment. ``setting``: the
    allow-list of the CIDRs it may reach beyond the public internet."""
    s = requests.Session()
    s.trust_env = False  # an HTTPS_PROXY in the environment would connect for us, unguarded
    adapter = GuardedAdapter(max_retries=0, setting=setting)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = "certmgr/0.1"
    return s
