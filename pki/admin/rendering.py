"""How the PKI admin shows X.509 things: status colours, PEM blocks, a certificate's extensions."""

from __future__ import annotations

from cryptography import x509 as cx509
from django.utils.html import format_html, format_html_join

from pki import x509

STATUS_COLORS = {
    "active": "#2e7d32",
    "expired": "#757575",
    "revoked": "#c62828",
    "disabled": "#ef6c00",
    "success": "#2e7d32",
    "failed": "#c62828",
    "pending": "#1565c0",
}


def pem_block(text: str) -> str:
    if not text:
        return "—"
    return format_html('<pre class="pem">{}</pre>', text)


def colon_hex(data: bytes | str) -> str:
    text = data.hex() if isinstance(data, bytes) else data
    if len(text) % 2:
        text = "0" + text
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2)).upper()


def oid_name(oid: cx509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", "Unknown OID")
    return oid.dotted_string if name == "Unknown OID" else name


def extension_text(value) -> str:
    if isinstance(value, cx509.BasicConstraints):
        text = f"CA: {'yes' if value.ca else 'no'}"
        return text + (f", path length ≤ {value.path_length}" if value.path_length is not None else "")
    if isinstance(value, cx509.KeyUsage):
        names = []
        for name in x509.KEY_USAGE_NAMES:
            try:
                if getattr(value, name):
                    names.append(name)
            except ValueError:  # encipher/decipher_only are undefined without key_agreement
                pass
        return ", ".join(names)
    if isinstance(value, cx509.ExtendedKeyUsage):
        return ", ".join(oid_name(oid) for oid in value)
    if isinstance(value, cx509.SubjectAlternativeName):
        return ", ".join(x509.sans_to_strings(value))
    if isinstance(value, cx509.SubjectKeyIdentifier):
        return colon_hex(value.digest)
    if isinstance(value, cx509.AuthorityKeyIdentifier):
        return colon_hex(value.key_identifier) if value.key_identifier else "—"
    if isinstance(value, cx509.CRLDistributionPoints):
        return ", ".join(str(n.value) for point in value for n in (point.full_name or []))
    if isinstance(value, cx509.AuthorityInformationAccess):
        return ", ".join(f"{oid_name(d.access_method)}: {d.access_location.value}" for d in value)
    return str(value)[:500]


def x509_details(pem: str) -> str:
    """The certificate's signature algorithm and extensions as a small table (parsed, read-only)."""
    try:
        cert = cx509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        return format_html("<em>cannot parse: {}</em>", str(exc))
    rows = [("Signature algorithm", oid_name(cert.signature_algorithm_oid))]
    for ext in cert.extensions:
        label = oid_name(ext.oid) + (" (critical)" if ext.critical else "")
        rows.append((label, extension_text(ext.value)))
    return format_html(
        '<table class="pki-details">{}</table>',
        format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
    )


def short_list(values, limit: int = 3) -> str:
    values = list(values or [])
    if not values:
        return "any"
    shown = ", ".join(values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")
