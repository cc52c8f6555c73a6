"""Recorded runs of the periodic jobs: each run leaves a JobRun row (started, finished, counts, errors)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from certmgr.models import JobRun

log = logging.getLogger(__name__)


class JobReport:
    """What a job fills in while it runs: counters and error lines."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def error(self, message: str) -> None:
        self.errors.append(message)
        self.add("errors")


def run_job(name: str, work: Callable[[JobReport], Any], *, trigger: str = "schedule") -> JobRun:
    """Run ``work(report)`` and record it. An exception marks the run failed and is re-raised."""
    run = JobRun.objects.create(name=name, trigger=trigger)
    report = JobReport()
    try:
        work(report)
    except BaseException as exc:
        _finish(run, report, JobRun.Status.FAILED, extra=f"{type(exc).__name__}: {exc}")
        raise
    _finish(run, report, JobRun.Status.PARTIAL if report.errors else JobRun.Status.SUCCESS)
    return run


def _finish(run: JobRun, report: JobReport, status: str, extra: str = "") -> None:
    lines = report.errors[:200] + ([extra] if extra else [])
    if len(report.errors) > 200:
        lines.append(f"... and {len(report.errors) - 200} more")
    run.status = status
    run.finished_at = timezone.now()
    run.counts = report.counts
    run.errors = "\n".join(lines)[:20000]
    run.save(update_fields=["status", "finished_at", "counts", "errors"])
    log.info("job %s %s: %s", run.name, status, report.counts)
