import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from certmgr import services
from certmgr.actors import Actor
from certmgr.models import Organization
from certmgr.permissions import Role


class Command(BaseCommand):
    help = (
        "Quickstart: a 'Demo' organization and an 'admin' superuser. The password comes from "
        "CERTMGR_ADMIN_PASSWORD or is generated and printed once."
    )

    def handle(self, *args, **options):
        actor = Actor.system("manage.py bootstrap_demo")
        User = get_user_model()
        with transaction.atomic():
            org = Organization.objects.filter(slug="demo").first() or services.create_organization(
                "Demo", actor=actor
            )
            user = User.objects.filter(username="admin").first()
            if user is not None:
                self.stdout.write("Admin user 'admin' exists; its password was shown when it was created.")
                return
            password = os.environ.get("CERTMGR_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            user = User.objects.create_superuser("admin", email="", password=password)
            services.add_member(org, user, Role.ADMIN, actor=actor)
        shown = "from CERTMGR_ADMIN_PASSWORD" if os.environ.get("CERTMGR_ADMIN_PASSWORD") else password
        self.stdout.write(
            self.style.SUCCESS(
                f"\n  certmgr admin login (shown once)\n    user:     admin\n    password: {shown}\n"
            )
        )
