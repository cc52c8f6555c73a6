"""When a certificate should be renewed, and how long to wait after a failed attempt. Pure: no Django.

Order of precedence for a certificate with auto-renew on:
1. the CA's ACME Renewal Information window (RFC 9773), a random time inside it, when the CA publishes one;
2. the subscriber's renew-before days;
3. two thirds of the lifetime (half of it for lifetimes of ten days or less).
Never later than expiry, and at once (an emergency) when less than 1/20 of the lifetime is left, whatever ARI
says.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

SHORT_LIFETIME = timedelta(days=10)
EMERGENCY_FRACTION = 20  # renew at once when less than lifetime / 20 is left


def default_renewal_time(
    not_before: datetime, not_after: datetime, *, renew_before_days: int | None = None
) -> datetime:
    """The renewal time without ARI: renew-before days if set, else 2/3 (or 1/2) of the lifetime."""
    lifetime = not_after - not_before
    if renew_before_days:
        when = not_after - timedelta(days=renew_before_days)
    elif lifetime <= SHORT_LIFETIME:
        when = not_before + lifetime / 2
    else:
        when = not_before + lifetime * 2 / 3
    return max(not_before, min(when, not_after))


def emergency_time(not_before: datetime, not_after: datetime) -> datetime:
    """From this moment on a certificate is renewed at once, whatever its CA's ARI window says."""
    return not_after - (not_after - not_before) / EMERGENCY_FRACTION


def choose_in_window(start: datetime, end: datetime, *, rng: random.Random | None = None) -> datetime:
    """A uniformly random time inside an ARI window (spreads a fleet's renewals, as RFC 9773 asks)."""
    if end <= start:
        return start
    seconds = (end - start).total_seconds()
    return start + timedelta(seconds=(rng or random).uniform(0, seconds))


def next_renewal_at(
    not_before: datetime,
    not_after: datetime,
    *,
    renew_before_days: int | None = None,
    ari_time: datetime | None = None,
) -> datetime:
    """The stored ``next_renewal_at``: ARI's choice if any, else the default; capped by the emergency time."""
    when = (
        ari_time
        if ari_time is not None
        else default_renewal_time(not_before, not_after, renew_before_days=renew_before_days)
    )
    return min(when, emergency_time(not_before, not_after), not_after)


def retry_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempt + 1`` after ``attempt`` failures: exponential, capped, jittered
    (the upper half is random so a fleet that failed together does not retry together)."""
    delay: float = min(cap, base * 2 ** max(0, attempt - 1))
    return delay / 2 + (rng or random).uniform(0, delay / 2)
