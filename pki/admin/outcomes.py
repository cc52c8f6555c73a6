"""What the admin says and where it goes after an issuance: the certificate, or the work under way."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from pki.issuers import Outcome, Pending


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
