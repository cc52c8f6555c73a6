"""``manage.py run_renewals``: the renewal sweep once, in the foreground.

``--dry-run`` lists what would renew and when; ``--at ISO-TIME`` evaluates due-ness as of that time
(planning: "what renews before Friday?"); without ``--dry-run`` it renews those early.
"""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from certmgr.jobs import run_job
from certmgr.models import JobRun
from pki import lifecycle


def parse_at(text: str) -> datetime:
    value = parse_datetime(text)
    if value is None and (day := parse_date(text)) is not None:
        value = datetime(day.year, day.month, day.day)
    if value is None:
        raise CommandError(f"--at: {text!r} is not an ISO date or date-time (e.g. 2026-12-04T18:00)")
    return value if timezone.is_aware(value) else timezone.make_aware(value)


class Command(BaseCommand):
    help = "Renew the certificates that are due (or list them with --dry-run)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list what would renew; change nothing")
        parser.add_argument(
            "--at", help="evaluate due-ness as of this ISO time (renews early without --dry-run)"
        )
        parser.add_argument("--limit", type=int, help="at most this many certificates")

    def handle(self, *args, dry_run=False, at=None, limit=None, **options):
        when = parse_at(at) if at else timezone.now()
        if dry_run:
            planned = lifecycle.plan(when, limit=limit)
            for item in planned:
                self.stdout.write(
                    f"{item.renew_at:%Y-%m-%d %H:%M} certificate {item.certificate_id} ({item.names}) "
                    f"subscriber {item.subscriber_id}, expires {item.not_after:%Y-%m-%d}"
                )
            self.stdout.write(f"{len(planned)} certificate(s) due by {when:%Y-%m-%d %H:%M %Z}")
            return
        run = run_job(
            "renewals",
            lambda report: lifecycle.run_renewals(report, at=when, limit=limit, progress=self.stdout.write),
            trigger="command",
        )
        summary = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items())) or "nothing due"
        self.stdout.write(f"renewal sweep: {summary}")
        if run.status != JobRun.Status.SUCCESS:
            raise CommandError(f"renewal sweep finished with errors:\n{run.errors}")
