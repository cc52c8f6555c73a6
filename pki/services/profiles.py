"""Policies (what subscribers may ask for) and subscribers (what certificates are issued from)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict
from certmgr.models import Organization
from certmgr.permissions import Action
from certmgr.services import audited_delete, require
from pki import issuers, x509
from pki import policy as policy_rules
from pki.models import (
    CertificateRequest,
    Policy,
    Subscriber,
)
from pki.services import issuance
from pki.services.common import (
    check_usages,
    clean_name,
    subject_args,
)

# --- policies and subscribers ----------------------------------------------------------------------------
POLICY_FIELDS = (
    "name",
    "description",
    "common_name_patterns",
    "san_patterns",
    "allowed_san_types",
    "allowed_key_algorithms",
    "max_validity_days",
    "key_usages",
    "extended_key_usages",
    "allow_ca",
    "new_key_at_renewal",
)
SUBSCRIBER_FIELDS = (
    "name",
    "issuer_type",
    "ca",
    "policy",
    "common_name",
    "sans",
    "subject",
    "key_algorithm",
    "validity_days",
    "key_usages",
    "extended_key_usages",
    "auto_renew",
    "renew_before_days",
    "reuse_key",
    "ca_certificate",
    "ca_path_length",
    "issuer_options",
)


def _check_policy(p: Policy) -> None:
    errors: dict[str, list[str]] = {}
    for field in ("common_name_patterns", "san_patterns"):
        for pattern in getattr(p, field):
            if problem := policy_rules.validate_pattern(pattern):
                errors.setdefault(field, []).append(problem)
    unknown = set(p.allowed_san_types) - {"dns", "ip", "email", "uri"}
    if unknown:
        errors["allowed_san_types"] = [f"unknown SAN types: {', '.join(sorted(unknown))}"]
    unknown = set(p.allowed_key_algorithms) - {a.value for a in x509.KeyAlgorithm}
    if unknown:
        errors["allowed_key_algorithms"] = [f"unknown key algorithms: {', '.join(sorted(unknown))}"]
    check_usages(p, errors)
    if errors:
        raise ValidationError(errors)


def save_policy(
    organization: Organization | None, *, actor: Actor, instance: Policy | None = None, **values: Any
) -> Policy:
    """Create (``instance`` None) or change a policy."""
    return _save_row(Policy, POLICY_FIELDS, _check_policy, organization, instance, values, actor)


_Row = TypeVar("_Row", Policy, Subscriber)


def _save_row(
    model: type[_Row],
    allowed: tuple[str, ...],
    check: Callable[[_Row], None],
    organization: Organization | None,
    instance: _Row | None,
    values: dict[str, Any],
    actor: Actor,
) -> _Row:
    """Create or change a policy or subscriber: set the allowed fields, check, save, audit."""
    actor = as_actor(actor)
    label = model._meta.model_name
    action = f"{label}.update" if instance else f"{label}.create"
    if instance:
        org_id = instance.organization_id
    else:
        assert organization is not None  # a new row is made in an organization
        org_id = organization.pk
    with audit.failures(actor, action, instance or organization):
        require(actor, Action.MANAGE, org_id)
        row = instance or model(organization_id=org_id)
        for field, value in values.items():
            if field not in allowed:
                raise ValidationError({field: ["This field cannot be set."]})
            setattr(row, field, value)
        row.name = clean_name(row.name)
        check(row)
        try:
            with transaction.atomic():
                row.updated_at = timezone.now()
                row.save()
                audit.record(actor, action, row, changed=sorted(values))
        except IntegrityError as exc:
            raise Conflict(f"a {label} named {row.name!r} already exists", field="name") from exc
    return row


def _check_subscriber(s: Subscriber) -> None:
    errors: dict[str, list[str]] = {}
    if s.issuer_type == Subscriber.IssuerType.CA and s.ca is None:
        errors["ca"] = ["Choose the issuing CA (or issuer type self-signed)."]
    if s.ca is not None and s.ca.organization_id != s.organization_id:
        errors["ca"] = ["Unknown CA."]
    if s.policy is not None and s.policy.organization_id != s.organization_id:
        errors["policy"] = ["Unknown policy."]
    if not s.common_name and not s.sans:
        errors["common_name"] = ["Give a common name or at least one SAN."]
    try:
        x509.parse_sans(list(s.sans))
    except x509.X509Error as exc:
        errors["sans"] = [str(exc)]
    if s.common_name and not s.ca_certificate:
        try:  # the certificate carries it as a SAN too (certified_names)
            x509.parse_san(s.common_name)
        except x509.X509Error as exc:
            errors["common_name"] = [
                "The common name must also be a valid SAN (DNS name, IP address, e-mail address or URI), "
                f"as the certificate carries it among its SANs: {exc}"
            ]
    try:
        subject_args({**s.subject, "common_name": s.common_name or "x"})
        x509.Subject(**{k: v for k, v in s.subject.items() if v}, common_name=s.common_name or None)
    except (TypeError, ValueError) as exc:
        errors["subject"] = [str(exc)]
    if s.key_algorithm not in {a.value for a in x509.KeyAlgorithm}:
        errors["key_algorithm"] = ["Unknown key algorithm."]
    if not 1 <= s.validity_days <= 36500:
        errors["validity_days"] = ["Enter 1 to 36500 days."]
    if s.renew_before_days is not None and s.renew_before_days >= s.validity_days:
        errors["renew_before_days"] = ["Must be shorter than the validity."]
    check_usages(s, errors)
    options = s.issuer_options if isinstance(s.issuer_options, dict) else None
    if options is None:
        errors["issuer_options"] = ["Give the issuer options as an object."]
    elif s.ca is None:
        if options:
            errors["issuer_options"] = ["A self-signed subscriber takes no issuer options."]
    else:
        try:
            s.issuer_options = issuers.backend_for(s.ca).clean_subscriber_options(s.ca, options)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    if s.ca_certificate and s.issuer_type != Subscriber.IssuerType.CA:
        raise ValidationError({"ca_certificate": ["A self-signed CA is a root: create it as a CA."]})
    if s.ca_certificate and s.ca is not None and not s.ca.is_internal:
        raise ValidationError({"ca_certificate": ["Only an internal CA issues CA certificates."]})
    # The policy as issuance will check it (every rule at once), so a subscriber it refuses is not saved.
    issuance.check_policy(s, s.key_algorithm)


def save_subscriber(
    organization: Organization | None, *, actor: Actor, instance: Subscriber | None = None, **values: Any
) -> Subscriber:
    """Create (``instance`` None) or change a subscriber; a self-signed one has no CA."""
    if (
        values.get("issuer_type", instance.issuer_type if instance else "")
        == Subscriber.IssuerType.SELF_SIGNED
    ):
        values["ca"] = None
    return _save_row(Subscriber, SUBSCRIBER_FIELDS, _check_subscriber, organization, instance, values, actor)


def delete_object(obj: Policy | Subscriber | CertificateRequest, *, actor: Actor) -> None:
    audited_delete(obj, actor=actor, action=f"{obj._meta.model_name}.delete")
