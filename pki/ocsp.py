"""OCSP (RFC 6960, RFC 5019 profile) building blocks on ``cryptography.x509.ocsp``, free of Django.

A CA's responses are signed by a delegated responder certificate (EKU OCSPSigning, id-pkix-ocsp-nocheck,
a few days' validity) that the CA issues; the CA key itself signs no response. Requests are parsed into an
:class:`OcspQuery`; anything unreadable raises :class:`OcspMalformed` (answered ``malformedRequest``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.choices import RevocationReason
from pki.x509 import BACKDATE, PrivateKey, X509Error, _authority_key_identifier, _check_issuer, _hash_for_key

__all__ = [
    "CertStatus",
    "OcspMalformed",
    "OcspQuery",
    "ResponseStatus",
    "Revocation",
    "build_responder_certificate",
    "error_response",
    "generate_responder_key",
    "issuer_hashes",
    "parse_request",
    "sign_response",
]

CertStatus = ocsp.OCSPCertStatus
ResponseStatus = ocsp.OCSPResponseStatus

# The CertID hash algorithms a request may use (RFC 5019 §2.1.1 mandates SHA-1; others are accepted).
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class OcspMalformed(ValueError):
    """A request that is not one readable single-certificate OCSP request."""


@dataclass(frozen=True)
class OcspQuery:
    serial: int
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    hash_name: str  # a key of _HASHES
    nonce: bytes | None

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return _HASHES[self.hash_name]()


def parse_request(der: bytes) -> OcspQuery:
    try:
        request = ocsp.load_der_ocsp_request(der)
        serial = request.serial_number
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
        hash_name = request.hash_algorithm.name
    except (ValueError, TypeError, NotImplementedError) as exc:  # garbage, several requests, odd hash
        raise OcspMalformed(f"not a single-certificate OCSP request: {exc}") from None
    if hash_name not in _HASHES:
        raise OcspMalformed(f"unsupported CertID hash algorithm {hash_name}")
    try:
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        nonce = None
    except ValueError as exc:
        raise OcspMalformed(f"unreadable request extensions: {exc}") from None
    return OcspQuery(serial, name_hash, key_hash, hash_name, nonce)


def issuer_hashes(ca_cert: x509.Certificate, hash_name: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of the CA for a CertID (RFC 6960 §4.1.1): the hash of the DER subject
    and of the subjectPublicKey BIT STRING's value."""
    spki = ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return (
        hashlib.new(hash_name, ca_cert.subject.public_bytes()).digest(),
        hashlib.new(hash_name, _subject_public_key_bits(spki)).digest(),
    )


def _der_header(data: bytes, offset: int) -> tuple[int, int]:
    """(offset of the content, content length) of the DER element at ``offset``."""
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        octets = length & 0x7F
        length = int.from_bytes(data[offset : offset + octets], "big")
        offset += octets
    return offset, length


def _subject_public_key_bits(spki: bytes) -> bytes:
    """SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE, subjectPublicKey BIT STRING }: the BIT
    STRING's bytes without its unused-bits octet (DER of a well-formed key from ``cryptography``)."""
    content, _ = _der_header(spki, 0)
    algorithm, algorithm_length = _der_header(spki, content)
    bits, bits_length = _der_header(spki, algorithm + algorithm_length)
    return spki[bits + 1 : bits + bits_length]


def generate_responder_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def build_responder_certificate(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    responder_key: ec.EllipticCurvePrivateKey,
    validity: dt.timedelta,
) -> x509.Certificate:
    """A delegated OCSP responder certificate (RFC 6960 §4.2.2.2) of the CA: EKU id-kp-OCSPSigning, and
    id-pkix-ocsp-nocheck (§4.2.2.2.1) so relying parties need not check the responder's own status."""
    _check_issuer(issuer_cert, issuer_key, usage="key_cert_sign")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    not_before = max(now - BACKDATE, issuer_cert.not_valid_before_utc)
    not_after = min(now + validity, issuer_cert.not_valid_after_utc)
    if not_after <= now:
        raise X509Error("the CA expires too soon to issue an OCSP responder certificate")
    issuer_cn = issuer_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    label = str(issuer_cn[0].value) if issuer_cn else "CA"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"OCSP responder of {label}"[:64])])
    public = responder_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(_authority_key_identifier(issuer_cert), critical=False)
    )
    return builder.sign(issuer_key, _hash_for_key(issuer_key))


@dataclass(frozen=True)
class Revocation:
    time: dt.datetime
    reason: RevocationReason


def sign_response(
    *,
    query: OcspQuery,
    responder_cert: x509.Certificate,
    responder_key: ec.EllipticCurvePrivateKey,
    status: CertStatus,
    revocation: Revocation | None,
    this_update: dt.datetime,
    next_update: dt.datetime,
    include_nonce: bool = False,
) -> bytes:
    """A successful basic response for ``query`` (its CertID echoed; the caller checked it names the CA),
    signed by the responder, DER."""
    if status is CertStatus.REVOKED and revocation is None:
        raise X509Error("a revoked status needs its revocation time and reason")
    reason = None
    if revocation is not None and revocation.reason is not RevocationReason.UNSPECIFIED:
        reason = revocation.reason.flag
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=query.issuer_name_hash,
        issuer_key_hash=query.issuer_key_hash,
        serial_number=query.serial,
        algorithm=query.hash_algorithm,
        cert_status=status,
        this_update=this_update.astimezone(dt.UTC).replace(microsecond=0),
        next_update=next_update.astimezone(dt.UTC).replace(microsecond=0),
        revocation_time=revocation.time.astimezone(dt.UTC).replace(microsecond=0) if revocation else None,
        revocation_reason=reason,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responder_cert).certificates(
        [responder_cert]
    )
    if include_nonce and query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    return builder.sign(responder_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def error_response(status: ResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
