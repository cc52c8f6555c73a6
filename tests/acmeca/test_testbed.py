"""The ACME test bed works: Pebble over TLS, dnsdist routing to PowerDNS and BIND, complete orders.

These drive Pebble with the ``acme`` library directly (only as the tests' client): they prove the bed that
certmgr's own ACME tests build on, not certmgr.
"""

from __future__ import annotations

import datetime
import http.server
import secrets
import threading
import time

import pytest
import requests
from acme import challenges, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests import acme_testbed, dnsservers
from tests.acme_testbed import HOST, acme_client_for, set_a_record, verify_chain

# Fixtures (pytest_plugins only works in the root conftest).
bind = dnsservers.bind
powerdns = dnsservers.powerdns
dnsdist = acme_testbed.dnsdist
pebble = acme_testbed.pebble
pebble_eab = acme_testbed.pebble_eab

pytestmark = pytest.mark.servers


def unique(zone: str) -> str:
    """A fresh name in ``zone``: Pebble reuses valid authorizations (PEBBLE_AUTHZREUSE, 50%)."""
    return f"t{secrets.token_hex(4)}.{zone.rstrip('.')}"


def register(client, **kwargs):
    return client.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True, **kwargs))


def csr_for(names: list[str]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return crypto_util.make_csr(pem, names)


def deadline(seconds: float = 30) -> datetime.datetime:
    return datetime.datetime.now() + datetime.timedelta(seconds=seconds)


def leaf_of(fullchain_pem: str) -> str:
    end = "-----END CERTIFICATE-----"
    return fullchain_pem[: fullchain_pem.index(end) + len(end)] + "\n"


def test_directory_over_tls_with_the_bundle(pebble):
    r = requests.get(pebble.directory_url, verify=str(pebble.tls_ca_bundle_path), timeout=10)
    assert r.status_code == 200
    assert {"newAccount", "newNonce", "newOrder", "revokeCert"} <= set(r.json())
    # Without the bundle Pebble's HTTPS certificate is not trusted: certmgr needs the TLS bundle option.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(pebble.directory_url, timeout=10)
    assert "BEGIN CERTIFICATE" in pebble.roots_pem()
    assert "BEGIN CERTIFICATE" in pebble.intermediates_pem()


def test_txt_through_dnsdist_from_powerdns_and_bind(dnsdist, powerdns, bind):
    in_pdns = f"_acme-challenge.{unique(powerdns.zone)}"
    in_bind = f"_acme-challenge.{unique(bind.zone)}"
    powerdns.set_txt(in_pdns, ["via-powerdns-api"])
    bind.update_txt(in_bind, ["via-rfc2136"])
    try:
        assert dnsdist.txt_records(in_pdns) == ["via-powerdns-api"]
        assert dnsdist.txt_records(in_bind) == ["via-rfc2136"]
        # No cache in dnsdist: a change is visible at once.
        powerdns.set_txt(in_pdns, ["changed"])
        assert dnsdist.txt_records(in_pdns) == ["changed"]
    finally:
        powerdns.set_txt(in_pdns, [])
        bind.update_txt(in_bind, [])
    assert dnsdist.txt_records(in_pdns) == []

    # A zone added to BIND later is routed at runtime (dnsdist's console).
    extra = bind.add_zone(f"z{secrets.token_hex(3)}.bind-extra.test")
    dnsdist.route(extra, "bind")
    bind.update_txt(f"_acme-challenge.{extra}", ["extra"], zone=extra)
    assert dnsdist.txt_records(f"_acme-challenge.{extra}") == ["extra"]


def test_complete_dns01_order_through_powerdns(pebble, powerdns):
    started = time.monotonic()
    client = acme_client_for(pebble)
    register(client, email="ops@example.com")
    names = [unique(powerdns.zone)]
    names.append(f"www.{names[0]}")
    order = client.new_order(csr_for(names))
    written = []
    try:
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:  # reused authorization: nothing to answer
                continue
            challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01))
            record = challb.chall.validation_domain_name(authz.body.identifier.value)
            powerdns.set_txt(record, [challb.chall.validation(client.net.key)])
            written.append(record)
            client.answer_challenge(challb, challb.chall.response(client.net.key))
        order = client.poll_and_finalize(order, deadline())
    finally:
        for record in written:
            powerdns.set_txt(record, [])
    assert order.fullchain_pem.count("BEGIN CERTIFICATE") >= 2, order.fullchain_pem
    result = verify_chain(leaf_of(order.fullchain_pem), pebble.roots_pem(), pebble.intermediates_pem())
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"dns-01 order for {names}: {time.monotonic() - started:.2f}s, {client.net.bad_nonces} badNonce")


def test_complete_dns01_order_through_bind(pebble, bind):
    client = acme_client_for(pebble)
    register(client)
    name = unique(bind.zone)
    order = client.new_order(csr_for([name]))
    (authz,) = order.authorizations
    challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01))
    record = challb.chall.validation_domain_name(name)
    bind.update_txt(record, [challb.chall.validation(client.net.key)])
    try:
        client.answer_challenge(challb, challb.chall.response(client.net.key))
        order = client.poll_and_finalize(order, deadline())
    finally:
        bind.update_txt(record, [])
    result = verify_chain(leaf_of(order.fullchain_pem), pebble.roots_pem(), pebble.intermediates_pem())
    assert result.returncode == 0, result.stdout + result.stderr


def test_wrong_txt_makes_the_order_invalid_with_the_ca_message(pebble, powerdns):
    client = acme_client_for(pebble)
    register(client)
    name = unique(powerdns.zone)
    order = client.new_order(csr_for([name]))
    (authz,) = order.authorizations
    challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01))
    record = challb.chall.validation_domain_name(name)
    powerdns.set_txt(record, ["not-the-key-authorization"])
    try:
        client.answer_challenge(challb, challb.chall.response(client.net.key))
        with pytest.raises(errors.ValidationError) as failed:
            client.poll_authorizations(order, deadline())
    finally:
        powerdns.set_txt(record, [])
    (error,) = [c.error for c in failed.value.failed_authzrs[0].body.challenges if c.error]
    assert error.typ == "urn:ietf:params:acme:error:unauthorized", error
    assert error.detail, error  # the CA's message, which certmgr must show


def test_nonce_rejection_is_on(pebble):
    """Pebble rejects 5% of nonces by default. ``acme.client.ClientNetwork.post`` retries a ``badNonce``
    once only; ``RetryingNetwork`` retries up to 6 times and counts. certmgr must retry ``badNonce``
    itself (a transient error), never assume one retry is enough."""
    client = acme_client_for(pebble)
    regr = register(client)
    for _ in range(200):
        client.query_registration(regr)
    # P(no rejection in 200 POSTs at 5%) = 0.95**200, about 3.5e-5.
    assert client.net.bad_nonces > 0, f"no badNonce in {client.net.posts} POSTs: is nonce rejection off?"


def test_eab_required_and_accepted(pebble_eab):
    client = acme_client_for(pebble_eab)
    with pytest.raises(messages.Error) as refused:
        register(client)
    assert refused.value.code == "externalAccountRequired", refused.value
    eab = messages.ExternalAccountBinding.from_data(
        account_public_key=client.net.key.public_key(),
        kid=pebble_eab.eab_kid,
        hmac_key=pebble_eab.eab_hmac_key,
        directory=client.directory,
    )
    regr = register(client, external_account_binding=eab)
    assert str(regr.body.status) == "valid"
    assert regr.uri.startswith(pebble_eab.directory_url.removesuffix("/dir"))


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    tokens: dict[str, str] = {}

    def do_GET(self):
        prefix = "/.well-known/acme-challenge/"
        body = self.tokens.get(self.path[len(prefix) :]) if self.path.startswith(prefix) else None
        self.send_response(200 if body else 404)
        self.end_headers()
        if body:
            self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_complete_http01_order(pebble, powerdns):
    """Pebble's VA resolves the name through dnsdist (an A record in PowerDNS -> 127.0.0.1) and fetches
    the token from ``127.0.0.1:<pebble.http_port>``: where certmgr's responder must listen."""
    name = unique(powerdns.zone)
    set_a_record(powerdns, name, HOST)
    server = http.server.ThreadingHTTPServer((HOST, pebble.http_port), _TokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = acme_client_for(pebble)
        register(client)
        order = client.new_order(csr_for([name]))
        (authz,) = order.authorizations
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = challb.chall.response_and_validation(client.net.key)
        _TokenHandler.tokens[challb.chall.encode("token")] = validation
        client.answer_challenge(challb, response)
        order = client.poll_and_finalize(order, deadline())
    finally:
        server.shutdown()
        server.server_close()
    result = verify_chain(leaf_of(order.fullchain_pem), pebble.roots_pem(), pebble.intermediates_pem())
    assert result.returncode == 0, result.stdout + result.stderr
