from django.core.management.base import CommandError

from certmgr import services
from certmgr.management.commands._base import ServiceCommand


class Command(ServiceCommand):
    help = "Re-encrypt every stored secret under the first key of CERTMGR_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        result = services.rotate_encryption_keys(actor=self.actor())
        for label, n in result.counts.items():
            self.stdout.write(f"{label}: {n} re-encrypted")
        if result.failed:
            for label, pk in result.failed:
                self.stderr.write(f"{label} id {pk}: cannot be decrypted with any configured key; left as is")
            raise CommandError(
                f"{len(result.failed)} secrets could not be re-encrypted (tampered, or made with a key no "
                f"longer configured); the other {sum(result.counts.values())} are under the first key. "
                "Keep the older keys in CERTMGR_ENCRYPTION_KEYS until these rows are fixed or removed."
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Done: {sum(result.counts.values())} secrets now under the first key. "
                "Older keys can be removed from CERTMGR_ENCRYPTION_KEYS."
            )
        )
