from certmgr import services
from certmgr.management.commands._base import ServiceCommand


class Command(ServiceCommand):
    help = "Re-encrypt every stored secret under the first key of CERTMGR_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        counts = services.rotate_encryption_keys(actor=self.actor())
        for label, n in counts.items():
            self.stdout.write(f"{label}: {n} re-encrypted")
        self.stdout.write(
            self.style.SUCCESS(
                f"Done: {sum(counts.values())} secrets now under the first key. "
                "Older keys can be removed from CERTMGR_ENCRYPTION_KEYS."
            )
        )
