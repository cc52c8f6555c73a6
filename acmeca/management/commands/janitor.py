"""``manage.py janitor``: resume stalled ACME orders and remove left-over challenge records, once."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from acmeca.tasks import janitor_now
from certmgr.jobs import run_job
from certmgr.models import JobRun


class Command(BaseCommand):
    help = (
        "Resume ACME orders whose worker died or whose retry time came; remove challenge records left behind."
    )

    def handle(self, *args, **options):
        run = run_job(
            "janitor", lambda report: janitor_now(report, progress=self.stdout.write), trigger="command"
        )
        self.stdout.write(
            "janitor: " + (", ".join(f"{k} {v}" for k, v in sorted(run.counts.items())) or "nothing to do")
        )
        if run.status != JobRun.Status.SUCCESS:
            raise CommandError(f"janitor finished with errors:\n{run.errors}")
