"""django-filter sets for the core's lists (API and admin share the field names)."""

from __future__ import annotations

import datetime

import django_filters
from django.core.exceptions import ValidationError

from certmgr.models import ApiToken, AuditEvent, Membership


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO 8601 with any offset Python accepts; compared in UTC (PostgreSQL refuses offsets beyond 15:59)."""

    def filter(self, qs, value):
        if value is not None:
            try:
                value = value.astimezone(datetime.UTC)
            except (OverflowError, ValueError) as exc:
                raise ValidationError({self.field_name: ["Date and time out of range."]}) from exc
        return super().filter(qs, value)


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_label", lookup_expr="icontains")
    action = django_filters.CharFilter(method="filter_action", help_text="Exact, or a prefix ending in '.'")
    since = UTCDateTimeFilter(field_name="time", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="time", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = [
            "organization",
            "actor_type",
            "actor_id",
            "action",
            "target_type",
            "target_id",
            "outcome",
            "request_id",
        ]

    def filter_action(self, queryset, name, value):
        if value.endswith("."):
            return queryset.filter(action__startswith=value)
        return queryset.filter(action=value)


class MembershipFilter(django_filters.FilterSet):
    class Meta:
        model = Membership
        fields = ["organization", "role", "user"]


class ApiTokenFilter(django_filters.FilterSet):
    class Meta:
        model = ApiToken
        fields = ["organization", "role", "user"]
