"""django-q2 entry points of the ACME worker and its janitor."""

from __future__ import annotations

from collections.abc import Callable

from django.utils import timezone

from acmeca import flow
from acmeca.models import AcmeOrder
from certmgr.jobs import JobReport, run_job


def run_order(order_id: int) -> str:
    order = flow.run_order(order_id)
    return f"order {order.pk}: {order.step}"


def janitor() -> dict:
    """Scheduled every CERTMGR_JANITOR_MINUTES; each run is a JobRun."""
    return run_job("janitor", janitor_now).counts


def janitor_now(report: JobReport, progress: Callable[[str], None] | None = None) -> None:
    """Resume orders whose worker died or whose retry time came; remove challenge records left behind."""
    from acmeca import orders

    say = progress or (lambda message: None)
    for order_id in flow.stalled_orders(timezone.now()):
        orders.resume(order_id)
        report.add("resumed")
        say(f"resumed: order {order_id}")
    for order in AcmeOrder.objects.filter(cleanup_pending=True, cleanup_stopped_at__isnull=True)[:200]:
        if flow.cleanup_records(order):
            report.add("cleaned")
            say(f"cleaned: order {order.pk}")
        elif order.cleanup_stopped_at is not None:
            # Reported once, on the run that gives up; later runs skip the order until an operator clears it.
            report.error(f"order {order.pk}: challenge records left for an operator: {order.cleanup_error}")
        else:
            report.add("cleanup_retrying")
            say(f"cleanup retried later: order {order.pk}: {order.cleanup_error}")
