"""Azure Key Vault certificates: ``import_certificate`` of a PKCS#12 (certificate, chain, key); each
renewal is a new version of the same certificate name; drift read-back with ``get_certificate``.

The vault URL must be ``https://<name>.<suffix>`` with a suffix of ``CERTMGR_AZURE_VAULT_SUFFIXES``, so the
bearer token for Key Vault goes to Key Vault only; the client secret goes to the configured authority only
(``dnsproviders.azure``). Every request goes through certmgr's outbound guard.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.conf import settings

from certmgr.errors import OutboundRefused
from dnsproviders import azure
from pki import x509
from syncs.choices import DestinationKind
from syncs.destinations import DestinationError, KindModule, Material, Pushed, register, scrub

_VAULT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
_NOT_IN_NAME = re.compile(r"[^0-9A-Za-z-]+")
_TAGS_MAX = 15  # Key Vault allows 15 tags on an object


def clean_vault_url(value: Any) -> str:
    url = str(value or "").strip().rstrip("/")
    if not url:
        raise ValueError("vault_url is required: https://<vault-name>.vault.azure.net")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("vault_url is not a valid URL") from None
    host = (parts.hostname or "").lower()
    suffixes = [str(s).strip().lower().strip(".") for s in settings.CERTMGR_AZURE_VAULT_SUFFIXES if s]
    suffix = next((s for s in suffixes if host.endswith("." + s)), None)
    name = host[: -len(suffix) - 1] if suffix else ""
    if (
        parts.scheme != "https"
        or suffix is None
        or not _VAULT_NAME.match(name)
        or parts.username
        or parts.password
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(
            "vault_url must be https://<vault-name>.<suffix> with a suffix of CERTMGR_AZURE_VAULT_SUFFIXES "
            f"({', '.join(suffixes)}), without a path: Key Vault's bearer token goes nowhere else"
        )
    return f"https://{host}" + (f":{port}" if port else "")


def clean_options(value: Any) -> dict[str, Any]:
    value = value or {}
    if not isinstance(value, dict):
        raise ValueError("Enter an object.")
    unknown = set(value) - {"vault_url", "tags"}
    if unknown:
        raise ValueError(f"Unknown option {', '.join(sorted(unknown))}; known: tags, vault_url.")
    cleaned: dict[str, Any] = {"vault_url": clean_vault_url(value.get("vault_url"))}
    tags = value.get("tags") or {}
    if not isinstance(tags, dict) or len(tags) > _TAGS_MAX - 2:
        raise ValueError(f"tags: enter an object of up to {_TAGS_MAX - 2} names and values.")
    for k, v in tags.items():
        if not isinstance(v, str | int | float) or not 0 < len(str(k)) <= 512 or len(str(v)) > 256:
            raise ValueError("tags: names of 1-512 and values of up to 256 characters.")
    if tags:
        cleaned["tags"] = {str(k): str(v) for k, v in tags.items()}
    return cleaned


def certificate_name(name: str) -> str:
    """Key Vault names: 1-127 letters, digits and dashes."""
    cleaned = _NOT_IN_NAME.sub("-", name).strip("-")[:127].strip("-")
    return cleaned or "certificate"


def pkcs12_bytes(material: Material) -> bytes:
    """Certificate, key and chain as an unencrypted PKCS#12 (TLS carries it; Key Vault stores it)."""
    cert = cx509.load_pem_x509_certificate(material.certificate_pem.encode())
    chain = x509.load_pem_certificates(material.chain_pem) if material.chain_pem.strip() else []
    key = serialization.load_pem_private_key(material.private_key_pem.encode(), password=None)
    return pkcs12.serialize_key_and_certificates(
        certificate_name(material.name).encode(),
        key,  # type: ignore[arg-type]  # certmgr issues RSA and EC keys only
        cert,
        chain or None,
        serialization.NoEncryption(),
    )


def azure_error(step: str, exc: Exception, *secrets: str) -> DestinationError:
    from azure.core import exceptions as az

    if isinstance(exc, OutboundRefused):
        return DestinationError(f"Key Vault {step}: {exc}", permanent=True)
    if isinstance(exc, az.ClientAuthenticationError):
        text = str(exc.message if hasattr(exc, "message") else exc)
        return DestinationError(
            scrub(f"Azure refused the credentials while {step}: {_first_line(text)}", *secrets),
            # Entra ID said no (AADSTS...: a wrong secret, an unknown client): no retry changes that; a
            # token endpoint that could not be reached is retried.
            permanent=exc.status_code in (400, 401) or "AADSTS" in text,
        )
    if isinstance(exc, az.HttpResponseError):
        code = getattr(exc.error, "code", "") if exc.error else ""
        text = f"Key Vault refused {step}: HTTP {exc.status_code}" + (f" {code}" if code else "")
        if exc.message:
            text += f": {_first_line(exc.message)}"
        permanent = exc.status_code in (400, 403, 409) and code != "Throttled"
        return DestinationError(scrub(text, *secrets), permanent=permanent)
    if isinstance(exc, az.ServiceRequestError | az.ServiceResponseError):
        return DestinationError(
            scrub(f"cannot reach Key Vault for {step}: {_first_line(str(exc))}", *secrets)
        )
    return DestinationError(scrub(f"Key Vault {step} failed: {type(exc).__name__}: {exc}", *secrets))


def _first_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


class KeyVaultBackend:
    def __init__(self, credentials: dict, *, region: str, options: dict):
        self.credentials = dict(credentials)
        self.vault_url = clean_vault_url((options or {}).get("vault_url"))
        self.tags = dict((options or {}).get("tags") or {})
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from azure.keyvault.certificates import CertificateClient

            self._client = CertificateClient(
                self.vault_url,
                azure.credential(self.credentials),
                transport=azure.transport(),
                retry_total=1,  # the run itself retries with backoff
            )
        return self._client

    def call(self, step: str, method: str | Any, *args: Any, **kwargs: Any) -> Any:
        """``method`` of the client (or a callable), its Azure errors worded for people."""
        try:
            fn = getattr(self.client, method) if isinstance(method, str) else method
            return fn(*args, **kwargs)
        except DestinationError:
            raise
        except Exception as exc:
            raise azure_error(step, exc, str(self.credentials.get("client_secret", ""))) from None

    def push(self, material: Material, previous: str) -> Pushed:
        from azure.keyvault.certificates import CertificateContentType, CertificatePolicy

        if not material.private_key_pem:
            raise DestinationError(
                "Key Vault imports a certificate only with its private key: the rule does not include it",
                permanent=True,
            )
        name = certificate_name(material.name)
        tags = {"certmgr-serial": material.serial, **self.tags}
        if material.subscriber:
            tags["certmgr-subscriber"] = material.subscriber[:256]
        answer = self.call(
            f"importing certificate {name}",
            "import_certificate",
            name,
            pkcs12_bytes(material),
            policy=CertificatePolicy(content_type=CertificateContentType.pkcs12),
            tags=tags,
        )
        return Pushed(f"{self.vault_url}/certificates/{name}", answer.properties.version or "")

    def _name(self, identifier: str) -> str:
        prefix = f"{self.vault_url}/certificates/"
        return identifier[len(prefix) :].split("/")[0] if identifier.startswith(prefix) else identifier

    def fingerprint(self, identifier: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        name = self._name(identifier)
        try:
            answer = self.client.get_certificate(name)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise azure_error(
                f"reading certificate {name}", exc, self.credentials.get("client_secret", "")
            ) from None
        if not answer.cer:
            return ""
        try:
            return x509.fingerprints(cx509.load_der_x509_certificate(bytes(answer.cer))).sha256
        except ValueError:
            return ""

    def remove(self, identifier: str) -> None:
        """Deletes the certificate (soft delete: recoverable for the vault's retention period)."""
        from azure.core.exceptions import ResourceNotFoundError

        name = self._name(identifier)
        try:
            self.client.begin_delete_certificate(name)  # the DELETE itself; no waiting for the purge state
        except ResourceNotFoundError:
            return
        except Exception as exc:
            raise azure_error(
                f"deleting certificate {name}", exc, self.credentials.get("client_secret", "")
            ) from None

    def test(self) -> str:
        def first() -> Any:
            return next(iter(self.client.list_properties_of_certificates(max_page_size=1)), None)

        seen = 0 if self.call("listing certificates", first) is None else 1
        return f"Key Vault {self.vault_url} answered: the credentials can list certificates ({seen} seen)."


register(
    DestinationKind.AZURE_KEY_VAULT,
    KindModule(make=KeyVaultBackend, clean_options=clean_options),
)
