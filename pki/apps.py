from django.apps import AppConfig


class PkiConfig(AppConfig):
    name = "pki"
    verbose_name = "PKI"

    def ready(self) -> None:
        from pki.issuers import internal

        internal.register_builtin()
