from django.core.management.base import BaseCommand, CommandError

from certmgr import audit


class Command(BaseCommand):
    help = "Check every audit-log hash chain; report the first broken link and exit non-zero."

    def add_arguments(self, parser):
        parser.add_argument("--organization", type=int, action="append", help="Only these organization ids.")

    def handle(self, *args, organization, **options):
        checked, broken = audit.verify(chains=organization)
        if broken is not None:
            raise CommandError(f"audit log broken after {checked} events: {broken}")
        self.stdout.write(self.style.SUCCESS(f"audit log intact: {checked} events verified"))
