from certmgr import services
from certmgr.management.commands._base import ServiceCommand


class Command(ServiceCommand):
    help = "Create an organization."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name, **options):
        org = services.create_organization(name, actor=self.actor())
        self.stdout.write(
            self.style.SUCCESS(f"Created organization {org.name!r} (id {org.pk}, slug {org.slug}).")
        )
