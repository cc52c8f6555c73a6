"""RFC 8555 §6.2 request authentication: the flattened JWS every POST carries. Pure (josepy, cryptography).

``parse()`` checks the shape (flattened JSON serialization, protected header only, ``alg`` among the ones
the server accepts, ``nonce`` and ``url`` present, exactly one of ``jwk`` and ``kid``); the views then check
the URL and the nonce against the request and the database, find the account of ``kid`` and call
``verify()`` with its key. ``thumbprint()`` is RFC 7638's, the account's identity in a profile and the
second half of every key authorization (RFC 8555 §8.1).

RS256, ES256 and ES384 are verified by josepy's algorithms; EdDSA (RFC 8037, Ed25519), which josepy lacks,
by ``cryptography`` directly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

import josepy as jose
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from acmeserver.problems import AcmeProblem, malformed, unauthorized

ALGORITHMS = ("RS256", "ES256", "ES384", "EdDSA")
MIN_RSA_BITS = 2048
_EC_CURVES = {"ES256": ("P-256", ec.SECP256R1), "ES384": ("P-384", ec.SECP384R1)}
# RFC 7638 §3.2: the members of each key type's thumbprint, in lexicographic order.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}


def b64decode(text: Any, what: str) -> bytes:
    """base64url without padding (RFC 7515 §2); anything else is malformed."""
    if not isinstance(text, str) or "=" in text:
        raise malformed(f"{what} is not base64url text without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise malformed(f"{what} is not base64url") from None


_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_token(value: object) -> bool:
    """Whether ``value`` could be one of the server's own random ids (a nonce, an account's, an order's, an
    EAB key's): base64url, at most 64 characters. Anything else is refused before it reaches a query (a
    NUL there was a database error, a 500)."""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SignedRequest:
    """A parsed, not yet verified, JWS of an ACME request."""

    protected_b64: str
    payload_b64: str
    signature: bytes
    alg: str
    nonce: str
    url: str
    kid: str | None
    jwk: dict[str, Any] | None
    payload: bytes

    @property
    def post_as_get(self) -> bool:
        """RFC 8555 §6.3: an empty payload."""
        return self.payload_b64 == ""

    def json(self) -> dict[str, Any]:
        """The payload as a JSON object (malformed otherwise)."""
        try:
            value = json.loads(self.payload)
        except (ValueError, UnicodeDecodeError):
            raise malformed("the JWS payload is not JSON") from None
        if not isinstance(value, dict):
            raise malformed("the JWS payload is not a JSON object")
        return value

    @property
    def signing_input(self) -> bytes:
        return f"{self.protected_b64}.{self.payload_b64}".encode("ascii")


def parse(body: bytes, *, inner: bool = False) -> SignedRequest:
    """The JWS of a request body, its shape checked (not its signature, URL or nonce). ``inner``: the JWS
    inside a keyChange request (§7.3.5), which has a ``jwk`` (the new key) and no nonce."""
    try:
        outer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise malformed("the request body is not JSON (a flattened JWS)") from None
    if not isinstance(outer, dict):
        raise malformed("the request body is not a JSON object (a flattened JWS)")
    if "signatures" in outer:
        raise malformed("the JWS must use the flattened JSON serialization, with one signature")
    if "header" in outer:
        raise malformed("the JWS must not have an unprotected header")
    missing = [k for k in ("protected", "payload", "signature") if k not in outer]
    if missing:
        raise malformed(f"the JWS lacks {', '.join(missing)}")
    extra = sorted(set(outer) - {"protected", "payload", "signature"})
    if extra:
        raise malformed(f"the JWS has unexpected members: {', '.join(extra)}")
    protected_b64, payload_b64 = outer["protected"], outer["payload"]
    if not isinstance(protected_b64, str) or not isinstance(payload_b64, str):
        raise malformed("the JWS protected header and payload must be strings")
    try:
        header = json.loads(b64decode(protected_b64, "the protected header"))
    except (ValueError, UnicodeDecodeError):
        raise malformed("the protected header is not JSON") from None
    if not isinstance(header, dict):
        raise malformed("the protected header is not a JSON object")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"the JWS algorithm {alg!r} is not accepted; use one of {', '.join(ALGORITHMS)}",
            extra={"algorithms": list(ALGORITHMS)},
        )
    nonce, url = header.get("nonce"), header.get("url")
    if inner:
        if nonce is not None or "kid" in header or not isinstance(header.get("jwk"), dict):
            raise malformed("the inner JWS of a key change has a jwk (the new key), and no nonce or kid")
        nonce = ""
    elif not isinstance(nonce, str) or not nonce:
        raise AcmeProblem("badNonce", "the protected header has no nonce")
    if not isinstance(url, str) or not url:
        raise malformed("the protected header has no url")
    kid, jwk = header.get("kid"), header.get("jwk")
    if (kid is None) == (jwk is None):
        raise malformed("the protected header must have exactly one of jwk and kid")
    if kid is not None and not isinstance(kid, str):
        raise malformed("kid must be a string (the account URL)")
    if jwk is not None and not isinstance(jwk, dict):
        raise malformed("jwk must be a JSON object")
    return SignedRequest(
        protected_b64=protected_b64,
        payload_b64=payload_b64,
        signature=b64decode(outer["signature"], "the signature"),
        alg=alg,
        nonce=nonce,
        url=url,
        kid=kid,
        jwk=jwk,
        payload=b64decode(payload_b64, "the payload"),
    )


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def load_jwk(jwk: dict[str, Any]) -> PublicKey:
    """The public key of a JWK the server accepts as an account key (RSA ≥ 2048 bits, P-256, P-384,
    Ed25519); badPublicKey otherwise."""
    kty = jwk.get("kty")
    if kty == "OKP":
        if jwk.get("crv") != "Ed25519":
            raise AcmeProblem("badPublicKey", f"OKP curve {jwk.get('crv')!r} is not accepted (Ed25519 is)")
        raw = b64decode(jwk.get("x"), "the key's x")
        try:
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise AcmeProblem("badPublicKey", "not an Ed25519 public key") from None
    if kty not in ("RSA", "EC"):
        raise AcmeProblem("badPublicKey", f"key type {kty!r} is not accepted (RSA, EC and OKP are)")
    if any(k in jwk for k in ("d", "p", "q")):
        raise AcmeProblem("badPublicKey", "the JWK holds a private key")
    try:
        parsed: Any = jose.JWK.from_json(jwk)
        key = getattr(parsed.key, "_wrapped", parsed.key)  # josepy wraps the cryptography key
    except (jose.DeserializationError, ValueError, TypeError, KeyError):
        raise AcmeProblem("badPublicKey", "the JWK is not a valid public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise AcmeProblem("badPublicKey", f"RSA keys need at least {MIN_RSA_BITS} bits")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            raise AcmeProblem("badPublicKey", f"curve {key.curve.name} is not accepted (P-256, P-384 are)")
        return key
    raise AcmeProblem("badPublicKey", "the JWK is not a public key")


def verify(request: SignedRequest, jwk: dict[str, Any]) -> None:
    """Check the signature with ``jwk`` (the request's own or its account's); ``alg`` must fit the key."""
    key = load_jwk(jwk)
    alg, message, signature = request.alg, request.signing_input, request.signature
    if alg == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise _wrong_alg(alg, jwk)
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise _bad_signature() from None
        return
    if alg == "RS256":
        if not isinstance(key, rsa.RSAPublicKey):
            raise _wrong_alg(alg, jwk)
    elif not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _EC_CURVES[alg][1]):
        raise _wrong_alg(alg, jwk)
    algorithm = jose.JWASignature.from_json(alg)
    if not algorithm.verify(key, message, signature):
        raise _bad_signature()


def _wrong_alg(alg: str, jwk: dict[str, Any]) -> AcmeProblem:
    return AcmeProblem(
        "badSignatureAlgorithm",
        f"algorithm {alg} does not fit the account key ({jwk.get('kty')} {jwk.get('crv', '')})".strip(),
        extra={"algorithms": list(ALGORITHMS)},
    )


def _bad_signature() -> AcmeProblem:
    return malformed("JWS signature verification failed")


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """The public members that identify the key (what is stored), checked first by ``load_jwk``."""
    load_jwk(jwk)
    members = _THUMBPRINT_MEMBERS[str(jwk["kty"])]
    return {k: jwk[k] for k in members}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(not isinstance(jwk.get(k), str) for k in members):
        raise AcmeProblem("badPublicKey", "the JWK lacks the members of its key type")
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return b64encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def key_authorization(token: str, jwk: dict[str, Any]) -> str:
    """RFC 8555 §8.1."""
    return f"{token}.{thumbprint(jwk)}"


def dns01_value(token: str, jwk: dict[str, Any]) -> str:
    """RFC 8555 §8.4: the TXT value, base64url(SHA-256(key authorization))."""
    return b64encode(hashlib.sha256(key_authorization(token, jwk).encode("ascii")).digest())


def same_key(jwk: dict[str, Any], public_key: object) -> bool:
    """Whether ``jwk`` is ``public_key`` (a certificate's, for revocation by the certificate's key)."""
    try:
        mine = load_jwk(jwk)
    except AcmeProblem:
        return False
    encoding, fmt = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return bool(mine.public_bytes(encoding, fmt) == public_key.public_bytes(encoding, fmt))  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


# --- External Account Binding (RFC 8555 §7.3.4) -------------------------------------------------------------
EAB_ALGORITHMS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


@dataclass(frozen=True)
class Binding:
    """The ``externalAccountBinding`` of a newAccount: a JWS over the account key, MACed with an EAB key."""

    kid: str
    alg: str
    signing_input: bytes
    signature: bytes
    payload: bytes
    url: str


def parse_binding(value: Any) -> Binding:
    if not isinstance(value, dict) or set(value) != {"protected", "payload", "signature"}:
        raise malformed("externalAccountBinding must be a flattened JWS (protected, payload, signature)")
    if not all(isinstance(value[k], str) for k in value):
        raise malformed("externalAccountBinding members must be strings")
    try:
        header = json.loads(b64decode(value["protected"], "the binding's protected header"))
    except (ValueError, UnicodeDecodeError):
        raise malformed("the binding's protected header is not JSON") from None
    if not isinstance(header, dict):
        raise malformed("the binding's protected header is not a JSON object")
    alg, kid, url = header.get("alg"), header.get("kid"), header.get("url")
    if alg not in EAB_ALGORITHMS:
        raise malformed(f"the binding's alg {alg!r} is not a MAC algorithm ({', '.join(EAB_ALGORITHMS)})")
    if "nonce" in header:
        raise malformed("the binding must not have a nonce")
    if not isinstance(kid, str) or not kid or not isinstance(url, str):
        raise malformed("the binding needs a kid and a url")
    if not is_token(kid):
        raise unauthorized(f"the EAB key {kid[:64]!r} is unknown")
    return Binding(
        kid=kid,
        alg=alg,
        signing_input=f"{value['protected']}.{value['payload']}".encode("ascii"),
        signature=b64decode(value["signature"], "the binding's signature"),
        payload=b64decode(value["payload"], "the binding's payload"),
        url=url,
    )


def verify_binding(binding: Binding, *, hmac_key: bytes, account_jwk: dict[str, Any], url: str) -> None:
    """The binding is for this newAccount request (same URL), over the account's key, with the EAB key."""
    if binding.url != url:
        raise unauthorized("the binding's url is not the newAccount URL")
    try:
        bound = json.loads(binding.payload)
    except (ValueError, UnicodeDecodeError):
        raise malformed("the binding's payload is not a JWK") from None
    if not isinstance(bound, dict) or thumbprint(bound) != thumbprint(account_jwk):
        raise unauthorized("the binding is over another key than the account's")
    expected = hmac.new(hmac_key, binding.signing_input, EAB_ALGORITHMS[binding.alg]).digest()
    if not hmac.compare_digest(expected, binding.signature):
        raise unauthorized("the external account binding's MAC does not verify")
