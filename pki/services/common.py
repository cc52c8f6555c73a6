"""What every PKI service module shares: its refusals and the small input checks."""

from __future__ import annotations

import re
from collections.abc import Mapping

from django.core.exceptions import ValidationError

from certmgr.errors import Conflict, ServiceError
from pki import policy as policy_rules
from pki import x509
from pki.models import CertificateAuthority, Policy, Subscriber

DOTTED_OID = re.compile(r"^[0-2](\.\d+)+$")


class CaUnavailable(ServiceError):
    status = 409
    code = "ca_unavailable"


class PolicyRefused(ServiceError):
    status = 400
    code = "policy_violation"

    @classmethod
    def of(cls, violation: policy_rules.PolicyViolation) -> PolicyRefused:
        """Every rule the request breaks, each under its field."""
        return cls(str(violation), fields=violation.by_field())


class AlreadyRevoked(ServiceError):
    status = 409
    code = "already_revoked"


def x509_error(exc: x509.X509Error, field: str | None = None) -> ValidationError:
    return ValidationError({field or "non_field_errors": [str(exc)]})


def subject_args(subject: Mapping[str, str | None]) -> dict[str, str]:
    allowed = {"common_name", "organization", "organizational_unit", "country", "state", "locality"}
    unknown = set(subject or {}) - allowed
    if unknown:
        raise ValueError(f"unknown subject fields: {', '.join(sorted(unknown))}")
    if not (subject or {}).get("common_name"):
        raise ValueError("common_name is required")
    return {k: v for k, v in subject.items() if v}


def clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 100 or "\x00" in name:
        raise ValidationError({"name": ["Enter a name of 1 to 100 characters."]})
    return name


def check_unique_ca_name(ca: CertificateAuthority) -> None:
    if CertificateAuthority.objects.filter(organization_id=ca.organization_id, name=ca.name).exists():
        raise Conflict(f"a CA named {ca.name!r} already exists in this organization", field="name")


def check_usages(obj: Policy | Subscriber, errors: dict[str, list[str]]) -> None:
    for usage in obj.key_usages:
        if usage not in x509.KEY_USAGE_NAMES:
            errors.setdefault("key_usages", []).append(
                f"unknown key usage {usage!r} (one of: {', '.join(x509.KEY_USAGE_NAMES)})"
            )
    for usage in obj.extended_key_usages:
        if usage not in x509.EXTENDED_KEY_USAGES and not DOTTED_OID.match(str(usage)):
            errors.setdefault("extended_key_usages", []).append(
                f"unknown extended key usage {usage!r} (a name such as server_auth, or a dotted OID)"
            )
