"""How each kind of destination takes a certificate: push, read back (drift), remove, test.

No Django models here: the services hand in the decrypted credentials and the material. Errors come out
as ``DestinationError`` with a message for people, never a key: every message passes ``scrub()``.
AWS calls go through boto3 (``dnsproviders.aws.aws_session``: the connection's keys, or the role they
assume). ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_ACM`` in the environment point them elsewhere (moto in
the tests), as boto3 itself reads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import botocore.config
import botocore.exceptions

from dnsproviders.aws import aws_session
from pki import x509
from syncs.choices import DestinationKind

_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)
# Codes that no retry can change: the request itself is wrong.
_PERMANENT_CODES = frozenset(
    {
        "ValidationException",
        "InvalidParameterException",
        "MalformedCertificateException",
        "InvalidArnException",
    }
)


@dataclass(frozen=True)
class Material:
    """What a run pushes. ``private_key_pem`` is empty when the rule does not include the key."""

    name: str
    certificate_pem: str
    chain_pem: str
    private_key_pem: str
    serial: str
    fingerprint_sha256: str
    not_after: datetime
    subscriber: str = ""
    names: tuple[str, ...] = ()  # common name and SANs (the SSH read-back's SNI)


@dataclass(frozen=True)
class Pushed:
    identifier: str  # ARN
    version: str = ""  # secret version id


class DestinationError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


def scrub(message: str, *secrets: str) -> str:
    """No key in a message, whatever a server echoed back."""
    message = _PEM_KEY.sub("[private key redacted]", message)
    for secret in sorted((s for s in secrets if s and len(s) >= 8), key=len, reverse=True):
        message = message.replace(secret, "[redacted]")
    return message


class Backend(Protocol):
    def push(self, material: Material, previous: str) -> Pushed: ...

    def fingerprint(self, identifier: str) -> str | None:
        """The SHA-256 fingerprint of the certificate there now; None when it is gone."""
        ...

    def remove(self, identifier: str) -> None: ...

    def test(self) -> str: ...


@dataclass(frozen=True)
class KindModule:
    """How a destination kind pushes and checks its options: the AWS kinds here, the others in their own
    module (``syncs.<kind>``, imported by ``syncs.apps``)."""

    make: Callable[..., Backend]  # (credentials, *, region, options) -> Backend
    clean_options: Callable[[Any], dict[str, Any]]  # raises ValueError with a message for people
    reads_back: bool = True  # False: the drift check cannot read the certificate there (a webhook)


REGISTRY: dict[str, KindModule] = {}


def register(kind: str, module: KindModule) -> None:
    REGISTRY[str(kind)] = module


def backend_for(kind: str, credentials: dict, *, region: str, options: dict) -> Backend:
    if (module := REGISTRY.get(str(kind))) is not None:
        return module.make(credentials, region=region, options=options)
    raise DestinationError(f"unknown destination kind {kind!r}", permanent=True)


def _fingerprint_of(pem: str) -> str:
    certs = x509.load_pem_certificates(pem)
    return x509.fingerprints(certs[0]).sha256


# --- AWS -------------------------------------------------------------------------------------------------
def aws_error(step: str, exc: Exception) -> DestinationError:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "Error"), err.get("Message", "")
        text = f"AWS refused {step}: {code}" + (f": {message}" if message else "")
        return DestinationError(scrub(text), permanent=code in _PERMANENT_CODES)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return DestinationError(f"AWS {step} failed: the connection has no keys", permanent=True)
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        return DestinationError(f"cannot reach AWS for {step}: {exc}")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return DestinationError(scrub(f"AWS {step} failed: {exc}"))
    return DestinationError(scrub(f"AWS {step} failed: {type(exc).__name__}: {exc}"))


class _Aws:
    service = ""

    def __init__(self, credentials: dict, *, region: str, options: dict):
        self.credentials = dict(credentials)
        if region:
            self.credentials["region"] = region
        self.region = self.credentials.get("region") or "us-east-1"
        self.options = options or {}
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            config = botocore.config.Config(
                region_name=self.region,
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 2, "mode": "standard"},  # the run itself retries with backoff
            )
            try:
                session, _ = aws_session(self.credentials, config, role_session_name="certmgr-sync")
            except Exception as exc:
                raise aws_error(f"assuming role {self.credentials.get('role_arn')}", exc) from None
            self._client = session.client(self.service, config=config)
        return self._client

    def call(self, step: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except DestinationError:
            raise
        except Exception as exc:
            raise aws_error(step, exc) from None

    def tags(self, material: Material) -> list[dict[str, str]]:
        tags = {"Name": material.name, "certmgr:serial": material.serial}
        if material.subscriber:
            tags["certmgr:subscriber"] = material.subscriber[:256]
        tags.update({str(k): str(v) for k, v in (self.options.get("tags") or {}).items()})
        return [{"Key": k[:128], "Value": v[:256]} for k, v in tags.items()]


class AcmBackend(_Aws):
    """AWS Certificate Manager: ImportCertificate; a renewal re-imports to the same ARN, so every listener
    that uses the certificate keeps it."""

    service = "acm"

    def push(self, material: Material, previous: str) -> Pushed:
        if not material.private_key_pem:
            raise DestinationError("ACM needs the private key: the rule does not include it", permanent=True)
        args: dict[str, Any] = {
            "Certificate": material.certificate_pem.encode(),
            "PrivateKey": material.private_key_pem.encode(),
        }
        if material.chain_pem.strip():
            args["CertificateChain"] = material.chain_pem.encode()
        if previous:
            try:
                answer = self.call(
                    f"re-importing into {previous}", "import_certificate", CertificateArn=previous, **args
                )
                return Pushed(answer["CertificateArn"])
            except DestinationError as exc:
                if "ResourceNotFoundException" not in exc.message:
                    raise
                # deleted at AWS meanwhile: import anew (a new ARN)
        answer = self.call(
            "importing the certificate", "import_certificate", Tags=self.tags(material), **args
        )
        return Pushed(answer["CertificateArn"])

    def fingerprint(self, identifier: str) -> str | None:
        try:
            answer = self.call(f"reading {identifier}", "get_certificate", CertificateArn=identifier)
        except DestinationError as exc:
            if "ResourceNotFoundException" in exc.message:
                return None
            raise
        return _fingerprint_of(answer["Certificate"])

    def remove(self, identifier: str) -> None:
        try:
            self.call(f"deleting {identifier}", "delete_certificate", CertificateArn=identifier)
        except DestinationError as exc:
            if "ResourceNotFoundException" not in exc.message:
                raise

    def test(self) -> str:
        answer = self.call("listing certificates", "list_certificates", MaxItems=1)
        seen = len(answer.get("CertificateSummaryList", []))
        return (
            f"AWS Certificate Manager in {self.region} answered: the credentials can list certificates "
            f"({seen} seen)."
        )


class SecretsManagerBackend(_Aws):
    """AWS Secrets Manager: one JSON secret (certificate, chain, key when included); a renewal is a new
    version of the same secret."""

    service = "secretsmanager"

    @staticmethod
    def secret_string(material: Material) -> str:
        body = {
            "certificate": material.certificate_pem,
            "chain": material.chain_pem,
            "serial": material.serial,
            "not_after": material.not_after.isoformat(),
        }
        if material.private_key_pem:
            body["private_key"] = material.private_key_pem
        return json.dumps(body)

    def push(self, material: Material, previous: str) -> Pushed:
        value = self.secret_string(material)
        target = previous or material.name
        if not previous:
            args: dict[str, Any] = {"Name": material.name, "SecretString": value, "Tags": self.tags(material)}
            if self.options.get("kms_key_id"):
                args["KmsKeyId"] = str(self.options["kms_key_id"])
            args["Description"] = f"certmgr: certificate {material.serial}"
            try:
                answer = self.call(f"creating secret {material.name}", "create_secret", **args)
                return Pushed(answer["ARN"], answer.get("VersionId", ""))
            except DestinationError as exc:
                if "ResourceExistsException" not in exc.message:
                    raise
                # a secret of that name exists (made beforehand, e.g. by Terraform): it gets a new version
        try:
            answer = self.call(
                f"putting a new version of {target}", "put_secret_value", SecretId=target, SecretString=value
            )
        except DestinationError as exc:
            if not previous or "ResourceNotFoundException" not in exc.message:
                raise
            return self.push(material, "")  # deleted at AWS meanwhile: create it again
        return Pushed(answer["ARN"], answer.get("VersionId", ""))

    def fingerprint(self, identifier: str) -> str | None:
        try:
            answer = self.call(f"reading {identifier}", "get_secret_value", SecretId=identifier)
        except DestinationError as exc:
            if "ResourceNotFoundException" in exc.message:
                return None
            raise
        try:
            return _fingerprint_of(json.loads(answer["SecretString"])["certificate"])
        except (ValueError, KeyError, TypeError, x509.X509Error):
            return ""  # something else is stored there now

    def remove(self, identifier: str) -> None:
        try:
            self.call(f"deleting {identifier}", "delete_secret", SecretId=identifier, RecoveryWindowInDays=7)
        except DestinationError as exc:
            if "ResourceNotFoundException" not in exc.message:
                raise

    def test(self) -> str:
        answer = self.call("listing secrets", "list_secrets", MaxResults=1)
        seen = len(answer.get("SecretList", []))
        return (
            f"AWS Secrets Manager in {self.region} answered: the credentials can list secrets ({seen} seen)."
        )


def _aws_options(value: Any, *, allowed: frozenset[str]) -> dict[str, Any]:
    """ACM and Secrets Manager options: tags (both), kms_key_id (Secrets Manager); ValueError says why."""
    value = value or {}
    if not isinstance(value, dict):
        raise ValueError("Enter an object.")
    unknown = set(value) - allowed
    if unknown:
        raise ValueError(f"Unknown option {', '.join(sorted(unknown))}; known: {', '.join(sorted(allowed))}.")
    cleaned: dict[str, Any] = {}
    tags = value.get("tags") or {}
    if not isinstance(tags, dict) or len(tags) > 40:
        raise ValueError("tags: enter an object of up to 40 names and values.")
    for k, v in tags.items():
        if not isinstance(v, str | int | float) or not 0 < len(str(k)) <= 128 or len(str(v)) > 256:
            raise ValueError("tags: names of 1-128 and values of up to 256 characters.")
        if str(k).lower().startswith("aws:"):
            raise ValueError("tags: names starting with aws: are AWS's own.")
    if tags:
        cleaned["tags"] = {str(k): str(v) for k, v in tags.items()}
    if value.get("kms_key_id"):
        key = str(value["kms_key_id"]).strip()
        if len(key) > 2048 or "\x00" in key:
            raise ValueError("kms_key_id: enter at most 2048 characters, without NUL.")
        cleaned["kms_key_id"] = key
    return cleaned


register(
    DestinationKind.AWS_ACM,
    KindModule(make=AcmBackend, clean_options=lambda v: _aws_options(v, allowed=frozenset({"tags"}))),
)
register(
    DestinationKind.AWS_SECRETS_MANAGER,
    KindModule(
        make=SecretsManagerBackend,
        clean_options=lambda v: _aws_options(v, allowed=frozenset({"tags", "kms_key_id"})),
    ),
)
