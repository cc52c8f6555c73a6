"""What the admin says and where it goes after an issuance: the certificate, or the work under way."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from pki import issuers
from pki.issuers import Outcome, Pending
from pki.models import Subscriber


def say_pending(model_admin, request, label: str, pending: Pending) -> None:
    """The CA's issuer works on (e.g. an ACME order a worker runs): say what runs, linked to its page."""
    model_admin.message_user(
        request,
        format_html(
            '{}: <a href="{}">{}</a> started (step: {}).',
            label,
            pending.admin_url,
            pending.label,
            pending.step_label or pending.step,
        ),
        messages.SUCCESS,
    )


def outcome_redirect(outcome: Outcome) -> HttpResponseRedirect:
    """To the certificate issued, or to the page of the work that will issue it."""
    if outcome.certificate is not None:
        return HttpResponseRedirect(reverse("admin:pki_certificate_change", args=[outcome.certificate.pk]))
    return HttpResponseRedirect(outcome.admin_url)


def live_context(subscriber_id: int | None) -> dict:
    """For a page that shows a subscriber's work: the issuance under way at its issuer (an ACME order),
    which ``live_progress.html`` follows while it runs; nothing when none runs or its issuer has no
    status to poll."""
    if subscriber_id is None:
        return {}
    subscriber = (
        Subscriber.objects.select_related("ca").defer("ca__private_key").filter(pk=subscriber_id).first()
    )
    if subscriber is None or subscriber.ca is None:
        return {}
    pending = issuers.backend_for(subscriber.ca).pending_for(subscriber)
    if pending is None or not pending.status_url:
        return {}
    first = {"step_label": pending.step_label, "status_label": pending.status or "not sent", "progress": 0}
    return {"live": first, "live_url": pending.status_url, "live_label": pending.label}
