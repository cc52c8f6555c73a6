from django.apps import AppConfig


class AcmeCaConfig(AppConfig):
    name = "acmeca"
    verbose_name = "ACME CAs"
