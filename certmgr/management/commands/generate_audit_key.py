from django.core.management.base import BaseCommand

from certmgr.audit_keys import generate_key


class Command(BaseCommand):
    help = "Print a new key for CERTMGR_AUDIT_KEYS (put it first to rotate; keep old keys: old links verify)."
    requires_system_checks = []
    requires_migrations_checks = False

    def handle(self, *args, **options):
        self.stdout.write(generate_key())
