from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from certmgr import two_factor
from certmgr.management.commands._base import ServiceCommand


class Command(ServiceCommand):
    help = (
        "Remove a user's authenticator app (lost phone, or the last administrator locked out): they set up a "
        "new one at their next sign-in if they must. Audited."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        removed = two_factor.reset_two_factor(user, actor=self.actor())
        self.stdout.write(self.style.SUCCESS(f"Removed {removed} authenticator app(s) of {username}."))
