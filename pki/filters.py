"""django-filter sets for the PKI lists (API and admin share the field names).

Foreign keys are filtered by id (``IdFilter``), not through a ModelChoiceFilter: a choice filter would load
the related table to validate the value and answer "not a valid choice" for another tenant's row, which
tells that the row exists.
"""

from __future__ import annotations

import re

import django_filters
from django import forms
from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from pki.models import (
    KEY_ALGORITHMS,
    Certificate,
    CertificateAuthority,
    CertificateRequest,
    Policy,
    Subscriber,
)

MAX_ID = 2**63 - 1
_HEX = re.compile(r"^[0-9a-f]+$")


@extend_schema_field(OpenApiTypes.INT)
class IntegerFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


class IdFilter(IntegerFilter):
    """An integer id (a foreign key or the organization)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class CertificateAuthorityFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")
    parent = IdFilter(field_name="parent_id")
    kind = django_filters.ChoiceFilter(choices=CertificateAuthority.Kind.choices)
    status = django_filters.ChoiceFilter(choices=CertificateAuthority.Status.choices)

    class Meta:
        model = CertificateAuthority
        fields = ["organization", "parent", "kind", "status"]


class PolicyFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")

    class Meta:
        model = Policy
        fields = ["organization"]


class SubscriberFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")
    ca = IdFilter(field_name="ca_id")
    policy = IdFilter(field_name="policy_id")
    issuer_type = django_filters.ChoiceFilter(choices=Subscriber.IssuerType.choices)
    last_operation_status = django_filters.ChoiceFilter(
        choices=[c for c in Subscriber.OperationStatus.choices if c[0]]
    )

    class Meta:
        model = Subscriber
        fields = ["organization", "ca", "policy", "issuer_type", "auto_renew", "last_operation_status"]


class CertificateRequestFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")
    source = django_filters.ChoiceFilter(choices=CertificateRequest.Source.choices)
    key_algorithm = django_filters.ChoiceFilter(choices=KEY_ALGORITHMS)

    class Meta:
        model = CertificateRequest
        fields = ["organization", "source", "key_algorithm"]


def normalize_hex(text: str) -> str:
    """``AB:CD:01``, ``0xabcd01`` or ``ab cd 01`` -> ``abcd01``; '' when the text is not hexadecimal."""
    squashed = re.sub(r"[\s:]", "", text).lower()
    if squashed.startswith("0x"):
        squashed = squashed[2:]
    return squashed if _HEX.match(squashed) else ""


def normalize_serial(text: str) -> str:
    """A serial as stored (lowercase hex, no leading zeros), or '' when the text is not one."""
    squashed = normalize_hex(text)
    return (squashed.lstrip("0") or "0") if squashed else ""


class CertificateFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")
    ca = IdFilter(field_name="ca_id", help_text="Issuing CA id.")
    subscriber = IdFilter(field_name="subscriber_id")
    status = django_filters.ChoiceFilter(choices=Certificate.Status.choices)
    source = django_filters.ChoiceFilter(choices=Certificate.Source.choices)
    key_algorithm = django_filters.ChoiceFilter(choices=KEY_ALGORITHMS)
    deployment_state = django_filters.MultipleChoiceFilter(
        choices=Certificate.DeploymentState.choices,
        help_text="none, deploying, deployed or failed (repeat for several: renewed but not yet deployed is "
        "deploying and failed).",
    )
    renewal = django_filters.BooleanFilter(
        field_name="renewed_from", lookup_expr="isnull", exclude=True, help_text="Renewals only (true)."
    )
    expires_within_days = IntegerFilter(
        method="filter_expires_within_days",
        min_value=0,
        max_value=36500,
        help_text="Active certificates whose notAfter lies within this many days from now.",
    )
    search = django_filters.CharFilter(
        method="filter_search",
        max_length=200,
        help_text="Common name or SAN (partial, case-insensitive), serial (hex prefix, colons allowed) "
        "or fingerprint (SHA-256 or SHA-1, exact, colons allowed).",
    )

    class Meta:
        model = Certificate
        fields = [
            "organization",
            "ca",
            "subscriber",
            "status",
            "source",
            "key_algorithm",
            "deployment_state",
            "renewal",
            "expires_within_days",
            "search",
        ]

    def filter_expires_within_days(self, queryset, name, value: int):
        if value is None:
            return queryset
        return queryset.expiring_within(int(value))

    def filter_search(self, queryset, name, value: str):
        text = (value or "").strip()
        if not text:
            return queryset
        by_name = queryset.matching_name(text)
        hexed = normalize_hex(text)
        if not hexed:
            return by_name
        by_number = Q(serial__startswith=normalize_serial(text))
        if len(hexed) == 64:
            by_number |= Q(fingerprint_sha256=hexed)
        elif len(hexed) == 40:
            by_number |= Q(fingerprint_sha1=hexed)
        return by_name | queryset.filter(by_number)
