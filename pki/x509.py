"""Pure X.509 building blocks for the PKI services, following the RFC 5280 profile.

Keys, names, subject alternative names, CA and end-entity certificates, CSRs, CRLs, PEM bundles and
PKCS#12 export, all on top of ``cryptography``. Deliberately free of Django so it can be unit-tested
and reused anywhere; the services layer owns persistence, policy and auditing.

Every problem a user can cause raises :class:`X509Error` (a ``ValueError``) whose message names the
offending value and, where useful, the RFC rule behind the refusal.

Conventions:

* datetimes in and out are timezone-aware UTC, truncated to whole seconds (what X.509 encodes);
* certificate serials are random, positive and at most 159 bits (RFC 5280 §4.1.2.2: <= 20 octets);
* :func:`serial_hex` renders serials as lowercase hex without ``0x``, colons or leading zeros;
* fingerprints are lowercase hex without colons.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple, TypeAlias, TypeVar
from urllib.parse import urlsplit

import idna  # IDNA 2008 + UTS #46; the stdlib "idna" codec only implements IDNA 2003
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12 as _pkcs12
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from pki.choices import KeyAlgorithm, RevocationReason

__all__ = [
    "BACKDATE",
    "EXTENDED_KEY_USAGES",
    "KEY_USAGE_NAMES",
    "PKCS12_KDF_ROUNDS",
    "CertificateSummary",
    "CsrInfo",
    "Fingerprints",
    "IssuedCertificate",
    "KeyAlgorithm",
    "PrivateKey",
    "PublicKey",
    "RevocationReason",
    "Subject",
    "X509Error",
    "build_ca_certificate",
    "build_crl",
    "build_csr",
    "build_extended_key_usage",
    "build_key_usage",
    "build_leaf_certificate",
    "build_self_signed_certificate",
    "cert_summary",
    "csr_info",
    "describe_key",
    "fingerprints",
    "generate_key",
    "key_algorithm_of",
    "load_csr",
    "load_pem_certificates",
    "load_private_key",
    "matches_key",
    "order_chain",
    "parse_revocation_reason",
    "parse_san",
    "parse_sans",
    "pkcs12",
    "private_key_to_pem",
    "sans_to_strings",
    "serial_hex",
    "signature_hash",
    "to_pem",
]

# Certificates start slightly in the past so relying parties with a lagging clock accept them at once.
BACKDATE = dt.timedelta(minutes=5)
# RFC 5280 §4.1.2.2: positive and at most 20 octets, i.e. below 2**159 once the DER sign bit is clear.
_MAX_SERIAL = 2**159 - 1
# PBKDF2-HMAC-SHA256 rounds for PKCS#12 key and certificate bags (OpenSSL's default is only 2048).
# cryptography fixes the MAC's PKCS#12-KDF at 2048 iterations, and the MAC can test password guesses,
# so offline guessing costs ~2048 hashes per try whatever this says: export passwords must be strong.
PKCS12_KDF_ROUNDS = 200_000


class X509Error(ValueError):
    """A user-facing X.509 problem: bad input, a policy refusal or an unreadable object."""


# --------------------------------------------------------------------------------------------- keys

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_PRIVATE_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
_PUBLIC_KEY_TYPES = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)
_ANY_PRIVATE_KEY = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


def _algorithm(value: KeyAlgorithm | str) -> KeyAlgorithm:
    try:
        return KeyAlgorithm.parse(value)
    except ValueError as exc:
        raise X509Error(str(exc)) from None


_EC_CURVES = {KeyAlgorithm.EC_P256: ec.SECP256R1(), KeyAlgorithm.EC_P384: ec.SECP384R1()}
_RSA_SIZES = {KeyAlgorithm.RSA_2048: 2048, KeyAlgorithm.RSA_3072: 3072, KeyAlgorithm.RSA_4096: 4096}
MAX_RSA_BITS = max(_RSA_SIZES.values())
_ALGORITHM_BY_DESCRIPTION = {  # describe_key() label -> algorithm
    **{f"rsa-{size}": alg for alg, size in _RSA_SIZES.items()},
    **{f"ec-{curve.name}": alg for alg, curve in _EC_CURVES.items()},
    "ed25519": KeyAlgorithm.ED25519,
}


def generate_key(algorithm: KeyAlgorithm | str) -> PrivateKey:
    alg = _algorithm(algorithm)
    if alg in _RSA_SIZES:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_SIZES[alg])
    if alg in _EC_CURVES:
        return ec.generate_private_key(_EC_CURVES[alg])
    return ed25519.Ed25519PrivateKey.generate()


def describe_key(key: object) -> str:
    """A short label for any key, supported or not ("rsa-1024", "ec-secp256k1", "dsa-2048", ...)."""
    public = key.public_key() if isinstance(key, _ANY_PRIVATE_KEY) else key
    if isinstance(public, rsa.RSAPublicKey):
        return f"rsa-{public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"ec-{public.curve.name}"
    if isinstance(public, dsa.DSAPublicKey):
        return f"dsa-{public.key_size}"
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public, ed448.Ed448PublicKey):
        return "ed448"
    return type(public).__name__


def key_algorithm_of(key: PublicKey | PrivateKey | object) -> KeyAlgorithm:
    """The algorithm of a public (or private) key; X509Error for anything outside :class:`KeyAlgorithm`."""
    description = describe_key(key)
    if description not in _ALGORITHM_BY_DESCRIPTION:
        raise X509Error(f"unsupported key type {description}; supported: {', '.join(KeyAlgorithm)}")
    return _ALGORITHM_BY_DESCRIPTION[description]


def _supported_private_key(key: object) -> PrivateKey:
    """``key`` as a :data:`PrivateKey`; X509Error for an unsupported type or a public key."""
    key_algorithm_of(key)
    if not isinstance(key, _PRIVATE_KEY_TYPES):
        raise X509Error(f"expected a private key, not the public key {describe_key(key)}")
    return key


def _supported_public_key(key: object) -> PublicKey:
    """``key`` (a certificate's or a CSR's) as a :data:`PublicKey`; X509Error for an unsupported type."""
    key_algorithm_of(key)
    if not isinstance(key, _PUBLIC_KEY_TYPES):
        raise X509Error(f"expected a public key, not the private key {describe_key(key)}")
    return key


def signature_hash(algorithm: KeyAlgorithm | str) -> hashes.SHA256 | hashes.SHA384 | None:
    """SHA-384 for P-384 (matching its security level), SHA-256 for P-256 and RSA, None for Ed25519."""
    alg = _algorithm(algorithm)
    if alg is KeyAlgorithm.ED25519:
        return None  # EdDSA hashes internally; cryptography requires None
    return hashes.SHA384() if alg is KeyAlgorithm.EC_P384 else hashes.SHA256()


def private_key_to_pem(key: PrivateKey) -> str:
    """Unencrypted PKCS#8 PEM; the caller is responsible for protecting it at rest."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def load_private_key(pem: str | bytes, password: str | None = None) -> PrivateKey:
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    secret = password.encode("utf-8") if password else None
    try:
        # Size first, without the RSA consistency check: that check on a huge key costs tens of seconds of
        # CPU, and a key certmgr refuses anyway must not cost more than its parsing.
        key = serialization.load_pem_private_key(data, password=secret, unsafe_skip_rsa_key_validation=True)
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size > MAX_RSA_BITS:
                raise X509Error(
                    f"an RSA key of {key.key_size} bits is larger than the {MAX_RSA_BITS} bits "
                    "certmgr accepts"
                )
            key = serialization.load_pem_private_key(data, password=secret)  # now checked
    except TypeError as exc:  # raised for a missing or superfluous password
        raise X509Error(f"cannot load the private key: {exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise X509Error(
            f"not a readable PEM private key (wrong password, corrupt data or unsupported format): {exc}"
        ) from None
    return _supported_private_key(key)


def _hash_for_key(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    return signature_hash(key_algorithm_of(key))


def _spki(key: CertificatePublicKeyTypes | PrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, _ANY_PRIVATE_KEY) else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def matches_key(cert: x509.Certificate, private_key: PrivateKey) -> bool:
    """True when the certificate carries the public half of ``private_key``."""
    return _spki(cert.public_key()) == _spki(private_key)


def has_public_key(cert: x509.Certificate, public_key: CertificatePublicKeyTypes) -> bool:
    """True when the certificate carries ``public_key`` (e.g. a CSR's)."""
    return _spki(cert.public_key()) == _spki(public_key)


# ------------------------------------------------------------------------------------------ subject

# Most significant first, the conventional DER order (RFC 4514 strings print it reversed).
_SUBJECT_OIDS = {
    "country": NameOID.COUNTRY_NAME,
    "state": NameOID.STATE_OR_PROVINCE_NAME,
    "locality": NameOID.LOCALITY_NAME,
    "organization": NameOID.ORGANIZATION_NAME,
    "organizational_unit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "common_name": NameOID.COMMON_NAME,
    "email": NameOID.EMAIL_ADDRESS,
}


@dataclass(frozen=True)
class Subject:
    """A distinguished name restricted to the attributes this project issues.

    Values are stripped; empty strings become None. Construction validates (country: two letters,
    upper-cased; lengths per the X.520 upper bounds) so a bad Subject cannot reach a signer.
    """

    common_name: str | None = None
    organization: str | None = None
    organizational_unit: str | None = None
    country: str | None = None
    state: str | None = None
    locality: str | None = None
    email: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not isinstance(value, str):
                raise X509Error(f"subject {f.name} must be a string, not {type(value).__name__}")
            object.__setattr__(self, f.name, (value or "").strip() or None)
        if self.country is not None:
            if not (len(self.country) == 2 and self.country.isascii() and self.country.isalpha()):
                raise X509Error(f"country {self.country!r} must be a two-letter ISO 3166 code, e.g. 'DE'")
            object.__setattr__(self, "country", self.country.upper())
        if self.email is not None and (not self.email.isascii() or "@" not in self.email):
            raise X509Error(f"subject email {self.email!r} must be an ASCII address (IA5String)")
        self.to_name()

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def to_name(self) -> x509.Name:
        attributes = []
        for attr, oid in _SUBJECT_OIDS.items():
            value = getattr(self, attr)
            if value is None:
                continue
            try:
                attributes.append(x509.NameAttribute(oid, value))
            except ValueError as exc:  # X.520 length bounds, e.g. CN <= 64 characters
                raise X509Error(f"subject {attr} {value!r} is invalid: {exc}") from None
        return x509.Name(attributes)

    @classmethod
    def from_name(cls, name: x509.Name) -> Subject:
        """The known attributes of ``name`` (first value of each); use ``name.rfc4514_string()`` for
        the complete DN, since other attributes (DC, serialNumber, ...) are not represented here."""
        values = {}
        for attr, oid in _SUBJECT_OIDS.items():
            found = name.get_attributes_for_oid(oid)
            values[attr] = str(found[0].value) if found else None
        return cls(**values)

    def __str__(self) -> str:
        return self.to_name().rfc4514_string()


# ------------------------------------------------------------------------ subject alternative names

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_URI_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_EMAIL_LOCAL_FORBIDDEN = set(' \t\r\n<>()[]\\,;:"@')


# Scripts whose letters pass for Latin ones (a Cyrillic small a in "paypal"): a label uses one of them only.
_LOOKALIKE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC"})


def _refuse_invisible(value: str, name: str) -> None:
    """Format characters (zero-width, direction overrides) change what a name looks like, not what it is."""
    for ch in name:
        if unicodedata.category(ch) == "Cf":
            raise X509Error(
                f"{value!r} contains an invisible or direction-changing character (U+{ord(ch):04X}): "
                "type the name without it"
            )


def _refuse_mixed_scripts(value: str, label: str) -> None:
    """A label mixing look-alike scripts (Latin with Cyrillic or Greek...) spoofs another name."""
    if not label.startswith("xn--"):
        return
    try:
        text = idna.decode(label)
    except (idna.IDNAError, UnicodeError):
        return  # refused as a malformed label below
    scripts = {unicodedata.name(ch, "").split(" ", 1)[0] for ch in text if ch.isalpha()} & _LOOKALIKE_SCRIPTS
    if len(scripts) > 1:
        mixed = " and ".join(sorted(script.title() for script in scripts))
        raise X509Error(
            f"{value!r} is refused: its label {text!r} mixes {mixed} letters, which makes it look like "
            "another name"
        )


def _dns_name(value: str, *, allow_wildcard: bool = True) -> str:
    """Validate a host name and return its canonical A-label form (lower case, punycode, no final dot)."""
    name = value.strip()
    name = name.removesuffix(".")
    wildcard = allow_wildcard and name.startswith("*.")
    if wildcard:
        name = name[2:]
    if not name:
        raise X509Error(f"{value!r} is not a valid DNS name: it is empty")
    if not name.isascii():
        _refuse_invisible(value, name)
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise X509Error(f"{value!r} is not a valid internationalized domain name: {exc}") from None
    name = name.lower()
    labels = name.split(".")
    for label in labels:
        _refuse_mixed_scripts(value, label)
        if "*" in label:
            raise X509Error(
                f"{value!r} is not a valid DNS name: a wildcard is only allowed as the whole left-most "
                "label ('*.example.com')"
            )
        if not _LABEL_RE.match(label):
            raise X509Error(
                f"{value!r} is not a valid DNS name: label {label!r} must be 1-63 letters, digits or "
                "hyphens, not starting or ending with a hyphen"
            )
    if labels[-1].isdigit():
        raise X509Error(f"{value!r} is not a valid DNS name (all-numeric top-level label) nor an IP address")
    if wildcard and len(labels) < 2:
        raise X509Error(f"{value!r}: a wildcard must be followed by at least two labels ('*.example.com')")
    full = f"*.{name}" if wildcard else name
    if len(full) > 253:
        raise X509Error(f"{value!r} is not a valid DNS name: longer than 253 characters")
    return full


def _ip_address(value: str) -> x509.IPAddress | None:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if getattr(address, "scope_id", None):
        raise X509Error(f"{value!r}: an IPv6 zone index cannot be encoded in a certificate")
    return x509.IPAddress(address)


def _uri(value: str) -> x509.UniformResourceIdentifier:
    if not value.isascii() or any(c.isspace() for c in value):
        raise X509Error(f"URI {value!r} must be ASCII without spaces (percent-encode it, punycode the host)")
    if not _split_url(value)[1]:
        raise X509Error(f"URI {value!r} has no valid authority (host) part")
    return x509.UniformResourceIdentifier(value)


def _email(value: str) -> x509.RFC822Name:
    local, _, domain = value.rpartition("@")
    if not local or len(local) > 64 or not local.isascii() or set(local) & _EMAIL_LOCAL_FORBIDDEN:
        raise X509Error(f"email address {value!r} has an invalid local part (ASCII, no spaces, <= 64)")
    try:
        domain = _dns_name(domain, allow_wildcard=False)
    except X509Error as exc:
        raise X509Error(f"email address {value!r} has an invalid domain: {exc}") from None
    return x509.RFC822Name(f"{local}@{domain}")


def parse_san(value: str) -> x509.GeneralName:
    """Classify one string: IP address, URI (``scheme://``), email (contains ``@``), else DNS name."""
    if not isinstance(value, str):
        raise X509Error(f"SAN {value!r} must be a string")
    text = value.strip()
    if not text:
        raise X509Error("a subject alternative name is empty")
    if (ip := _ip_address(text)) is not None:
        return ip
    if _URI_SCHEME_RE.match(text):
        return _uri(text)
    if "@" in text:
        return _email(text)
    return x509.DNSName(_dns_name(text))


def parse_sans(values: Iterable[str]) -> list[x509.GeneralName]:
    """Parse SAN strings in order, dropping exact duplicates after normalisation."""
    result: list[x509.GeneralName] = []
    for value in values:
        name = parse_san(value)
        if name not in result:
            result.append(name)
    return result


def _general_name_to_string(name: x509.GeneralName) -> str:
    if isinstance(name, x509.IPAddress):
        return str(name.value)
    if isinstance(name, x509.DNSName | x509.RFC822Name | x509.UniformResourceIdentifier):
        return name.value
    if isinstance(name, x509.DirectoryName):
        return f"dirname:{name.value.rfc4514_string()}"
    if isinstance(name, x509.RegisteredID):
        return f"rid:{name.value.dotted_string}"
    if isinstance(name, x509.OtherName):
        return f"othername:{name.type_id.dotted_string}"
    return str(name)


def sans_to_strings(
    source: x509.Certificate
    | x509.CertificateSigningRequest
    | x509.Extension[x509.ExtensionType]
    | x509.SubjectAlternativeName,
) -> list[str]:
    """SANs as strings that :func:`parse_sans` accepts back (IDNs stay in punycode); [] when absent.

    Names this project never issues are prefixed: ``dirname:``, ``rid:``, ``othername:<oid>``.
    """
    value: object = source
    if isinstance(source, x509.Certificate | x509.CertificateSigningRequest):
        value = _extension(source, x509.SubjectAlternativeName)
        if value is None:
            return []
    if isinstance(value, x509.Extension):
        value = value.value
    if not isinstance(value, x509.SubjectAlternativeName):
        raise X509Error(f"expected a certificate, CSR or SubjectAlternativeName, not {type(value).__name__}")
    return [_general_name_to_string(name) for name in value]


# ------------------------------------------------------------------------------ key usages and EKUs

KEY_USAGE_NAMES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
EXTENDED_KEY_USAGES = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "time_stamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
}
# Which keyUsage bits each key type may assert: RFC 3279 §2.3.1 (RSA), RFC 5480 §3 (EC), RFC 8410 §5.
_PERMITTED_KEY_USAGES = {
    "rsa": frozenset(KEY_USAGE_NAMES) - {"key_agreement", "encipher_only", "decipher_only"},
    "ec": frozenset(KEY_USAGE_NAMES) - {"key_encipherment", "data_encipherment"},
    "ed25519": frozenset({"digital_signature", "content_commitment", "key_cert_sign", "crl_sign"}),
}
_DEFAULT_LEAF_KEY_USAGES = {
    "rsa": ("digital_signature", "key_encipherment"),  # RSA key transport in TLS 1.2 needs the latter
    "ec": ("digital_signature",),
    "ed25519": ("digital_signature",),
}


def _squash(text: str) -> str:
    """Case/separator-insensitive key, so "KEY_COMPROMISE", "keyCompromise" and "key-compromise" match."""
    return re.sub(r"[\s_-]", "", str(text)).lower()


_KEY_USAGE_LOOKUP = {_squash(n): n for n in KEY_USAGE_NAMES} | {"nonrepudiation": "content_commitment"}
_EKU_LOOKUP = {_squash(n): n for n in EXTENDED_KEY_USAGES}


def _key_usage_names(names: Iterable[str]) -> frozenset[str]:
    chosen = set()
    for name in names:
        canonical = _KEY_USAGE_LOOKUP.get(_squash(name))
        if canonical is None:
            raise X509Error(f"unknown key usage {name!r}; choose from: {', '.join(KEY_USAGE_NAMES)}")
        chosen.add(canonical)
    if not chosen:
        raise X509Error("a keyUsage extension needs at least one usage (RFC 5280 §4.2.1.3)")
    if chosen & {"encipher_only", "decipher_only"} and "key_agreement" not in chosen:
        raise X509Error("encipher_only and decipher_only are only meaningful together with key_agreement")
    return frozenset(chosen)


def build_key_usage(names: Iterable[str]) -> x509.KeyUsage:
    """A KeyUsage value from names such as ``["digital_signature", "key_encipherment"]``."""
    chosen = _key_usage_names(names)
    return x509.KeyUsage(**{name: name in chosen for name in KEY_USAGE_NAMES})


def build_extended_key_usage(values: Iterable[str | x509.ObjectIdentifier]) -> x509.ExtendedKeyUsage:
    """An ExtendedKeyUsage from names in :data:`EXTENDED_KEY_USAGES`, dotted OIDs or ObjectIdentifiers."""
    oids: list[x509.ObjectIdentifier] = []
    for value in values:
        if isinstance(value, x509.ObjectIdentifier):
            oid = value
        elif re.fullmatch(r"\d+(\.\d+)+", str(value).strip()):
            try:
                oid = x509.ObjectIdentifier(str(value).strip())
            except ValueError as exc:
                raise X509Error(f"invalid extended key usage OID {value!r}: {exc}") from None
        elif (name := _EKU_LOOKUP.get(_squash(value))) is not None:
            oid = EXTENDED_KEY_USAGES[name]
        else:
            raise X509Error(
                f"unknown extended key usage {value!r}; use one of {', '.join(EXTENDED_KEY_USAGES)} "
                "or a dotted OID"
            )
        if oid not in oids:
            oids.append(oid)
    if not oids:
        raise X509Error("an extendedKeyUsage extension needs at least one purpose (RFC 5280 §4.2.1.12)")
    return x509.ExtendedKeyUsage(oids)


# ------------------------------------------------------------------------------ extension helpers


_E = TypeVar("_E", bound=x509.ExtensionType)


def _extension(obj: x509.Certificate | x509.CertificateSigningRequest, cls: type[_E]) -> _E | None:
    """The value of extension ``cls`` or None; X509Error for a malformed extension list."""
    try:
        return obj.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # e.g. duplicate or undecodable extensions in an imported certificate
        raise X509Error(f"cannot read the extensions: {exc}") from None


def _display(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string() or f'serial {serial_hex(cert)}'}'"


def _split_url(url: str) -> tuple[str, str]:
    """(scheme, netloc), or ("", "") for something urllib cannot even split (e.g. "http://[::1")."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "", ""
    return parts.scheme, parts.netloc


def _check_url(url: str, what: str) -> str:
    scheme, netloc = _split_url(url)
    if scheme not in {"http", "https", "ldap"} or not netloc or not url.isascii():
        raise X509Error(f"{what} URL {url!r} must be an absolute ASCII http(s):// or ldap:// URL")
    return url


def _crl_distribution_points(url: str) -> x509.CRLDistributionPoints:
    uri = x509.UniformResourceIdentifier(_check_url(url, "CRL distribution point"))
    return x509.CRLDistributionPoints(
        [x509.DistributionPoint(full_name=[uri], relative_name=None, reasons=None, crl_issuer=None)]
    )


def _freshest_crl(url: str) -> x509.FreshestCRL:
    """Where the delta CRLs of the issuer are (RFC 5280 §4.2.1.15, §5.2.6): same shape as the CDP."""
    uri = x509.UniformResourceIdentifier(_check_url(url, "Freshest CRL"))
    return x509.FreshestCRL(
        [x509.DistributionPoint(full_name=[uri], relative_name=None, reasons=None, crl_issuer=None)]
    )


def _authority_information_access(
    aia_url: str | None, ocsp_url: str | None
) -> x509.AuthorityInformationAccess | None:
    """AIA with the OCSP responder first (RFC 5280 §4.2.2.1), then caIssuers; None without either."""
    descriptions = []
    if ocsp_url:
        uri = x509.UniformResourceIdentifier(_check_url(ocsp_url, "AIA OCSP"))
        descriptions.append(x509.AccessDescription(AuthorityInformationAccessOID.OCSP, uri))
    if aia_url:
        uri = x509.UniformResourceIdentifier(_check_url(aia_url, "AIA caIssuers"))
        descriptions.append(x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, uri))
    return x509.AuthorityInformationAccess(descriptions) if descriptions else None


def _authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI keyIdentifier copied from the issuer's SKI, so path builders can match them byte for byte."""
    ski = _extension(issuer_cert, x509.SubjectKeyIdentifier)
    if ski is not None:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    # _check_issuer came first: the issuer's key is one this module signs with.
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(_supported_public_key(issuer_cert.public_key()))


# ------------------------------------------------------------------------------ validity and serials


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _utc(value: dt.datetime, what: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise X509Error(f"{what} must be a timezone-aware datetime")
    return value.astimezone(dt.UTC).replace(microsecond=0)


def _validity_days(days: int) -> dt.timedelta:
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise X509Error(f"validity_days must be a positive integer, not {days!r}")
    return dt.timedelta(days=days)


def _serial(serial: int | None) -> int:
    if serial is None:
        return x509.random_serial_number()
    if isinstance(serial, bool) or not isinstance(serial, int) or not 1 <= serial <= _MAX_SERIAL:
        raise X509Error(f"serial {serial!r} must be a positive integer of at most 20 octets (RFC 5280)")
    return serial


def _check_issuer(issuer_cert: x509.Certificate, issuer_key: PrivateKey, *, usage: str) -> None:
    """The issuer must be a CA whose key matches and whose keyUsage allows ``usage``."""
    if not matches_key(issuer_cert, issuer_key):
        raise X509Error(
            f"the issuer private key does not belong to the issuer certificate {_display(issuer_cert)}"
        )
    key_algorithm_of(issuer_key)
    if len(issuer_cert.subject) == 0:
        raise X509Error("the issuer certificate has an empty subject; it cannot name itself as issuer")
    constraints = _extension(issuer_cert, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise X509Error(f"{_display(issuer_cert)} is not a CA certificate (BasicConstraints cA is not set)")
    usages = _extension(issuer_cert, x509.KeyUsage)
    if usages is not None and not getattr(usages, usage):
        bit = {"key_cert_sign": "keyCertSign", "crl_sign": "cRLSign"}[usage]
        raise X509Error(f"{_display(issuer_cert)} does not have the {bit} key usage")


def _issuance_window(
    issuer_cert: x509.Certificate, not_before: dt.datetime | None, days: int
) -> tuple[dt.datetime, dt.datetime]:
    """(notBefore, requested notAfter) for a certificate under a currently valid issuer.

    notBefore never precedes the issuer's, so the child's validity nests inside its issuer's.
    """
    now = _now()
    issuer_start, issuer_end = issuer_cert.not_valid_before_utc, issuer_cert.not_valid_after_utc
    if now > issuer_end:
        raise X509Error(f"the issuer {_display(issuer_cert)} expired on {issuer_end:%Y-%m-%d %H:%M:%SZ}")
    if now < issuer_start:
        raise X509Error(
            f"the issuer {_display(issuer_cert)} is not valid before {issuer_start:%Y-%m-%d %H:%M:%SZ}"
        )
    start = now - BACKDATE if not_before is None else _utc(not_before, "not_before")
    start = max(start, issuer_start)
    if start >= issuer_end:
        raise X509Error(f"not_before {start:%Y-%m-%d %H:%M:%SZ} is not before the issuer's notAfter")
    return start, start + _validity_days(days)


def _certificate_builder(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: PublicKey,
    serial: int | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(_serial(serial))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    return builder.sign(key, _hash_for_key(key))


# ---------------------------------------------------------------------------------- CA certificates


def _check_child_path_length(issuer_cert: x509.Certificate, requested: int | None) -> None:
    """RFC 5280 §4.2.1.9/§6.1.4: each CA below the issuer consumes one step of its pathLenConstraint."""
    constraints = _extension(issuer_cert, x509.BasicConstraints)
    if constraints is None:  # _check_issuer came first and refuses this
        raise X509Error(f"{_display(issuer_cert)} is not a CA certificate (BasicConstraints cA is not set)")
    limit = constraints.path_length
    if limit is None:
        return
    if limit == 0:
        raise X509Error(
            f"{_display(issuer_cert)} has pathLenConstraint 0: it may issue end-entity certificates only, "
            "not another CA"
        )
    if requested is None or requested > limit - 1:
        wanted = "unlimited" if requested is None else requested
        raise X509Error(
            f"{_display(issuer_cert)} has pathLenConstraint {limit}, so a subordinate CA's max_path_length "
            f"must be at most {limit - 1}, not {wanted}"
        )


def build_ca_certificate(
    *,
    subject: Subject,
    key: PrivateKey | PublicKey,
    issuer_cert: x509.Certificate | None = None,
    issuer_key: PrivateKey | None = None,
    validity_days: int,
    max_path_length: int | None,
    crl_url: str | None = None,
    aia_url: str | None = None,
    ocsp_url: str | None = None,
    delta_crl_url: str | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """A self-signed root (no issuer) or an intermediate signed by ``issuer_cert``/``issuer_key``.

    ``key`` is the new CA's private key, or only its public key for an intermediate whose key is held
    elsewhere (a subordinate CA issued from a CSR). ``crl_url``/``aia_url``/``ocsp_url``/``delta_crl_url``
    (Freshest CRL) point at the *issuer's* CRLs, certificate and OCSP responder, so they only apply to
    intermediates; a root cannot be
    revoked by its own CRL and has no issuer to fetch, so they are ignored. An intermediate that would
    outlive its issuer is refused rather than silently shortened.
    """
    if (issuer_cert is None) != (issuer_key is None):
        raise X509Error("pass both issuer_cert and issuer_key for an intermediate CA, or neither for a root")
    if subject.is_empty:
        raise X509Error("a CA certificate needs a non-empty subject (RFC 5280 §4.1.2.6)")
    if max_path_length is not None and (isinstance(max_path_length, bool) or max_path_length < 0):
        raise X509Error(f"max_path_length must be None (unlimited) or >= 0, not {max_path_length!r}")
    key_algorithm_of(key)
    public_key = key.public_key() if isinstance(key, _ANY_PRIVATE_KEY) else key
    if issuer_cert is None and public_key is key:
        raise X509Error("a root CA signs itself: pass its private key")
    span = _validity_days(validity_days)

    if issuer_cert is None:
        not_before = _now() - BACKDATE
        not_after, issuer_name = not_before + span, subject.to_name()
        signing_key = _supported_private_key(key)  # a root's own key (a public one was refused above)
    else:
        if issuer_key is None:  # unreachable: both or neither, checked above
            raise X509Error(
                "pass both issuer_cert and issuer_key for an intermediate CA, or neither for a root"
            )
        _check_issuer(issuer_cert, issuer_key, usage="key_cert_sign")
        signing_key = issuer_key
        _check_child_path_length(issuer_cert, max_path_length)
        not_before, not_after = _issuance_window(issuer_cert, None, validity_days)
        if not_after > issuer_cert.not_valid_after_utc:
            room = (issuer_cert.not_valid_after_utc - not_before).days
            raise X509Error(
                f"a CA certificate must not outlive its issuer: {validity_days} days would end "
                f"{not_after:%Y-%m-%d}, after {_display(issuer_cert)} expires "
                f"({issuer_cert.not_valid_after_utc:%Y-%m-%d}); request at most {room} days"
            )
        issuer_name = issuer_cert.subject

    builder = _certificate_builder(
        subject=subject.to_name(),
        issuer=issuer_name,
        public_key=public_key,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
    )
    builder = builder.add_extension(
        x509.BasicConstraints(ca=True, path_length=max_path_length), critical=True
    )
    # digitalSignature lets the CA key sign OCSP responses directly.
    builder = builder.add_extension(
        build_key_usage(["key_cert_sign", "crl_sign", "digital_signature"]), critical=True
    )
    if issuer_cert is not None:
        builder = builder.add_extension(_authority_key_identifier(issuer_cert), critical=False)
        if crl_url:
            builder = builder.add_extension(_crl_distribution_points(crl_url), critical=False)
        if delta_crl_url:
            builder = builder.add_extension(_freshest_crl(delta_crl_url), critical=False)
        access = _authority_information_access(aia_url, ocsp_url)
        if access is not None:
            builder = builder.add_extension(access, critical=False)
    return _sign(builder, signing_key)


# --------------------------------------------------------------------------- end-entity certificates


@dataclass(frozen=True)
class IssuedCertificate:
    """A freshly signed leaf; ``clamped`` tells that notAfter was cut back to the issuer's notAfter."""

    certificate: x509.Certificate
    clamped: bool
    requested_not_after: dt.datetime


def _subject_public_key(csr_or_public_key: x509.CertificateSigningRequest | PublicKey) -> PublicKey:
    if isinstance(csr_or_public_key, x509.CertificateSigningRequest):
        _check_csr(csr_or_public_key)
        return _supported_public_key(csr_or_public_key.public_key())
    if isinstance(csr_or_public_key, _ANY_PRIVATE_KEY):
        raise X509Error("pass the subject's public key or CSR, never its private key")
    key_algorithm_of(csr_or_public_key)
    return csr_or_public_key


def _leaf_usages(alg: KeyAlgorithm, key_usages: Iterable[str] | None) -> x509.KeyUsage:
    chosen = _key_usage_names(_DEFAULT_LEAF_KEY_USAGES[alg.family] if key_usages is None else key_usages)
    if "key_cert_sign" in chosen:
        raise X509Error(
            "key_cert_sign requires a CA certificate (RFC 5280 §4.2.1.9); use build_ca_certificate"
        )
    forbidden = chosen - _PERMITTED_KEY_USAGES[alg.family]
    if forbidden:
        raise X509Error(f"key usage {', '.join(sorted(forbidden))} is not permitted for a {alg} key")
    return build_key_usage(chosen)


def _end_entity_builder(
    builder: x509.CertificateBuilder,
    *,
    alg: KeyAlgorithm,
    subject: Subject,
    sans: Sequence[str],
    key_usages: Iterable[str] | None,
    extended_key_usages: Iterable[str] | None,
) -> x509.CertificateBuilder:
    names = parse_sans(sans)
    if subject.is_empty and not names:
        raise X509Error("a certificate needs a subject or at least one subject alternative name")
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(_leaf_usages(alg, key_usages), critical=True)
    if extended_key_usages:
        builder = builder.add_extension(build_extended_key_usage(extended_key_usages), critical=False)
    if names:
        # RFC 5280 §4.2.1.6: with an empty subject the SAN carries the identity and MUST be critical.
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=subject.is_empty)
    return builder


@dataclass(frozen=True)
class _LeafIssuer:
    """What a leaf takes from its issuer, worked out once per (certificate, key, URLs) and reused.

    The checks and extension objects depend only on the issuer, so a CA signing many leaves (a batch, or
    one worker's stream of issuances) does not re-check its key or rebuild its AKI, CRL and AIA extensions.
    """

    certificate: x509.Certificate
    key: PrivateKey
    name: x509.Name
    hash_algorithm: hashes.SHA256 | hashes.SHA384 | None
    extensions: tuple[x509.ExtensionType, ...]  # all non-critical: AKI, then CRL DP, Freshest CRL, AIA


# Keyed by object identity (cached materials are long-lived objects); an entry keeps its objects alive, so
# an id in the key cannot be reused while the entry exists, and each hit is still checked by identity.
_LEAF_ISSUERS: dict[tuple[int, int, str | None, str | None, str | None, str | None], _LeafIssuer] = {}


def _leaf_issuer(
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    crl_url: str | None,
    aia_url: str | None,
    ocsp_url: str | None = None,
    delta_crl_url: str | None = None,
) -> _LeafIssuer:
    cache_key = (id(issuer_cert), id(issuer_key), crl_url, aia_url, ocsp_url, delta_crl_url)
    cached = _LEAF_ISSUERS.get(cache_key)
    if cached is not None and cached.certificate is issuer_cert and cached.key is issuer_key:
        return cached
    _check_issuer(issuer_cert, issuer_key, usage="key_cert_sign")
    extensions: list[x509.ExtensionType] = [_authority_key_identifier(issuer_cert)]
    if crl_url:
        extensions.append(_crl_distribution_points(crl_url))
    if delta_crl_url:
        extensions.append(_freshest_crl(delta_crl_url))
    access = _authority_information_access(aia_url, ocsp_url)
    if access is not None:
        extensions.append(access)
    issuer = _LeafIssuer(
        certificate=issuer_cert,
        key=issuer_key,
        name=issuer_cert.subject,
        hash_algorithm=_hash_for_key(issuer_key),
        extensions=tuple(extensions),
    )
    if len(_LEAF_ISSUERS) >= 64:
        _LEAF_ISSUERS.clear()
    _LEAF_ISSUERS[cache_key] = issuer
    return issuer


def build_leaf_certificate(
    *,
    csr_or_public_key: x509.CertificateSigningRequest | PublicKey,
    subject: Subject,
    sans: Sequence[str],
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    validity_days: int,
    key_usages: Iterable[str] | None = None,
    extended_key_usages: Iterable[str] | None = ("server_auth",),
    crl_url: str | None = None,
    aia_url: str | None = None,
    ocsp_url: str | None = None,
    delta_crl_url: str | None = None,
    serial: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> IssuedCertificate:
    """An end-entity certificate signed by a CA.

    Subject and SANs come from the arguments, never from the CSR (whose signature is still verified as
    proof of possession); CSR extension requests are ignored. ``key_usages=None`` picks a default for
    the key type; ``extended_key_usages`` empty/None omits the extension. notAfter is clamped to the
    issuer's notAfter and the result says so.
    """
    public_key = _subject_public_key(csr_or_public_key)
    alg = key_algorithm_of(public_key)
    issuer = _leaf_issuer(issuer_cert, issuer_key, crl_url, aia_url, ocsp_url, delta_crl_url)
    start, requested_end = _issuance_window(issuer_cert, not_before, validity_days)
    if not_after is not None:  # an exact end the caller asked for, within validity_days of the start
        requested_end = min(requested_end, _utc(not_after, "not_after"))
        if requested_end <= start:
            raise X509Error("not_after is not after not_before")
    end = min(requested_end, issuer_cert.not_valid_after_utc)

    builder = _certificate_builder(
        subject=subject.to_name(),
        issuer=issuer.name,
        public_key=public_key,
        serial=serial,
        not_before=start,
        not_after=end,
    )
    builder = _end_entity_builder(
        builder,
        alg=alg,
        subject=subject,
        sans=sans,
        key_usages=key_usages,
        extended_key_usages=extended_key_usages,
    )
    for extension in issuer.extensions:
        builder = builder.add_extension(extension, critical=False)
    cert = builder.sign(issuer_key, issuer.hash_algorithm)
    return IssuedCertificate(certificate=cert, clamped=end < requested_end, requested_not_after=requested_end)


def build_self_signed_certificate(
    *,
    key: PrivateKey,
    subject: Subject,
    sans: Sequence[str],
    validity_days: int,
    key_usages: Iterable[str] | None = None,
    extended_key_usages: Iterable[str] | None = ("server_auth",),
    serial: int | None = None,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """A self-signed end-entity certificate (cA=False), e.g. for a bootstrap or test endpoint.

    It carries an AKI equal to its own SKI: RFC 5280 §4.2.1.1 lets only a CA's self-signed one omit it.
    """
    alg = key_algorithm_of(key)
    if subject.is_empty:
        raise X509Error("a self-signed certificate needs a non-empty subject: it is also the issuer name")
    start = _now() - BACKDATE if not_before is None else _utc(not_before, "not_before")
    builder = _certificate_builder(
        subject=subject.to_name(),
        issuer=subject.to_name(),
        public_key=key.public_key(),
        serial=serial,
        not_before=start,
        not_after=start + _validity_days(validity_days),
    )
    builder = _end_entity_builder(
        builder,
        alg=alg,
        subject=subject,
        sans=sans,
        key_usages=key_usages,
        extended_key_usages=extended_key_usages,
    )
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
    )
    return _sign(builder, key)


# --------------------------------------------------------------------------------------------- CSRs


class CsrInfo(NamedTuple):
    subject: Subject
    sans: list[str]
    key_algorithm: KeyAlgorithm


def build_csr(key: PrivateKey, subject: Subject, sans: Sequence[str] = ()) -> x509.CertificateSigningRequest:
    alg = key_algorithm_of(key)
    names = parse_sans(sans)
    if subject.is_empty and not names:
        raise X509Error("a CSR needs a subject or at least one subject alternative name")
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject.to_name())
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=subject.is_empty)
    return builder.sign(key, signature_hash(alg))


def _check_csr(csr: x509.CertificateSigningRequest) -> KeyAlgorithm:
    """The key policy first (a key certmgr refuses, e.g. RSA-16384, must cost no signature check), then
    proof of possession (the signature)."""
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise X509Error(f"the CSR contains an unsupported public key: {exc}") from None
    algorithm = key_algorithm_of(public_key)
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise X509Error(
            f"cannot check the CSR signature (unsupported key or signature algorithm): {exc}"
        ) from None
    if not valid:
        raise X509Error(
            "the CSR signature does not verify: it was altered after signing "
            "or not signed by the key it contains"
        )
    return algorithm


def load_csr(data: str | bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM (str or bytes) or DER (bytes) PKCS#10 request and verify its self-signature."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    is_pem = b"-----BEGIN" in raw
    if isinstance(data, str) and not is_pem:
        raise X509Error("not a PEM certificate signing request: no '-----BEGIN CERTIFICATE REQUEST-----'")
    try:
        csr = x509.load_pem_x509_csr(raw.strip()) if is_pem else x509.load_der_x509_csr(raw)
    except ValueError as exc:
        raise X509Error(
            f"not a valid PKCS#10 certificate signing request (malformed PEM/DER): {exc}"
        ) from None
    _check_csr(csr)
    return csr


def csr_info(csr: x509.CertificateSigningRequest) -> CsrInfo:
    """What the CSR asks for; the caller decides what to grant."""
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise X509Error(f"the CSR contains an unsupported public key: {exc}") from None
    return CsrInfo(Subject.from_name(csr.subject), sans_to_strings(csr), key_algorithm_of(public_key))


# --------------------------------------------------------------------------------------------- CRLs


def _reason(value: str | RevocationReason | None) -> RevocationReason:
    """``parse_revocation_reason``, remembered per value (a CRL repeats a handful of reasons)."""
    if isinstance(value, RevocationReason):
        return value
    return _parsed_reason(value)


@functools.cache
def _parsed_reason(value: str | None) -> RevocationReason:
    return parse_revocation_reason(value)


def parse_revocation_reason(value: object) -> RevocationReason:
    """:meth:`RevocationReason.parse`, refusing with an X509Error."""
    try:
        return RevocationReason.parse(value)
    except ValueError as exc:
        raise X509Error(str(exc)) from None


def _revoked_entry(serial: int, revoked_at: dt.datetime, reason: RevocationReason) -> x509.RevokedCertificate:
    # Built in one constructor call, messages formatted only on error: a CRL may hold 100,000 entries.
    if not isinstance(revoked_at, dt.datetime) or revoked_at.tzinfo is None:
        raise X509Error(f"revocation time of serial {serial_hex(serial)} must be a timezone-aware datetime")
    # cryptography converts an aware time to UTC and drops the microseconds (UTCTime) itself.
    return x509.RevokedCertificateBuilder(
        serial_number=_serial(serial), revocation_date=revoked_at, extensions=_reason_extensions(reason)
    ).build()


@functools.cache
def _reason_extensions(reason: RevocationReason) -> list[x509.Extension[x509.ExtensionType]]:
    # RFC 5280 §5.3.1: "the reason code CRL entry extension SHOULD be absent instead of using the
    # unspecified (0) reasonCode value" -- so unspecified is expressed by omission.
    if reason is RevocationReason.UNSPECIFIED:
        return []
    return [x509.Extension(x509.CRLReason.oid, False, x509.CRLReason(reason.flag))]


def _issuing_distribution_point(url: str) -> x509.IssuingDistributionPoint:
    """The CRL's scope (RFC 5280 §5.2.5): its distributionPoint is the very URL the certificates carry as
    their CRL distribution point, so OpenSSL's scope check (a CDP fullName equal to one of the IDP) matches.
    No onlyContainsUserCerts/onlyContainsCACerts: one CRL covers all a CA issued, leaves and subordinate CAs
    alike (OpenSSL rejects a user-only CRL for a CA certificate with "different CRL scope")."""
    uri = x509.UniformResourceIdentifier(_check_url(url, "issuing distribution point"))
    return x509.IssuingDistributionPoint(
        full_name=[uri],
        relative_name=None,
        only_contains_user_certs=False,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )


def _check_crl_number(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SERIAL:
        raise X509Error(f"{what} {value!r} must be a non-negative integer of at most 20 octets")


def build_crl(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    revoked: Sequence[tuple[int, dt.datetime, str | RevocationReason | None]],
    this_update: dt.datetime,
    next_update: dt.datetime,
    crl_number: int,
    distribution_point: str | None = None,
    freshest_crl: str | None = None,
    delta_of: int | None = None,
) -> x509.CertificateRevocationList:
    """A v2 CRL with CRLNumber and AKI, signed by the CA that issued the certificates.

    ``distribution_point``: the CDP URL of those certificates, carried as the Issuing Distribution Point
    (critical). ``delta_of``: a delta CRL (RFC 5280 §5.2.4) completing the full CRL of that number (the Delta
    CRL Indicator, critical; ``crl_number`` must be higher). ``freshest_crl``: a full CRL's pointer to its
    delta CRLs (RFC 5280 §5.2.6; never on a delta)."""
    _check_issuer(issuer_cert, issuer_key, usage="crl_sign")
    this_update, next_update = _utc(this_update, "this_update"), _utc(next_update, "next_update")
    if next_update <= this_update:
        raise X509Error("next_update must be later than this_update")
    _check_crl_number(crl_number, "crl_number")
    if delta_of is not None:
        _check_crl_number(delta_of, "delta_of")
        if delta_of >= crl_number:
            raise X509Error(f"a delta CRL's number ({crl_number}) must exceed its base's ({delta_of})")
        if freshest_crl:
            raise X509Error("a delta CRL carries no Freshest CRL extension (RFC 5280 §5.2.6)")
    seen: set[int] = set()
    entries = []
    for serial, revoked_at, reason in revoked:
        if serial in seen:
            raise X509Error(f"serial {serial_hex(serial)} is listed twice in the CRL")
        seen.add(serial)
        entries.append(_revoked_entry(serial, revoked_at, _reason(reason)))
    extensions: list[x509.Extension[x509.ExtensionType]] = [
        x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(crl_number)),
        x509.Extension(x509.AuthorityKeyIdentifier.oid, False, _authority_key_identifier(issuer_cert)),
    ]
    if delta_of is not None:
        extensions.append(x509.Extension(x509.DeltaCRLIndicator.oid, True, x509.DeltaCRLIndicator(delta_of)))
    if distribution_point:
        idp = _issuing_distribution_point(distribution_point)
        extensions.append(x509.Extension(x509.IssuingDistributionPoint.oid, True, idp))
    if freshest_crl:
        extensions.append(x509.Extension(x509.FreshestCRL.oid, False, _freshest_crl(freshest_crl)))
    # The whole list at once: each chained add_revoked_certificate copies the builder (quadratic).
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer_cert.subject,
        last_update=this_update,
        next_update=next_update,
        extensions=extensions,
        revoked_certificates=entries,
    )
    return builder.sign(issuer_key, _hash_for_key(issuer_key))


# ---------------------------------------------------------------------------- parsing and inventory

_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def load_pem_certificates(text: str | bytes) -> list[x509.Certificate]:
    """Every certificate block of a PEM bundle, in order; text around and between blocks is ignored."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")  # only the ASCII PEM blocks matter
    blocks = _PEM_CERT_RE.findall(text)
    if not blocks:
        raise X509Error("no PEM certificate found (expected '-----BEGIN CERTIFICATE-----' blocks)")
    certs = []
    for index, body in enumerate(blocks, start=1):
        try:
            der = base64.b64decode("".join(body.split()), validate=True)
            certs.append(x509.load_der_x509_certificate(der))
        except (binascii.Error, ValueError) as exc:
            raise X509Error(f"certificate #{index} of the PEM bundle is malformed: {exc}") from None
    return certs


class Fingerprints(NamedTuple):
    sha256: str
    sha1: str


def fingerprints(cert: x509.Certificate) -> Fingerprints:
    """(sha256, sha1) of the DER encoding, lowercase hex without colons."""
    return Fingerprints(cert.fingerprint(hashes.SHA256()).hex(), sha1_fingerprint(cert))


def sha1_fingerprint(cert: x509.Certificate) -> str:
    """The SHA-1 of the DER encoding, lowercase hex: an identifier for legacy tools, not a signature."""
    return cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303


def serial_hex(cert_or_serial: x509.Certificate | int) -> str:
    """Canonical serial text: lowercase hex without ``0x``, colons or leading zeros (int(s, 16) inverts)."""
    serial = cert_or_serial.serial_number if isinstance(cert_or_serial, x509.Certificate) else cert_or_serial
    return format(serial, "x")


@dataclass(frozen=True)
class CertificateSummary:
    subject: str  # RFC 4514
    common_name: str | None
    issuer: str  # RFC 4514
    sans: tuple[str, ...]
    key_algorithm: KeyAlgorithm | None  # None for a key this project cannot issue for (see key_description)
    key_description: str
    not_before: dt.datetime  # aware UTC
    not_after: dt.datetime  # aware UTC
    serial: str  # serial_hex()
    is_ca: bool
    path_length: int | None
    subject_key_identifier: str | None  # lowercase hex
    authority_key_identifier: str | None  # lowercase hex (keyIdentifier field)
    sha256: str
    self_signed: bool


@dataclass(frozen=True)
class InventoryFields:
    """What the inventory stores of a certificate: ``cert_summary``'s fields without the CA, key-identifier
    and self-signed details it does not store, and with the SHA-1 it does."""

    subject: str  # RFC 4514
    common_name: str | None
    issuer: str  # RFC 4514
    sans: tuple[str, ...]
    key_algorithm: KeyAlgorithm | None
    not_before: dt.datetime  # aware UTC
    not_after: dt.datetime  # aware UTC
    serial: str  # serial_hex()
    sha256: str
    sha1: str


def inventory_fields(cert: x509.Certificate) -> InventoryFields:
    """The inventory row's view of ``cert`` (every stored certificate: it costs half of ``cert_summary``)."""
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    der = cert.public_bytes(serialization.Encoding.DER)  # hashed here: one encoding for both fingerprints
    try:
        algorithm: KeyAlgorithm | None = key_algorithm_of(cert.public_key())
    except (ValueError, UnsupportedAlgorithm, X509Error):
        algorithm = None
    return InventoryFields(
        subject=cert.subject.rfc4514_string(),
        common_name=str(common_names[0].value) if common_names else None,
        issuer=cert.issuer.rfc4514_string(),
        sans=tuple(sans_to_strings(cert)),
        key_algorithm=algorithm,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=serial_hex(cert),
        sha256=hashlib.sha256(der).hexdigest(),
        sha1=hashlib.sha1(der, usedforsecurity=False).hexdigest(),  # an identifier, not a signature
    )


def _safe_key_info(cert: x509.Certificate) -> tuple[KeyAlgorithm | None, str]:
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None, "unknown"
    try:
        return key_algorithm_of(public_key), describe_key(public_key)
    except X509Error:
        return None, describe_key(public_key)


def cert_summary(cert: x509.Certificate) -> CertificateSummary:
    """Inventory view of any certificate, including imported ones with keys we would not issue for."""
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    constraints = _extension(cert, x509.BasicConstraints)
    ski = _extension(cert, x509.SubjectKeyIdentifier)
    aki = _extension(cert, x509.AuthorityKeyIdentifier)
    algorithm, description = _safe_key_info(cert)
    return CertificateSummary(
        subject=cert.subject.rfc4514_string(),
        common_name=str(common_names[0].value) if common_names else None,
        issuer=cert.issuer.rfc4514_string(),
        sans=tuple(sans_to_strings(cert)),
        key_algorithm=algorithm,
        key_description=description,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=serial_hex(cert),
        is_ca=bool(constraints and constraints.ca),
        path_length=constraints.path_length if constraints and constraints.ca else None,
        subject_key_identifier=ski.digest.hex() if ski else None,
        authority_key_identifier=aki.key_identifier.hex() if aki and aki.key_identifier else None,
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
        self_signed=_issued_by(cert, cert),
    )


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Issuer name matches and ``parent``'s key verifies ``child``'s signature."""
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def order_chain(leaf: x509.Certificate, others: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """The issuers of ``leaf`` found in ``others``, nearest first, leaf excluded.

    Links are checked by signature, not just by name. The walk stops at a self-signed certificate or
    when no issuer is found; certificates that are not on the path are left out.
    """
    pool = [cert for cert in dict.fromkeys(others) if cert != leaf]
    chain: list[x509.Certificate] = []
    current = leaf
    while not _issued_by(current, current):
        issuer = next((cert for cert in pool if _issued_by(current, cert)), None)
        if issuer is None:
            break
        chain.append(issuer)
        pool.remove(issuer)
        current = issuer
    return chain


# -------------------------------------------------------------------------------------------- export


def to_pem(obj: x509.Certificate | x509.CertificateSigningRequest | x509.CertificateRevocationList) -> str:
    return obj.public_bytes(serialization.Encoding.PEM).decode("ascii")


def pkcs12(
    *,
    cert: x509.Certificate,
    key: PrivateKey,
    chain: Sequence[x509.Certificate] = (),
    password: str,
    alias: str,
    kdf_rounds: int = PKCS12_KDF_ROUNDS,
) -> bytes:
    """A password-protected PKCS#12 file: PBES2 (PBKDF2-SHA256, AES-256-CBC) bags and an HMAC-SHA256 MAC.

    Importers must support PBES2/AES (OpenSSL 1.1.1+, current Windows, Java and macOS); the legacy
    3DES/RC2 format is deliberately not offered.
    """
    if not password:
        raise X509Error("a PKCS#12 export needs a non-empty password")
    if not matches_key(cert, key):
        raise X509Error(f"the private key does not belong to the certificate {_display(cert)}")
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(kdf_rounds)
        .key_cert_algorithm(_pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode("utf-8"))
    )
    return _pkcs12.serialize_key_and_certificates(
        alias.encode("utf-8") if alias else None, key, cert, list(chain) or None, encryption
    )
