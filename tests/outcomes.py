"""Issuance outcomes in tests: the ACME order a pending outcome names."""

from __future__ import annotations

from acmeca.models import AcmeOrder
from pki.issuers import Outcome


def ordered(outcome: Outcome) -> AcmeOrder:
    """The ACME order of a pending issuance (fails the test if the CA issued at once)."""
    assert outcome.certificate is None, f"issued at once: {outcome.certificate}"
    assert outcome.kind == "acme_order", outcome
    return AcmeOrder.objects.get(pk=outcome.id)
