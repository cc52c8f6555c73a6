"""The pending handle of an ACME order: what doors show while the CA works (``pki.issuers.Pending``)."""

from __future__ import annotations

from django.urls import reverse

from acmeca.choices import OrderStep
from acmeca.models import AcmeOrder
from pki.issuers import Pending


def pending(order: AcmeOrder, *, reread: bool = True) -> Pending:
    """The handle doors show for an order: where to watch it in the admin and the API.

    ``reread``: ask the database for its step (a worker may have moved it); False when the row was written
    or read in this transaction a moment ago."""
    status, step = order.status, order.step
    if reread and (row := AcmeOrder.objects.filter(pk=order.pk).values("status", "step").first()):
        status, step = row["status"], row["step"]
    return Pending(
        kind="acme_order",
        id=order.pk,
        label=f"ACME order {order.pk}",
        status=status,
        step=step,
        step_label=OrderStep.label_of(step),
        admin_url=reverse("admin:acmeca_acmeorder_change", args=[order.pk]),
        api_url=reverse("acme-order-detail", args=[order.pk]),
        api_fields={"order": order.pk},
        status_url=reverse("admin:acmeca_acmeorder_status", args=[order.pk]),
    )
