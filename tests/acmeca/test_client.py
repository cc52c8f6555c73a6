"""acmeca.client against a real Pebble: directory over TLS and the outbound guard, accounts (EAB, rollover,
deactivation), badNonce retries, and error classification."""

from __future__ import annotations

import socket

import pytest
import requests
from acme import messages

from acmeca import client as acme
from certmgr.errors import OutboundRefused
from tests import acme_testbed, dnsservers

# Fixtures (pytest_plugins only works in the root conftest).
bind = dnsservers.bind
powerdns = dnsservers.powerdns
dnsdist = acme_testbed.dnsdist
pebble = acme_testbed.pebble
pebble_eab = acme_testbed.pebble_eab


@pytest.fixture(autouse=True)
def loopback_allowed(settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]


# --- pure: keys and classification (no servers) ------------------------------------------------------


@pytest.mark.parametrize("kind,alg", [("ec-p256", "ES256"), ("ec-p384", "ES384"), ("rsa-2048", "RS256")])
def test_account_key_kinds_and_pem_round_trip(kind, alg):
    key = acme.generate_account_key(kind)
    assert acme.key_kind(key) == kind
    assert acme.key_algorithm(key).name == alg
    pem = acme.account_key_to_pem(key)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    again = acme.account_key_from_pem(pem)
    assert again.public_key() == key.public_key()
    assert acme.key_algorithm(again).name == alg


def test_default_account_key_is_p256():
    assert acme.key_kind(acme.generate_account_key()) == "ec-p256"
    with pytest.raises(ValueError, match="unknown account key kind"):
        acme.generate_account_key("dsa-1024")
    with pytest.raises(ValueError, match="PEM"):
        acme.account_key_from_pem("not a key")


def test_classify_without_a_server():
    bad_nonce = acme.classify(messages.Error.with_code("badNonce", detail="stale"))
    assert bad_nonce.transient and bad_nonce.kind == "badNonce" and bad_nonce.detail == "stale"
    assert bad_nonce.typ == "urn:ietf:params:acme:error:badNonce"
    limited = messages.Error.with_code("rateLimited", detail="too many")
    limited.retry_after = 120.0
    problem = acme.classify(limited)
    assert problem.transient and problem.retry_after == 120.0
    for code in ("unauthorized", "rejectedIdentifier", "caa", "externalAccountRequired", "malformed"):
        assert not acme.classify(messages.Error.with_code(code, detail="no")).transient, code
    server = messages.Error(typ="about:blank", detail="oops")
    server.http_status = 503
    assert acme.classify(server).transient
    assert acme.classify(requests.exceptions.ConnectTimeout("slow")).transient
    assert acme.classify(OutboundRefused("nope")).kind == "outboundRefused"
    assert acme.parse_retry_after("30") == 30.0
    assert acme.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert acme.parse_retry_after("soon") is None


# --- against Pebble -----------------------------------------------------------------------------------


@pytest.mark.servers
def test_directory_over_tls_with_the_bundle(pebble):
    directory = acme.fetch_directory(pebble.directory_url, tls_ca_bundle=pebble.tls_ca_bundle)
    assert directory["newAccount"].startswith("https://127.0.0.1:")
    assert directory["keyChange"]


@pytest.mark.servers
def test_directory_without_the_bundle_is_a_clear_tls_error(pebble):
    with pytest.raises(acme.AcmeProblem) as failed:
        acme.fetch_directory(pebble.directory_url)
    assert failed.value.kind == "tlsUntrusted"
    assert "add its CA as the TLS trust bundle" in str(failed.value)
    assert "certificate verify failed: unable to get local issuer certificate" in str(failed.value)
    assert not failed.value.transient


@pytest.mark.servers
def test_loopback_directory_refused_without_the_setting(pebble, settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(OutboundRefused, match="CERTMGR_OUTBOUND_ALLOWED_NETWORKS"):
        acme.fetch_directory(pebble.directory_url, tls_ca_bundle=pebble.tls_ca_bundle)
    with pytest.raises(OutboundRefused):
        acme.register_account(
            directory_url=pebble.directory_url,
            account_key=acme.generate_account_key(),
            tls_ca_bundle=pebble.tls_ca_bundle,
        )


@pytest.mark.servers
def test_not_a_directory_and_http_errors(pebble):
    base = pebble.directory_url.removesuffix("/dir")
    with pytest.raises(acme.AcmeProblem) as missing:
        acme.fetch_directory(f"{base}/no-such-path", tls_ca_bundle=pebble.tls_ca_bundle)
    assert missing.value.http_status == 404 and not missing.value.transient, repr(missing.value)
    with pytest.raises(acme.AcmeProblem) as wrong:
        acme.fetch_directory(f"{pebble.management_url}/roots/0", tls_ca_bundle=pebble.tls_ca_bundle)
    assert wrong.value.kind == "notADirectory", repr(wrong.value)
    assert "is not an ACME directory" in str(wrong.value)


@pytest.mark.servers
def test_register_account_and_find_it_again(pebble):
    key = acme.generate_account_key()
    account = acme.register_account(
        directory_url=pebble.directory_url,
        email="ops@example.com",
        account_key=key,
        tls_ca_bundle=pebble.tls_ca_bundle,
    )
    assert account.status == "valid"
    assert account.uri.startswith(pebble.directory_url.removesuffix("/dir"))
    assert account.contact == ("mailto:ops@example.com",)
    # Registering the same key again returns the same account.
    again = acme.register_account(
        directory_url=pebble.directory_url, account_key=key, tls_ca_bundle=pebble.tls_ca_bundle
    )
    assert again.uri == account.uri and again.status == "valid"


@pytest.mark.servers
def test_rsa_account(pebble):
    account = acme.register_account(
        directory_url=pebble.directory_url,
        account_key=acme.generate_account_key("rsa-2048"),
        tls_ca_bundle=pebble.tls_ca_bundle,
    )
    assert account.status == "valid"


@pytest.mark.servers
def test_eab_required_right_and_wrong(pebble_eab):
    common = {"directory_url": pebble_eab.directory_url, "tls_ca_bundle": pebble_eab.tls_ca_bundle}
    with pytest.raises(acme.AcmeProblem) as required:
        acme.register_account(account_key=acme.generate_account_key(), **common)
    assert required.value.kind == "externalAccountRequired"
    assert "external account binding (EAB)" in str(required.value)
    assert not required.value.transient

    # Without the directory's hint the CA's own refusal gives the same clear error.
    client = acme.client_for(account_key=acme.generate_account_key(), **common)
    try:
        with pytest.raises(messages.Error) as raw:
            client.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    finally:
        client.net.close()
    assert acme.classify(raw.value).kind == "externalAccountRequired"

    with pytest.raises(acme.AcmeProblem) as wrong:
        acme.register_account(
            account_key=acme.generate_account_key(),
            eab_kid=pebble_eab.eab_kid,
            eab_hmac_key="d3JvbmctaG1hYy1rZXktd3JvbmctaG1hYy1rZXktd3Jvbmc",
            **common,
        )
    assert wrong.value.kind == "eabInvalid", repr(wrong.value)
    assert "EAB" in str(wrong.value) and wrong.value.detail, str(wrong.value)

    with pytest.raises(acme.AcmeProblem, match="both the key id and the HMAC key"):
        acme.register_account(account_key=acme.generate_account_key(), eab_kid="x", **common)
    with pytest.raises(acme.AcmeProblem, match="base64url"):
        acme.register_account(
            account_key=acme.generate_account_key(), eab_kid="x", eab_hmac_key="***", **common
        )

    account = acme.register_account(
        account_key=acme.generate_account_key(),
        eab_kid=pebble_eab.eab_kid,
        eab_hmac_key=pebble_eab.eab_hmac_key,
        email="eab@example.com",
        **common,
    )
    assert account.status == "valid"


@pytest.mark.servers
def test_key_rollover(pebble):
    common = {"directory_url": pebble.directory_url, "tls_ca_bundle": pebble.tls_ca_bundle}
    old = acme.generate_account_key()
    account = acme.register_account(account_key=old, email="old@example.com", **common)
    new = acme.generate_account_key("rsa-2048")  # a different kind on purpose
    rolled = acme.rollover_account_key(account_uri=account.uri, account_key=old, new_key=new, **common)
    assert rolled.uri == account.uri and rolled.status == "valid"

    updated = acme.update_account(account_uri=account.uri, account_key=new, email="new@example.com", **common)
    assert updated.contact == ("mailto:new@example.com",)
    with pytest.raises(acme.AcmeProblem) as refused:
        acme.update_account(account_uri=account.uri, account_key=old, email="x@example.com", **common)
    assert refused.value.is_acme_error and not refused.value.transient, repr(refused.value)
    # The new key finds the same account through newAccount; the old one is no longer bound to it.
    assert acme.register_account(account_key=new, **common).uri == account.uri
    assert acme.register_account(account_key=old, **common).uri != account.uri


@pytest.mark.servers
def test_deactivation(pebble):
    common = {"directory_url": pebble.directory_url, "tls_ca_bundle": pebble.tls_ca_bundle}
    key = acme.generate_account_key()
    account = acme.register_account(account_key=key, **common)
    gone = acme.deactivate_account(account_uri=account.uri, account_key=key, **common)
    assert gone.status == "deactivated"
    with pytest.raises(acme.AcmeProblem) as refused:
        acme.update_account(account_uri=account.uri, account_key=key, email="x@example.com", **common)
    assert refused.value.kind == "unauthorized" and not refused.value.transient, repr(refused.value)


@pytest.mark.servers
def test_bad_nonces_are_retried(pebble):
    key = acme.generate_account_key()
    account = acme.register_account(
        directory_url=pebble.directory_url, account_key=key, tls_ca_bundle=pebble.tls_ca_bundle
    )
    client = acme.client_for(
        directory_url=pebble.directory_url,
        account_key=key,
        account_uri=account.uri,
        tls_ca_bundle=pebble.tls_ca_bundle,
    )
    try:
        for _ in range(200):
            client._post_as_get(account.uri)
    finally:
        client.net.close()
    # P(no rejection in 200 POSTs at Pebble's 5%) is about 3.5e-5; every POST succeeded.
    assert client.net.bad_nonces > 0, f"no badNonce in {client.net.posts} POSTs"
    assert client.net.posts == 200 + client.net.bad_nonces


@pytest.mark.servers
def test_classify_real_pebble_errors(pebble):
    key = acme.generate_account_key()
    account = acme.register_account(
        directory_url=pebble.directory_url, account_key=key, tls_ca_bundle=pebble.tls_ca_bundle
    )
    client = acme.client_for(
        directory_url=pebble.directory_url,
        account_key=key,
        account_uri=account.uri,
        tls_ca_bundle=pebble.tls_ca_bundle,
    )
    try:
        with pytest.raises(messages.Error) as raw:
            client._post(client.directory["newOrder"], messages.NewOrder(identifiers=()))
    finally:
        client.net.close()
    problem = acme.classify(raw.value)
    assert problem.is_acme_error and problem.typ.startswith("urn:ietf:params:acme:error:"), repr(problem)
    assert problem.kind == "malformed", repr(problem)
    assert problem.detail and not problem.transient and problem.http_status == 400, repr(problem)


def test_classify_connection_error_to_a_dead_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(acme.AcmeProblem) as failed:
            acme.fetch_directory(f"https://127.0.0.1:{port}/dir")
    assert failed.value.kind == "connection" and failed.value.transient, repr(failed.value)
    assert "cannot reach the ACME server" in str(failed.value)
    # The operator's words: where and what, a hint; never urllib3's pool or an exception repr.
    assert str(failed.value) == (
        f"cannot reach the ACME server at 127.0.0.1:{port}: the connection was refused "
        "(nothing listens on that port)"
    )
    for leak in ("HTTPSConnectionPool", "urllib3", "object at 0x", "Max retries", "NewConnectionError"):
        assert leak not in str(failed.value)
    assert failed.value.hint.startswith("Check the directory URL")
    from certmgr.admin_base import error_text

    assert error_text(failed.value) == (
        f"Cannot reach the ACME server at 127.0.0.1:{port}: the connection was refused (nothing listens on "
        "that port). Check the directory URL, that the ACME server is running, and the outbound firewall."
    )


@pytest.mark.servers
def test_session_deactivates_an_abandoned_authorization(pebble):
    """The steps the order flow does not reach on its happy path: an order and its authorization fetched
    by URL, then the authorization abandoned at the CA (RFC 8555 §7.5.2), as a cancel does."""
    key = acme.generate_account_key()
    account = acme.register_account(
        directory_url=pebble.directory_url, account_key=key, tls_ca_bundle=pebble.tls_ca_bundle
    )
    with acme.open_session(
        directory_url=pebble.directory_url,
        account_key=key,
        account_uri=account.uri,
        tls_ca_bundle=pebble.tls_ca_bundle,
    ) as session:
        name = messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="abandoned.session.test")
        orderr = session.new_order([name])
        assert orderr.body.status == messages.STATUS_PENDING and orderr.uri
        assert session.order(orderr.uri).body.authorizations == orderr.body.authorizations
        url = orderr.body.authorizations[0]
        authzr, _ = session.authorization(url)
        assert authzr.body.identifier == name and authzr.body.status == messages.STATUS_PENDING
        assert session.deactivate_authorization(url).body.status == messages.STATUS_DEACTIVATED
        assert session.authorization(url)[0].body.status == messages.STATUS_DEACTIVATED
        assert session.order(orderr.uri).body.status == messages.STATUS_DEACTIVATED
