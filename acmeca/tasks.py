"""django-q2 entry points of the ACME worker and its janitor."""

from __future__ import annotations

from django.utils import timezone

from acmeca import flow
from acmeca.models import AcmeOrder


def run_order(order_id: int) -> str:
    order = flow.run_order(order_id)
    return f"order {order.pk}: {order.step}"


def janitor() -> dict:
    """Resume orders whose worker died or whose retry time came; remove challenge records left behind."""
    from django_q.tasks import async_task

    resumed = 0
    for order_id in flow.stalled_orders(timezone.now()):
        # A second run of one order is harmless: the lease lets only one worker drive it.
        async_task("acmeca.tasks.run_order", order_id, task_name=f"acme-order-{order_id}", group="acme")
        resumed += 1
    cleaned = 0
    for order in AcmeOrder.objects.filter(cleanup_pending=True)[:200]:
        cleaned += flow.cleanup_records(order)
    return {"resumed": resumed, "cleaned": cleaned}
