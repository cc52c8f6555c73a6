from django.apps import AppConfig


class PkiConfig(AppConfig):
    name = "pki"
    verbose_name = "PKI"

    def ready(self) -> None:
        # pki's own issuers; other apps register theirs from their own ready().
        from pki import internal_issuer

        internal_issuer.register_builtin()
