import django_filters

from dnsproviders.models import AppConnection


class AppConnectionFilter(django_filters.FilterSet):
    class Meta:
        model = AppConnection
        fields = ["organization", "kind"]
