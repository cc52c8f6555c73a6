"""django-q2 entry points of the ACME server (take ids; idempotent)."""

from __future__ import annotations


def validate_challenge(challenge_id: int) -> None:
    from acmeserver import services

    services.validate_challenge(challenge_id)
