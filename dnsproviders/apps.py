from django.apps import AppConfig


class DnsProvidersConfig(AppConfig):
    name = "dnsproviders"
    verbose_name = "DNS providers"
