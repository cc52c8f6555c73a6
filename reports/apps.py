from django.apps import AppConfig


class ReportsConfig(AppConfig):
    """What certmgr reports about the apps below it: the admin dashboard and ``/metrics``. It sits above
    ``pki`` and ``acmeca`` so the core (``certmgr``) knows no certificates or orders."""

    name = "reports"
    verbose_name = "Reports"

    def ready(self) -> None:
        # Imported for their side effects: the /admin/dashboard/ URL, the admin index grouped by the work.
        from reports import admin_index, dashboard_admin  # noqa: F401
