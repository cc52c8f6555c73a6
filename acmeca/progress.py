"""What an order's page shows while a worker runs it: one JSON-ready dict, read by the admin's status
endpoint (polled by ``acmeca/order_live.js``) and rendered on the page's first load."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse

from acmeca.choices import FINISHED_STEPS, OrderStep
from acmeca.models import AcmeOrder

# How far along the flow each step is, for the progress bar (percent).
_PROGRESS: dict[str, int] = {
    OrderStep.QUEUED: 10,
    OrderStep.AUTHORIZING: 40,
    OrderStep.WAITING_MANUAL: 40,
    OrderStep.FINALIZING: 80,
    OrderStep.DONE: 100,
    OrderStep.FAILED: 100,
    OrderStep.CANCELLED: 100,
}


def _when(value) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else None


def order_progress(order: AcmeOrder) -> dict[str, Any]:
    """The order's step, status at the CA, challenges, attempts (with their maximum), next retry time,
    the CA's last message and, once issued, its certificate."""
    challenges = [
        {
            "identifier": str(ch.authorization),
            "status": ch.status,
            "status_label": ch.get_status_display(),
            "error": ch.error,
        }
        for ch in order.challenges.select_related("authorization").order_by("id")
    ]
    cert = order.certificate if order.certificate_id else None
    finished = order.step in FINISHED_STEPS
    return {
        "id": order.pk,
        "step": order.step,
        "step_label": order.get_step_display(),
        "status": order.status,
        "status_label": order.get_status_display(),
        "finished": finished,
        "progress": _PROGRESS.get(order.step, 0),
        "attempts": order.attempts,
        "max_attempts": settings.CERTMGR_ACME_MAX_ATTEMPTS,
        "next_attempt_at": None if finished else _when(order.next_attempt_at),
        "error": order.last_error,
        "error_type": order.error_type,
        "challenges": challenges,
        "certificate": (
            {
                "id": cert.pk,
                "serial": cert.serial,
                "not_after": _when(cert.not_after),
                "url": reverse("admin:pki_certificate_change", args=[cert.pk]),
            }
            if cert is not None
            else None
        ),
        "updated_at": _when(order.updated_at),
    }
