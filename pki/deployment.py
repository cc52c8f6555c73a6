"""How far a certificate got to the places it is used, in words pki says (admin messages, the issued alert,
the renewal sweep's output): a renewal is done only once every destination confirmed the new serial.

The state lives on the certificate (``deployment_state``, ``deployed_at``) and is kept by the app that
deploys it (``syncs``). That app sees a new certificate only after the issuing transaction commits; the
issued alert is queued inside it, so the app also registers a *planner* saying how many destinations each
new certificate goes to. pki imports no such app (the registry pattern of ``pki.admin.panels``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pki.choices import DeploymentState

# certificates -> {certificate id: how many destinations it goes to}; ids it omits go nowhere
Planner = Callable[[Sequence[Any]], dict[int, int]]

_PLANNERS: list[Planner] = []


def register_planner(planner: Planner) -> None:
    if planner not in _PLANNERS:
        _PLANNERS.append(planner)


def planned(certificates: Sequence[Any]) -> dict[int, int]:
    """How many destinations each of ``certificates`` (recorded, perhaps not committed yet) goes to."""
    counts: dict[int, int] = {}
    for planner in _PLANNERS:
        for pk, n in planner(certificates).items():
            counts[pk] = counts.get(pk, 0) + n
    return counts


def destinations_text(n: int) -> str:
    return f"{n} destination{'' if n == 1 else 's'}"


def deploying_text(n: int) -> str:
    """ "deploying to 2 destinations", or "" when it goes nowhere."""
    return f"deploying to {destinations_text(n)}" if n else ""


def state_text(certificate: Any) -> str:
    """The certificate's deployment state in words, e.g. "deploying to 2 destinations (1 confirmed)"."""
    state = certificate.deployment_state
    total, confirmed = certificate.deployment_targets, certificate.deployment_confirmed
    if state == DeploymentState.DEPLOYING:
        return deploying_text(total) + (f" ({confirmed} confirmed)" if confirmed else "")
    if state == DeploymentState.FAILED:
        return f"deployment failed at {total - confirmed} of {destinations_text(total)}"
    if state == DeploymentState.DEPLOYED:
        return f"deployed to {destinations_text(total)}"
    return "no sync destinations"


def suffixes(certificates: Sequence[Any]) -> dict[int, str]:
    """What follows "renewed as X" for each certificate: "; deploying to 2 destinations" while some
    destination has not confirmed it, "; deployed to 2 destinations" once all did, "" when it goes nowhere.
    A certificate the deploying app has not seen yet (its commit callbacks still to run) is asked of the
    planners."""
    unseen = [c for c in certificates if c.deployment_state == DeploymentState.NONE]
    going = planned(unseen) if unseen else {}
    said = {}
    for cert in certificates:
        if cert.deployment_state != DeploymentState.NONE:
            said[cert.pk] = "; " + state_text(cert)
        else:
            said[cert.pk] = f"; {deploying_text(going[cert.pk])}" if going.get(cert.pk) else ""
    return said


def suffix(certificate: Any) -> str:
    return suffixes([certificate])[certificate.pk]


DEPLOYED = DeploymentState.DEPLOYED
UNCONFIRMED = frozenset({DeploymentState.DEPLOYING, DeploymentState.FAILED})
FIELDS = ("deployment_state", "deployment_targets", "deployment_confirmed", "deployed_at")
