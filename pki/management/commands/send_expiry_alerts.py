"""``manage.py send_expiry_alerts``: the expiry-alert job once, in the foreground.

Queues each certificate's reached threshold (once per threshold, certificate and channel, however often it
runs), sends every pending delivery that is due (retries included), prints each, and exits non-zero when a
delivery failed (it stays queued for its next attempt, or is marked failed after the last one).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from certmgr.jobs import run_job
from certmgr.models import JobRun
from pki import alerts


class Command(BaseCommand):
    help = "Send the expiry alerts that are due, and retry failed alert deliveries."

    def handle(self, *args, **options):
        run = run_job(
            "expiry_alerts",
            lambda report: alerts.send_expiry_alerts(report, progress=self.stdout.write),
            trigger="command",
        )
        summary = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items())) or "nothing to send"
        self.stdout.write(f"expiry alerts: {summary}")
        if run.status != JobRun.Status.SUCCESS:
            raise CommandError(f"alert delivery errors:\n{run.errors}")
