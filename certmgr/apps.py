from django.apps import AppConfig


class CertmgrConfig(AppConfig):
    name = "certmgr"
    verbose_name = "Organizations & audit"

    def ready(self) -> None:
        # Imported for their side effects: system checks; the /admin/dashboard/ URL.
        from certmgr import checks, dashboard_admin  # noqa: F401
