"""List filters of the PKI admin that only offer the viewer's own rows."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.utils import timezone

from certmgr.admin_base import IdFilter, OrganizationFilter
from pki.choices import DeploymentState
from pki.models import CertificateAuthority, Policy, Subscriber


class CrlOrganizationFilter(OrganizationFilter):
    field = "ca__organization_id"


class CaFilter(IdFilter):
    title = "certificate authority"
    parameter_name = "ca"
    field = "ca_id"

    def choice_rows(self, request):
        return list(
            CertificateAuthority.objects.restrict(request).order_by("name").values_list("pk", "name")[:200]
        )


class PolicyFilter(IdFilter):
    title = "policy"
    parameter_name = "policy"
    field = "policy_id"

    def choice_rows(self, request):
        return list(Policy.objects.restrict(request).order_by("name").values_list("pk", "name")[:200])


class SubscriberFilter(IdFilter):
    """The first subscribers by name plus the selected one (subscriber pages link here with ?subscriber=)."""

    title = "subscriber"
    parameter_name = "subscriber"
    field = "subscriber_id"
    shown = 30

    def choice_rows(self, request):
        visible = Subscriber.objects.restrict(request).order_by("name")
        rows = list(visible.values_list("pk", "name")[: self.shown])
        value = self.value()
        if value and value.isdigit() and int(value) not in {pk for pk, _ in rows}:
            rows += list(visible.filter(pk=int(value)).values_list("pk", "name"))
        return [(0, "None (imported or ACME)"), *rows]

    def queryset(self, request, queryset):
        if self.value() == "0":
            return queryset.filter(subscriber__isnull=True)
        return super().queryset(request, queryset)


class ExpiringWithinFilter(admin.SimpleListFilter):
    """Active certificates expiring within N days (7 / 30 / 90, or any N in the URL), or already past."""

    title = "expiring within"
    parameter_name = "expiring_within"
    presets = (7, 30, 90)

    def lookups(self, request, model_admin):
        choices = [(str(days), f"{days} days") for days in self.presets]
        value = self.value()
        if value and value.isdigit() and int(value) not in self.presets:
            choices.append((value, f"{int(value)} days"))
        choices.append(("past", "Past expiry"))
        return choices

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value == "past":
            return queryset.filter(not_after__lte=timezone.now())
        if not value.isdigit() or not 0 < int(value) <= 36500:
            raise IncorrectLookupParameters("expiring_within: a number of days")
        return queryset.expiring_within(int(value))


class DeploymentFilter(admin.SimpleListFilter):
    """The deployment state (kept by syncs), and "renewed, not yet deployed": the dashboard's count."""

    title = "deployment"
    parameter_name = "deployment"
    UNDEPLOYED_RENEWALS = "renewed_undeployed"

    def lookups(self, request, model_admin):
        return [
            *((state.value, state.label) for state in DeploymentState),
            (self.UNDEPLOYED_RENEWALS, "Renewed, not yet deployed"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value == self.UNDEPLOYED_RENEWALS:
            return queryset.undeployed_renewals()
        if value not in DeploymentState.values:
            raise IncorrectLookupParameters("deployment: none, deploying, deployed or failed")
        return queryset.filter(deployment_state=value)
