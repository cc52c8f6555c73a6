"""tls-alpn-01 (RFC 8737): the Django-free checks alone against a real TLS responder on loopback (good and
broken certificates built with cryptography), then the validator through its allow-list and the record it
keeps."""

from __future__ import annotations

import hashlib

import pytest

from acmeserver import tlsalpn
from tests.acmeserver.tlsalpn_responder import challenge_cert, responder

KEYAUTH = "token-abc.thumbprint-xyz"
NAME = "web.example.test"


def validate(port: int, identifier: str = NAME, keyauth: str = KEYAUTH) -> tlsalpn.Seen:
    return tlsalpn.validate("127.0.0.1", port, identifier, keyauth, timeout=3)


def test_the_extension_value_is_the_der_octet_string_of_the_digest():
    value = tlsalpn.expected_value(KEYAUTH)
    assert value[:2] == b"\x04\x20" and value[2:] == hashlib.sha256(KEYAUTH.encode()).digest()


def test_sni_of_an_ip_identifier_is_its_reverse_dns_name():
    assert tlsalpn.server_name("Web.Example.Test.") == "web.example.test"
    assert tlsalpn.server_name("127.0.0.1") == "1.0.0.127.in-addr.arpa"
    assert tlsalpn.server_name("2001:db8::1").endswith(".8.b.d.0.1.0.0.2.ip6.arpa")
    assert tlsalpn.server_name("2001:db8::1").startswith("1.0.0.0.")


@pytest.mark.parametrize("identifier", [NAME, "127.0.0.1"])
def test_a_good_answer_validates_with_the_sni_and_alpn_recorded(identifier):
    with responder(*challenge_cert(identifier, KEYAUTH)) as server:
        seen = validate(server.port, identifier)
    assert seen.alpn == "acme-tls/1" and seen.sans == [identifier]
    assert seen.tls_version in ("TLSv1.2", "TLSv1.3")
    assert server.server_names == [tlsalpn.server_name(identifier)]


@pytest.mark.parametrize(
    ("cert", "problem", "words"),
    [
        (dict(digest=hashlib.sha256(b"other").digest()), "unauthorized", "not the DER OCTET STRING"),
        (dict(critical=False), "incorrectResponse", "is not critical"),
        (dict(extension=False), "incorrectResponse", "no acmeIdentifier extension"),
        (dict(sans=[NAME, "other.example.test"]), "incorrectResponse", "exactly one subjectAltName"),
        (dict(sans=[]), "incorrectResponse", "names 0: none"),
        (dict(sans=["other.example.test"]), "incorrectResponse", "is other.example.test, not"),
    ],
    ids=["wrong-digest", "not-critical", "no-extension", "two-sans", "no-san", "other-san"],
)
def test_a_broken_certificate_is_refused_with_what_was_seen(cert, problem, words):
    with (
        responder(*challenge_cert(NAME, KEYAUTH, **cert)) as server,
        pytest.raises(tlsalpn.TlsAlpnError) as caught,
    ):
        validate(server.port)
    assert caught.value.problem == problem and words in caught.value.detail, caught.value.detail
    assert caught.value.seen is not None and caught.value.seen.alpn == "acme-tls/1"
    assert caught.value.seen.sans == cert.get("sans", [NAME])


def test_an_ip_identifier_needs_an_ip_san_not_a_dns_name():
    with (
        responder(*challenge_cert("127.0.0.1", KEYAUTH, sans=["localhost"])) as server,
        pytest.raises(tlsalpn.TlsAlpnError, match=r"is localhost, not 127\.0\.0\.1"),
    ):
        validate(server.port, "127.0.0.1")


def test_a_server_that_does_not_select_acme_tls_1_is_refused():
    with (
        responder(*challenge_cert(NAME, KEYAUTH), alpn=False) as server,
        pytest.raises(tlsalpn.TlsAlpnError) as caught,
    ):
        validate(server.port)
    assert caught.value.problem == "connection"
    assert "did not select the acme-tls/1 protocol (it selected none)" in caught.value.detail


def test_nothing_listening_is_a_connection_problem():
    from tests.dnsservers import free_port

    with pytest.raises(tlsalpn.TlsAlpnError) as caught:
        validate(free_port())
    assert caught.value.problem == "connection" and "TLS handshake with 127.0.0.1:" in caught.value.detail


# --- the validator (settings, allow-list, record) --------------------------------------------------------
JWK = {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "BBBB"}


def test_the_validator_connects_through_the_allow_list_and_records_what_it_saw(settings):
    from acmeserver import jws, validation

    keyauth = jws.key_authorization("tok", JWK)
    settings.CERTMGR_ACME_VALIDATION_TIMEOUT = 3.0
    with responder(*challenge_cert("127.0.0.1", keyauth)) as server:
        settings.CERTMGR_ACME_VALIDATION_TLS_PORT = server.port
        settings.CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS = ["10.0.0.0/8"]  # loopback not among them
        refused = validation.validate("tls-alpn-01", "127.0.0.1", "tok", JWK)
        assert refused.problem is not None and refused.problem.type.endswith(":connection")
        assert "CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS" in refused.problem.detail
        assert server.server_names == []  # refused before connecting
        settings.CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS = ["127.0.0.0/8"]
        outcome = validation.validate("tls-alpn-01", "127.0.0.1", "tok", JWK)
    assert outcome.valid, outcome.problem and outcome.problem.detail
    (entry,) = outcome.record
    assert entry["address"] == "127.0.0.1" and entry["port"] == server.port
    assert entry["sni"] == "1.0.0.127.in-addr.arpa" and entry["alpn"] == "acme-tls/1"
    assert entry["san"] == ["127.0.0.1"] and "error" not in entry


def test_the_validator_records_the_error_of_a_wrong_digest(settings):
    from acmeserver import validation

    settings.CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.CERTMGR_ACME_VALIDATION_TIMEOUT = 3.0
    with responder(*challenge_cert("127.0.0.1", "not.the-key-authorization")) as server:
        settings.CERTMGR_ACME_VALIDATION_TLS_PORT = server.port
        outcome = validation.validate("tls-alpn-01", "127.0.0.1", "tok", JWK)
    assert outcome.problem is not None and outcome.problem.type.endswith(":unauthorized")
    (entry,) = outcome.record
    assert "SHA-256 of the key authorization" in entry["error"] and entry["san"] == ["127.0.0.1"]


def test_an_ip_identifier_is_issued_over_tls_alpn01_to_the_acme_library(
    live_server, tenant, hierarchy, validation_env, settings
):
    """End to end over the protocol: the authorization of 127.0.0.1 offers http-01 and tls-alpn-01, not
    dns-01; answering tls-alpn-01 makes certmgr's worker handshake with the responder (SNI
    1.0.0.127.in-addr.arpa), and the order is finalized."""
    import datetime

    from acme import challenges

    from acmeserver import jws
    from tests.acmeserver.conftest import acme_client_for, directory_url, make_profile
    from tests.acmeserver.test_flow import _order_with

    profile = make_profile(
        tenant, hierarchy[1], allow_ip_identifiers=True, challenge_types=["dns-01", "tls-alpn-01"]
    )
    client = acme_client_for(directory_url(live_server, profile))
    order = _order_with(client, ["127.0.0.1"])
    (authz,) = order.authorizations
    assert [c.chall.jobj["type"] for c in authz.body.challenges] == [
        "tls-alpn-01"
    ]  # no dns-01 for an address
    (challb,) = authz.body.challenges
    token = challb.chall.jobj["token"]
    keyauth = jws.key_authorization(token, client.net.key.public_key().to_partial_json())
    with responder(*challenge_cert("127.0.0.1", keyauth)) as server:
        settings.CERTMGR_ACME_VALIDATION_TLS_PORT = server.port
        client.answer_challenge(challb, challenges.HTTP01Response())  # the body is {} for every type
        order = client.poll_and_finalize(order, datetime.datetime.now() + datetime.timedelta(seconds=20))
    assert server.server_names == ["1.0.0.127.in-addr.arpa"]
    assert "-----BEGIN CERTIFICATE-----" in order.fullchain_pem
