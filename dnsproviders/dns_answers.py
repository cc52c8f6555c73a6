"""The answers of certmgr's own authoritative DNS server (delegated DNS-01), and its rate limiter.

Pure dnspython, no Django: ``manage.py dns_server`` hands in a :class:`Snapshot` of the database (the live
challenge values and the delegated names), the server's own name, and the packets it received.

An operator delegates ``_acme-challenge.<name>`` with ``_acme-challenge.<name>. NS <certmgr's DNS name>``;
each such name is a zone here (its apex), with:

- SOA and NS at the apex (the NS names certmgr's server; the SOA's minimum, the negative TTL, is short so
  a CA never caches "no value" for long), TXT at the apex with the live challenge values, NODATA (SOA in the
  authority section) for other types or when no challenge is live, NXDOMAIN (SOA too) below the apex;
- REFUSED for every name outside those zones, for classes other than IN and for zone transfers;
- AA set on every authoritative answer, RA never (no recursion);
- EDNS(0): answered with an OPT record (payload 1232) when the query had one; EDNS versions above 0 get
  BADVERS; UDP answers larger than the client's payload (512 without EDNS) are truncated (TC=1);
- garbage: FORMERR when the header can be read, nothing when it cannot; packets with QR=1 (responses) are
  never answered. :func:`answer` never raises.

Rendering with dnspython costs about 0.3 ms an answer; a snapshot therefore keeps the answers it rendered by
question (lower-cased, with the RD, EDNS version, payload and transport that shape them), and a plain query
it has answered before gets the cached bytes with its own ID, RD bit and question spliced in (the letter case
of the question is the client's, as 0x20 resolvers check). Anything that is not a plain query goes through
dnspython every time.

:class:`RateLimiter` is response rate limiting per client address (a token bucket): over the limit a
query is dropped, except every ``slip``-th, which gets an empty truncated answer (TC=1) so a real
resolver behind a spoofed or busy address retries over TCP.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rrset

ACME_LABEL = b"_acme-challenge"
EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size: no IP fragmentation
NEGATIVE_TTL = 5  # SOA minimum and TTL: how long "no such value" may be cached
NS_TTL = 300
UDP_PLAIN_MAX = 512
MAX_CACHED = 10_000  # rendered answers kept per snapshot
_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_TC = 0x0200


@dataclass(frozen=True)
class Snapshot:
    """What the database says, at ``serial``: the delegated zone apexes and the live TXT values.

    ``zones`` and the keys of ``txt`` are absolute, lower-case names in text form
    (``_acme-challenge.example.com.``); values are ``(value, ttl)``.
    """

    zones: frozenset[str]
    txt: Mapping[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    serial: int = 1
    # Rendered answers of this snapshot by question (see ``answer``): a snapshot is replaced, never changed.
    responses: dict[tuple[bytes, int, bytes, bool], bytes] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(
        cls, zones: Iterable[str], values: Iterable[tuple[str, str, int]], *, serial: int | None = None
    ) -> Snapshot:
        """From delegated names and ``(name, value, ttl)`` rows; a name with a value is a zone as well."""
        txt: dict[str, list[tuple[str, int]]] = {}
        for name, value, ttl in values:
            txt.setdefault(canonical(name), []).append((value, int(ttl)))
        all_zones = {canonical(z) for z in zones} | set(txt)
        return cls(
            zones=frozenset(all_zones),
            txt={k: tuple(sorted(set(v))) for k, v in txt.items()},
            serial=int(time.time()) % 2**32 if serial is None else serial,
        )


def canonical(name: str) -> str:
    text = name.strip().lower()
    return text if text.endswith(".") else text + "."


@dataclass(frozen=True)
class Identity:
    """The server's own name (the NS target and the SOA's primary) and the SOA's mailbox."""

    server_name: dns.name.Name
    hostmaster: dns.name.Name

    @classmethod
    def of(cls, server_name: str) -> Identity:
        name = dns.name.from_text(canonical(server_name))
        return cls(name, dns.name.Name((b"hostmaster", *name.labels)))


def zone_of(qname: dns.name.Name, zones: frozenset[str]) -> dns.name.Name | None:
    """The deepest delegated apex at or above ``qname`` (an apex starts with ``_acme-challenge``)."""
    labels = qname.labels
    for i in range(len(labels) - 1):
        if labels[i].lower() == ACME_LABEL:
            candidate = dns.name.Name(labels[i:])
            if candidate.to_text().lower() in zones:
                return candidate
    return None


# --- answering -------------------------------------------------------------------------------------


def answer(
    wire: bytes,
    snapshot: Snapshot | None,
    identity: Identity,
    *,
    tcp: bool = False,
    truncate: bool = False,
) -> bytes | None:
    """The response to the packet ``wire``, or None to stay silent. Never raises.

    ``snapshot`` None means the database could not be read lately: in-zone questions get SERVFAIL.
    ``truncate``: the rate limiter's slip, an empty answer with TC=1.
    """
    try:
        if snapshot is not None and not truncate:
            key = _cache_key(wire, tcp)
            if key is not None:
                cached = snapshot.responses.get(key[0])
                if cached is None:
                    cached = _answer(wire, snapshot, identity, tcp=tcp, truncate=False)
                    # FORMERR depends on what the key leaves out (EDNS options): never cached.
                    full = len(snapshot.responses) >= MAX_CACHED
                    if cached is None or full or cached[3] & 0x0F == dns.rcode.FORMERR:
                        return cached
                    snapshot.responses[key[0]] = cached
                # The query's own ID, RD bit and question (its letter case: 0x20), then the cached rest.
                flags = (cached[2] & 0xFE) | (wire[2] & 0x01)
                return (
                    wire[:2] + bytes([flags]) + cached[3:12] + wire[12 : 12 + key[1]] + cached[12 + key[1] :]
                )
        return _answer(wire, snapshot, identity, tcp=tcp, truncate=truncate)
    except Exception:  # a parser or renderer corner dnspython raises on: answer as for garbage
        return _formerr(wire)


def _cache_key(wire: bytes, tcp: bool) -> tuple[tuple[bytes, int, bytes, bool], int] | None:
    """For a plain query (one question, no compression, at most an OPT record, nothing after it): a key
    that determines the whole answer but its ID, RD bit and question's case, and the question's length.
    None for anything else: dnspython reads those."""
    if len(wire) < 17:
        return None
    flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHHH", wire, 2)
    if flags & 0xF800 or qdcount != 1 or ancount or nscount or arcount > 1:
        return None  # a response, another opcode, or sections a query does not carry
    end, labels = 12, 0
    while True:
        length = wire[end]
        if length == 0:
            end += 1
            break
        if length > 63 or labels > 127:
            return None  # a compression pointer or an impossible name
        end += 1 + length
        labels += 1
        if end >= len(wire):
            return None
    question_end = end + 4
    if question_end - 12 > 259 or question_end > len(wire):
        return None
    edns = b""
    if arcount:
        # OPT: root name, type 41, payload (class), extended rcode/version/flags (TTL), rdata length, rdata
        if question_end + 11 > len(wire) or wire[question_end] != 0:
            return None
        rtype, payload, _, version, _, rdlen = struct.unpack_from("!HHBBHH", wire, question_end + 1)
        if rtype != 41 or question_end + 11 + rdlen != len(wire):
            return None
        edns = bytes([1, version]) + min(max(payload, UDP_PLAIN_MAX), EDNS_PAYLOAD).to_bytes(2, "big")
    elif question_end != len(wire):
        return None
    question = wire[12:question_end].lower()  # ASCII letters only: DNS names compare that way
    return (question, flags & 0x0010, edns, tcp), question_end - 12


def _formerr(wire: bytes) -> bytes | None:
    """FORMERR with the query's ID, opcode and RD, and no sections; None for what is no DNS query."""
    if len(wire) < _HEADER.size:
        return None
    qid, flags = _HEADER.unpack_from(wire)[:2]
    if flags & _QR:
        return None
    flags = _QR | (flags & 0x7900) | dns.rcode.FORMERR  # opcode and RD kept, AA/TC/RA/Z/AD/CD cleared
    return _HEADER.pack(qid, flags, 0, 0, 0, 0)


def _answer(
    wire: bytes, snapshot: Snapshot | None, identity: Identity, *, tcp: bool, truncate: bool
) -> bytes | None:
    if len(wire) < _HEADER.size or _HEADER.unpack_from(wire)[1] & _QR:
        return None  # no header, or a response: never answer those (no loops, no reflection)
    try:
        query = dns.message.from_wire(wire, one_rr_per_rrset=True)
    except dns.message.UnknownTSIGKey:
        return _formerr(wire)  # no TSIG keys here
    except Exception:
        return _formerr(wire)
    response = dns.message.make_response(query, our_payload=EDNS_PAYLOAD)
    response.flags &= ~dns.flags.RA
    if query.edns > 0:
        response.use_edns(0, 0, EDNS_PAYLOAD)
        response.set_rcode(dns.rcode.BADVERS)
        return _render(response, query, tcp=tcp)
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return _render(response, query, tcp=tcp)
    if len(query.question) != 1 or query.answer or query.authority:
        response.set_rcode(dns.rcode.FORMERR)
        return _render(response, query, tcp=tcp)
    question = query.question[0]
    qname, qtype = question.name, question.rdtype
    if truncate:
        response.flags |= dns.flags.TC
        return _render(response, query, tcp=tcp)
    if question.rdclass != dns.rdataclass.IN or qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
        response.set_rcode(dns.rcode.REFUSED)
        return _render(response, query, tcp=tcp)
    if snapshot is None:
        response.set_rcode(dns.rcode.SERVFAIL)
        return _render(response, query, tcp=tcp)
    apex = zone_of(qname, snapshot.zones)
    if apex is None:
        response.set_rcode(dns.rcode.REFUSED)
        return _render(response, query, tcp=tcp)

    response.flags |= dns.flags.AA
    values = snapshot.txt.get(qname.to_text().lower())
    if qname == apex or values:
        if qname == apex and qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            response.answer.append(_soa(qname, identity, snapshot.serial))
        elif qname == apex and qtype == dns.rdatatype.NS:
            response.answer.append(_ns(qname, identity))
        elif qtype == dns.rdatatype.TXT and values:
            response.answer.append(_txt(qname, values))
        else:
            response.authority.append(_soa(apex, identity, snapshot.serial))  # NODATA
    else:
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(_soa(apex, identity, snapshot.serial))
    return _render(response, query, tcp=tcp)


def _soa(owner: dns.name.Name, identity: Identity, serial: int) -> dns.rrset.RRset:
    rdata = dns.rdtypes.ANY.SOA.SOA(  # type: ignore[no-untyped-call]
        dns.rdataclass.IN,
        dns.rdatatype.SOA,
        identity.server_name,
        identity.hostmaster,
        serial,
        3600,
        600,
        86400,
        NEGATIVE_TTL,
    )
    return _rrset(owner, NEGATIVE_TTL, [rdata])


def _ns(owner: dns.name.Name, identity: Identity) -> dns.rrset.RRset:
    rdata = dns.rdtypes.ANY.NS.NS(dns.rdataclass.IN, dns.rdatatype.NS, identity.server_name)  # type: ignore[no-untyped-call]
    return _rrset(owner, NS_TTL, [rdata])


def _txt(owner: dns.name.Name, values: tuple[tuple[str, int], ...]) -> dns.rrset.RRset:
    rdatas: list[dns.rdata.Rdata] = [
        dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [value.encode()]) for value, _ in values
    ]
    return _rrset(owner, min(ttl for _, ttl in values), rdatas)


def _rrset(owner: dns.name.Name, ttl: int, rdatas: list[dns.rdata.Rdata]) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, rdatas[0].rdtype)
    for rd in rdatas:
        rrset.add(rd, ttl)
    return rrset


def _render(response: dns.message.Message, query: dns.message.Message, *, tcp: bool) -> bytes:
    if tcp:
        limit = 65535
    elif query.edns >= 0:
        limit = max(UDP_PLAIN_MAX, min(query.payload, EDNS_PAYLOAD))
    else:
        limit = UDP_PLAIN_MAX
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer, response.authority, response.additional = [], [], []
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


# --- rate limiting ---------------------------------------------------------------------------------


class Verdict(Enum):
    ANSWER = "answer"
    SLIP = "slip"  # answer empty and truncated: the client may retry over TCP
    DROP = "drop"


class RateLimiter:
    """A token bucket per client address: ``rate`` answers a second, ``burst`` at once.

    ``rate`` 0 turns it off. Over the limit, every ``slip``-th query slips (0: drop them all). Buckets of
    clients that have been quiet long enough to be full again are forgotten once ``max_clients`` is reached.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        slip: int = 2,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.slip = slip
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}  # address -> [tokens, last time, limited count]
        self._lock = threading.Lock()
        self.limited = 0  # queries over the limit (dropped or slipped), for the logs

    def check(self, client: str) -> Verdict:
        if self.rate <= 0:
            return Verdict.ANSWER
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= self.max_clients:
                    self._forget_quiet(now)
                bucket = self._buckets[client] = [self.burst, now, 0.0]
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                return Verdict.ANSWER
            bucket[0] = tokens
            bucket[2] += 1
            self.limited += 1
            if self.slip > 0 and int(bucket[2]) % self.slip == 0:
                return Verdict.SLIP
            return Verdict.DROP

    def _forget_quiet(self, now: float) -> None:
        full_after = self.burst / self.rate
        quiet = [k for k, (_, last, _) in self._buckets.items() if now - last >= full_after]
        for k in quiet:
            del self._buckets[k]
        if len(self._buckets) >= self.max_clients:  # a flood from many addresses: start over
            self._buckets.clear()


__all__ = [
    "EDNS_PAYLOAD",
    "NEGATIVE_TTL",
    "Identity",
    "RateLimiter",
    "Snapshot",
    "Verdict",
    "answer",
    "canonical",
    "zone_of",
]
