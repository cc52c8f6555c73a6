from django.apps import AppConfig


class SyncsConfig(AppConfig):
    name = "syncs"
    verbose_name = "Certificate syncs"

    def ready(self) -> None:
        # pki signals after commit; syncs listens (pki never imports syncs).
        from pki import deployment, signals
        from pki.models import Certificate
        from syncs import azure_keyvault, services, ssh, webhook  # noqa: F401  (kinds register themselves)

        signals.certificates_recorded.connect(
            services.on_certificates_recorded, sender=Certificate, dispatch_uid="syncs.recorded"
        )
        deployment.register_planner(services.plan_destinations)  # the issued alert's "deploying to N"
        signals.certificates_revoked.connect(
            services.on_certificates_revoked, sender=Certificate, dispatch_uid="syncs.revoked"
        )
