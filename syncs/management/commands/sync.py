"""``manage.py sync``: push certificates to their sync destinations now, here, with progress."""

from __future__ import annotations

import time

from django.core.management.base import CommandError

from certmgr.jobs import JobReport
from certmgr.management.commands._base import ServiceCommand, find_organization
from syncs import services
from syncs.choices import RunStatus, RunTrigger
from syncs.models import SyncDestination


class Command(ServiceCommand):
    help = (
        "Sync now: push the current certificates of every enabled destination (or of --destination) and "
        "run the pushes here, one line each. --check-drift re-reads the destinations first and pushes only "
        "what differs or is missing; --due runs the retries whose time came. Exit status 1 when a run failed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", help="Only this organization (name, slug or id).")
        parser.add_argument(
            "--destination", action="append", default=[], help="Destination name or id (repeatable)."
        )
        parser.add_argument(
            "--check-drift", action="store_true", help="Push only what differs or is missing."
        )
        parser.add_argument("--due", action="store_true", help="Run the due retries only.")
        parser.add_argument("--quiet", action="store_true", help="Only the summary line.")

    def handle(self, *args, org, destination, check_drift, due, quiet, **options):
        say = (lambda message: None) if quiet else self.stdout.write
        started = time.monotonic()
        report = JobReport()
        if due:
            services.run_due(report, progress=say)
            return self._summary(report.counts, started)
        organization = find_organization(org) if org else None
        dests = SyncDestination.objects.filter(enabled=True).select_related("connection").order_by("pk")
        if organization is not None:
            dests = dests.filter(organization=organization)
        if destination:
            ids = [d for d in destination if d.isdigit()]
            names = [d for d in destination if not d.isdigit()]
            dests = dests.filter(pk__in=ids) | dests.filter(name__in=names)
            if not dests.exists():
                raise CommandError(f"no enabled destination named {', '.join(destination)}")
        if check_drift:
            runs = services.check_drift(
                report, progress=say, organization_ids={d.organization_id for d in dests}
            )
            runs = [r for r in runs if r.destination_id in {d.pk for d in dests}]
        else:
            runs = []
            for dest in dests:
                runs += services.sync_now(
                    actor=self.actor(), destination=dest, trigger=RunTrigger.MANUAL, to_workers=False
                )
        total, counts = len(runs), dict[str, int]()
        # runs of an SSH destination go in one batch: one session, one reload for all of them
        batches = services.batched_runs([r.pk for r in runs])
        batched = {pk: r for pks in batches.values() for r in services.run_batch(pks) for pk in [r.pk]}
        for i, run in enumerate(runs, 1):
            done = batched[run.pk] if run.pk in batched else services.run_sync(run.pk)
            status = done.status if done is not None else "taken by a worker"
            counts[status] = counts.get(status, 0) + 1
            if done is not None and done.status != RunStatus.SUCCEEDED:
                say(f"[{i}/{total}] {run.name} at destination {run.destination_id}: {status}: {done.error}")
            elif i % 100 == 0 or i == total:
                say(f"[{i}/{total}] {run.name} at destination {run.destination_id}: {status}")
        self._summary(counts, started, total)
        if counts.get(RunStatus.FAILED) or counts.get(RunStatus.PENDING):
            raise CommandError(
                "some runs did not succeed: see above (pending ones are retried by the worker)"
            )

    def _summary(self, counts: dict, started: float, total: int | None = None) -> None:
        seconds = time.monotonic() - started
        rate = f", {total / seconds:.1f} runs/s" if total else ""
        text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to do"
        self.stdout.write(f"sync: {text} in {seconds:.1f} s{rate}")
