"""Propagation check against real PowerDNS and BIND servers on loopback (dnsproviders.propagation)."""

from __future__ import annotations

import re
import secrets
import threading
import time

import dns.exception
import dns.flags
import dns.query
import dns.rdatatype
import dns.resolver
import pytest

from certmgr import outbound
from certmgr.errors import OutboundRefused
from dnsproviders import propagation
from dnsproviders.propagation import (
    CnameLoop,
    PropagationError,
    PropagationTimeout,
    ZoneNotFound,
    authoritative_servers,
    find_zone,
    resolve_cname_target,
    servers_from_env,
    servers_from_environ,
    wait_for_txt,
)
from tests import dnsservers
from tests.dnsservers import HOST, free_port

# The real-server fixtures (pytest reads pytest_plugins only in the root conftest).
bind = dnsservers.bind
powerdns = dnsservers.powerdns


@pytest.fixture
def loopback_allowed(settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]


@pytest.fixture
def loopback_refused(settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []


def vet(ip: str, port: int) -> None:
    outbound.check_host(ip, port)


def resolver_at(port: int) -> dns.resolver.Resolver:
    """A dnspython resolver that asks only the test server (an authoritative server acting as resolver)."""
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [HOST]
    r.port = port
    r.timeout = 1.0
    r.lifetime = 2.0
    return r


def label() -> str:
    return "t" + secrets.token_hex(4)


def set_rrset(server, name: str, rtype: str, contents: list[str], zone: str | None = None) -> None:
    server.api(
        "PATCH",
        f"/zones/{zone or server.zone}",
        json={
            "rrsets": [
                {
                    "name": dnsservers.fqdn(name).lower(),
                    "type": rtype,
                    "ttl": 60,
                    "changetype": "REPLACE",
                    "records": [{"content": c, "disabled": False} for c in contents],
                }
            ]
        },
    )


def soon(seconds: float) -> float:
    return time.monotonic() + seconds


# --- wait_for_txt with explicit servers ------------------------------------------------------------


@pytest.mark.servers
def test_txt_set_through_the_api_is_seen_at_once(powerdns):
    name, value = f"_acme-challenge.{label()}.{powerdns.zone}", secrets.token_urlsafe(32)
    powerdns.set_txt(name, [value])
    started = time.monotonic()
    result = wait_for_txt(
        name, value, servers=[(HOST, powerdns.dns_port)], timeout=1, interval=0.05, deadline=soon(5)
    )
    assert time.monotonic() - started < 1.0
    assert result.servers == ((HOST, powerdns.dns_port),)
    assert result.labels == (f"{HOST}:{powerdns.dns_port}",)
    assert result.rounds == 1
    assert result.record_name == name.lower()


@pytest.mark.servers
def test_value_among_several_txt_strings_is_found(powerdns):
    # apex + wildcard of one name share one record set with two values
    name = f"_acme-challenge.{label()}.{powerdns.zone}"
    powerdns.set_txt(name, ["first-value", "second-value"])
    result = wait_for_txt(
        name, "second-value", servers=[(HOST, powerdns.dns_port)], timeout=1, interval=0.05, deadline=soon(3)
    )
    assert result.rounds == 1


@pytest.mark.servers
def test_missing_value_times_out_naming_the_server(powerdns):
    name = f"_acme-challenge.{label()}.{powerdns.zone}"
    started = time.monotonic()
    with pytest.raises(PropagationTimeout) as exc:
        wait_for_txt(
            name,
            "never-set",
            servers=[(HOST, powerdns.dns_port)],
            timeout=0.5,
            interval=0.05,
            deadline=soon(0.6),
        )
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 2.0
    message = str(exc.value)
    assert f"{HOST}:{powerdns.dns_port} (NXDOMAIN)" in message
    assert name.lower() in message and "'never-set'" in message
    assert exc.value.missing == {f"{HOST}:{powerdns.dns_port}": "NXDOMAIN"}
    assert exc.value.found == []
    assert isinstance(exc.value, PropagationError)


@pytest.mark.servers
def test_other_value_is_reported(powerdns):
    name = f"_acme-challenge.{label()}.{powerdns.zone}"
    powerdns.set_txt(name, ["stale-value"])
    with pytest.raises(PropagationTimeout, match=r"other value\(s\): 'stale-value'"):
        wait_for_txt(
            name,
            "fresh-value",
            servers=[(HOST, powerdns.dns_port)],
            timeout=0.5,
            interval=0.05,
            deadline=soon(0.3),
        )


@pytest.mark.servers
def test_two_servers_timeout_names_only_the_one_lacking_the_record(powerdns, bind):
    # The same zone served by PowerDNS and by BIND; the record is only written to PowerDNS.
    zone = f"{label()}.shared.test."
    powerdns.add_zone(zone)
    bind.add_zone(zone)
    name, value = f"_acme-challenge.www.{zone}", secrets.token_urlsafe(16)
    powerdns.set_txt(name, [value], zone=zone)
    servers = [(HOST, powerdns.dns_port), (HOST, bind.port)]
    with pytest.raises(PropagationTimeout) as exc:
        wait_for_txt(name, value, servers=servers, timeout=0.5, interval=0.05, deadline=soon(0.5))
    assert list(exc.value.missing) == [f"{HOST}:{bind.port}"]
    assert exc.value.found == [f"{HOST}:{powerdns.dns_port}"]
    message = str(exc.value)
    assert f"{HOST}:{bind.port} (NXDOMAIN)" in message
    assert "1 of 2 name server(s)" in message
    assert f"It was seen by: {HOST}:{powerdns.dns_port}." in message

    bind.update_txt(name, [value], zone=zone)
    result = wait_for_txt(name, value, servers=servers, timeout=0.5, interval=0.05, deadline=soon(3))
    assert set(result.servers) == set(servers)


@pytest.mark.servers
def test_txt_appearing_later_is_found_before_the_deadline(powerdns):
    name, value = f"_acme-challenge.{label()}.{powerdns.zone}", secrets.token_urlsafe(16)
    timer = threading.Timer(0.5, powerdns.set_txt, args=(name, [value]))
    started = time.monotonic()
    timer.start()
    try:
        result = wait_for_txt(
            name, value, servers=[(HOST, powerdns.dns_port)], timeout=0.5, interval=0.05, deadline=soon(5)
        )
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3.0
    assert result.rounds > 1


@pytest.mark.servers
def test_dead_server_is_named_and_the_deadline_holds(bind):
    dead = free_port()  # nothing listens there
    name, value = f"_acme-challenge.{label()}.{bind.zone}", secrets.token_urlsafe(16)
    bind.update_txt(name, [value])
    started = time.monotonic()
    with pytest.raises(PropagationTimeout) as exc:
        wait_for_txt(
            name,
            value,
            servers=[(HOST, bind.port), (HOST, dead)],
            timeout=5.0,  # longer than the deadline: the deadline bounds each query
            interval=0.05,
            deadline=soon(1.0),
        )
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert list(exc.value.missing) == [f"{HOST}:{dead}"]
    assert f"{HOST}:{dead} (" in str(exc.value)
    assert exc.value.found == [f"{HOST}:{bind.port}"]


def test_dead_servers_only_within_deadline():
    dead = [(HOST, free_port()), (HOST, free_port())]
    started = time.monotonic()
    with pytest.raises(PropagationTimeout) as exc:
        wait_for_txt(
            "_acme-challenge.example.test", "v", servers=dead, timeout=0.2, interval=0.05, deadline=soon(0.7)
        )
    assert time.monotonic() - started < 1.7
    assert sorted(exc.value.missing) == sorted(f"{h}:{p}" for h, p in dead)


def test_deadline_with_an_injected_clock(monkeypatch):
    now = [100.0]
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(propagation, "query_txt", lambda *a, **k: ([], "no TXT record"))
    with pytest.raises(PropagationTimeout) as exc:
        wait_for_txt(
            "_acme-challenge.example.test",
            "v",
            servers=[("192.0.2.1", 53)],
            timeout=1,
            interval=2,
            deadline=105.0,
            clock=lambda: now[0],
            sleep=fake_sleep,
        )
    assert sleeps == [2, 2, 1]
    assert now[0] == 105.0
    assert "192.0.2.1:53 (no TXT record)" in str(exc.value)
    assert "after 5.0s" in str(exc.value)


def test_explicit_servers_are_vetted(loopback_refused):
    with pytest.raises(OutboundRefused, match=re.escape("resolves to a loopback address")):
        wait_for_txt("x.example.test", "v", servers=[(HOST, 53)], address_check=vet, deadline=soon(1))


def test_no_servers_is_an_error():
    with pytest.raises(PropagationError, match="No name server"):
        wait_for_txt("x.example.test", "v", servers=[], deadline=soon(1))


# --- zone discovery --------------------------------------------------------------------------------


@pytest.mark.servers
def test_find_zone_walks_up_from_a_deep_name(powerdns, bind):
    assert find_zone(f"a.b.c.{label()}.{powerdns.zone}", resolver=resolver_at(powerdns.dns_port)) == (
        powerdns.zone,
        [f"ns1.{powerdns.zone}"],
    )
    assert find_zone(f"_acme-challenge.x.y.{bind.zone}", resolver=resolver_at(bind.port)) == (
        bind.zone,
        [f"ns1.{bind.zone}"],
    )


@pytest.mark.servers
def test_find_zone_finds_a_child_zone_on_the_same_server(powerdns):
    child = powerdns.add_zone(f"{label()}.{powerdns.zone}")
    zone, ns = find_zone(f"_acme-challenge.www.{child}", resolver=resolver_at(powerdns.dns_port))
    assert (zone, ns) == (child, [f"ns1.{child}"])
    # the zone apex itself
    assert find_zone(child, resolver=resolver_at(powerdns.dns_port))[0] == child


@pytest.mark.servers
def test_find_zone_for_a_name_no_server_serves(powerdns):
    started = time.monotonic()
    with pytest.raises(ZoneNotFound, match=re.escape("No zone found for www.example.invalid.")):
        find_zone("www.example.invalid", resolver=resolver_at(powerdns.dns_port))
    assert time.monotonic() - started < 5


def test_find_zone_with_a_dead_resolver_is_bounded():
    r = resolver_at(free_port())
    r.timeout, r.lifetime = 0.2, 0.4
    started = time.monotonic()
    with pytest.raises(ZoneNotFound):
        find_zone("www.example.test", resolver=r)
    assert time.monotonic() - started < 2


@pytest.mark.servers
def test_authoritative_servers(powerdns, bind, loopback_allowed):
    assert authoritative_servers(
        powerdns.zone, resolver=resolver_at(powerdns.dns_port), port=powerdns.dns_port, address_check=vet
    ) == [(f"ns1.{powerdns.zone}", HOST, powerdns.dns_port)]
    assert authoritative_servers(bind.zone, resolver=resolver_at(bind.port), port=bind.port) == [
        (f"ns1.{bind.zone}", HOST, bind.port)
    ]


@pytest.mark.servers
def test_authoritative_servers_are_vetted(powerdns, loopback_refused):
    with pytest.raises(OutboundRefused, match="CERTMGR_OUTBOUND_ALLOWED_NETWORKS"):
        authoritative_servers(powerdns.zone, resolver=resolver_at(powerdns.dns_port), address_check=vet)


@pytest.mark.servers
def test_wait_for_txt_discovers_the_authoritative_servers(powerdns, loopback_allowed):
    resolver = resolver_at(powerdns.dns_port)
    name, value = f"_acme-challenge.{label()}.{powerdns.zone}", secrets.token_urlsafe(16)
    powerdns.set_txt(name, [value])
    result = wait_for_txt(
        name,
        value,
        servers=None,
        resolver=resolver,
        port=powerdns.dns_port,
        address_check=vet,
        timeout=0.5,
        interval=0.05,
        deadline=soon(5),
    )
    assert result.servers == ((HOST, powerdns.dns_port),)
    assert result.labels == (f"ns1.{powerdns.zone} ({HOST}:{powerdns.dns_port})",)

    with pytest.raises(PropagationTimeout) as exc:
        wait_for_txt(
            name,
            "other",
            servers=None,
            resolver=resolver,
            port=powerdns.dns_port,
            interval=0.05,
            deadline=soon(0.3),
        )
    assert f"ns1.{powerdns.zone} ({HOST}:{powerdns.dns_port})" in str(exc.value)


# --- CNAME delegation ------------------------------------------------------------------------------


@pytest.mark.servers
def test_cname_delegation_is_followed(powerdns):
    zone, host = powerdns.zone, label()
    target = f"{host}.delegated.{zone}"
    set_rrset(powerdns, f"_acme-challenge.{host}.{zone}", "CNAME", [target])
    resolver = resolver_at(powerdns.dns_port)
    assert resolve_cname_target(f"{host}.{zone}", resolver=resolver) == target
    assert resolve_cname_target(f"*.{host}.{zone}".rstrip("."), resolver=resolver) == target
    # already prefixed: not prefixed twice
    assert resolve_cname_target(f"_acme-challenge.{host}.{zone}", resolver=resolver) == target
    # no CNAME: the challenge name itself
    assert resolve_cname_target(f"plain.{zone}", resolver=resolver) == f"_acme-challenge.plain.{zone}"

    # the record written at the target is seen through the CNAME, as a CA would see it
    value = secrets.token_urlsafe(16)
    powerdns.set_txt(target, [value])
    result = wait_for_txt(
        f"_acme-challenge.{host}.{zone}",
        value,
        servers=[(HOST, powerdns.dns_port)],
        timeout=0.5,
        interval=0.05,
        deadline=soon(3),
    )
    assert result.rounds == 1


@pytest.mark.servers
def test_find_zone_of_a_cname_into_another_zone(powerdns):
    # _acme-challenge.<host>.<zone> is in <zone>, even when its CNAME points into a child zone
    zone, host = powerdns.zone, label()
    child = powerdns.add_zone(f"delegated-{host}.{zone}")
    target = f"{host}.{child}"
    set_rrset(powerdns, f"_acme-challenge.{host}.{zone}", "CNAME", [target])
    resolver = resolver_at(powerdns.dns_port)
    assert find_zone(f"_acme-challenge.{host}.{zone}", resolver=resolver)[0] == zone
    assert resolve_cname_target(f"{host}.{zone}", resolver=resolver) == target
    assert find_zone(target, resolver=resolver)[0] == child


@pytest.mark.servers
def test_cname_chain_of_two_hops(powerdns):
    zone, host = powerdns.zone, label()
    hop, final = f"hop.{host}.{zone}", f"final.{host}.{zone}"
    set_rrset(powerdns, f"_acme-challenge.{host}.{zone}", "CNAME", [hop])
    set_rrset(powerdns, hop, "CNAME", [final])
    resolver = resolver_at(powerdns.dns_port)
    assert resolve_cname_target(f"{host}.{zone}", resolver=resolver) == final
    with pytest.raises(CnameLoop, match="longer than 1 hops"):
        resolve_cname_target(f"{host}.{zone}", resolver=resolver, max_hops=1)


@pytest.mark.servers
def test_cname_loop_is_detected(powerdns):
    zone, host = powerdns.zone, label()
    start, other = f"_acme-challenge.{host}.{zone}", f"loop.{host}.{zone}"
    set_rrset(powerdns, start, "CNAME", [other])
    set_rrset(powerdns, other, "CNAME", [start])
    started = time.monotonic()
    with pytest.raises(CnameLoop, match=f"CNAME loop at {start}: {start} -> {other} -> {start}"):
        resolve_cname_target(f"{host}.{zone}", resolver=resolver_at(powerdns.dns_port))
    assert time.monotonic() - started < 3


def test_cname_lookup_failure_is_clear():
    r = resolver_at(free_port())
    r.timeout, r.lifetime = 0.2, 0.4
    with pytest.raises(
        PropagationError, match=re.escape("Cannot look up a CNAME at _acme-challenge.www.example.test.")
    ):
        resolve_cname_target("www.example.test", resolver=r)


# --- CERTMGR_DNS_RESOLVERS -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:5353", [("127.0.0.1", 5353)]),
        (" 127.0.0.1:5353 , [::1]:5354 ,", [("127.0.0.1", 5353), ("::1", 5354)]),
        ("[2001:db8::1]:53", [("2001:db8::1", 53)]),
        ("192.0.2.1", [("192.0.2.1", 53)]),
        ("[2001:db8::2]", [("2001:db8::2", 53)]),
        ("2001:db8::3", [("2001:db8::3", 53)]),
        ("192.0.2.1:53,192.0.2.1:53", [("192.0.2.1", 53)]),
        ("", []),
    ],
)
def test_servers_from_env(value, expected):
    assert servers_from_env(value) == expected


def test_servers_from_env_resolves_host_names():
    assert ("127.0.0.1", 5300) in servers_from_env("localhost:5300")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("127.0.0.1:dns", "port 'dns' is not a number"),
        ("127.0.0.1:0", "port '0' is not a number from 1 to 65535"),
        ("127.0.0.1:70000", "port '70000'"),
        ("127.0.0.1:", "port ''"),
        ("[::1:53", "missing ']'"),
        ("[::1]53", "unexpected text after ']'"),
        ("[127.0.0.1]:53", "'127.0.0.1' is not an IPv6 address"),
        ("2001:db8::1::2:53", r"must be written \[addr\]:port"),
        (":53", "empty host"),
        ("bad host!:53", "'bad host!' is not a host name"),
    ],
)
def test_servers_from_env_rejects_bad_input(value, why):
    with pytest.raises(ValueError, match=f"CERTMGR_DNS_RESOLVERS: invalid entry .*{why}"):
        servers_from_env(f"192.0.2.1:53,{value}")


def test_servers_from_environ():
    assert servers_from_environ({}) is None
    assert servers_from_environ({"CERTMGR_DNS_RESOLVERS": "  "}) is None
    assert servers_from_environ({"CERTMGR_DNS_RESOLVERS": "192.0.2.1:53"}) == [("192.0.2.1", 53)]


@pytest.mark.servers
def test_environment_override_replaces_discovery(powerdns, monkeypatch):
    monkeypatch.setenv("CERTMGR_DNS_RESOLVERS", f"{HOST}:{powerdns.dns_port}")
    name, value = f"_acme-challenge.{label()}.{powerdns.zone}", secrets.token_urlsafe(16)
    powerdns.set_txt(name, [value])
    result = wait_for_txt(
        name, value, servers=servers_from_environ(), timeout=0.5, interval=0.05, deadline=soon(3)
    )
    assert result.servers == ((HOST, powerdns.dns_port),)


def test_queries_go_out_with_recursion_off(monkeypatch):
    sent = []

    def fake_udp_with_fallback(query, where, *, timeout, port):
        sent.append((query, where, port, timeout))
        raise dns.exception.Timeout

    monkeypatch.setattr(dns.query, "udp_with_fallback", fake_udp_with_fallback)
    strings, why = propagation.query_txt("_acme-challenge.example.test", "192.0.2.1", 5300, timeout=0.25)
    assert (strings, why) == (None, "no answer within 0.25s")
    [(query, where, port, timeout)] = sent
    assert not query.flags & dns.flags.RD
    assert (where, port, timeout) == ("192.0.2.1", 5300, 0.25)
    assert query.question[0].rdtype == dns.rdatatype.TXT
