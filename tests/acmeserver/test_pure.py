"""The Django-free protocol modules alone: JWS parsing and verification, thumbprints, identifiers, the CSR
check, problem documents."""

from __future__ import annotations

import json

import josepy as jose
import pytest
from acme import challenges, messages
from acme import jws as acme_jws
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from acmeserver import identifiers, jws
from acmeserver.problems import AcmeProblem


def signed(payload: dict | None, key, alg, **header) -> bytes:
    body = b"" if payload is None else json.dumps(payload).encode()
    return (
        acme_jws.JWS.sign(body, key=key, alg=alg, nonce=b"n" * 16, url="https://x/acme", **header)
        .json_dumps()
        .encode()
    )


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1())), jose.ES256),
        (jose.JWKEC(key=ec.generate_private_key(ec.SECP384R1())), jose.ES384),
        (jose.JWKRSA(key=rsa.generate_private_key(65537, 2048)), jose.RS256),
    ],
)
def test_a_jws_from_the_acme_library_parses_and_verifies(key, alg):
    request = jws.parse(signed({"a": 1}, key, alg))
    assert request.alg == alg.name and request.url == "https://x/acme" and request.kid is None
    assert request.json() == {"a": 1} and not request.post_as_get
    jws.verify(request, request.jwk)
    other = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1())).public_key().to_partial_json()
    with pytest.raises(AcmeProblem) as refused:
        jws.verify(request, other)
    assert refused.value.kind in ("malformed", "badSignatureAlgorithm")


def test_thumbprints_and_key_authorizations_match_the_acme_library():
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    public = key.public_key().to_partial_json()
    assert jws.thumbprint(public) == jose.b64encode(key.thumbprint()).decode()
    http01 = challenges.HTTP01(token=b"t" * 16)
    assert jws.key_authorization(http01.encode("token"), public) == http01.key_authorization(key)
    dns01 = challenges.DNS01(token=b"t" * 16)
    assert jws.dns01_value(dns01.encode("token"), public) == dns01.validation(key)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"{", "malformed"),
        (
            json.dumps({"protected": "e30", "payload": "", "signature": "", "header": {}}).encode(),
            "malformed",
        ),
        (json.dumps({"signatures": []}).encode(), "malformed"),
        (
            json.dumps(
                {
                    "protected": jws.b64encode(b'{"alg":"none","nonce":"a","url":"u","kid":"k"}'),
                    "payload": "",
                    "signature": "",
                }
            ).encode(),
            "badSignatureAlgorithm",
        ),
        (
            json.dumps(
                {
                    "protected": jws.b64encode(b'{"alg":"ES256","url":"u","kid":"k"}'),
                    "payload": "",
                    "signature": "",
                }
            ).encode(),
            "badNonce",
        ),
        (
            json.dumps(
                {
                    "protected": jws.b64encode(b'{"alg":"ES256","nonce":"a","url":"u"}'),
                    "payload": "",
                    "signature": "",
                }
            ).encode(),
            "malformed",
        ),
        (
            json.dumps(
                {
                    "protected": jws.b64encode(b'{"alg":"ES256","nonce":"a","url":"u","kid":"k","jwk":{}}'),
                    "payload": "",
                    "signature": "",
                }
            ).encode(),
            "malformed",
        ),
        (json.dumps({"protected": "e30=", "payload": "", "signature": ""}).encode(), "malformed"),
    ],
)
def test_malformed_jws_shapes_are_named(body, kind):
    with pytest.raises(AcmeProblem) as refused:
        jws.parse(body)
    assert refused.value.kind == kind


def test_identifiers_are_normalised_and_refusals_collected():
    got = identifiers.clean(
        [
            {"type": "dns", "value": "WWW.Example.COM."},
            {"type": "dns", "value": "www.example.com"},
            {"type": "ip", "value": "2001:db8::0001"},
        ],
        allow_wildcards=False,
        allow_ip=True,
    )
    assert [(i.type, i.value) for i in got] == [("dns", "www.example.com"), ("ip", "2001:db8::1")]
    with pytest.raises(AcmeProblem) as refused:
        identifiers.clean(
            [
                {"type": "dns", "value": "*.example.com"},
                {"type": "dns", "value": "a..b"},
                {"type": "dns", "value": "a.*.b"},
                {"type": "dns", "value": "10.0.0.1"},
            ],
            allow_wildcards=False,
            allow_ip=False,
        )
    assert refused.value.kind == "rejectedIdentifier" and len(refused.value.subproblems) == 4
    wildcard = identifiers.clean(
        [{"type": "dns", "value": "*.example.com"}], allow_wildcards=True, allow_ip=False
    )
    assert wildcard[0].wildcard and wildcard[0].base == "example.com"


def test_the_csr_check_wants_exactly_the_orders_names():
    order = [identifiers.Identifier("dns", "a.example"), identifiers.Identifier("ip", "10.0.0.1")]
    assert identifiers.csr_problem(order, common_name="A.example", sans=["a.example", "10.0.0.1"]) is None
    extra = identifiers.csr_problem(order, common_name=None, sans=["a.example", "10.0.0.1", "b.example"])
    assert extra is not None and extra.kind == "badCSR" and "b.example" in extra.detail
    assert extra.subproblems[0].identifier == {"type": "dns", "value": "b.example"}
    cn = identifiers.csr_problem(order, common_name="c.example", sans=["a.example", "10.0.0.1"])
    assert cn is not None and "common name" in cn.detail


def test_problem_documents_read_back_with_the_acme_library():
    problem = AcmeProblem(
        "rejectedIdentifier",
        "two names",
        subproblems=[AcmeProblem("rejectedIdentifier", "x", identifier={"type": "dns", "value": "x.test"})],
    )
    body = problem.to_json()
    assert body["status"] == 400
    error = messages.Error.from_json(body)
    assert error.typ == "urn:ietf:params:acme:error:rejectedIdentifier"
    assert error.subproblems[0].identifier.value == "x.test"
    with pytest.raises(ValueError, match="unknown ACME error type"):
        AcmeProblem("madeUp", "no")
