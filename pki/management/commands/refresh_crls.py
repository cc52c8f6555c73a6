"""``manage.py refresh_crls``: rebuild the CRLs that are stale, once, in the foreground."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from certmgr.jobs import run_job
from certmgr.models import JobRun
from pki.tasks import refresh_crls_now


class Command(BaseCommand):
    help = "Rebuild every internal CA's CRL that is less than half a validity from its nextUpdate."

    def handle(self, *args, **options):
        run = run_job(
            "crl_refresh",
            lambda report: refresh_crls_now(report, progress=self.stdout.write),
            trigger="command",
        )
        self.stdout.write(
            "CRL refresh: " + (", ".join(f"{k} {v}" for k, v in sorted(run.counts.items())) or "no CA")
        )
        if run.status != JobRun.Status.SUCCESS:
            raise CommandError(f"CRL refresh finished with errors:\n{run.errors}")
