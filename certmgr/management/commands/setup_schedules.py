"""``manage.py setup_schedules``: create or update every periodic job's schedule (idempotent)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from certmgr.schedules import ensure_schedules, jobs


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules of every periodic job (intervals from settings)."

    def handle(self, *args, **options):
        minutes = {job.name: job.minutes for job in jobs()}
        for name, created in ensure_schedules():
            self.stdout.write(f"{'created' if created else 'updated'}: {name} every {minutes[name]} min")
