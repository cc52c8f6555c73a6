"""django-filter sets for the ACME lists (API and admin share the field names).

Foreign keys are filtered by id (``IdFilter``, as in ``pki.filters``): a choice filter would look the row up
and tell another tenant that it exists.
"""

from __future__ import annotations

import django_filters

from acmeca.models import AcmeAccount, AcmeChallenge, AcmeOrder, ChallengeType
from acmeca.vendors import Vendor
from pki.filters import IdFilter


class AcmeAccountFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")
    vendor = django_filters.ChoiceFilter(choices=[(v.value, v.value) for v in Vendor])
    status = django_filters.ChoiceFilter(choices=AcmeAccount.Status.choices)

    class Meta:
        model = AcmeAccount
        fields = ["organization", "vendor", "status"]


class AcmeOrderFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")
    # "" (not yet sent to the CA) cannot be asked for: an empty query value means "no filter".
    status = django_filters.ChoiceFilter(choices=[c for c in AcmeOrder.Status.choices if c[0]])
    step = django_filters.ChoiceFilter(choices=AcmeOrder.Step.choices)
    ca = IdFilter(field_name="ca_id", help_text="ACME CA id.")
    subscriber = IdFilter(field_name="subscriber_id")
    certificate = IdFilter(field_name="certificate_id", help_text="The certificate the order issued.")

    class Meta:
        model = AcmeOrder
        fields = ["organization", "status", "step", "ca", "subscriber", "certificate"]


class AcmeChallengeFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")
    order = IdFilter(field_name="order_id")
    status = django_filters.ChoiceFilter(choices=AcmeChallenge.Status.choices)
    type = django_filters.ChoiceFilter(choices=ChallengeType.choices)

    class Meta:
        model = AcmeChallenge
        fields = ["organization", "order", "status", "type"]
