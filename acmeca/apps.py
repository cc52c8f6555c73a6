from django.apps import AppConfig


class AcmeCaConfig(AppConfig):
    name = "acmeca"
    verbose_name = "ACME CAs"

    def ready(self) -> None:
        from acmeca.delegation import subscriber_names
        from acmeca.issuer import AcmeIssuer
        from dnsproviders import delegation
        from pki import issuers

        issuers.register(AcmeIssuer())
        delegation.register_names_source(subscriber_names)
