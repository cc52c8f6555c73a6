from certmgr import services
from certmgr.management.commands._base import ServiceCommand, find_organization
from certmgr.permissions import Role


class Command(ServiceCommand):
    help = "Add a user to an organization with a role (the user is created, without a password, if needed)."

    def add_arguments(self, parser):
        parser.add_argument("organization", help="Name, slug or id.")
        parser.add_argument("username")
        parser.add_argument("role", choices=Role.values)
        parser.add_argument("--email", default="")

    def handle(self, *args, organization, username, role, email, **options):
        org = find_organization(organization)
        user, created = services.get_or_create_user(username, email=email)
        services.add_member(org, user, role, actor=self.actor())
        note = " (new user: set a password with 'manage.py changepassword')" if created else ""
        self.stdout.write(self.style.SUCCESS(f"{username} is now {role} of {org.name}{note}."))
