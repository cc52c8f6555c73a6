"""DNS-01 providers against real servers: PowerDNS (HTTP API) and BIND (RFC 2136 + TSIG); manual."""

from __future__ import annotations

import base64
import secrets
import threading

import pytest

from certmgr.errors import OutboundRefused
from dnsproviders.providers.base import ProviderError, RecordRef, provider_for
from tests import dnsservers
from tests.dnsservers import free_port

# The real-server fixtures (pytest reads pytest_plugins only in the root conftest).
bind = dnsservers.bind
powerdns = dnsservers.powerdns


@pytest.fixture
def loopback_allowed(settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]


@pytest.fixture
def loopback_refused(settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []


def token() -> str:
    """A value shaped like a DNS-01 key authorization digest (43 base64url characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture(params=["powerdns", "bind"])
def server(request, loopback_allowed):
    """(kind, server fixture, its default zone) for both real servers."""
    if request.param == "powerdns":
        srv = request.getfixturevalue("powerdns")
        return "powerdns", srv, srv.zone
    srv = request.getfixturevalue("bind")
    return "rfc2136", srv, srv.zone


def provider(server, **overrides):
    kind, srv, _ = server
    return provider_for(kind, srv.credentials(**overrides), timeout=5)


# --- both servers ----------------------------------------------------------------------------------


@pytest.mark.servers
def test_present_then_read_back_over_dns(server):
    _, srv, zone = server
    name = f"_acme-challenge.{unique('www')}.{zone}"
    value = token()
    ref = provider(server).present(name, value)
    assert ref.record_name == name
    assert ref.value == value
    assert ref.zone.rstrip(".") == zone.rstrip(".")
    assert srv.txt_records(name) == [value]
    assert RecordRef.from_dict(ref.as_dict()) == ref


@pytest.mark.servers
def test_apex_and_wildcard_values_coexist_and_cleanup_removes_only_its_own(server):
    _, srv, zone = server
    p = provider(server)
    name = f"_acme-challenge.{unique('both')}.{zone}"
    apex, wildcard = token(), token()
    ref_apex = p.present(name, apex)
    ref_wild = p.present(name, wildcard)
    assert srv.txt_records(name) == sorted([apex, wildcard])

    p.cleanup(ref_apex)
    assert srv.txt_records(name) == [wildcard]
    p.cleanup(ref_apex)  # twice: already gone is success
    assert srv.txt_records(name) == [wildcard]

    p.cleanup(ref_wild)
    assert srv.txt_records(name) == []
    p.cleanup(ref_wild)
    assert srv.txt_records(name) == []


@pytest.mark.servers
def test_present_keeps_values_written_by_others_and_is_idempotent(server):
    kind, srv, zone = server
    name = f"_acme-challenge.{unique('other')}.{zone}"
    if kind == "powerdns":
        srv.set_txt(name, ["someone-else"])
    else:
        srv.update_txt(name, ["someone-else"])
    p = provider(server)
    value = token()
    ref = p.present(name, value)
    p.present(name, value)  # again: no duplicate
    assert srv.txt_records(name) == sorted(["someone-else", value])
    p.cleanup(ref)
    assert srv.txt_records(name) == ["someone-else"]


@pytest.mark.servers
def test_cleanup_without_zone_in_ref_finds_it(server):
    _, srv, zone = server
    p = provider(server)
    name = f"_acme-challenge.{unique('nozone')}.{zone}"
    value = token()
    p.present(name, value)
    p.cleanup(RecordRef(name, value))
    assert srv.txt_records(name) == []


@pytest.mark.servers
def test_concurrent_presents_on_one_name_all_end_up_present(server):
    _, srv, zone = server
    name = f"_acme-challenge.{unique('race')}.{zone}"
    values = [token() for _ in range(5)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(values))

    def work(value):
        try:
            p = provider(server)  # one provider per thread, as separate orders would have
            barrier.wait(timeout=10)
            p.present(name, value)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert srv.txt_records(name) == sorted(values)

    # ... and concurrent cleanups leave nothing behind.
    p = provider(server)
    ref_zone = p.find_zone(name)
    threads = [
        threading.Thread(target=lambda v=v: provider(server).cleanup(RecordRef(name, v, ref_zone)))
        for v in values
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert srv.txt_records(name) == []


@pytest.mark.servers
def test_find_zone_picks_the_deepest_zone(server):
    _, srv, zone = server
    child = srv.add_zone(f"{unique('child')}.{zone}")
    p = provider(server)
    # PowerDNS zone ids are the canonical names for such zones; BIND answers with the SOA owner.
    assert p.find_zone(f"_acme-challenge.www.{child}") == child
    assert p.find_zone(f"_acme-challenge.{zone}").rstrip(".") == zone.rstrip(".")

    name = f"_acme-challenge.www.{child}"
    value = token()
    ref = p.present(name, value)
    assert ref.zone == child
    assert srv.txt_records(name) == [value]
    p.cleanup(ref)
    assert srv.txt_records(name) == []


@pytest.mark.servers
def test_unknown_zone(server):
    with pytest.raises(ProviderError) as exc:
        provider(server).find_zone("_acme-challenge.www.not-served.example.")
    assert not exc.value.transient
    assert "not-served.example" in str(exc.value)


@pytest.mark.servers
def test_dead_server_is_transient(server):
    kind, _, zone = server
    port = free_port()  # nothing listens there
    if kind == "powerdns":
        p = provider(server, api_url=f"http://127.0.0.1:{port}")
    else:
        p = provider(server, port=port)
    with pytest.raises(ProviderError) as exc:
        p.present(f"_acme-challenge.dead.{zone}", token(), zone=zone)
    assert exc.value.transient
    assert "127.0.0.1" in str(exc.value)


@pytest.mark.servers
def test_loopback_refused_without_the_setting(server, settings):
    _, _, zone = server
    p = provider(server)
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(OutboundRefused, match="CERTMGR_OUTBOUND_ALLOWED_NETWORKS") as exc:
        p.present(f"_acme-challenge.refused.{zone}", token(), zone=zone)
    assert "resolves to a loopback address" in exc.value.message
    with pytest.raises(OutboundRefused):
        p.find_zone(f"_acme-challenge.refused.{zone}")
    with pytest.raises(OutboundRefused):
        p.cleanup(RecordRef(f"_acme-challenge.refused.{zone}", "x", zone))


# --- PowerDNS specifics ----------------------------------------------------------------------------


@pytest.mark.servers
def test_powerdns_wrong_api_key(powerdns, loopback_allowed):
    wrong = "wrong-" + powerdns.api_key
    p = provider_for("powerdns", powerdns.credentials(api_key=wrong), timeout=5)
    with pytest.raises(ProviderError) as exc:
        p.present(f"_acme-challenge.key.{powerdns.zone}", token())
    assert not exc.value.transient
    assert "PowerDNS refused the API key (HTTP 401)" in str(exc.value)
    assert wrong not in str(exc.value)


@pytest.mark.servers
def test_powerdns_unknown_zone_id_is_permanent_with_powerdns_text(powerdns, loopback_allowed):
    p = provider_for("powerdns", powerdns.credentials(), timeout=5)
    with pytest.raises(ProviderError) as exc:
        p.present("_acme-challenge.www.not-served.example.", token(), zone="not-served.example.")
    assert not exc.value.transient
    assert "HTTP 404" in str(exc.value)
    assert "not-served.example" in str(exc.value)


@pytest.mark.servers
def test_powerdns_url_may_carry_the_api_path(powerdns, loopback_allowed):
    p = provider_for("powerdns", powerdns.credentials(api_url=powerdns.api_url + "/api/v1/"), timeout=5)
    assert p.find_zone(f"_acme-challenge.{powerdns.zone}") == powerdns.zone


@pytest.mark.servers
def test_powerdns_concurrent_presents_without_the_process_lock(powerdns, loopback_allowed, monkeypatch):
    # Separate worker processes share no lock: the verify-and-reapply loop alone must keep every value.
    from dnsproviders.providers import powerdns as module

    monkeypatch.setattr(module, "_lock_for", lambda key: threading.Lock())
    name = f"_acme-challenge.{unique('nolock')}.{powerdns.zone}"
    values = [token() for _ in range(5)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(values))

    def work(value):
        try:
            p = provider_for("powerdns", powerdns.credentials(), timeout=5)
            barrier.wait(timeout=10)
            p.present(name, value, zone=powerdns.zone)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert powerdns.txt_records(name) == sorted(values)


# --- RFC 2136 specifics ----------------------------------------------------------------------------


@pytest.mark.servers
def test_rfc2136_wrong_tsig_secret(bind, loopback_allowed):
    wrong = base64.b64encode(secrets.token_bytes(32)).decode()
    p = provider_for("rfc2136", bind.credentials(tsig_secret=wrong), timeout=5)
    with pytest.raises(ProviderError) as exc:
        p.present(f"_acme-challenge.secret.{bind.zone}", token(), zone=bind.zone)
    assert not exc.value.transient
    assert "BADSIG" in str(exc.value)
    assert "the secret does not match" in str(exc.value)
    with pytest.raises(ProviderError, match="BADSIG"):
        p.find_zone(f"_acme-challenge.secret.{bind.zone}")


@pytest.mark.servers
def test_rfc2136_unknown_key_name(bind, loopback_allowed):
    p = provider_for("rfc2136", bind.credentials(tsig_key_name="no-such-key."), timeout=5)
    with pytest.raises(ProviderError, match="BADKEY") as exc:
        p.present(f"_acme-challenge.badkey.{bind.zone}", token(), zone=bind.zone)
    assert not exc.value.transient


@pytest.mark.servers
def test_rfc2136_update_refused_names_the_rcode(bind, loopback_allowed):
    # The key may only update TXT records: a zone the server does not serve is refused (NOTAUTH/REFUSED).
    p = provider_for("rfc2136", bind.credentials(), timeout=5)
    with pytest.raises(ProviderError) as exc:
        p.present("_acme-challenge.www.not-served.example.", token(), zone="not-served.example.")
    assert not exc.value.transient
    assert "REFUSED" in str(exc.value) or "NOTAUTH" in str(exc.value)


def test_rfc2136_bad_credentials_are_reported_before_any_network():
    with pytest.raises(ProviderError, match="not valid base64"):
        provider_for("rfc2136", {"server": "192.0.2.1", "tsig_key_name": "k.", "tsig_secret": "!!!"})
    with pytest.raises(ProviderError, match="Unsupported TSIG algorithm"):
        provider_for(
            "rfc2136",
            {"server": "192.0.2.1", "tsig_key_name": "k.", "tsig_secret": "c2VjcmV0", "tsig_algorithm": "x"},
        )


# --- manual ----------------------------------------------------------------------------------------


def test_manual_describes_the_record_and_touches_nothing():
    p = provider_for("manual", {})
    assert p.automatic is False
    assert p.find_zone("_acme-challenge.example.com") == ""
    ref = p.present("_acme-challenge.Example.com", "abc", ttl=120)
    assert ref.record_name == "_acme-challenge.example.com."
    assert ref.value == "abc"
    assert ref.extra["type"] == "TXT"
    assert '_acme-challenge.example.com. 120 IN TXT "abc"' in ref.extra["instructions"]
    assert p.cleanup(ref) is None
