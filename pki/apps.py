from django.apps import AppConfig


class PkiConfig(AppConfig):
    name = "pki"
    verbose_name = "PKI"

    def ready(self) -> None:
        # pki's own issuers; other apps register theirs from their own ready().
        from pki import internal_issuer

        internal_issuer.register_builtin()

        # Audit checkpoints go to the alert channels too; certmgr signals, it does not know pki.
        from certmgr.audit_checkpoints import checkpoint_written
        from pki import alerts

        checkpoint_written.connect(alerts.queue_audit_checkpoint, dispatch_uid="pki.alerts.audit_checkpoint")
