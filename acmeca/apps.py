from django.apps import AppConfig


class AcmeCaConfig(AppConfig):
    name = "acmeca"
    verbose_name = "ACME CAs"

    def ready(self) -> None:
        from acmeca.issuer import AcmeIssuer
        from pki import issuers

        issuers.register(AcmeIssuer())
