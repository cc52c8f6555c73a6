from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils import timezone

from certmgr import services
from certmgr.management.commands._base import ServiceCommand, find_organization
from certmgr.permissions import Role


class Command(ServiceCommand):
    help = "Create an API token and print it once (the secret is not stored)."

    def add_arguments(self, parser):
        parser.add_argument("organization", help="Name, slug or id.")
        parser.add_argument("username")
        parser.add_argument("role", choices=Role.values)
        parser.add_argument("--name", default="", help="A label (default: '<user> via manage.py').")
        parser.add_argument("--expires-days", type=int, default=None)

    def handle(self, *args, organization, username, role, name, expires_days, **options):
        org = find_organization(organization)
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1")
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        new = services.create_api_token(
            org,
            user,
            name=name or f"{username} via manage.py",
            role=role,
            expires_at=expires_at,
            actor=self.actor(),
        )
        self.stdout.write(new.secret)
