"""Delegated DNS-01: certmgr's own DNS server (``manage.py dns_server``) asked with dig and dnspython, its
answers and rate limiter, a bounded fuzz of its parser, and the NS delegation check against PowerDNS."""

from __future__ import annotations

import random
import re
import socket
import struct

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from dnsproviders import delegation, propagation
from dnsproviders import services as dns_services
from dnsproviders.dns_answers import Identity, RateLimiter, Snapshot, Verdict, answer
from dnsproviders.models import DelegatedChallenge
from dnsproviders.providers.base import ProviderError, RecordRef, provider_for
from tests import dnsservers
from tests.dnsservers import CERTMGR_DNS_NAME, HOST, start_certmgr_dns

powerdns = dnsservers.powerdns
certmgr_dns = dnsservers.certmgr_dns

IDENTITY = Identity.of(CERTMGR_DNS_NAME)
ZONE = "_acme-challenge.example.com."


def ask(snapshot, name, rdtype="TXT", **kwargs) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kwargs)
    wire = answer(q.to_wire(), snapshot, IDENTITY, tcp=kwargs.pop("tcp", False))
    assert wire is not None
    r = dns.message.from_wire(wire)
    assert r.id == q.id and r.flags & dns.flags.QR and not r.flags & dns.flags.RA
    return r


def token(n: int = 0) -> str:
    return f"{'k' * 42}{n}"


# --- answers (the pure module) ---------------------------------------------------------------------


def test_txt_soa_ns_nodata_nxdomain_and_refused():
    snap = Snapshot.build([ZONE], [(ZONE, token(1), 60), (ZONE, token(2), 30)])
    r = ask(snap, "_acme-challenge.EXAMPLE.com.")  # case kept (0x20), answered
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert r.answer[0].name.to_text() == "_acme-challenge.EXAMPLE.com."
    assert sorted(b"".join(rd.strings).decode() for rd in r.answer[0]) == [token(1), token(2)]
    assert r.answer[0].ttl == 30
    soa = ask(snap, ZONE, "SOA").answer[0][0]
    assert soa.mname.to_text() == CERTMGR_DNS_NAME and soa.minimum == 5
    assert ask(snap, ZONE, "NS").answer[0][0].target.to_text() == CERTMGR_DNS_NAME
    nodata = ask(snap, ZONE, "A")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA and nodata.flags & dns.flags.AA
    below = ask(snap, "x." + ZONE)
    assert below.rcode() == dns.rcode.NXDOMAIN and below.authority[0].name.to_text() == ZONE
    for name in ("example.com.", "_acme-challenge.example.org.", CERTMGR_DNS_NAME, "."):
        refused = ask(snap, name)
        assert refused.rcode() == dns.rcode.REFUSED and not refused.flags & dns.flags.AA
    assert ask(snap, ZONE, "AXFR").rcode() == dns.rcode.REFUSED
    empty = Snapshot.build([ZONE], [])
    assert ask(empty, ZONE).rcode() == dns.rcode.NOERROR and not ask(empty, ZONE).answer  # NODATA
    assert ask(None, ZONE).rcode() == dns.rcode.SERVFAIL  # the database could not be read lately


def test_edns_badvers_notimp_and_truncation():
    values = [(ZONE, f"{i:02d}" + "v" * 41, 60) for i in range(40)]  # ~1.8 kB of TXT
    snap = Snapshot.build([ZONE], values)
    r = ask(snap, ZONE, use_edns=0, payload=4096)
    assert r.edns == 0 and r.payload == 1232 and r.flags & dns.flags.TC and not r.answer
    plain = ask(snap, ZONE)  # no EDNS: 512 bytes
    assert plain.edns < 0 and plain.flags & dns.flags.TC
    q = dns.message.make_query(ZONE, "TXT")
    full = dns.message.from_wire(answer(q.to_wire(), snap, IDENTITY, tcp=True))
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 40
    assert ask(snap, ZONE, use_edns=1).rcode() == dns.rcode.BADVERS
    notify = dns.message.make_query(ZONE, "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    r = dns.message.from_wire(answer(notify.to_wire(), snap, IDENTITY))
    assert r.rcode() == dns.rcode.NOTIMP


def test_garbage_gets_formerr_or_nothing():
    snap = Snapshot.build([ZONE], [(ZONE, token(), 60)])
    assert answer(b"", snap, IDENTITY) is None
    assert answer(b"\x01\x02\x03", snap, IDENTITY) is None
    header_only = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0)  # claims a question, has none
    r = dns.message.from_wire(answer(header_only, snap, IDENTITY))
    assert r.id == 0xBEEF and r.rcode() == dns.rcode.FORMERR
    q = dns.message.make_query(ZONE, "TXT")
    response = dns.message.from_wire(answer(q.to_wire(), snap, IDENTITY))
    assert answer(response.to_wire(), snap, IDENTITY) is None  # a response is never answered (no loops)
    two = dns.message.make_query(ZONE, "TXT")
    two.question.append(two.question[0])
    assert dns.message.from_wire(answer(two.to_wire(), snap, IDENTITY)).rcode() == dns.rcode.FORMERR
    assert dns.message.from_wire(answer(q.to_wire() + b"junk", snap, IDENTITY)).rcode() == dns.rcode.FORMERR


def test_fuzz_the_answers_for_a_bounded_count():
    """5,000 random and bit-flipped packets: every answer is None or a response to that ID, and an answer
    to a packet dnspython cannot read is FORMERR."""
    rng = random.Random(15)
    snap = Snapshot.build([ZONE], [(ZONE, token(), 60)])
    seeds = [
        dns.message.make_query(ZONE, t, use_edns=e).to_wire() for t in ("TXT", "SOA", "NS") for e in (-1, 0)
    ]
    for i in range(5000):
        packet = _mutant(rng, seeds, i)
        wire = answer(packet, snap, IDENTITY, tcp=bool(i % 2))
        if wire is None:
            continue
        r = dns.message.from_wire(wire)
        assert r.flags & dns.flags.QR and r.id == struct.unpack("!H", packet[:2])[0]
        try:
            dns.message.from_wire(packet)
        except Exception:
            assert r.rcode() == dns.rcode.FORMERR, packet.hex()


def _mutant(rng: random.Random, seeds: list[bytes], i: int) -> bytes:
    if i % 3 == 0:
        return rng.randbytes(rng.randrange(0, 600))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    if i % 3 == 2:
        data[2] &= 0x7F  # keep QR clear: a query the parser has to read
        data = data[: rng.randrange(12, len(data) + 1)] + rng.randbytes(rng.randrange(0, 8))
    return bytes(data)


def test_rate_limiter_token_bucket_and_slip():
    now = [0.0]
    limiter = RateLimiter(10, 5, slip=2, clock=lambda: now[0])
    verdicts = [limiter.check("192.0.2.1") for _ in range(9)]
    assert verdicts[:5] == [Verdict.ANSWER] * 5  # the burst
    assert verdicts[5:] == [Verdict.DROP, Verdict.SLIP, Verdict.DROP, Verdict.SLIP]
    assert limiter.check("192.0.2.2") is Verdict.ANSWER  # per client
    now[0] += 0.1  # one token back
    assert limiter.check("192.0.2.1") is Verdict.ANSWER
    assert limiter.check("192.0.2.1") is not Verdict.ANSWER
    assert RateLimiter(0, 0).check("192.0.2.1") is Verdict.ANSWER  # off
    small = RateLimiter(10, 5, max_clients=3, clock=lambda: now[0])
    for i in range(10):
        small.check(f"198.51.100.{i}")
    assert len(small._buckets) <= 3


# --- the server, with dig ----------------------------------------------------------------------------


@pytest.fixture
def delegated(tenant, settings):
    settings.CERTMGR_DNS_SERVER_NAME = CERTMGR_DNS_NAME
    conn = dns_services.create_connection(
        tenant.organization, name="delegated", kind="delegated", credentials={}, actor=tenant.admin.user
    )
    return provider_for(
        conn.kind, conn.credentials, organization_id=conn.organization_id, connection_id=conn.pk
    )


def _status(dig_output: str) -> str:
    match = re.search(r"status: (\w+)", dig_output)
    assert match, dig_output
    return match.group(1)


@pytest.mark.servers
@pytest.mark.django_db(transaction=True)
def test_dig_sees_the_txt_while_presented_and_refused_after(certmgr_dns, delegated, other_tenant):
    name = "_acme-challenge.deleg-dig.example.com."
    ref = delegated.present(name, token(7), ttl=30)
    # another organization's value at another name is served too (the server answers every tenant)
    DelegatedChallenge.objects.create(
        organization=other_tenant.organization,
        name="_acme-challenge.globex.example.",
        value=token(8),
        expires="2999-01-01T00:00Z",
    )
    out = certmgr_dns.wait_for_txt(name, True, token(7))
    assert _status(out) == "NOERROR" and f'"{token(7)}"' in out, out
    assert re.search(r"flags: qr aa rd;", out), out  # authoritative, no recursion available
    assert "WARNING: recursion requested but not available" in out
    assert f'"{token(8)}"' in certmgr_dns.wait_for_txt("_acme-challenge.globex.example.", True, token(8))
    tcp = certmgr_dns.dig("+tcp", name, "TXT")
    assert _status(tcp) == "NOERROR" and f'"{token(7)}"' in tcp, tcp
    soa = certmgr_dns.dig(name, "SOA", "+noedns")
    assert _status(soa) == "NOERROR" and CERTMGR_DNS_NAME in soa and "OPT PSEUDOSECTION" not in soa
    assert "EDNS: version: 0" in certmgr_dns.dig(name, "SOA")  # EDNS answered with EDNS
    assert _status(certmgr_dns.dig("below." + name, "TXT")) == "NXDOMAIN"
    assert _status(certmgr_dns.dig("example.com", "A")) == "REFUSED"
    assert _status(certmgr_dns.dig("+tcp", "www.example.org", "TXT")) == "REFUSED"
    assert _status(certmgr_dns.dig("version.bind", "TXT", "CH")) == "REFUSED"

    delegated.cleanup(RecordRef.from_dict(ref.as_dict()))
    delegated.cleanup(ref)  # idempotent
    out = certmgr_dns.wait_for_txt(name, False, token(7))
    # no subscriber names it: no longer a zone here
    assert _status(out) == "REFUSED" and token(7) not in out, out


@pytest.mark.servers
@pytest.mark.django_db(transaction=True)
def test_fuzz_the_server_over_udp_and_tcp_then_it_still_answers(certmgr_dns, delegated):
    name = "_acme-challenge.fuzz.example.com."
    delegated.present(name, token(3))
    certmgr_dns.wait_for_txt(name, True, token(3))
    rng = random.Random(53)
    seeds = [dns.message.make_query(name, t).to_wire() for t in ("TXT", "SOA", "NS", "A")]
    formerr_or_nothing = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(0.05)
        for i in range(4000):
            udp.sendto(_mutant(rng, seeds, i), (HOST, certmgr_dns.port))
            try:
                reply = udp.recv(65535)
            except TimeoutError:
                formerr_or_nothing += 1
                continue
            assert reply[2] & 0x80  # every reply is a response (QR)
    for i in range(300):  # TCP: a connection each, garbage lengths and bodies
        with socket.create_connection((HOST, certmgr_dns.port), timeout=2) as tcp:
            body = _mutant(rng, seeds, i)
            length = len(body) if i % 4 else rng.randrange(0, 65536)
            try:
                tcp.sendall(struct.pack("!H", length) + body)
                if i % 4:
                    tcp.recv(65535)
            except OSError:
                pass  # closed by the server: its answer to no DNS message
    assert certmgr_dns.alive(), dnsservers.tail(certmgr_dns.log)
    for tcp in (False, True):
        r = certmgr_dns.query(name, "TXT", tcp=tcp)
        assert [b"".join(rd.strings).decode() for rd in r.answer[0]] == [token(3)]
    assert "Traceback" not in certmgr_dns.log.read_text()
    assert formerr_or_nothing > 0  # some packets were too broken for an answer


@pytest.mark.servers
@pytest.mark.django_db(transaction=True)
def test_rate_limit_per_client_drops_and_slips(tmp_path, delegated):
    from django.db import connection

    url = "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(**connection.settings_dict)
    name = "_acme-challenge.rrl.example.com."
    delegated.present(name, token(4))
    with start_certmgr_dns(
        tmp_path, url, CERTMGR_DNS_RATE_LIMIT="5", CERTMGR_DNS_RATE_BURST="10", CERTMGR_DNS_RATE_SLIP="2"
    ) as server:
        answered = truncated = silent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(0.2)
            for _ in range(40):
                q = dns.message.make_query(name, "TXT")
                udp.sendto(q.to_wire(), (HOST, server.port))
                try:
                    r = dns.message.from_wire(udp.recv(65535))
                except TimeoutError:
                    silent += 1
                    continue
                if r.flags & dns.flags.TC:
                    assert not r.answer
                    truncated += 1
                else:
                    answered += 1
        assert 10 <= answered <= 20, (answered, truncated, silent)  # the burst, and what refilled meanwhile
        assert truncated >= 5 and silent >= 5
        # TCP is not rate limited: the truncated answers send a resolver there
        r = server.query(name, "TXT", tcp=True)
        assert r.answer and not r.flags & dns.flags.TC


# --- the delegation check, against PowerDNS ----------------------------------------------------------


@pytest.mark.servers
def test_check_delegation_reads_the_parent_zones_referral(powerdns):
    zone = powerdns.zone
    good, elsewhere, missing = (
        f"deleg-{k}-{random.randrange(10**6)}.{zone}" for k in ("ok", "other", "none")
    )
    powerdns.set_rrset(f"_acme-challenge.{good}", "NS", [CERTMGR_DNS_NAME])
    powerdns.set_rrset(f"_acme-challenge.{elsewhere}", "NS", ["ns.elsewhere.test."])
    servers = [(HOST, powerdns.dns_port)]
    assert propagation.check_delegation(good, CERTMGR_DNS_NAME, servers=servers) == [
        f"{HOST}:{powerdns.dns_port}"
    ]
    assert propagation.check_delegation(f"*.{good}", CERTMGR_DNS_NAME.rstrip("."), servers=servers)
    with pytest.raises(propagation.DelegationMissing) as other:
        propagation.check_delegation(elsewhere, CERTMGR_DNS_NAME, servers=servers)
    assert f"create the record `_acme-challenge.{elsewhere} NS {CERTMGR_DNS_NAME}`" in str(other.value)
    assert "NS ns.elsewhere.test." in str(other.value)
    with pytest.raises(propagation.DelegationMissing) as none:
        propagation.check_delegation(missing, CERTMGR_DNS_NAME, servers=servers)
    assert none.value.record == f"_acme-challenge.{missing} NS {CERTMGR_DNS_NAME}"
    assert "NXDOMAIN" in str(none.value)

    # Without servers: the parent zone (SOA walk) and its NS found through a resolver, asked themselves.
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [HOST], powerdns.dns_port
    asked = propagation.check_delegation(
        good, CERTMGR_DNS_NAME, servers=None, resolver=resolver, port=powerdns.dns_port
    )
    assert asked == [f"ns1.{zone} ({HOST}:{powerdns.dns_port})"]
    with pytest.raises(propagation.DelegationMissing, match=f"in the zone {re.escape(zone)}"):
        propagation.check_delegation(
            missing, CERTMGR_DNS_NAME, servers=None, resolver=resolver, port=powerdns.dns_port
        )


@pytest.mark.servers
@pytest.mark.django_db
def test_provider_preflight_names_the_records_to_create(powerdns, delegated, monkeypatch, settings):
    monkeypatch.setenv("CERTMGR_DNS_RESOLVERS", f"{HOST}:{powerdns.dns_port}")
    name = f"deleg-pre-{random.randrange(10**6)}.{powerdns.zone.rstrip('.')}"
    with pytest.raises(ProviderError) as missing:
        delegated.preflight([name, f"*.{name}"])
    assert not missing.value.transient
    assert str(missing.value).count(f"`_acme-challenge.{name}. NS {CERTMGR_DNS_NAME}`") == 1  # one record
    powerdns.set_rrset(f"_acme-challenge.{name}", "NS", [CERTMGR_DNS_NAME])
    delegated.preflight([name, f"*.{name}"])
    settings.CERTMGR_DNS_SERVER_NAME = ""
    with pytest.raises(ProviderError, match="CERTMGR_DNS_SERVER_NAME"):
        delegated.preflight([name])
    assert delegation.required_record(f"*.{name}", CERTMGR_DNS_NAME) == (
        f"_acme-challenge.{name}. NS {CERTMGR_DNS_NAME}"
    )


@pytest.mark.django_db
def test_delegated_connection_has_no_credentials_and_tests_ok(tenant, settings):
    from dnsproviders.connection_checks import check_connection

    settings.CERTMGR_DNS_SERVER_NAME = "acme-ns.example.net"
    conn = dns_services.create_connection(
        tenant.organization, name="d", kind="delegated", credentials={}, actor=tenant.admin.user
    )
    assert conn.credentials == {} and conn.public_settings() == {}
    result = dns_services.test_connection(conn, actor=tenant.admin.user)
    assert result.ok and "acme-ns.example.net." in result.message
    settings.CERTMGR_DNS_SERVER_NAME = ""
    assert not check_connection("delegated", {}).ok
    with pytest.raises(Exception, match="credentials"):
        dns_services.create_connection(
            tenant.organization, name="e", kind="delegated", credentials={"x": 1}, actor=tenant.admin.user
        )
    assert dns.name.from_text(CERTMGR_DNS_NAME)  # the test server name is a valid name


def test_cached_answers_equal_dnspythons_for_random_queries():
    """The cache of rendered answers (a plain query asked before) gives the bytes dnspython renders for that
    very query: ID, RD, the question's letter case, EDNS payload and version, UDP or TCP."""
    from dnsproviders.dns_answers import _answer

    rng = random.Random(8)
    values = [(ZONE, f"{i:02d}" + "v" * 41, 60) for i in range(12)]  # ~650 bytes: truncated at 512
    names = [ZONE, "x." + ZONE, "example.com.", "_acme-challenge.other.example.", "a.b.c." + ZONE]
    for _ in range(3000):
        snap = (
            Snapshot.build([ZONE], values)
            if rng.random() < 0.05
            else locals().get("snap") or Snapshot.build([ZONE], values)
        )
        name = "".join(c.upper() if rng.random() < 0.5 else c for c in rng.choice(names))
        kwargs = rng.choice(
            [{}, {"use_edns": 0}, {"use_edns": 0, "payload": rng.randrange(0, 5000)}, {"use_edns": 1}]
        )
        q = dns.message.make_query(name, rng.choice(["TXT", "SOA", "NS", "A", "ANY", "AXFR"]), **kwargs)
        if rng.random() < 0.5:
            q.flags &= ~dns.flags.RD
        tcp = rng.random() < 0.3
        wire = q.to_wire()
        cached, fresh = (
            answer(wire, snap, IDENTITY, tcp=tcp),
            _answer(wire, snap, IDENTITY, tcp=tcp, truncate=False),
        )
        # dnspython shuffles the records of a set as it renders them: compare the messages, and the bytes
        # of header and question (the client's letter case)
        assert dns.message.from_wire(cached) == dns.message.from_wire(fresh)
        qlen = len(wire) - (11 if q.edns >= 0 else 0)
        assert cached[:qlen] == fresh[:qlen] and len(cached) == len(fresh)
    assert snap.responses  # the cache was used
