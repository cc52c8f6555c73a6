from django.apps import AppConfig


class PkiConfig(AppConfig):
    name = "pki"
    verbose_name = "PKI"

    def ready(self) -> None:
        from pki import alerts_admin  # noqa: F401  registers the alert screens with the admin site
