"""ACME CA presets: the directory URL of each public CA certmgr knows, and whether it needs external account
binding (EAB). Pure data, no Django; the registration form and API fill the directory URL from here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Vendor(StrEnum):
    LETSENCRYPT = "letsencrypt"
    LETSENCRYPT_STAGING = "letsencrypt-staging"
    ZEROSSL = "zerossl"
    GOOGLE = "google"
    GOOGLE_STAGING = "google-staging"
    SSLCOM_RSA = "sslcom-rsa"
    SSLCOM_ECC = "sslcom-ecc"
    DIGICERT = "digicert"
    BUYPASS = "buypass"
    BUYPASS_STAGING = "buypass-staging"
    CUSTOM = "custom"


@dataclass(frozen=True)
class Preset:
    vendor: Vendor
    label: str
    directory_url: str  # empty for CUSTOM: the user types it (step-ca, Vault, Pebble, ...)
    eab_required: bool
    note: str = ""  # plain text: the form shows it as is
    # The day the vendor stopped issuing through ACME: a retired preset is kept so the CAs registered with
    # it still read their vendor, but no new CA (or CA moved to it) may use it.
    retired: date | None = None
    # The CA's CAA issuer domain names (RFC 8659): what a domain's CAA records must name to allow it.
    caa_identifiers: tuple[str, ...] = ()

    @property
    def display_label(self) -> str:
        return f"{self.label} (retired {self.retired.isoformat()})" if self.retired else self.label


PRESETS: dict[Vendor, Preset] = {
    p.vendor: p
    for p in (
        Preset(
            Vendor.LETSENCRYPT,
            "Let's Encrypt",
            "https://acme-v02.api.letsencrypt.org/directory",
            False,
            "90-day certificates; rate limits per registered domain.",
            caa_identifiers=("letsencrypt.org",),
        ),
        Preset(
            Vendor.LETSENCRYPT_STAGING,
            "Let's Encrypt (staging)",
            "https://acme-staging-v02.api.letsencrypt.org/directory",
            False,
            "Untrusted certificates with high rate limits: try integrations here first.",
            caa_identifiers=("letsencrypt.org",),
        ),
        Preset(
            Vendor.ZEROSSL,
            "ZeroSSL",
            "https://acme.zerossl.com/v2/DV90",
            True,
            "EAB credentials from the ZeroSSL dashboard (Developer section).",
            caa_identifiers=("sectigo.com",),
        ),
        Preset(
            Vendor.GOOGLE,
            "Google Trust Services",
            "https://dv.acme-v02.api.pki.goog/directory",
            True,
            "EAB key from the command gcloud publicca external-account-keys create.",
            caa_identifiers=("pki.goog",),
        ),
        Preset(
            Vendor.GOOGLE_STAGING,
            "Google Trust Services (staging)",
            "https://dv.acme-v02.test-api.pki.goog/directory",
            True,
            "Staging EAB keys come from the staging endpoint of the same command.",
            caa_identifiers=("pki.goog",),
        ),
        Preset(
            Vendor.SSLCOM_RSA,
            "SSL.com (RSA)",
            "https://acme.ssl.com/sslcom-dv-rsa",
            True,
            "EAB credentials from the SSL.com account's API credentials page.",
            caa_identifiers=("ssl.com",),
        ),
        Preset(
            Vendor.SSLCOM_ECC,
            "SSL.com (ECC)",
            "https://acme.ssl.com/sslcom-dv-ecc",
            True,
            "EAB credentials from the SSL.com account's API credentials page.",
            caa_identifiers=("ssl.com",),
        ),
        Preset(
            Vendor.DIGICERT,
            "DigiCert",
            "https://acme.digicert.com/v2/acme/directory/",
            True,
            "EAB key id and HMAC from CertCentral's ACME directory settings.",
            caa_identifiers=("digicert.com",),
        ),
        Preset(
            Vendor.BUYPASS,
            "Buypass Go SSL",
            "https://api.buypass.com/acme/directory",
            False,
            "Buypass ended its TLS certificate business: orders closed on 15 October 2025 and the last "
            "certificates were issued on 31 October 2025. Move these CAs to another vendor.",
            retired=date(2025, 10, 31),
            caa_identifiers=("buypass.com", "buypass.no"),
        ),
        Preset(
            Vendor.BUYPASS_STAGING,
            "Buypass Go SSL (staging)",
            "https://api.test4.buypass.no/acme/directory",
            False,
            "Closed together with Buypass Go SSL.",
            retired=date(2025, 10, 31),
            caa_identifiers=("buypass.com", "buypass.no"),
        ),
        Preset(
            Vendor.CUSTOM,
            "Custom directory URL (step-ca, Vault, Pebble, ...)",
            "",
            False,
            "A private ACME server usually needs its HTTPS certificate's CA as the TLS trust bundle.",
        ),
    )
}


def preset(vendor: str) -> Preset:
    try:
        return PRESETS[Vendor(vendor)]
    except ValueError:
        raise ValueError(
            f"unknown ACME vendor {vendor!r}; one of: {', '.join(v.value for v in Vendor)}"
        ) from None


def current(vendor: str) -> Preset:
    """The preset, refused when the vendor has retired it (for registering a CA or moving one to it)."""
    p = preset(vendor)
    if p.retired is not None:
        raise ValueError(
            f"{p.label} stopped issuing certificates on {p.retired.isoformat()}; choose another vendor"
        )
    return p


def directory_url_for(vendor: str, custom_url: str = "") -> str:
    """The preset's URL, or the typed one for ``custom`` (a typed URL never overrides a preset silently)."""
    p = preset(vendor)
    if p.vendor is Vendor.CUSTOM:
        if not custom_url:
            raise ValueError("a custom ACME CA needs its directory URL")
        return custom_url
    if custom_url and custom_url.rstrip("/") != p.directory_url.rstrip("/"):
        raise ValueError(f"{p.label} uses {p.directory_url}; choose 'custom' for another directory URL")
    return p.directory_url
