"""The PKI's enumerations, defined once for the models, the querysets and the pure modules (x509, policy).

Values are the standards' words where a standard has them (RFC 5280 revocation reasons).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from certmgr.choices import Choices

if TYPE_CHECKING:
    from cryptography import x509


class KeyAlgorithm(Choices):
    EC_P256 = "ec-p256", "ECDSA P-256"
    EC_P384 = "ec-p384", "ECDSA P-384"
    RSA_2048 = "rsa-2048", "RSA 2048"
    RSA_3072 = "rsa-3072", "RSA 3072"
    RSA_4096 = "rsa-4096", "RSA 4096"
    ED25519 = "ed25519", "Ed25519"

    @classmethod
    def parse(cls, value: str) -> KeyAlgorithm:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"unknown key algorithm {value!r}; choose one of: {', '.join(cls)}") from None

    @property
    def family(self) -> str:
        """The family ("rsa", "ec" or "ed25519"), which decides the permitted key usages."""
        return self.value.split("-")[0]


class RevocationReason(Choices):
    """CRLReason codes of RFC 5280 §5.3.1 (removeFromCRL is for delta CRLs only and not offered)."""

    UNSPECIFIED = "unspecified", "Unspecified"
    KEY_COMPROMISE = "key_compromise", "Key compromise"
    CA_COMPROMISE = "ca_compromise", "CA compromise"
    AFFILIATION_CHANGED = "affiliation_changed", "Affiliation changed"
    SUPERSEDED = "superseded", "Superseded"
    CESSATION_OF_OPERATION = "cessation_of_operation", "Cessation of operation"
    CERTIFICATE_HOLD = "certificate_hold", "Certificate hold"
    PRIVILEGE_WITHDRAWN = "privilege_withdrawn", "Privilege withdrawn"
    AA_COMPROMISE = "aa_compromise", "AA compromise"

    @classmethod
    def parse(cls, value: object) -> RevocationReason:
        """Accept our names, the seed API's ("KEY_COMPROMISE"), RFC ASN.1 names ("keyCompromise"), enum
        members such as ``cryptography.x509.ReasonFlags`` and numeric codes; None means unspecified."""
        if value is None:
            return cls.UNSPECIFIED
        if isinstance(value, int) and not isinstance(value, bool):
            for reason in cls:
                if reason.code == value:
                    return reason
        else:
            wanted = _squash(str(getattr(value, "name", value)))
            for reason in cls:
                if _squash(reason.value) == wanted:
                    return reason
        raise ValueError(f"unknown revocation reason {value!r}; choose one of: {', '.join(cls)}")

    @property
    def code(self) -> int:
        """The ASN.1 CRLReason enumeration value (7 is unused in RFC 5280 and 8 is removeFromCRL)."""
        return _REASON_CODES[self.value]

    @property
    def flag(self) -> x509.ReasonFlags:
        from cryptography import x509

        return x509.ReasonFlags[self.value]


def _squash(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


_REASON_CODES = {
    "unspecified": 0,
    "key_compromise": 1,
    "ca_compromise": 2,
    "affiliation_changed": 3,
    "superseded": 4,
    "cessation_of_operation": 5,
    "certificate_hold": 6,
    "privilege_withdrawn": 9,
    "aa_compromise": 10,
}


class CaKind(Choices):
    """What a certificate authority is; the kind picks its issuer backend (``pki.issuers``)."""

    INTERNAL_ROOT = "internal-root", "Internal root"
    INTERNAL_INTERMEDIATE = "internal-intermediate", "Internal intermediate"
    ACME = "acme", "External (ACME)"


INTERNAL_CA_KINDS = (CaKind.INTERNAL_ROOT, CaKind.INTERNAL_INTERMEDIATE)


class CaStatus(Choices):
    ACTIVE = "active", "Active"
    DISABLED = "disabled", "Disabled"


class IssuerType(Choices):
    CA = "ca", "Certificate authority"
    SELF_SIGNED = "self-signed", "Self-signed"


class OperationStatus(Choices):
    """A subscriber's last issuance or renewal."""

    NONE = "", "—"
    SUCCESS = "success", "Success"
    PENDING = "pending", "Pending"
    FAILED = "failed", "Failed"


class CertificateStatus(Choices):
    ACTIVE = "active", "Active"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class DeploymentState(Choices):
    """How far a certificate got to the places it is used (kept by ``syncs``, which deploys it)."""

    NONE = "none", "No destinations"  # no sync rule sends it anywhere: issuing it was the whole job
    DEPLOYING = "deploying", "Deploying"  # some destination has not confirmed it yet
    DEPLOYED = "deployed", "Deployed"  # every destination confirmed its serial (deployed_at: the last)
    FAILED = "failed", "Deployment failed"  # a destination's run failed for good; nothing is pending


class CertificateSource(Choices):
    ISSUED = "issued", "Issued by an internal CA"
    SELF_SIGNED = "self-signed", "Self-signed"
    ACME = "acme", "Issued through ACME"
    IMPORTED = "imported", "Imported"


class CsrSource(Choices):
    GENERATED = "generated", "Generated in certmgr"
    UPLOADED = "uploaded", "Uploaded"


SAN_TYPES = ("dns", "ip", "email", "uri")
