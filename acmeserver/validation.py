"""The ACME server's challenge validator: certmgr itself checks what a client claims (RFC 8555 §8).

- ``http-01`` (§8.3): ``GET http://<name>:<CERTMGR_ACME_VALIDATION_HTTP_PORT>/.well-known/acme-challenge/
  <token>`` at each address of the name (A and AAAA, from ``CERTMGR_ACME_VALIDATION_RESOLVERS`` or the
  system's resolver), through the outbound guard with the validator's own allow-list
  (``CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS``: a private CA validates internal names, and the list says
  which networks those are); no redirects are followed; the body must be the key authorization.
- ``tls-alpn-01`` (RFC 8737): a TLS handshake with each address of the name at
  ``CERTMGR_ACME_VALIDATION_TLS_PORT`` (443), through the same allow-list, offering only ``acme-tls/1`` with
  the name as SNI (an IP identifier's in-addr.arpa / ip6.arpa name, RFC 8738 §6); the checks of the
  certificate presented are the Django-free ``acmeserver.tlsalpn``.
- ``dns-01`` (§8.4): the TXT records at ``_acme-challenge.<name>`` from the configured resolvers (or the
  system's) must hold base64url(SHA-256(key authorization)).

Every attempt is recorded (what was asked, of which address or server, what came back, how long it took)
and ends in an ``Outcome``: valid, or the RFC problem (``connection``, ``dns``, ``incorrectResponse``,
``unauthorized``) with a detail for people.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.resolver
import requests
from django.conf import settings

from acmeserver import jws, tlsalpn
from acmeserver.problems import AcmeProblem
from certmgr import outbound
from certmgr.errors import OutboundRefused
from dnsproviders import propagation

SETTING = "CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS"
MAX_BODY = 8192  # a key authorization is ~90 bytes; read no more than this of an answer


@dataclass
class Outcome:
    problem: AcmeProblem | None = None
    record: list[dict[str, Any]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.problem is None


def _resolver() -> dns.resolver.Resolver:
    servers = propagation.servers_from_env(settings.CERTMGR_ACME_VALIDATION_RESOLVERS)
    if not servers:
        resolver = dns.resolver.Resolver()
    else:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [ip for ip, _ in servers]
        resolver.port = servers[0][1]
        resolver.nameserver_ports = {ip: port for ip, port in servers}
    resolver.lifetime = resolver.timeout = settings.CERTMGR_ACME_VALIDATION_TIMEOUT
    return resolver


def resolver() -> dns.resolver.Resolver:
    """The validator's resolver, for the other checks of a name (CAA at finalize)."""
    return _resolver()


def _where() -> str:
    return settings.CERTMGR_ACME_VALIDATION_RESOLVERS or "the system resolver"


def addresses(name: str) -> list[str]:
    """The addresses of ``name`` (IPv6 first, as the ACME CAs try them); an IP identifier is itself."""
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    if not settings.CERTMGR_ACME_VALIDATION_RESOLVERS:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise AcmeProblem("dns", f"cannot resolve {name}: {exc.strerror or exc}") from None
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        return sorted(found, key=lambda ip: ":" not in ip)
    resolver, found, errors = _resolver(), [], []
    for rtype in ("AAAA", "A"):
        try:
            found += [r.to_text() for r in resolver.resolve(name, rtype)]
        except dns.resolver.NoAnswer:
            continue
        except dns.exception.DNSException as exc:
            errors.append(f"{rtype}: {exc}")
    if not found:
        why = "; ".join(errors) or "no A or AAAA record"
        raise AcmeProblem("dns", f"cannot resolve {name} at {_where()}: {why}")
    return found


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def http01(name: str, token: str, jwk: dict[str, Any]) -> Outcome:
    expected = jws.key_authorization(token, jwk)
    port = settings.CERTMGR_ACME_VALIDATION_HTTP_PORT
    path = f"/.well-known/acme-challenge/{token}"
    outcome = Outcome()
    try:
        ips = addresses(name)
    except AcmeProblem as exc:
        outcome.problem = exc
        outcome.record.append({"hostname": name, "error": exc.detail})
        return outcome
    allowed = outbound.allowed_networks(SETTING)
    problems: list[AcmeProblem] = []
    host = _url_host(name)  # an IPv6 identifier in brackets (RFC 8738 §6)
    with outbound.session(setting=SETTING) as session:
        session.headers["User-Agent"] = "certmgr-acme-validator/0.1"
        for ip in ips:
            url = f"http://{host}:{port}{path}"
            entry: dict[str, Any] = {"url": url, "hostname": name, "address": ip, "port": port}
            outcome.record.append(entry)
            refused = _refused(name, ip, allowed, entry)
            if refused:
                problems.append(refused)
                continue
            started = time.monotonic()
            try:
                response = session.get(
                    f"http://{_url_host(ip)}:{port}{path}",
                    headers={"Host": host if port == 80 else f"{host}:{port}"},
                    timeout=settings.CERTMGR_ACME_VALIDATION_TIMEOUT,
                    allow_redirects=False,
                    stream=True,
                )
                body = response.raw.read(MAX_BODY + 1, decode_content=True)
                response.close()
            except (requests.RequestException, OutboundRefused, OSError) as exc:
                entry["error"] = str(exc)[:500]
                entry["duration_ms"] = round((time.monotonic() - started) * 1000)
                problems.append(AcmeProblem("connection", f"fetching {url} from {ip}: {_short(exc)}"))
                continue
            entry.update(status=response.status_code, duration_ms=round((time.monotonic() - started) * 1000))
            text = body[:MAX_BODY].decode("utf-8", "replace")
            entry["body"] = text[:200]
            if response.status_code != 200:
                outcome.problem = AcmeProblem(
                    "unauthorized", f"{url} (at {ip}) answered HTTP {response.status_code}, not 200"
                )
                return outcome
            if text.strip() != expected:
                outcome.problem = AcmeProblem(
                    "incorrectResponse",
                    f"{url} (at {ip}) answered {text.strip()[:100]!r}, "
                    f"not the key authorization {expected!r}",
                )
                return outcome
            return outcome  # valid
    outcome.problem = _combined(problems)
    return outcome


def _refused(name: str, ip: str, allowed: tuple, entry: dict[str, Any]) -> AcmeProblem | None:
    """The outbound guard's answer for one address of ``name`` (the validator's own allow-list)."""
    reason = outbound.refusal_reason(ipaddress.ip_address(ip), allowed)
    if not reason:
        return None
    entry["error"] = f"refused: {reason}"
    return AcmeProblem(
        "connection",
        f"{name} resolves to {reason}, which this server may not connect to "
        f"(the operator lists such networks in {SETTING})",
    )


def _combined(problems: list[AcmeProblem]) -> AcmeProblem:
    if len(problems) == 1:
        return problems[0]
    return AcmeProblem("connection", "; ".join(p.detail for p in problems), subproblems=problems)


def tlsalpn01(name: str, token: str, jwk: dict[str, Any]) -> Outcome:
    """RFC 8737: each address in turn until one answers the handshake; its certificate decides."""
    key_authorization = jws.key_authorization(token, jwk)
    port = settings.CERTMGR_ACME_VALIDATION_TLS_PORT
    outcome = Outcome()
    try:
        ips = addresses(name)
    except AcmeProblem as exc:
        outcome.problem = exc
        outcome.record.append({"hostname": name, "error": exc.detail})
        return outcome
    allowed = outbound.allowed_networks(SETTING)
    problems: list[AcmeProblem] = []
    for ip in ips:
        entry: dict[str, Any] = {
            "hostname": name,
            "address": ip,
            "port": port,
            "sni": tlsalpn.server_name(name),
            "alpn_offered": tlsalpn.ALPN,
        }
        outcome.record.append(entry)
        refused = _refused(name, ip, allowed, entry)
        if refused:
            problems.append(refused)
            continue
        started = time.monotonic()
        try:
            seen = tlsalpn.validate(
                ip, port, name, key_authorization, timeout=settings.CERTMGR_ACME_VALIDATION_TIMEOUT
            )
        except tlsalpn.TlsAlpnError as exc:
            entry["duration_ms"] = round((time.monotonic() - started) * 1000)
            entry["error"] = exc.detail[:500]
            if exc.seen is not None:
                entry.update(exc.seen.record())
            problem = AcmeProblem(exc.problem, f"{name} (at {tlsalpn._where(ip, port)}): {exc.detail}")
            if exc.problem == "connection":
                problems.append(problem)
                continue  # no answer here: the next address may give one
            outcome.problem = problem
            return outcome
        entry.update(seen.record(), duration_ms=round((time.monotonic() - started) * 1000))
        return outcome  # valid
    outcome.problem = _combined(problems)
    return outcome


def dns01(name: str, token: str, jwk: dict[str, Any]) -> Outcome:
    expected = jws.dns01_value(token, jwk)
    record_name = f"_acme-challenge.{name}"
    entry: dict[str, Any] = {"record": record_name, "resolvers": _where(), "expected": expected}
    outcome = Outcome(record=[entry])
    started = time.monotonic()
    try:
        answer = _resolver().resolve(record_name, "TXT")
        values = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
    except dns.resolver.NXDOMAIN:
        values, error = [], f"{record_name} does not exist"
    except dns.resolver.NoAnswer:
        values, error = [], f"{record_name} has no TXT record"
    except dns.exception.DNSException as exc:
        entry.update(error=str(exc), duration_ms=round((time.monotonic() - started) * 1000))
        outcome.problem = AcmeProblem("dns", f"TXT lookup of {record_name} at {_where()} failed: {exc}")
        return outcome
    else:
        error = ""
    entry.update(values=values[:20], duration_ms=round((time.monotonic() - started) * 1000))
    if expected in values:
        return outcome
    outcome.problem = AcmeProblem(
        "unauthorized" if values else "dns",
        error or f"no TXT record at {record_name} holds {expected!r} (found {', '.join(values[:5])})",
    )
    if error:
        entry["error"] = error
    return outcome


def validate(challenge_type: str, name: str, token: str, jwk: dict[str, Any]) -> Outcome:
    if challenge_type == "http-01":
        return http01(name, token, jwk)
    if challenge_type == "dns-01":
        return dns01(name, token, jwk)
    if challenge_type == "tls-alpn-01":
        return tlsalpn01(name, token, jwk)
    return Outcome(problem=AcmeProblem("malformed", f"challenge type {challenge_type} is not validated here"))


def _short(exc: BaseException) -> str:
    """The innermost reason of a requests error (urllib3 wraps it several times)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        nxt = exc.__cause__ or exc.__context__
        assert nxt is not None
        exc = nxt
    return str(exc)[:300]
