"""RFC 8555 §6 and the resources' rules, request by request (Django's test client sends hand-made JWS):
each violation answers its problem type, with a fresh nonce, and leaves nothing half made."""

from __future__ import annotations

import base64
import json

import josepy as jose
import pytest
from acme import jws as acme_jws
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.test import Client

from acmeserver import services
from acmeserver.models import AcmeServerAccount, AcmeServerAuthorization, AcmeServerOrder
from pki import services as pki_services
from pki import x509
from pki.models import Certificate
from tests.acmeserver.conftest import make_profile
from tests.conftest import SYSTEM
from tests.pki.test_lint import assert_clean

ERR = "urn:ietf:params:acme:error:"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Acme:
    """A hand-driven ACME client on Django's test client: every JWS field can be got wrong on purpose."""

    def __init__(self, profile, key=None):
        self.http = Client()
        self.base = f"http://testserver/acme/{profile.organization.slug}/{profile.slug}/"
        self.key = key or jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        self.kid: str | None = None
        self.last_nonce: str | None = None

    def url(self, path: str) -> str:
        return self.base + path

    def nonce(self) -> str:
        response = self.http.head(self.url("new-nonce"))
        assert response.status_code == 200, response.content
        return response["Replay-Nonce"]

    def post(
        self, url, payload=None, *, kid=None, use_jwk=None, nonce=None, key=None, alg=None, signed_url=None
    ):
        key = key or self.key
        alg = alg or (jose.ES256 if isinstance(key, jose.JWKEC) else jose.RS256)
        kid = kid if kid is not None else (None if use_jwk else self.kid)
        body = b"" if payload is None else json.dumps(payload).encode()
        raw_nonce = jose.decode_b64jose(nonce or self.nonce())
        signed = acme_jws.JWS.sign(body, key=key, alg=alg, nonce=raw_nonce, url=signed_url or url, kid=kid)
        response = self.http.post(url, signed.json_dumps(), content_type="application/jose+json")
        assert response.has_header("Replay-Nonce"), (response.status_code, response.content)
        self.last_nonce = response["Replay-Nonce"]
        return response

    def register(self, **payload):
        response = self.post(self.url("new-account"), {"termsOfServiceAgreed": True, **payload}, use_jwk=True)
        assert response.status_code in (200, 201), response.content
        self.kid = response["Location"]
        return response

    def order(self, *names, kind="dns"):
        return self.post(self.url("new-order"), {"identifiers": [{"type": kind, "value": n} for n in names]})


def problem(response, kind: str, status: int | None = None):
    assert response["Content-Type"] == "application/problem+json", (response.status_code, response.content)
    body = response.json()
    assert body["type"] == ERR + kind, body
    if status is not None:
        assert response.status_code == status, body
    assert body["detail"]
    return body


@pytest.fixture
def profile(tenant, hierarchy):
    return make_profile(tenant, hierarchy[1])


@pytest.fixture
def acme(profile):
    client = Acme(profile)
    client.register(contact=["mailto:ops@acme.test"])
    return client


def ready_order(acme, *names) -> AcmeServerOrder:
    """An order whose authorizations are valid (set here directly: these tests are about finalize)."""
    response = acme.order(*names)
    assert response.status_code == 201, response.content
    order = AcmeServerOrder.objects.get(public_id=response["Location"].rsplit("/", 1)[-1])
    AcmeServerAuthorization.objects.filter(orders=order).update(status="valid")
    AcmeServerOrder.objects.filter(pk=order.pk).update(status="ready")
    order.refresh_from_db()
    return order


def csr_b64(names, key=None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return b64(x509.build_csr(key, x509.Subject(), names).public_bytes(serialization.Encoding.DER))


# --- directory and nonces -----------------------------------------------------------------------------
def test_the_directory_names_every_resource_and_new_nonce_answers_head_and_get(profile):
    client = Client()
    base = f"http://testserver/acme/{profile.organization.slug}/web/"
    body = client.get(base + "directory").json()
    assert body["newNonce"] == base + "new-nonce"
    assert body["newAccount"] == base + "new-account"
    assert body["newOrder"] == base + "new-order"
    assert body["revokeCert"] == base + "revoke-cert"
    assert body["keyChange"] == base + "key-change"
    assert not client.get(base + "directory").has_header("Replay-Nonce")
    head = client.head(base + "new-nonce")
    get = client.get(base + "new-nonce")
    assert head.status_code == 200 and get.status_code == 204
    assert head["Replay-Nonce"] != get["Replay-Nonce"]
    assert head["Cache-Control"] == "no-store"
    assert head["Link"] == f'<{base}directory>;rel="index"'


def test_an_unknown_directory_is_404_and_a_disabled_profile_is_unauthorized_everywhere(tenant, profile):
    client = Client()
    assert client.get("http://testserver/acme/nope/web/directory").status_code == 404
    acme = Acme(profile)
    acme.register()
    order = acme.order("www.acme.test").json()
    authz_url = order["authorizations"][0]
    challenge_url = acme.post(authz_url, None).json()["challenges"][0]["url"]
    nonce = acme.nonce()
    services.save_profile(None, actor=SYSTEM, instance=profile, enabled=False)
    for path in ("directory", "new-nonce", "renewal-info/AAAA.AQ"):
        problem(client.get(acme.url(path)), "unauthorized", 403)
    nonce_less = client.post(acme.url("new-account"), b"{}", content_type="application/jose+json")
    problem(nonce_less, "unauthorized", 403)
    assert nonce_less.has_header("Replay-Nonce")
    signed = [
        acme.kid,
        acme.kid + "/orders",
        acme.url("new-order"),
        acme.url("revoke-cert"),
        acme.url("key-change"),
        order["finalize"],
        order["finalize"].removesuffix("/finalize"),
        order["finalize"].replace("/finalize", "/certificate"),
        authz_url,
        challenge_url,
    ]
    for url in signed:  # well-signed requests with a nonce the server issued: refused all the same
        problem(acme.post(url, None, nonce=nonce), "unauthorized", 403)


# --- §6 request checks --------------------------------------------------------------------------------
def raw_jws(acme, url, header=None, *, payload=b"{}", drop=(), signature=None, outer=None) -> bytes:
    """A flattened JWS made by hand, ES256-signed with the client's key unless ``signature`` is given:
    ``header`` overrides protected members (None deletes one), ``drop`` removes them."""
    protected = {"alg": "ES256", "nonce": acme.nonce(), "url": url, "kid": acme.kid, **(header or {})}
    protected = {k: v for k, v in protected.items() if v is not None and k not in drop}
    p64, pl64 = b64(json.dumps(protected).encode()), b64(payload) if payload else ""
    if signature is None:
        signature = b64(jose.ES256.sign(acme.key.key, f"{p64}.{pl64}".encode()))
    return json.dumps({"protected": p64, "payload": pl64, "signature": signature, **(outer or {})}).encode()


def _send(acme, body: bytes, url: str, content_type: str = "application/jose+json"):
    return acme.http.post(url, body, content_type=content_type)


def _jwk(acme) -> dict:
    return acme.key.public_key().to_partial_json()


def _order_for(acme) -> dict:
    return {"identifiers": [{"type": "dns", "value": "www.acme.test"}]}


# (what is wrong, the request, the problem type, its HTTP status): each against a resource that would
# make rows, sent to an account that exists.
VIOLATIONS = [
    (
        "alg none",
        lambda a, u: _send(a, raw_jws(a, u, {"alg": "none"}, signature=""), u),
        "badSignatureAlgorithm",
        400,
    ),
    ("alg HS256", lambda a, u: _send(a, raw_jws(a, u, {"alg": "HS256"}), u), "badSignatureAlgorithm", 400),
    ("alg RS384", lambda a, u: _send(a, raw_jws(a, u, {"alg": "RS384"}), u), "badSignatureAlgorithm", 400),
    ("no alg", lambda a, u: _send(a, raw_jws(a, u, drop=("alg",)), u), "badSignatureAlgorithm", 400),
    (
        "url of another resource",
        lambda a, u: _send(a, raw_jws(a, u, {"url": a.url("new-account")}), u),
        "unauthorized",
        403,
    ),
    ("no url", lambda a, u: _send(a, raw_jws(a, u, drop=("url",)), u), "malformed", 400),
    ("kid and jwk", lambda a, u: _send(a, raw_jws(a, u, {"jwk": _jwk(a)}), u), "malformed", 400),
    ("neither kid nor jwk", lambda a, u: _send(a, raw_jws(a, u, drop=("kid",)), u), "malformed", 400),
    (
        "jwk for an account resource",
        lambda a, u: _send(a, raw_jws(a, u, {"kid": None, "jwk": _jwk(a)}), u),
        "malformed",
        400,
    ),
    (
        "kid for newAccount",
        lambda a, u: a.post(a.url("new-account"), {"termsOfServiceAgreed": True}, kid=a.kid),
        "malformed",
        400,
    ),
    (
        "unknown kid",
        lambda a, u: _send(a, raw_jws(a, u, {"kid": a.url("acct/nope")}), u),
        "accountDoesNotExist",
        400,
    ),
    ("no nonce", lambda a, u: _send(a, raw_jws(a, u, drop=("nonce",)), u), "badNonce", 400),
    (
        "a nonce never issued",
        lambda a, u: _send(a, raw_jws(a, u, {"nonce": b64(b"made up")}), u),
        "badNonce",
        400,
    ),
    (
        "protected header padded",
        lambda a, u: _send(a, raw_jws(a, u).replace(b'"protected": "', b'"protected": "=='), u),
        "malformed",
        400,
    ),
    ("signature not base64url", lambda a, u: _send(a, raw_jws(a, u, signature="***"), u), "malformed", 400),
    ("wrong signature", lambda a, u: _send(a, raw_jws(a, u, signature=b64(b"\0" * 64)), u), "malformed", 400),
    ("not json", lambda a, u: _send(a, b"not json", u), "malformed", 400),
    ("a json array", lambda a, u: _send(a, b"[]", u), "malformed", 400),
    (
        "general serialization",
        lambda a, u: _send(a, raw_jws(a, u, outer={"signatures": []}), u),
        "malformed",
        400,
    ),
    (
        "unprotected header",
        lambda a, u: _send(a, raw_jws(a, u, outer={"header": {"kid": "x"}}), u),
        "malformed",
        400,
    ),
    (
        "content type application/json",
        lambda a, u: _send(a, raw_jws(a, u), u, "application/json"),
        "malformed",
        415,
    ),
    ("POST-as-GET to newOrder", lambda a, u: a.post(u, None), "malformed", 400),
    ("payload not an object", lambda a, u: _send(a, raw_jws(a, u, payload=b"[1]"), u), "malformed", 400),
]


def _rows() -> tuple[int, ...]:
    from acmeserver.models import AcmeServerChallenge

    models = (AcmeServerAccount, AcmeServerOrder, AcmeServerAuthorization, AcmeServerChallenge, Certificate)
    return tuple(m.objects.count() for m in models)


@pytest.mark.parametrize(("violation", "send", "kind", "status"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_each_section_6_violation_answers_its_problem_with_a_fresh_nonce_and_makes_nothing(
    acme, violation, send, kind, status
):
    url = acme.url("new-order")
    before = _rows()
    response = send(acme, url)
    problem(response, kind, status)
    assert response["Link"] == f'<{acme.url("directory")}>;rel="index"'
    assert _rows() == before
    # the answer's nonce is fresh: the well-formed request made with it goes through
    fixed = acme.post(url, _order_for(acme), nonce=response["Replay-Nonce"])
    assert fixed.status_code == 201, fixed.content


def test_a_reused_nonce_is_bad_nonce_and_the_answer_carries_a_fresh_one(acme):
    nonce = acme.nonce()
    first = acme.post(acme.kid, None, nonce=nonce)
    assert first.status_code == 200
    again = acme.post(acme.url("new-order"), _order_for(acme), nonce=nonce)
    problem(again, "badNonce", 400)
    assert not AcmeServerOrder.objects.exists()
    retry = acme.post(acme.kid, None, nonce=again["Replay-Nonce"])
    assert retry.status_code == 200, retry.content


def test_a_kid_of_another_profile_is_account_does_not_exist(tenant, hierarchy, acme):
    other = make_profile(tenant, hierarchy[1], name="Other", slug="other")
    stranger = Acme(other)
    stranger.kid = acme.kid  # the URL of an account of profile "web"
    problem(stranger.post(stranger.url("new-order"), {}), "accountDoesNotExist", 400)


def test_a_symmetric_algorithm_is_bad_signature_algorithm_naming_the_accepted_ones(acme):
    hmac_key = jose.JWKOct(key=b"0" * 32)
    body = problem(acme.post(acme.kid, None, key=hmac_key, alg=jose.HS256), "badSignatureAlgorithm", 400)
    assert body["algorithms"] == ["RS256", "ES256", "ES384", "EdDSA"]


def test_an_algorithm_that_does_not_fit_the_key_is_bad_signature_algorithm(profile):
    acme = Acme(profile)
    response = acme.post(acme.url("new-account"), {}, use_jwk=True, alg=jose.ES384)
    problem(response, "badSignatureAlgorithm", 400)
    assert not AcmeServerAccount.objects.exists()


def test_a_new_account_signed_with_a_kid_or_badly_makes_no_account(profile):
    acme = Acme(profile)
    url = acme.url("new-account")
    impostor = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    problem(acme.post(url, {}, kid=url), "malformed", 400)
    body = raw_jws(acme, url, {"kid": None, "jwk": _jwk(acme)}, payload=b'{"termsOfServiceAgreed": true}')
    tampered = json.loads(body)
    tampered["signature"] = b64(jose.ES256.sign(impostor.key, b"something else"))
    problem(_send(acme, json.dumps(tampered).encode(), url), "malformed", 400)
    assert not AcmeServerAccount.objects.exists()


def test_an_oversized_body_is_malformed_naming_the_cap(acme, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = acme.post(acme.url("new-order"), {"identifiers": [{"type": "dns", "value": "a" * 4000}]})
    assert "cap of 2048 bytes" in problem(response, "malformed", 413)["detail"]
    assert not AcmeServerOrder.objects.exists()


def test_post_as_get_resources_refuse_a_payload(acme):
    order = ready_order(acme, "www.acme.test")
    response = acme.post(acme.url(f"order/{order.public_id}/finalize"), {"csr": csr_b64(["www.acme.test"])})
    certificate_url = response.json()["certificate"]
    for url in (acme.url(f"order/{order.public_id}"), certificate_url):
        assert "POST-as-GET" in problem(acme.post(url, {}), "malformed", 400)["detail"]
    assert acme.post(certificate_url, None).status_code == 200


def test_eddsa_and_rsa_account_keys_are_accepted(profile):
    ed_key = ed25519.Ed25519PrivateKey.generate()
    public = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    acme = Acme(profile)
    url = acme.url("new-account")
    protected = {
        "alg": "EdDSA",
        "nonce": acme.nonce(),
        "url": url,
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(public)},
    }
    p64, pl64 = b64(json.dumps(protected).encode()), b64(b'{"termsOfServiceAgreed": true}')
    signature = ed_key.sign(f"{p64}.{pl64}".encode())
    body = json.dumps({"protected": p64, "payload": pl64, "signature": b64(signature)})
    response = acme.http.post(url, body, content_type="application/jose+json")
    assert response.status_code == 201, response.content
    rsa_client = Acme(profile, key=jose.JWKRSA(key=rsa.generate_private_key(65537, 2048)))
    assert rsa_client.register().status_code == 201
    weak = Acme(profile, key=jose.JWKRSA(key=rsa.generate_private_key(65537, 1024)))
    problem(weak.post(weak.url("new-account"), {}, use_jwk=True), "badPublicKey", 400)


# --- accounts -----------------------------------------------------------------------------------------
def test_new_account_twice_answers_the_same_account_and_only_return_existing_finds_none(profile):
    acme = Acme(profile)
    first = acme.register(contact=["mailto:a@acme.test"])
    assert first.status_code == 201
    second = acme.register()
    assert second.status_code == 200 and second["Location"] == first["Location"]
    stranger = Acme(profile)
    response = stranger.post(stranger.url("new-account"), {"onlyReturnExisting": True}, use_jwk=True)
    problem(response, "accountDoesNotExist", 400)
    assert AcmeServerAccount.objects.count() == 1


def test_contacts_must_be_mailto_addresses(profile):
    acme = Acme(profile)
    response = acme.post(acme.url("new-account"), {"contact": ["tel:+123"]}, use_jwk=True)
    problem(response, "unsupportedContact", 400)
    response = acme.post(acme.url("new-account"), {"contact": ["mailto:a@b.test,c@d.test"]}, use_jwk=True)
    problem(response, "invalidContact", 400)
    assert not AcmeServerAccount.objects.exists()


def test_an_account_updates_its_contact_and_a_deactivated_account_is_unauthorized_everywhere(acme):
    response = acme.post(acme.kid, {"contact": ["mailto:new@acme.test"]})
    assert response.json()["contact"] == ["mailto:new@acme.test"]
    valid = ready_order(acme, "www.acme.test")
    finalized = acme.post(acme.url(f"order/{valid.public_id}/finalize"), {"csr": csr_b64(["www.acme.test"])})
    certificate_url = finalized.json()["certificate"]
    leaf = x509.load_pem_certificates(acme.post(certificate_url, None).content)[0]
    pending = acme.order("api.acme.test").json()
    authz_url = pending["authorizations"][0]
    challenge_url = acme.post(authz_url, None).json()["challenges"][0]["url"]
    order_url = acme.url(f"order/{valid.public_id}")

    assert acme.post(acme.kid, {"status": "deactivated"}).json()["status"] == "deactivated"
    # §7.3.6: its pending authorizations go with it, and the order waiting on them turns invalid
    assert AcmeServerAuthorization.objects.get(identifier_value="api.acme.test").status == "deactivated"
    assert AcmeServerOrder.objects.get(status="invalid").identifiers[0]["value"] == "api.acme.test"
    new_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    before = _rows()
    requests = [
        (acme.kid, None),
        (acme.kid, {"contact": ["mailto:again@acme.test"]}),
        (acme.kid, {"status": "deactivated"}),
        (acme.kid + "/orders", None),
        (acme.url("new-order"), _order_for(acme)),
        (order_url, None),
        (acme.url(f"order/{valid.public_id}/finalize"), {"csr": csr_b64(["www.acme.test"])}),
        (certificate_url, None),
        (authz_url, None),
        (authz_url, {"status": "deactivated"}),
        (challenge_url, None),
        (challenge_url, {}),
        (acme.url("revoke-cert"), {"certificate": b64(leaf.public_bytes(serialization.Encoding.DER))}),
        (acme.url("key-change"), _key_change_body(acme, new_key)),
    ]
    for url, payload in requests:
        assert "deactivated" in problem(acme.post(url, payload), "unauthorized", 403)["detail"], url
    problem(acme.post(acme.url("new-account"), {}, use_jwk=True), "unauthorized", 403)
    assert _rows() == before
    assert Certificate.objects.get().status != "revoked"
    assert AcmeServerAccount.objects.get().contact == ["mailto:new@acme.test"]


def test_the_order_list_pages_with_a_link_to_the_next(profile, acme, monkeypatch):
    from acmeserver import views

    monkeypatch.setattr(views, "ORDERS_PER_PAGE", 2)
    made = [acme.order(f"n{i}.acme.test")["Location"] for i in range(5)]
    invalid = AcmeServerOrder.objects.get(identifiers__0__value="n2.acme.test")
    AcmeServerOrder.objects.filter(pk=invalid.pk).update(status="invalid")  # §7.1.2.1: not listed
    expected = [u for u in reversed(made) if not u.endswith(invalid.public_id)]
    listed, url, pages = [], acme.kid + "/orders", 0
    while url:
        response = acme.post(url, None)
        assert response.status_code == 200, response.content
        listed += response.json()["orders"]
        pages += 1
        nexts = [part for part in response["Link"].split(", ") if part.endswith(';rel="next"')]
        url = nexts[0][1 : nexts[0].index(">")] if nexts else None
    assert listed == expected and pages == 2
    body = problem(acme.post(acme.kid + "/orders?cursor=nope", None), "malformed", 400)
    assert "cursor" in body["detail"]
    other = Acme(profile)
    other.register()
    problem(other.post(acme.kid + "/orders", None), "unauthorized", 403)


# --- orders -------------------------------------------------------------------------------------------
def test_new_order_answers_pending_authorizations_with_the_profiles_challenges(acme):
    response = acme.order("www.acme.test", "WWW.acme.test.", "api.acme.test")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending" and response["Retry-After"] == "1"
    assert [i["value"] for i in body["identifiers"]] == ["api.acme.test", "www.acme.test"]
    authz = acme.post(body["authorizations"][0], None)
    assert authz.json()["identifier"] == {"type": "dns", "value": "api.acme.test"}
    assert sorted(c["type"] for c in authz.json()["challenges"]) == ["dns-01", "http-01"]
    challenge = authz.json()["challenges"][0]
    read = acme.post(challenge["url"], None)
    assert read.json()["token"] == challenge["token"]
    assert f'<{body["authorizations"][0]}>;rel="up"' in read["Link"]
    listed = acme.post(acme.kid + "/orders", None).json()
    assert listed["orders"] == [response["Location"]]


def test_wildcards_and_ip_addresses_only_where_the_profile_allows_them(tenant, hierarchy, acme, profile):
    body = problem(acme.order("*.acme.test", "10.0.0.1", kind="dns"), "rejectedIdentifier", 400)
    assert len(body["subproblems"]) == 2
    problem(
        acme.post(acme.url("new-order"), {"identifiers": [{"type": "ip", "value": "10.0.0.1"}]}),
        "rejectedIdentifier",
    )
    problem(
        acme.post(acme.url("new-order"), {"identifiers": [{"type": "email", "value": "a@b"}]}),
        "unsupportedIdentifier",
    )
    services.save_profile(
        None, actor=SYSTEM, instance=profile, allow_wildcards=True, allow_ip_identifiers=True
    )
    response = acme.post(
        acme.url("new-order"),
        {"identifiers": [{"type": "dns", "value": "*.acme.test"}, {"type": "ip", "value": "10.0.0.1"}]},
    )
    assert response.status_code == 201, response.content
    kinds = {
        a.identifier_value: sorted(c.type for c in a.challenges.all())
        for a in AcmeServerAuthorization.objects.all()
    }
    assert kinds == {"acme.test": ["dns-01"], "10.0.0.1": ["http-01"]}
    assert AcmeServerAuthorization.objects.get(identifier_value="acme.test").wildcard


def test_names_outside_the_policy_are_rejected_at_new_order_with_a_subproblem_each(
    tenant, hierarchy, profile, acme
):
    policy = pki_services.save_policy(
        tenant.organization, actor=SYSTEM, name="Internal", san_patterns=["*.acme.test"]
    )
    services.save_profile(None, actor=SYSTEM, instance=profile, policy=policy)
    body = problem(acme.order("www.acme.test", "www.evil.test", "x.evil.test"), "rejectedIdentifier", 400)
    assert [s["identifier"]["value"] for s in body["subproblems"]] == ["www.evil.test", "x.evil.test"]
    assert not AcmeServerOrder.objects.exists()


def test_another_accounts_order_is_not_found(profile, acme):
    order_url = acme.order("www.acme.test")["Location"]
    other = Acme(profile)
    other.register()
    problem(other.post(order_url, None), "malformed", 404)


# --- finalize -----------------------------------------------------------------------------------------
def test_finalize_before_the_order_is_ready_is_order_not_ready(acme):
    body = acme.order("www.acme.test").json()
    problem(acme.post(body["finalize"], {"csr": csr_b64(["www.acme.test"])}), "orderNotReady", 403)


def test_a_csr_with_an_extra_or_a_missing_name_is_bad_csr_and_issues_nothing(acme):
    order = ready_order(acme, "www.acme.test", "api.acme.test")
    finalize = acme.url(f"order/{order.public_id}/finalize")
    body = problem(
        acme.post(finalize, {"csr": csr_b64(["www.acme.test", "api.acme.test", "evil.test"])}), "badCSR"
    )
    assert "evil.test" in body["detail"]
    assert body["subproblems"][0]["identifier"] == {"type": "dns", "value": "evil.test"}
    body = problem(acme.post(finalize, {"csr": csr_b64(["www.acme.test"])}), "badCSR")
    assert "api.acme.test" in body["detail"]
    problem(acme.post(finalize, {"csr": b64(b"not a csr")}), "badCSR")
    assert not Certificate.objects.exists()
    order.refresh_from_db()
    assert order.status == "ready"


def test_a_csr_whose_signature_does_not_verify_is_bad_csr_and_issues_nothing(acme):
    order = ready_order(acme, "www.acme.test")
    der = bytearray(jose.decode_b64jose(csr_b64(["www.acme.test"])))
    der[-1] ^= 0x01  # the last byte of the signature
    response = acme.post(acme.url(f"order/{order.public_id}/finalize"), {"csr": b64(bytes(der))})
    assert "signature" in problem(response, "badCSR", 400)["detail"]
    assert not Certificate.objects.exists()
    order.refresh_from_db()
    assert order.status == "ready"


def test_a_key_the_policy_forbids_is_bad_csr(tenant, profile, acme):
    policy = pki_services.save_policy(
        tenant.organization, actor=SYSTEM, name="EC only", allowed_key_algorithms=["ec-p256"]
    )
    services.save_profile(None, actor=SYSTEM, instance=profile, policy=policy)
    order = ready_order(acme, "www.acme.test")
    rsa_key = rsa.generate_private_key(65537, 2048)
    response = acme.post(
        acme.url(f"order/{order.public_id}/finalize"), {"csr": csr_b64(["www.acme.test"], rsa_key)}
    )
    assert "RSA 2048" in problem(response, "badCSR")["detail"]
    assert not Certificate.objects.exists()


def test_finalize_issues_from_the_ca_and_the_certificate_downloads_as_a_pem_chain(acme, profile, tmp_path):
    order = ready_order(acme, "www.acme.test")
    response = acme.post(acme.url(f"order/{order.public_id}/finalize"), {"csr": csr_b64(["www.acme.test"])})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "valid"
    cert = acme.post(body["certificate"], None)
    assert cert["Content-Type"] == "application/pem-certificate-chain"
    chain = x509.load_pem_certificates(cert.content)
    assert len(chain) == 3  # leaf, issuing CA, root
    stored = Certificate.objects.get()
    assert stored.ca == profile.ca and stored.common_name == "www.acme.test" and stored.not_after
    assert (stored.not_after - stored.not_before).days == 30
    assert_clean("lint_pkix_cert", x509.to_pem(chain[0]), tmp_path, "acme-leaf.pem")  # pkilint, RFC 5280
    problem(
        acme.post(acme.url(f"order/{order.public_id}/finalize"), {"csr": csr_b64(["www.acme.test"])}),
        "orderNotReady",
    )
    assert Certificate.objects.count() == 1


# --- revocation ---------------------------------------------------------------------------------------
def _issued(acme):
    order = ready_order(acme, "www.acme.test")
    key = ec.generate_private_key(ec.SECP256R1())
    body = acme.post(
        acme.url(f"order/{order.public_id}/finalize"), {"csr": csr_b64(["www.acme.test"], key)}
    ).json()
    pem = acme.post(body["certificate"], None).content
    leaf = x509.load_pem_certificates(pem)[0]
    return b64(leaf.public_bytes(serialization.Encoding.DER)), key


def test_revocation_by_the_certificates_key_and_refusals(profile, acme):
    der, key = _issued(acme)
    stranger = Acme(profile)
    stranger.register()
    problem(stranger.post(acme.url("revoke-cert"), {"certificate": der}), "unauthorized", 403)
    problem(acme.post(acme.url("revoke-cert"), {"certificate": der, "reason": 7}), "badRevocationReason")
    cert_key = jose.JWKEC(key=key)
    response = acme.post(
        acme.url("revoke-cert"), {"certificate": der, "reason": 4}, key=cert_key, use_jwk=True
    )
    assert response.status_code == 200, response.content
    stored = Certificate.objects.get()
    assert stored.status == "revoked" and stored.revocation_reason == "superseded"
    problem(acme.post(acme.url("revoke-cert"), {"certificate": der}), "alreadyRevoked", 400)


@pytest.mark.parametrize(
    ("reason", "stored"),
    [
        (None, "unspecified"),
        (0, "unspecified"),
        (1, "key_compromise"),
        (3, "affiliation_changed"),
        (4, "superseded"),
        (5, "cessation_of_operation"),
        (9, "privilege_withdrawn"),
    ],
)
def test_the_ordering_account_revokes_with_an_rfc_5280_reason(acme, reason, stored):
    der, _ = _issued(acme)
    payload = {"certificate": der} if reason is None else {"certificate": der, "reason": reason}
    response = acme.post(acme.url("revoke-cert"), payload)
    assert response.status_code == 200 and response.content == b"", response.content
    cert = Certificate.objects.get()
    assert cert.status == "revoked" and cert.revocation_reason == stored
    problem(acme.post(acme.url("revoke-cert"), payload), "alreadyRevoked", 400)


@pytest.mark.parametrize("reason", [7, 8, 11, -1, "1", True, "keyCompromise", None])
def test_a_reason_outside_rfc_5280_is_bad_revocation_reason_and_revokes_nothing(acme, reason):
    der, _ = _issued(acme)
    if reason is None:  # a certificate that is not base64url DER: malformed, not a reason problem
        problem(acme.post(acme.url("revoke-cert"), {"certificate": "AAAA"}), "malformed", 400)
    else:
        body = problem(
            acme.post(acme.url("revoke-cert"), {"certificate": der, "reason": reason}), "badRevocationReason"
        )
        assert "reason" in body["detail"]
    assert Certificate.objects.get().status != "revoked"


def test_an_account_holding_valid_authorizations_for_every_name_may_revoke(profile, acme):
    der, _ = _issued(acme)
    other = Acme(profile)
    other.register()
    problem(other.post(acme.url("revoke-cert"), {"certificate": der}), "unauthorized", 403)
    ready_order(other, "www.acme.test")  # the other account proves the name too
    response = other.post(acme.url("revoke-cert"), {"certificate": der, "reason": 5})
    assert response.status_code == 200, response.content
    assert Certificate.objects.get().revocation_reason == "cessation_of_operation"


def _key_change_body(acme, new_key, *, old_key=None, account=None, url=None):
    url = url or acme.url("key-change")
    old_key = old_key or acme.key
    inner_payload = {"account": account or acme.kid, "oldKey": old_key.public_key().to_partial_json()}
    inner = acme_jws.JWS.sign(
        json.dumps(inner_payload).encode(), key=new_key, alg=jose.ES256, nonce=None, url=url, kid=None
    )
    return inner.to_partial_json()


def test_key_change_moves_the_account_to_the_new_key(acme, profile):
    new_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    response = acme.post(acme.url("key-change"), _key_change_body(acme, new_key))
    assert response.status_code == 200, response.content
    assert response["Location"] == acme.kid
    problem(acme.post(acme.kid, None), "malformed", 400)  # the old key signs nothing any more
    assert acme.post(acme.kid, None, key=new_key).status_code == 200
    assert AcmeServerAccount.objects.get().thumbprint == services_jws_thumbprint(new_key)


def services_jws_thumbprint(key) -> str:
    from acmeserver import jws

    return jws.thumbprint(key.public_key().to_partial_json())


def test_key_change_refusals(acme, profile):
    new_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    wrong_old = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    body = problem(
        acme.post(acme.url("key-change"), _key_change_body(acme, new_key, old_key=wrong_old)), "malformed"
    )
    assert "oldKey" in body["detail"]
    body = _key_change_body(acme, new_key, url=acme.url("new-order"))
    problem(acme.post(acme.url("key-change"), body), "malformed")
    other = Acme(profile)
    other.register()
    taken = acme.post(acme.url("key-change"), _key_change_body(acme, other.key))
    assert problem(taken, "malformed", 409)["detail"] == "another account of this profile has that key"
    assert taken["Location"] == other.kid
    assert AcmeServerAccount.objects.filter(thumbprint=services_jws_thumbprint(acme.key)).exists()


def test_a_valid_authorization_serves_the_accounts_next_order_but_not_another_accounts(profile, acme):
    from django.utils import timezone

    first = ready_order(acme, "www.acme.test")
    authz = first.authorizations.get()
    AcmeServerAuthorization.objects.filter(pk=authz.pk).update(
        expires_at=timezone.now() + timezone.timedelta(days=30)
    )
    again = acme.order("www.acme.test", "api.acme.test")
    assert again.status_code == 201
    body = again.json()
    assert body["status"] == "pending"  # api.acme.test is still to prove
    assert acme.url(f"authz/{authz.public_id}") in body["authorizations"]
    same = acme.order("www.acme.test").json()
    assert same["status"] == "ready" and same["authorizations"] == [acme.url(f"authz/{authz.public_id}")]
    other = Acme(profile)
    other.register()
    theirs = other.order("www.acme.test").json()
    assert theirs["status"] == "pending" and theirs["authorizations"] != same["authorizations"]
    # a pending authorization is shared too, until it is settled
    pending = [a for a in body["authorizations"] if a != acme.url(f"authz/{authz.public_id}")]
    assert acme.order("api.acme.test").json()["authorizations"] == pending


def test_rate_limits_answer_rate_limited_with_retry_after(profile, acme):
    services.save_profile(
        None, actor=SYSTEM, instance=profile, orders_per_hour=2, max_pending_authorizations=3
    )
    assert acme.order("a.acme.test").status_code == 201
    assert acme.order("b.acme.test", "c.acme.test").status_code == 201
    limited = acme.order("d.acme.test")
    assert "2 orders in the last hour" in problem(limited, "rateLimited", 429)["detail"]
    assert 3500 < int(limited["Retry-After"]) <= 3601
    services.save_profile(None, actor=SYSTEM, instance=profile, orders_per_hour=None)
    pending = acme.order("d.acme.test")
    assert "3 pending authorizations" in problem(pending, "rateLimited", 429)["detail"]
    assert pending["Retry-After"] == "60"
    assert AcmeServerOrder.objects.count() == 2


def test_renewal_info_suggests_a_window_and_a_revoked_certificate_renews_now(profile, acme):
    from datetime import datetime

    from acmeserver import ari
    from pki import services as pki_services

    _issued(acme)
    leaf = x509.load_pem_certificates(Certificate.objects.get().certificate_pem)[0]
    identifier = ari.cert_id(leaf)
    directory = acme.http.get(acme.url("directory")).json()
    response = acme.http.get(f"{directory['renewalInfo']}/{identifier}")
    assert response.status_code == 200, response.content
    assert response["Retry-After"] == str(6 * 3600)  # CERTMGR_ACME_ARI_RETRY_SECONDS
    window = response.json()["suggestedWindow"]
    start, end = (datetime.fromisoformat(window[k].replace("Z", "+00:00")) for k in ("start", "end"))
    assert leaf.not_valid_before_utc < start < end < leaf.not_valid_after_utc
    pki_services.revoke(Certificate.objects.get(), reason="key_compromise", actor=SYSTEM)  # in the admin, say
    window = acme.http.get(f"{directory['renewalInfo']}/{identifier}").json()["suggestedWindow"]
    assert datetime.fromisoformat(window["end"].replace("Z", "+00:00")) < timezone_now()
    problem(acme.http.get(f"{directory['renewalInfo']}/AAAA.AQ"), "malformed", 404)
    problem(acme.http.get(f"{directory['renewalInfo']}/not-an-id"), "malformed", 400)


def timezone_now():
    from django.utils import timezone

    return timezone.now()


def test_new_order_honours_replaces_once(profile, acme):
    from acmeserver import ari

    _issued(acme)
    identifier = ari.cert_id(x509.load_pem_certificates(Certificate.objects.get().certificate_pem)[0])
    other = Acme(profile)
    other.register()
    problem(
        other.post(
            other.url("new-order"),
            {"identifiers": [{"type": "dns", "value": "www.acme.test"}], "replaces": identifier},
        ),
        "unauthorized",
    )
    response = acme.post(
        acme.url("new-order"),
        {"identifiers": [{"type": "dns", "value": "www.acme.test"}], "replaces": identifier},
    )
    assert response.status_code == 201, response.content
    assert (
        AcmeServerOrder.objects.get(public_id=response["Location"].rsplit("/", 1)[-1]).replaces
        == Certificate.objects.get()
    )
    again = acme.post(
        acme.url("new-order"),
        {"identifiers": [{"type": "dns", "value": "www.acme.test"}], "replaces": identifier},
    )
    problem(again, "alreadyReplaced", 409)


def test_terms_of_service_when_configured_must_be_agreed(profile):
    services.save_profile(
        None, actor=SYSTEM, instance=profile, terms_of_service_url="https://certs.acme.test/tos"
    )
    acme = Acme(profile)
    assert (
        acme.http.get(acme.url("directory")).json()["meta"]["termsOfService"] == "https://certs.acme.test/tos"
    )
    refused = acme.post(acme.url("new-account"), {"termsOfServiceAgreed": False}, use_jwk=True)
    assert "terms of service" in problem(refused, "malformed", 400)["detail"]
    assert acme.register().status_code == 201
    assert AcmeServerAccount.objects.get().terms_of_service_agreed


def test_a_poll_of_an_authorization_being_validated_is_held_until_the_outcome(
    transactional_db, acme, settings
):
    """certbot sleeps a second after a pending answer: the poll waits (up to the hold) for the worker."""
    import threading
    import time

    from django.db import connection, transaction

    from acmeserver.models import AcmeServerChallenge

    settings.CERTMGR_ACME_AUTHZ_HOLD_SECONDS = 5.0
    url = acme.order("held.acme.test").json()["authorizations"][0]
    authz = AcmeServerAuthorization.objects.get(public_id=url.rsplit("/", 1)[-1])
    AcmeServerChallenge.objects.filter(authorization=authz).update(status="processing")

    def worker_stores_the_outcome() -> None:  # what validate_challenge's transaction ends with
        from django.utils import timezone

        time.sleep(0.3)
        with transaction.atomic():  # one commit, as the worker's: a poll never sees half of it
            AcmeServerChallenge.objects.filter(authorization=authz).update(
                status="valid", validated_at=timezone.now()
            )
            AcmeServerAuthorization.objects.filter(pk=authz.pk).update(status="valid")
        connection.close()

    thread = threading.Thread(target=worker_stores_the_outcome)
    start = time.monotonic()
    thread.start()
    body = acme.post(url).json()
    thread.join()
    assert body["status"] == "valid"
    assert 0.3 <= time.monotonic() - start < 4

    settings.CERTMGR_ACME_AUTHZ_HOLD_SECONDS = 0.2  # an outcome that does not come: pending after the hold
    url = acme.order("slow.acme.test").json()["authorizations"][0]
    AcmeServerChallenge.objects.filter(authorization__public_id=url.rsplit("/", 1)[-1]).update(
        status="processing"
    )
    start = time.monotonic()
    response = acme.post(url)
    assert response.json()["status"] == "pending" and response.has_header("Retry-After")
    assert time.monotonic() - start >= 0.2


# --- no input is a 500 --------------------------------------------------------------------------------
ODD_VALUES = [None, 0, -1, 2**70, 1.5, True, "", "x" * 300, [], [1], {}, {"a": 1}, "\x00", "é", "AAAA", "=="]


def test_no_value_of_any_payload_member_is_a_server_error(acme):
    """Each member each resource reads, given every JSON type (a NUL once reached a query: a 500)."""
    order = ready_order(acme, "www.acme.test")
    authz = acme.order("api.acme.test").json()["authorizations"][0]
    challenge = acme.post(authz, None).json()["challenges"][0]["url"]
    der, _ = _issued(acme)
    fresh = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    identifiers = [{"type": "dns", "value": "z.acme.test"}]
    targets = [
        (
            "new-account",
            ["contact", "termsOfServiceAgreed", "onlyReturnExisting", "externalAccountBinding"],
            {},
        ),
        (acme.kid, ["contact", "status"], {}),
        ("new-order", ["notBefore", "notAfter", "profile", "replaces"], {"identifiers": identifiers}),
        ("new-order", ["identifiers"], {}),
        (f"order/{order.public_id}/finalize", ["csr"], {}),
        (authz, ["status"], {}),
        (challenge, ["anything"], {}),
        ("revoke-cert", ["reason"], {"certificate": der}),
        ("revoke-cert", ["certificate"], {}),
        ("key-change", ["protected", "payload", "signature"], {}),
    ]
    failed = []
    for target, members, base in targets:
        url = target if target.startswith("http") else acme.url(target)
        for member in members:
            for value in ODD_VALUES:
                if url.endswith("new-account"):
                    response = acme.post(url, {**base, member: value}, use_jwk=True, key=fresh)
                else:
                    response = acme.post(url, {**base, member: value})
                if response.status_code >= 500:
                    failed.append((target, member, value, response.content[:100]))
    for value in [v for v in ODD_VALUES if isinstance(v, str)]:
        for ident in ({"type": "dns", "value": value}, {"type": value, "value": "a.acme.test"}):
            response = acme.post(acme.url("new-order"), {"identifiers": [ident]})
            if response.status_code >= 500:
                failed.append(("identifier", ident, response.content[:100]))
    mailto = acme.post(acme.kid, {"contact": ["mailto:a\x00@acme.test"]})
    problem(mailto, "invalidContact", 400)
    assert not failed, failed


def test_ids_that_are_not_the_servers_own_are_refused_before_any_query(acme):
    url = acme.url("new-order")
    problem(_send(acme, raw_jws(acme, url, {"nonce": "a\x00b"}), url), "badNonce", 400)
    problem(
        _send(acme, raw_jws(acme, url, {"kid": acme.url("acct/a\x00b")}), url), "accountDoesNotExist", 400
    )
    for path in ("order/a%00b", "authz/a%00b", "chall/a%00b", "acct/a%00b", "order/a%00b/finalize"):
        problem(acme.post(acme.url(path), None), "malformed", 404)
    assert acme.post(acme.kid, None).status_code == 200  # the session is fine after all that


# --- cost -----------------------------------------------------------------------------------------------
def test_each_request_of_an_order_stays_within_its_sql_statements(
    acme, profile, django_assert_max_num_queries, monkeypatch
):
    """What an order's requests cost the database (docs/benchmarks.md, the ACME server's bench): the profile,
    the account and the nonce (used up and the next one handed out in one statement) on each, then the
    resource's own. An upper bound per request, so a statement added to the hot path shows here."""
    monkeypatch.setattr(services.random, "random", lambda: 1.0)  # no purge of expired nonces (1 in 100)
    pki_services.ca_material(profile.ca)  # the CA's key and chain, read once per process
    acme.last_nonce = acme.nonce()  # then every request uses the nonce of the answer before it, as clients do

    def post(url, payload=None, *, most: int):
        with django_assert_max_num_queries(most):
            response = acme.post(url, payload, nonce=acme.last_nonce)
        assert response.status_code in (200, 201), response.content
        return response

    # inside the test's transaction an atomic block's SAVEPOINT and RELEASE stand for BEGIN and COMMIT
    names = {"identifiers": [{"type": "dns", "value": "cost.acme.test"}]}
    order = post(acme.url("new-order"), names, most=14)
    authz_url = order.json()["authorizations"][0]
    challenge = post(authz_url, most=6).json()["challenges"][0]  # pending: is a worker validating it?
    post(challenge["url"], {}, most=9)  # + the task's enqueue (ORM broker: an INSERT), on commit
    post(order["Location"], most=5)
    ready = ready_order(acme, "ready.acme.test")
    final = post(
        acme.url(f"order/{ready.public_id}/finalize"), {"csr": csr_b64(["ready.acme.test"])}, most=13
    ).json()
    assert final["status"] == "valid"
    post(final["certificate"], most=5)
