"""django-q2 entry points of certificate syncs."""

from __future__ import annotations

from certmgr.jobs import run_job
from syncs import services


def run_sync(run_id: int) -> str:
    run = services.run_sync(run_id)
    return f"sync run {run_id}: " + (run.status if run is not None else "not due")


def run_due() -> dict:
    """Every minute: retries whose time came, runs whose worker died or whose task was lost."""
    return run_job("syncs.run_due", services.run_due).counts


def check_drift() -> dict:
    """Every CERTMGR_SYNC_DRIFT_MINUTES: re-read each destination, push what differs or is missing."""
    return run_job("syncs.check_drift", services.check_drift).counts
