"""DNS-01 propagation check: wait until every authoritative name server serves a TXT value.

Pure dnspython, no Django: the caller hands in the resolver, the servers to ask (or None to discover
them) and the address check (``certmgr.outbound.check_host``), so settings stay with the caller.

- :func:`find_zone` finds the zone of a name by an SOA walk (the name, then its parents; an SOA in the
  authority section of a negative answer names the zone at once).
- :func:`resolve_cname_target` follows ``_acme-challenge.<name>`` CNAME chains (CNAME delegation, as with
  acme-dns): the TXT record must be written at the final target.
- :func:`authoritative_servers` lists ``(host, ip, port)`` of the zone's NS set.
- :func:`wait_for_txt` asks every server, with recursion off, until all of them return the value, or
  raises :class:`PropagationTimeout` naming the servers that lacked it.
- :func:`check_delegation` asks the parent zone's servers whether ``_acme-challenge.<name>`` is delegated
  by NS to certmgr's own DNS server (connection kind ``delegated``).
- :func:`servers_from_env` parses ``CERTMGR_DNS_RESOLVERS`` (``host:port,[v6addr]:port``); when that
  variable is set, its list replaces authoritative discovery (split-horizon DNS, tests).

Every network operation is bounded: per-query timeouts, resolver lifetimes and an overall deadline.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver

ENV_VAR = "CERTMGR_DNS_RESOLVERS"
ACME_CHALLENGE_LABEL = "_acme-challenge"
MAX_CNAME_HOPS = 10
DEFAULT_RESOLVER_LIFETIME = 5.0
_MAX_PARALLEL_QUERIES = 16
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\.?$)(?:{_LABEL}\.)*{_LABEL}\.?")

Server = tuple[str, int]  # (ip, port)
AddressCheck = Callable[[str, int], object]  # (ip, port) -> anything; raises to refuse the address


# --- errors ----------------------------------------------------------------------------------------


class PropagationError(Exception):
    """Base of every error of this module; ``str()`` is a message for a person to read."""


class ZoneNotFound(PropagationError):
    """No SOA found for a name or any of its parents (or the NS set / addresses of a zone)."""


class CnameLoop(PropagationError):
    """A ``_acme-challenge`` CNAME chain that loops or is too long."""


class PropagationTimeout(PropagationError):
    """The deadline passed before every server returned the value."""

    def __init__(
        self, record_name: str, value: str, missing: Mapping[str, str], found: Iterable[str], waited: float
    ) -> None:
        self.record_name = record_name
        self.value = value
        self.missing = dict(missing)  # server label -> last reason
        self.found = list(found)
        self.waited = waited
        lacking = "; ".join(f"{label} ({reason})" for label, reason in self.missing.items())
        seen = f" It was seen by: {', '.join(self.found)}." if self.found else ""
        super().__init__(
            f"TXT record {record_name} with value {value!r} was still missing after {waited:.1f}s on "
            f"{len(self.missing)} of {len(self.missing) + len(self.found)} name server(s): {lacking}.{seen}"
        )


# --- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One name server to ask: its address, port and the label used in messages."""

    ip: str
    port: int
    label: str


@dataclass(frozen=True)
class PropagationResult:
    record_name: str
    value: str
    servers: tuple[Server, ...]  # every server asked; all of them returned the value
    labels: tuple[str, ...] = field(default=())
    elapsed: float = 0.0
    rounds: int = 0


# --- helpers ---------------------------------------------------------------------------------------


def _name(name: str | dns.name.Name) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        return name if name.is_absolute() else name.concatenate(dns.name.root)
    try:
        return dns.name.from_text(name.strip())
    except dns.exception.DNSException as exc:
        raise PropagationError(f"Invalid DNS name {name!r}: {exc}") from exc


def _text(name: dns.name.Name) -> str:
    return name.to_text()


def endpoint(ip: str, port: int) -> str:
    """``ip:port``, with IPv6 addresses in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _lifetime(resolver: dns.resolver.Resolver, lifetime: float | None) -> float:
    if lifetime is not None:
        return lifetime
    return getattr(resolver, "lifetime", None) or DEFAULT_RESOLVER_LIFETIME


def _describe(exc: BaseException) -> str:
    if isinstance(exc, dns.resolver.LifetimeTimeout | dns.exception.Timeout):
        return "no answer in time"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no name server would answer (SERVFAIL or REFUSED)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


# --- zone discovery --------------------------------------------------------------------------------


def find_zone(
    name: str, *, resolver: dns.resolver.Resolver, lifetime: float | None = None
) -> tuple[str, list[str]]:
    """The zone that holds ``name`` (by SOA walk) and its name server host names.

    Queries SOA for ``name``, then each parent, until an answer carries an SOA: an SOA in the answer
    section (owner = the zone) or in the authority section of a negative answer (NXDOMAIN / no data).
    """
    qname = _name(name)
    limit = _lifetime(resolver, lifetime)
    candidate = qname
    while True:
        zone = _soa_owner(candidate, resolver, limit)
        if zone is not None:
            break
        if candidate == dns.name.root:
            raise ZoneNotFound(f"No zone found for {_text(qname)}: no SOA record for it or any parent.")
        candidate = candidate.parent()
    return _text(zone), nameservers(_text(zone), resolver=resolver, lifetime=limit)


def _soa_owner(
    candidate: dns.name.Name, resolver: dns.resolver.Resolver, lifetime: float
) -> dns.name.Name | None:
    try:
        answer = resolver.resolve(
            candidate, dns.rdatatype.SOA, raise_on_no_answer=False, lifetime=lifetime, search=False
        )
    except dns.resolver.NXDOMAIN as exc:
        # dnspython leaves NXDOMAIN.responses() unannotated (it returns dict[Name, Message]).
        responses = [r for r in exc.responses().values() if r is not None]  # type: ignore[no-untyped-call]
        return _authority_soa(candidate, responses)
    except dns.resolver.NoNameservers:
        return None  # REFUSED / SERVFAIL for this name: try the parent
    except (dns.resolver.LifetimeTimeout, dns.exception.Timeout) as exc:
        raise ZoneNotFound(f"SOA query for {_text(candidate)} timed out: {_describe(exc)}.") from exc
    except dns.exception.DNSException as exc:
        raise ZoneNotFound(f"SOA query for {_text(candidate)} failed: {_describe(exc)}.") from exc
    if answer.rrset is not None:
        # Only an SOA at the candidate itself counts: behind a CNAME it is another zone's.
        return answer.rrset.name if answer.rrset.name == candidate else None
    return _authority_soa(candidate, [answer.response])


def _authority_soa(
    candidate: dns.name.Name, responses: Iterable[dns.message.Message]
) -> dns.name.Name | None:
    """The owner of an SOA in an authority section, when it is the candidate or one of its parents.

    (A CNAME at the candidate makes the resolver answer for the target, whose zone is not ours.)
    """
    for response in responses:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and candidate.is_subdomain(rrset.name):
                return rrset.name
    return None


def nameservers(zone: str, *, resolver: dns.resolver.Resolver, lifetime: float | None = None) -> list[str]:
    """The NS host names of ``zone`` (absolute, in answer order)."""
    zname = _name(zone)
    try:
        answer = resolver.resolve(
            zname, dns.rdatatype.NS, lifetime=_lifetime(resolver, lifetime), search=False
        )
    except dns.exception.DNSException as exc:
        raise ZoneNotFound(f"Cannot read the NS records of zone {_text(zname)}: {_describe(exc)}.") from exc
    return list(dict.fromkeys(_text(rd.target) for rd in answer))


def authoritative_servers(
    zone: str,
    *,
    resolver: dns.resolver.Resolver,
    port: int = 53,
    address_check: AddressCheck | None = None,
    lifetime: float | None = None,
) -> list[tuple[str, str, int]]:
    """``(host, ip, port)`` for every address of every NS of ``zone``.

    ``address_check(ip, port)`` (e.g. ``certmgr.outbound.check_host``) vets each discovered address; a
    refused address is dropped, and when every address is refused the last refusal is raised as is.
    """
    limit = _lifetime(resolver, lifetime)
    hosts = nameservers(zone, resolver=resolver, lifetime=limit)
    servers: list[tuple[str, str, int]] = []
    refusal: Exception | None = None
    failures: list[str] = []
    for host in hosts:
        addresses: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = resolver.resolve(
                    host, rdtype, raise_on_no_answer=False, lifetime=limit, search=False
                )
            except dns.resolver.NXDOMAIN:
                break
            except dns.exception.DNSException as exc:
                failures.append(f"{host} {dns.rdatatype.to_text(rdtype)}: {_describe(exc)}")
                continue
            if answer.rrset is not None:
                addresses.extend(rd.address for rd in answer.rrset)
        if not addresses:
            failures.append(f"{host}: no address")
        for ip in dict.fromkeys(addresses):
            if address_check is not None:
                try:
                    address_check(ip, port)
                except Exception as exc:  # the caller's refusal type (OutboundRefused)
                    refusal = exc
                    failures.append(f"{host} ({ip}) refused: {exc}")
                    continue
            servers.append((host, ip, port))
    if not servers:
        if refusal is not None:
            raise refusal
        raise ZoneNotFound(
            f"No usable address for the name servers of zone {zone}: {'; '.join(failures) or 'no NS'}."
        )
    return servers


# --- CNAME delegation ------------------------------------------------------------------------------


def challenge_name(name: str) -> str:
    """``_acme-challenge.<name>`` for a domain (a wildcard's ``*.`` is dropped), absolute."""
    text = name.strip().rstrip(".")
    if text.startswith("*."):
        text = text[2:]
    if not text.startswith(ACME_CHALLENGE_LABEL + "."):
        text = f"{ACME_CHALLENGE_LABEL}.{text}"
    return _text(_name(text))


def resolve_cname_target(
    name: str,
    *,
    resolver: dns.resolver.Resolver,
    max_hops: int = MAX_CNAME_HOPS,
    lifetime: float | None = None,
) -> str:
    """Where the TXT record for ``name`` must be written: ``_acme-challenge.<name>`` after its CNAMEs.

    Returns the challenge name itself when it has no CNAME. Raises :class:`CnameLoop` on a loop or a
    chain longer than ``max_hops``, :class:`PropagationError` when a lookup fails.
    """
    limit = _lifetime(resolver, lifetime)
    current = _name(challenge_name(name))
    chain = [current]
    while True:
        try:
            answer = resolver.resolve(
                current, dns.rdatatype.CNAME, raise_on_no_answer=False, lifetime=limit, search=False
            )
        except dns.resolver.NXDOMAIN:
            return _text(current)
        except dns.exception.DNSException as exc:
            raise PropagationError(f"Cannot look up a CNAME at {_text(current)}: {_describe(exc)}.") from exc
        rrset = answer.rrset
        if rrset is None or rrset.rdtype != dns.rdatatype.CNAME:
            return _text(current)
        target = rrset[0].target
        if target in chain:
            path = " -> ".join(_text(n) for n in [*chain, target])
            raise CnameLoop(f"CNAME loop at {_text(chain[0])}: {path}.")
        chain.append(target)
        if len(chain) - 1 > max_hops:
            raise CnameLoop(
                f"CNAME chain from {_text(chain[0])} is longer than {max_hops} hops (... -> {_text(target)})."
            )
        current = target


# --- NS delegation (connection kind "delegated") ---------------------------------------------------


class DelegationMissing(PropagationError):
    """The parent zone does not delegate ``_acme-challenge.<name>`` to certmgr's DNS server."""

    def __init__(self, record_name: str, server_name: str, zone: str, problems: Mapping[str, str]) -> None:
        self.record_name = record_name
        self.server_name = server_name
        self.zone = zone
        self.problems = dict(problems)  # server label -> what it answered
        self.record = f"{record_name} NS {server_name}"
        where = f" in the zone {zone}" if zone else ""
        seen = "; ".join(f"{label}: {why}" for label, why in self.problems.items())
        super().__init__(
            f"{record_name} is not delegated to certmgr's DNS server: create the record "
            f"`{self.record}`{where} ({seen})."
        )


def check_delegation(
    name: str,
    server_name: str,
    *,
    servers: Iterable[Server] | None,
    resolver: dns.resolver.Resolver | None = None,
    address_check: AddressCheck | None = None,
    port: int = 53,
    timeout: float = 2.0,
) -> list[str]:
    """Check that the parent zone's NS answer for ``_acme-challenge.<name>`` names ``server_name``.

    The question goes, recursion off, to the authoritative servers of the zone holding ``<name>`` (found
    as :func:`discover_targets` does, through ``resolver``), or to ``servers`` when given
    (``CERTMGR_DNS_RESOLVERS``). A referral (NS in the authority section) and an authoritative NS answer
    both count. Returns the labels of the servers asked; raises :class:`DelegationMissing` naming the record
    to create when any of them answers without it, :class:`PropagationError` when none can be asked.
    """
    record = challenge_name(name)
    expected = _name(server_name)
    zone = ""
    if servers is None:
        if resolver is None:
            raise PropagationError("check_delegation needs a resolver to find the parent zone's servers.")
        parent = _text(_name(record).parent())
        zone, _ = find_zone(parent, resolver=resolver)
        targets = [
            Target(ip, p, f"{host} ({endpoint(ip, p)})")
            for host, ip, p in authoritative_servers(
                zone, resolver=resolver, port=port, address_check=address_check
            )
        ]
    else:
        targets = []
        for ip, p in servers:
            if address_check is not None:
                address_check(ip, p)
            targets.append(Target(ip, int(p), endpoint(ip, int(p))))
    if not targets:
        raise PropagationError(f"No name server to ask for the delegation of {record}.")
    problems: dict[str, str] = {}
    for target in dict.fromkeys(targets):
        why = _delegation_answer(record, expected, target, timeout)
        if why:
            problems[target.label] = why
    if problems:
        raise DelegationMissing(record, _text(expected), zone, problems)
    return [t.label for t in targets]


def _delegation_answer(record: str, expected: dns.name.Name, target: Target, timeout: float) -> str:
    """ "" when ``target`` delegates ``record`` to ``expected``; else what it answered instead."""
    qname = _name(record)
    query = dns.message.make_query(qname, dns.rdatatype.NS)
    query.flags &= ~dns.flags.RD
    try:
        response, _ = dns.query.udp_with_fallback(query, target.ip, timeout=timeout, port=target.port)
    except dns.exception.Timeout:
        return f"no answer within {timeout:.3g}s"
    except (OSError, EOFError, dns.exception.DNSException) as exc:
        return _describe(exc)
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return "no such name (NXDOMAIN)"
    if rcode != dns.rcode.NOERROR:
        return f"answered {dns.rcode.to_text(rcode)}"
    cname = response.get_rrset(response.answer, qname, dns.rdataclass.IN, dns.rdatatype.CNAME)
    if cname is not None:
        return f"a CNAME to {_text(cname[0].target)}, not an NS delegation"
    for section in (response.answer, response.authority):
        ns = response.get_rrset(section, qname, dns.rdataclass.IN, dns.rdatatype.NS)
        if ns is not None:
            hosts = [rd.target for rd in ns]
            if expected in hosts:
                return ""
            return "NS " + ", ".join(_text(h) for h in hosts)
    return "no NS record"


# --- CERTMGR_DNS_RESOLVERS -------------------------------------------------------------------------


def servers_from_env(value: str) -> list[Server]:
    """Parse ``host:port,[v6addr]:port,...`` into ``(ip, port)`` pairs.

    The port defaults to 53 when left out; a bare IPv6 address is accepted too. Host names are resolved
    with the system resolver (``/etc/hosts`` included). Raises ValueError naming the bad entry.
    """
    servers: list[Server] = []
    for raw in (value or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, port = _split_host_port(entry)
        for ip in _addresses(host, port, entry):
            if (ip, port) not in servers:
                servers.append((ip, port))
    return servers


def servers_from_environ(environ: Mapping[str, str] | None = None) -> list[Server] | None:
    """The servers of ``CERTMGR_DNS_RESOLVERS``, or None when it is unset or blank."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return servers_from_env(value) if value.strip() else None


def _bad(entry: str, why: str) -> ValueError:
    return ValueError(f"{ENV_VAR}: invalid entry {entry!r}: {why} (expected host:port or [ipv6]:port)")


def _split_host_port(entry: str) -> tuple[str, int]:
    port_text = None
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0:
            raise _bad(entry, "missing ']'")
        host, rest = entry[1:close], entry[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise _bad(entry, "unexpected text after ']'")
            port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(entry, f"{host!r} is not an IPv6 address") from None
    elif entry.count(":") > 1:
        try:
            ipaddress.IPv6Address(entry)
        except ValueError:
            raise _bad(entry, "IPv6 addresses with a port must be written [addr]:port") from None
        host = entry
    elif ":" in entry:
        host, port_text = entry.split(":", 1)
    else:
        host = entry
    if not host:
        raise _bad(entry, "empty host")
    if port_text is None:
        return host, 53
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(entry, f"port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _addresses(host: str, port: int, entry: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host):
        raise _bad(entry, f"{host!r} is not a host name")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _bad(entry, f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


# --- the check -------------------------------------------------------------------------------------


def discover_targets(
    record_name: str,
    *,
    resolver: dns.resolver.Resolver,
    port: int = 53,
    address_check: AddressCheck | None = None,
    lifetime: float | None = None,
) -> list[Target]:
    """The authoritative servers of the zone holding ``record_name``, labelled ``host (ip:port)``."""
    zone, _ = find_zone(record_name, resolver=resolver, lifetime=lifetime)
    return [
        Target(ip, p, f"{host} ({endpoint(ip, p)})")
        for host, ip, p in authoritative_servers(
            zone, resolver=resolver, port=port, address_check=address_check, lifetime=lifetime
        )
    ]


def query_txt(record_name: str, ip: str, port: int, *, timeout: float) -> tuple[list[str] | None, str]:
    """TXT strings at ``record_name`` on one server, recursion off: ``(strings, "")`` or ``(None, why)``.

    CNAMEs inside the answer are followed (as a validating CA would), within the one response.
    """
    qname = _name(record_name)
    query = dns.message.make_query(qname, dns.rdatatype.TXT)
    query.flags &= ~dns.flags.RD
    try:
        response, _ = dns.query.udp_with_fallback(query, ip, timeout=timeout, port=port)
    except dns.exception.Timeout:
        return None, f"no answer within {timeout:.3g}s"
    except (OSError, EOFError) as exc:
        return None, exc.strerror if isinstance(exc, OSError) and exc.strerror else _describe(exc)
    except dns.exception.DNSException as exc:
        return None, f"unreadable answer: {_describe(exc)}"
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return [], "NXDOMAIN"
    if rcode != dns.rcode.NOERROR:
        return None, f"answered {dns.rcode.to_text(rcode)}"
    name, seen = qname, {qname}
    while True:
        cname = response.get_rrset(response.answer, name, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None or cname[0].target in seen:
            break
        name = cname[0].target
        seen.add(name)
    txt = response.get_rrset(response.answer, name, dns.rdataclass.IN, dns.rdatatype.TXT)
    if txt is None:
        if not response.flags & dns.flags.AA and not response.answer:
            return [], "no TXT record (not authoritative: a referral or an empty answer)"
        return [], "no TXT record"
    return [b"".join(rd.strings).decode("utf-8", "replace") for rd in txt], ""


def wait_for_txt(
    record_name: str,
    value: str,
    *,
    servers: Iterable[Server] | None,
    resolver: dns.resolver.Resolver | None = None,
    timeout: float = 2.0,
    interval: float = 2.0,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    address_check: AddressCheck | None = None,
    port: int = 53,
    max_wait: float = 120.0,
) -> PropagationResult:
    """Ask every server (recursion off) until each returns ``value`` among the TXT strings of ``record_name``.

    - ``servers``: ``(ip, port)`` pairs (e.g. :func:`servers_from_env`); None discovers the authoritative
      servers of the record's zone through ``resolver`` (name servers on ``port``).
    - ``address_check(ip, port)`` vets every server address (explicit or discovered); raises to refuse.
    - ``timeout``: per query; ``interval``: pause between rounds; ``deadline``: an absolute time on
      ``clock`` after which :class:`PropagationTimeout` is raised (default: ``clock() + max_wait``).

    Servers are asked in parallel each round; a server that returned the value is not asked again.
    """
    start = clock()
    end = deadline if deadline is not None else start + max_wait
    if servers is None:
        if resolver is None:
            raise PropagationError("wait_for_txt needs a resolver to discover the authoritative servers.")
        targets = discover_targets(
            record_name,
            resolver=resolver,
            port=port,
            address_check=address_check,
            lifetime=max(0.1, min(_lifetime(resolver, None), end - clock())),
        )
    else:
        targets = []
        for ip, p in servers:
            if address_check is not None:
                address_check(ip, p)
            targets.append(Target(ip, int(p), endpoint(ip, int(p))))
    targets = list(dict.fromkeys(targets))
    if not targets:
        raise PropagationError(f"No name server to ask for {record_name}.")

    record = _text(_name(record_name))
    pending = list(targets)
    reasons: dict[Target, str] = {t: "not asked before the deadline" for t in targets}
    rounds = 0
    with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL_QUERIES, len(targets))) as pool:
        while True:
            remaining = end - clock()
            if remaining <= 0:
                break
            per_query = max(0.05, min(timeout, remaining))
            rounds += 1
            results = list(
                pool.map(lambda t, q=per_query: query_txt(record, t.ip, t.port, timeout=q), pending)
            )
            still = []
            for target, (strings, why) in zip(pending, results, strict=True):
                if strings is not None and value in strings:
                    reasons.pop(target, None)
                    continue
                if strings:
                    why = f"other value(s): {', '.join(repr(s) for s in strings[:3])}"
                reasons[target] = why or "no TXT record"
                still.append(target)
            pending = still
            if not pending:
                return PropagationResult(
                    record_name=record,
                    value=value,
                    servers=tuple((t.ip, t.port) for t in targets),
                    labels=tuple(t.label for t in targets),
                    elapsed=clock() - start,
                    rounds=rounds,
                )
            remaining = end - clock()
            if remaining <= 0:
                break
            sleep(min(interval, remaining))
    found = [t.label for t in targets if t not in pending]
    raise PropagationTimeout(
        record, value, {t.label: reasons[t] for t in pending}, found, max(0.0, clock() - start)
    )


__all__ = [
    "ENV_VAR",
    "CnameLoop",
    "DelegationMissing",
    "PropagationError",
    "PropagationResult",
    "PropagationTimeout",
    "Server",
    "Target",
    "ZoneNotFound",
    "authoritative_servers",
    "challenge_name",
    "check_delegation",
    "discover_targets",
    "endpoint",
    "find_zone",
    "nameservers",
    "query_txt",
    "resolve_cname_target",
    "servers_from_env",
    "servers_from_environ",
    "wait_for_txt",
]
