from django.apps import AppConfig


class CertmgrConfig(AppConfig):
    name = "certmgr"
    verbose_name = "Organizations & audit"

    def ready(self) -> None:
        from certmgr import checks  # noqa: F401  (registers system checks)
