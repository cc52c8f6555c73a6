from django.apps import AppConfig


class AcmeServerConfig(AppConfig):
    name = "acmeserver"
    verbose_name = "ACME server"
