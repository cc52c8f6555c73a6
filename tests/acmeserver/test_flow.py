"""An order from the ``acme`` library end to end: account, order, HTTP-01 and DNS-01 validated by certmgr
itself, finalize through the issuance core, download, revocation."""

from __future__ import annotations

import datetime
import time

import pytest
from acme import challenges, messages
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from acmeserver.models import AcmeServerAccount, AcmeServerChallenge, AcmeServerOrder
from certmgr.models import AuditEvent
from pki import x509
from tests.acmeserver.conftest import acme_client_for, directory_url, loopback_name

pytestmark = pytest.mark.servers


def csr_for(names: list[str], key=None) -> tuple[bytes, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = x509.build_csr(key, x509.Subject(), names)
    return csr.public_bytes(serialization.Encoding.PEM), key


def answer_http01(client, order, token_server):
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = challb.response_and_validation(client.net.key)
        token_server.tokens[challb.chall.encode("token")] = validation
        client.answer_challenge(challb, response)


def test_an_order_is_validated_over_http01_finalized_and_downloaded(
    live_server, profile, validation_env, token_server
):
    name = loopback_name(validation_env)
    client = acme_client_for(directory_url(live_server, profile))
    csr_pem, _ = csr_for([name])
    order = client.new_order(csr_pem)
    assert order.body.status == messages.STATUS_PENDING
    assert [i.value for i in order.body.identifiers] == [name]
    answer_http01(client, order, token_server)
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
    order = client.poll_and_finalize(order, deadline)
    assert order.body.status == messages.STATUS_VALID
    leaf = cx509.load_pem_x509_certificate(order.fullchain_pem.encode())
    assert leaf.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value.get_values_for_type(
        cx509.DNSName
    ) == [name]
    # The validator fetched from the name's address with the name as Host.
    assert (f"{name}:{token_server.port}", token_server.requests[-1][1]) == token_server.requests[-1]
    row = AcmeServerOrder.objects.get()
    assert row.status == "valid" and row.certificate is not None
    assert row.certificate.ca == profile.ca and row.certificate.sans == [name]
    assert row.certificate.private_key == ""  # the client's key stays with the client
    challenge = AcmeServerChallenge.objects.get(status="valid")
    assert challenge.validation_record[0]["address"] == "127.0.0.1"
    assert challenge.validation_record[0]["status"] == 200
    actions = set(
        AuditEvent.objects.filter(organization=profile.organization).values_list("action", flat=True)
    )
    assert {
        "acme_server.account.create",
        "acme_server.order.create",
        "acme_server.challenge.validate",
        "acme_server.order.finalize",
        "certificate.issue",
    } <= actions
    assert AcmeServerAccount.objects.get().contact == ["mailto:ops@acme.test"]


def _order_with(client, names, csr_pem=None):
    csr_pem = csr_pem or csr_for(names)[0]
    return client.new_order(csr_pem)


def test_a_wrong_http01_answer_makes_the_challenge_authorization_and_order_invalid(
    live_server, profile, validation_env, token_server
):
    name = loopback_name(validation_env)
    client = acme_client_for(directory_url(live_server, profile))
    order = _order_with(client, [name])
    authz = order.authorizations[0]
    challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
    token_server.tokens[challb.chall.encode("token")] = "not the key authorization"
    client.answer_challenge(challb, challb.response(client.net.key))
    authz, _ = client.poll(authz)
    assert authz.body.status == messages.STATUS_INVALID
    failed = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
    assert failed.error.typ == "urn:ietf:params:acme:error:incorrectResponse"
    assert "not the key authorization" in failed.error.detail
    row = AcmeServerOrder.objects.get()
    assert row.status == "invalid" and row.certificate is None
    event = AuditEvent.objects.get(action="acme_server.challenge.validate")
    assert event.outcome == "failure"


def test_a_name_outside_the_validators_networks_is_not_fetched(
    live_server, profile, validation_env, settings, token_server
):
    settings.CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS = ["10.0.0.0/8"]  # loopback not among them
    name = loopback_name(validation_env)
    client = acme_client_for(directory_url(live_server, profile))
    order = _order_with(client, [name])
    answer_http01(client, order, token_server)
    authz, _ = client.poll(order.authorizations[0])
    assert authz.body.status == messages.STATUS_INVALID
    error = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)).error
    assert error.typ == "urn:ietf:params:acme:error:connection"
    assert "CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS" in error.detail
    assert token_server.requests == []  # nothing was fetched
    record = AcmeServerChallenge.objects.get(type="http-01", status="invalid").validation_record
    assert record[0]["address"] == "127.0.0.1" and record[0]["error"].startswith("refused")


def test_an_unresolvable_name_is_a_dns_problem(live_server, profile, validation_env, token_server):
    client = acme_client_for(directory_url(live_server, profile))
    order = _order_with(client, ["missing.pdns.test"])
    answer_http01(client, order, token_server)
    authz, _ = client.poll(order.authorizations[0])
    error = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)).error
    assert error.typ == "urn:ietf:params:acme:error:dns"


def test_dns01_is_validated_from_the_txt_record_and_proves_a_wildcard(
    live_server, tenant, hierarchy, validation_env
):
    from tests.acmeserver.conftest import make_profile, unique_name

    profile = make_profile(tenant, hierarchy[1], challenge_types=["dns-01"], allow_wildcards=True)
    base = unique_name(validation_env.zone, "wild")
    client = acme_client_for(directory_url(live_server, profile))
    order = _order_with(client, [f"*.{base}", base])
    values = []
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01))
        values.append(challb.validation(client.net.key))
    validation_env.set_txt(f"_acme-challenge.{base}", values)
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01))
        client.answer_challenge(challb, challb.response(client.net.key))
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
    order = client.poll_and_finalize(order, deadline)
    leaf = cx509.load_pem_x509_certificate(order.fullchain_pem.encode())
    sans = leaf.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(cx509.DNSName)) == sorted([f"*.{base}", base])
    record = AcmeServerChallenge.objects.filter(type="dns-01", status="valid").first().validation_record
    assert record[0]["record"] == f"_acme-challenge.{base}" and record[0]["expected"] in record[0]["values"]


def test_an_ip_identifier_is_validated_over_http01_at_the_address(
    live_server, tenant, hierarchy, validation_env, token_server
):
    from tests.acmeserver.conftest import assert_only_the_address, make_profile

    profile = make_profile(tenant, hierarchy[1], allow_ip_identifiers=True)
    client = acme_client_for(directory_url(live_server, profile))
    order = _order_with(client, ["127.0.0.1"])
    assert order.body.identifiers[0].typ.name == "ip"
    answer_http01(client, order, token_server)
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
    order = client.poll_and_finalize(order, deadline)
    leaf = cx509.load_pem_x509_certificate(order.fullchain_pem.encode())
    assert_only_the_address(leaf, "127.0.0.1")
    assert token_server.requests[-1][0] == f"127.0.0.1:{token_server.port}"


def _validated_order(client, name, token_server):
    order = _order_with(client, [name])
    answer_http01(client, order, token_server)
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
    for _ in range(100):
        authz, _ = client.poll(order.authorizations[0])
        if authz.body.status != messages.STATUS_PENDING or datetime.datetime.now() > deadline:
            break
        time.sleep(0.2)
    assert authz.body.status == messages.STATUS_VALID
    return order


def test_caa_is_checked_at_finalize_with_the_profiles_identities(
    live_server, tenant, hierarchy, validation_env, token_server
):
    """RFC 8659 and RFC 8657 through PowerDNS: a record naming another CA, or this one for dns-01 only,
    forbids (``caa``, quoting it; nothing issued); one naming this directory and the account allows."""
    from tests.acmeserver.conftest import make_profile

    profile = make_profile(tenant, hierarchy[1], name="CAA", slug="caa", caa_identities=["Certmgr.Internal."])
    assert profile.caa_identities == ["certmgr.internal"]
    url = directory_url(live_server, profile)
    client = acme_client_for(url)
    assert client.directory.meta.caa_identities == ("certmgr.internal",)
    name = loopback_name(validation_env, "caa")
    parent = name.split(".", 1)[1]
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
    try:
        validation_env.set_rrset(name, "CAA", ['0 issue "letsencrypt.org"'])
        order = _validated_order(client, name, token_server)
        with pytest.raises(messages.Error) as refused:
            client.poll_and_finalize(order, deadline)
        assert refused.value.typ == "urn:ietf:params:acme:error:caa"
        assert (
            f"CAA at {name} forbids" in refused.value.detail
            and '0 issue "letsencrypt.org"' in refused.value.detail
        )
        validation_env.set_rrset(name, "CAA", ['0 issue "certmgr.internal; validationmethods=dns-01"'])
        with pytest.raises(messages.Error) as refused:
            client.poll_and_finalize(order, deadline)
        assert (
            refused.value.typ == "urn:ietf:params:acme:error:caa"
            and "validationmethods" in refused.value.detail
        )
        assert (
            AcmeServerOrder.objects.get().status == "ready" and not AcmeServerOrder.objects.get().certificate
        )
        # the relevant set is the closest one climbing up: the name's own record goes, the parent's applies
        validation_env.set_rrset(name, "CAA", [])
        account_url = client.net.account.uri
        validation_env.set_rrset(parent, "CAA", [f'0 issue "certmgr.internal; accounturi={account_url}"'])
        order = client.poll_and_finalize(order, deadline)
        assert order.body.status == messages.STATUS_VALID
        other = acme_client_for(url)  # another account of the directory: not the one the record names
        second = _validated_order(other, loopback_name(validation_env, "caa2"), token_server)
        with pytest.raises(messages.Error) as refused:
            other.poll_and_finalize(second, deadline)
        assert refused.value.typ == "urn:ietf:params:acme:error:caa"
    finally:
        validation_env.set_rrset(name, "CAA", [])
        validation_env.set_rrset(parent, "CAA", [])
