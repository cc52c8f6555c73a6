"""What each kind of app connection needs, and how its credentials are checked.

One schema per kind drives the admin form, the API serializer and validation alike. Pure Python: no
Django imports, so it is tested alone.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit


class Kind(StrEnum):
    AWS = "aws"
    CLOUDFLARE = "cloudflare"
    POWERDNS = "powerdns"
    RFC2136 = "rfc2136"
    ACME_DNS = "acme-dns"
    MANUAL = "manual"
    AKAMAI = "akamai"
    DELEGATED = "delegated"
    SSH = "ssh"
    AZURE = "azure"
    WEBHOOK = "webhook"


KIND_LABELS = {
    Kind.AWS: "AWS (Route53 DNS, Certificate Manager, Secrets Manager)",
    Kind.CLOUDFLARE: "Cloudflare",
    Kind.POWERDNS: "PowerDNS",
    Kind.RFC2136: "RFC 2136 (BIND, Knot, ... with TSIG)",
    Kind.ACME_DNS: "acme-dns",
    Kind.MANUAL: "Manual (operator creates the TXT record)",
    Kind.AKAMAI: "Akamai Edge DNS",
    Kind.DELEGATED: "Delegated to certmgr (NS record to certmgr's DNS server)",
    Kind.SSH: "SSH host (certificate files and a reload command)",
    Kind.AZURE: "Azure (service principal, for Key Vault)",
    Kind.WEBHOOK: "HTTPS push (signed webhook)",
}

TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")


class CredentialError(ValueError):
    """Field -> messages, as forms and serializers expect."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class CredentialField:
    name: str
    label: str
    secret: bool = False
    required: bool = True
    kind: str = "text"  # text | url | int | choice | pem (several lines: a private key)
    choices: tuple[str, ...] = ()
    default: Any = None
    help: str = ""
    max_length: int = 4096
    # Decides where the secrets are sent (URL, server, port, region): changing it needs the secrets again,
    # so a write-only secret cannot be redirected to a host of the editor's choosing.
    routes_secrets: bool = False


@dataclass(frozen=True)
class KindSchema:
    kind: Kind
    fields: tuple[CredentialField, ...] = field(default_factory=tuple)

    @property
    def secret_names(self) -> set[str]:
        return {f.name for f in self.fields if f.secret}


_AWS_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}\.?$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?$"
)
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+$")
# EdgeGrid API hosts, as the API client's .edgerc "host" line names them: akab-....luna.akamaiapis.net.
_AKAMAI_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+akamaiapis\.net$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

SCHEMAS: dict[Kind, KindSchema] = {
    Kind.AWS: KindSchema(
        Kind.AWS,
        (
            CredentialField("access_key_id", "Access key ID"),
            CredentialField("secret_access_key", "Secret access key", secret=True),
            CredentialField("region", "Region", required=False, default="us-east-1", routes_secrets=True),
            CredentialField(
                "role_arn",
                "Role ARN to assume",
                required=False,
                help="Optional: certmgr assumes this role with the keys above.",
            ),
        ),
    ),
    Kind.CLOUDFLARE: KindSchema(
        Kind.CLOUDFLARE,
        (
            CredentialField(
                "api_token",
                "API token",
                secret=True,
                help="A scoped token with Zone:DNS:Edit on the zones certmgr validates.",
            ),
        ),
    ),
    Kind.POWERDNS: KindSchema(
        Kind.POWERDNS,
        (
            CredentialField(
                "api_url",
                "API URL",
                kind="url",
                help="e.g. https://pdns.example.com:8081",
                routes_secrets=True,
            ),
            CredentialField("api_key", "API key", secret=True),
            CredentialField("server_id", "Server ID", required=False, default="localhost"),
        ),
    ),
    Kind.RFC2136: KindSchema(
        Kind.RFC2136,
        (
            CredentialField("server", "Server (host name or IP)", routes_secrets=True),
            CredentialField("port", "Port", kind="int", required=False, default=53, routes_secrets=True),
            CredentialField("tsig_key_name", "TSIG key name"),
            CredentialField(
                "tsig_algorithm",
                "TSIG algorithm",
                kind="choice",
                choices=TSIG_ALGORITHMS,
                required=False,
                default="hmac-sha256",
            ),
            CredentialField("tsig_secret", "TSIG secret (base64)", secret=True),
            CredentialField(
                "zone",
                "Zone to test against",
                required=False,
                help="Optional: the test queries this zone's SOA with the TSIG key.",
            ),
        ),
    ),
    Kind.ACME_DNS: KindSchema(
        Kind.ACME_DNS,
        (
            CredentialField("api_url", "acme-dns URL", kind="url", routes_secrets=True),
            CredentialField("username", "Username"),
            CredentialField("password", "Password", secret=True),
            CredentialField("subdomain", "Subdomain", help="The UUID acme-dns returned at registration."),
        ),
    ),
    Kind.MANUAL: KindSchema(Kind.MANUAL, ()),
    Kind.AKAMAI: KindSchema(
        Kind.AKAMAI,
        (
            CredentialField(
                "host",
                "API host",
                help="The API client's host, as its .edgerc says: akab-....luna.akamaiapis.net (no https://).",
                routes_secrets=True,
                max_length=253,
            ),
            CredentialField("client_token", "Client token", help="The API client's client_token."),
            CredentialField(
                "client_secret",
                "Client secret",
                secret=True,
                help="The API client's client_secret; stored encrypted, never shown again.",
            ),
            CredentialField(
                "access_token",
                "Access token",
                help="The API client's access_token (an API client with READ-WRITE access to Edge DNS).",
            ),
            CredentialField(
                "account_switch_key",
                "Account switch key",
                required=False,
                help="Optional: act for another account this API client manages (accountSwitchKey).",
            ),
        ),
    ),
    Kind.DELEGATED: KindSchema(Kind.DELEGATED, ()),
    Kind.SSH: KindSchema(
        Kind.SSH,
        (
            CredentialField(
                "host",
                "Host (name or IP)",
                routes_secrets=True,
                max_length=253,
                help="The SSH server's DNS name or IP address; its host key is pinned on first use.",
            ),
            CredentialField("port", "Port", kind="int", required=False, default=22, routes_secrets=True),
            CredentialField("username", "User name", max_length=64),
            CredentialField(
                "private_key",
                "Private key (OpenSSH or PEM)",
                secret=True,
                required=False,
                kind="pem",
                max_length=16384,
                help="An unencrypted Ed25519, ECDSA or RSA key; or use a password. Stored encrypted, never "
                "shown again.",
            ),
            CredentialField("password", "Password", secret=True, required=False, max_length=1024),
        ),
    ),
    Kind.AZURE: KindSchema(
        Kind.AZURE,
        (
            CredentialField("tenant_id", "Tenant (directory) ID", help="The Entra ID tenant's UUID."),
            CredentialField("client_id", "Client (application) ID", help="The app registration's UUID."),
            CredentialField(
                "client_secret",
                "Client secret",
                secret=True,
                help="The app registration's client secret; stored encrypted, never shown again. It is "
                "sent only to the Entra ID authority (CERTMGR_AZURE_AUTHORITY_HOST).",
            ),
        ),
    ),
    Kind.WEBHOOK: KindSchema(
        Kind.WEBHOOK,
        (
            CredentialField(
                "url",
                "Receiver URL",
                kind="url",
                help="https:// only; reached through certmgr's outbound guard.",
                routes_secrets=True,
                max_length=2000,
            ),
            CredentialField(
                "signing_secret",
                "Signing secret",
                secret=True,
                help="At least 32 characters (e.g. openssl rand -hex 32): the HMAC-SHA256 key of the "
                "Certmgr-Signature header. Stored encrypted, never shown again.",
            ),
        ),
    ),
}

# The SSH host key pinned on first use: kept in the credentials (as "host_key", an OpenSSH public key line)
# but never typed: a connection pins it, and only the audited re-pin changes it.
SSH_HOST_KEY = "host_key"
_PEM_TEXT = re.compile(r"^[\x20-\x7e\r\n\t]+$")


def schema_for(kind: str) -> KindSchema:
    try:
        return SCHEMAS[Kind(kind)]
    except ValueError:
        raise CredentialError(
            {"kind": [f"unknown kind {kind!r}; one of: {', '.join(k.value for k in Kind)}"]}
        ) from None


def _check_url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "must not contain a user name or password"
    return None


def validate(kind: str, data: Any, *, existing: dict | None = None) -> dict:
    """Return cleaned credentials for ``kind``.

    Secret fields left empty keep their ``existing`` value (edits need no secret re-typed), except when the
    edit changes where the secrets are sent (``routes_secrets``): then every kept secret must be entered
    again. Unknown keys are refused so a typo does not silently drop a credential.
    """
    schema = schema_for(kind)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CredentialError({"credentials": ["must be an object"]})
    existing = existing or {}
    errors: dict[str, list[str]] = {}
    known = {f.name for f in schema.fields}
    for key in data:
        if key not in known:
            errors.setdefault(str(key), []).append(
                f"not a credential of a {kind} connection (expected: {', '.join(sorted(known)) or 'none'})"
            )
    cleaned: dict[str, Any] = {}
    kept: list[CredentialField] = []
    for f in schema.fields:
        raw = data.get(f.name)
        if isinstance(raw, str):
            raw = raw.strip()
        if raw in (None, "") and f.secret and existing.get(f.name):
            cleaned[f.name] = existing[f.name]
            kept.append(f)
            continue
        if raw in (None, ""):
            if f.required:
                errors.setdefault(f.name, []).append("This field is required.")
            elif f.default is not None:
                cleaned[f.name] = f.default
            continue
        if f.kind == "int":
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                errors.setdefault(f.name, []).append("must be a whole number")
                continue
            try:
                raw = int(raw)
            except ValueError:
                errors.setdefault(f.name, []).append("must be a whole number")
                continue
            if not 1 <= raw <= 65535:
                errors.setdefault(f.name, []).append("must be a port between 1 and 65535")
                continue
            cleaned[f.name] = raw
            continue
        if not isinstance(raw, str):
            errors.setdefault(f.name, []).append("must be a string")
            continue
        if len(raw) > f.max_length:
            errors.setdefault(f.name, []).append(f"must be at most {f.max_length} characters")
            continue
        if f.kind == "pem":
            if not _PEM_TEXT.match(raw):
                errors.setdefault(f.name, []).append("must be ASCII text (a PEM or OpenSSH key)")
                continue
            cleaned[f.name] = raw.replace("\r\n", "\n") + "\n"
            continue
        if not _PRINTABLE_ASCII.match(raw):
            # Credentials travel in HTTP headers and DNS messages: printable ASCII only.
            errors.setdefault(f.name, []).append(
                "must be printable ASCII without spaces (use punycode for international names)"
            )
            continue
        if f.kind == "url" and (problem := _check_url(raw)):
            errors.setdefault(f.name, []).append(problem)
            continue
        if f.kind == "choice" and raw not in f.choices:
            errors.setdefault(f.name, []).append(f"must be one of: {', '.join(f.choices)}")
            continue
        cleaned[f.name] = raw
    errors.update({k: v for k, v in _kind_rules(Kind(kind), cleaned).items() if k not in errors})
    moved = [
        f.label
        for f in schema.fields
        if f.routes_secrets and existing and cleaned.get(f.name) != existing.get(f.name, f.default)
    ]
    if moved and not errors:
        for f in kept:
            errors[f.name] = [
                f"Enter the {_in_sentence(f.label)} again: changing {' and '.join(moved)} changes where it "
                "is sent."
            ]
    if errors:
        raise CredentialError(errors)
    if Kind(kind) == Kind.SSH and existing.get(SSH_HOST_KEY) and not moved:
        cleaned[SSH_HOST_KEY] = existing[SSH_HOST_KEY]  # the pin stays while host and port do
    return cleaned


def _in_sentence(label: str) -> str:
    """ "Secret access key" -> "secret access key"; "API key" stays."""
    first = label.split(" ", 1)[0]
    return label if first.isupper() else label[:1].lower() + label[1:]


def _kind_rules(kind: Kind, c: dict) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if kind == Kind.AWS:
        if "access_key_id" in c and not _AWS_KEY_ID.match(c["access_key_id"]):
            errors["access_key_id"] = [
                "looks wrong: AWS access key IDs are 16+ upper-case letters and digits"
            ]
        if c.get("role_arn") and not _ROLE_ARN.match(c["role_arn"]):
            errors["role_arn"] = ["must look like arn:aws:iam::123456789012:role/name"]
        if c.get("region") and not _REGION.match(c["region"]):
            errors["region"] = ["must be an AWS region such as us-east-1"]
    elif kind == Kind.RFC2136:
        for name in ("server", "tsig_key_name", "zone"):
            if c.get(name) and not _is_host_or_ip(c[name]):
                errors[name] = ["must be a DNS name or an IP address"]
        if "tsig_secret" in c:
            try:
                if not base64.b64decode(c["tsig_secret"], validate=True):
                    raise ValueError
            except (binascii.Error, ValueError):
                errors["tsig_secret"] = ["must be base64, as tsig-keygen prints it"]
    elif kind == Kind.AKAMAI and c.get("host") and not _AKAMAI_HOST.match(c["host"].lower()):
        errors["host"] = [
            "must be the API client's host name, e.g. akab-xxxx.luna.akamaiapis.net (without https:// or "
            "a path)"
        ]
    elif kind == Kind.SSH:
        if c.get("host") and not _is_host_or_ip(c["host"]):
            errors["host"] = ["must be a DNS name or an IP address"]
        if not c.get("private_key") and not c.get("password"):
            errors["private_key"] = ["Enter a private key or a password."]
        elif c.get("private_key") and "PRIVATE KEY-----" not in c["private_key"]:
            errors["private_key"] = ["must be a private key in OpenSSH or PEM form (-----BEGIN ... KEY-----)"]
    elif kind == Kind.AZURE:
        for name in ("tenant_id", "client_id"):
            if c.get(name) and not _UUID.match(c[name]):
                errors[name] = ["must be a UUID, as the Azure portal shows it"]
    elif kind == Kind.WEBHOOK:
        if c.get("url") and urlsplit(c["url"]).scheme != "https":
            errors["url"] = ["must be an https:// URL: the body carries certificates (and keys)"]
        if "signing_secret" in c and len(c["signing_secret"]) < 32:
            errors["signing_secret"] = ["must be at least 32 characters (e.g. openssl rand -hex 32)"]
    elif kind == Kind.ACME_DNS and c.get("subdomain") and not _UUID.match(c["subdomain"]):
        errors["subdomain"] = ["must be the UUID acme-dns returned at registration"]
    return errors


def _is_host_or_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(_DNS_NAME.match(value))


def public_summary(kind: str, credentials: dict) -> dict:
    """The non-secret parts, safe to show back (e.g. which server a connection points at)."""
    try:
        schema = schema_for(kind)
    except CredentialError:
        return {}
    shown = {f.name: credentials[f.name] for f in schema.fields if not f.secret and f.name in credentials}
    if schema.kind == Kind.SSH:
        shown["host_key"] = host_key_fingerprint(credentials.get(SSH_HOST_KEY, "")) or "not pinned yet"
    return shown


def host_key_fingerprint(key_line: str) -> str:
    """ "ssh-ed25519 AAAA..." -> "ssh-ed25519 SHA256:..." as ``ssh-keygen -l`` shows it; "" for none."""
    import hashlib

    parts = (key_line or "").split()
    if len(parts) < 2:
        return ""
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return ""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{parts[0]} SHA256:{digest}"
