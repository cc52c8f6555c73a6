"""django-q2 entry points of certificate syncs."""

from __future__ import annotations

from certmgr.jobs import run_job
from syncs import services


def run_sync(run_id: int) -> str:
    run = services.run_sync(run_id)
    return f"sync run {run_id}: " + (run.status if run is not None else "not due")


def run_batch(run_ids: list[int]) -> str:
    """The runs of one SSH destination (or another batched kind): one session, one reload."""
    runs = services.run_batch(run_ids)
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    return f"sync batch of {len(run_ids)}: " + (
        ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none due"
    )


def run_due() -> dict:
    """Every minute: retries whose time came, runs whose worker died or whose task was lost."""
    return run_job("syncs.run_due", services.run_due).counts


def check_drift() -> dict:
    """Every CERTMGR_SYNC_DRIFT_MINUTES: re-read each destination, push what differs or is missing."""
    return run_job("syncs.check_drift", services.check_drift).counts
