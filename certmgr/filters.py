"""django-filter sets for the core's lists (API and admin share the field names)."""

from __future__ import annotations

import django_filters

from certmgr.models import ApiToken, AuditEvent, Membership


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_label", lookup_expr="icontains")
    action = django_filters.CharFilter(method="filter_action", help_text="Exact, or a prefix ending in '.'")
    since = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="lt")

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
