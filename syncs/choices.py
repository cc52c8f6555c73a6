"""The kinds of sync destination and the states of a sync run (pure: no Django)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from certmgr.choices import Choices
from pki.choices import DeploymentState


class DestinationKind(Choices):
    AWS_ACM = "aws_acm", "AWS Certificate Manager"
    AWS_SECRETS_MANAGER = "aws_secrets_manager", "AWS Secrets Manager"
    SSH = "ssh", "SSH host (files and a reload command)"
    AZURE_KEY_VAULT = "azure_key_vault", "Azure Key Vault certificates"
    WEBHOOK = "webhook", "HTTPS push (signed webhook)"


# Which app connection kind each destination kind runs on (dnsproviders.credentials.Kind values).
CONNECTION_KIND = {
    DestinationKind.AWS_ACM: "aws",
    DestinationKind.AWS_SECRETS_MANAGER: "aws",
    DestinationKind.SSH: "ssh",
    DestinationKind.AZURE_KEY_VAULT: "azure",
    DestinationKind.WEBHOOK: "webhook",
}

# Destinations whose due runs are run together, per destination, with one finishing step after all pushes
# (SSH: one reload of the server however many certificates were written).
BATCHED = frozenset({DestinationKind.SSH})

# Destinations that cannot take a certificate without its private key.
NEEDS_PRIVATE_KEY = frozenset({DestinationKind.AWS_ACM, DestinationKind.AZURE_KEY_VAULT})


class RunStatus(Choices):
    PENDING = "pending", "Pending"  # waiting for a worker, or for its next attempt (next_attempt_at)
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"  # every attempt failed
    SUPERSEDED = "superseded", "Superseded"  # a newer certificate's run took its place first


class RunAction(Choices):
    PUSH = "push", "Deploy"
    REMOVE = "remove", "Remove"


class RunTrigger(Choices):
    ISSUANCE = "issuance", "Issuance or renewal"
    MANUAL = "manual", "Sync now"
    DRIFT = "drift", "Drift check"
    SCHEDULE = "schedule", "Schedule"
    REVOCATION = "revocation", "Revocation"
    EXPIRY = "expiry", "Expiry"


FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SUPERSEDED})
OPEN = frozenset({RunStatus.PENDING, RunStatus.RUNNING})


def deployment_state(
    pairs: Mapping[tuple[int, str], Sequence[tuple[str, datetime | None]]], *, replaced: bool
) -> tuple[str, int, int, datetime | None]:
    """(state, destinations, confirmed, deployed_at) from a certificate's push runs per (destination, name).

    A place is confirmed by a succeeded run, pending while a run is open, failed when its runs failed; a
    place whose runs were all superseded does not count, nor, once the certificate was renewed, one that
    never confirmed it (its renewal goes there instead)."""
    confirmed: list[datetime] = []
    pending = failed = 0
    for runs in pairs.values():
        done = [at for status, at in runs if status == RunStatus.SUCCEEDED and at is not None]
        if done:
            confirmed.append(min(done))
        elif any(status in OPEN for status, _ in runs):
            pending += 1
        elif not replaced and any(status == RunStatus.FAILED for status, _ in runs):
            failed += 1
    total = len(confirmed) + pending + failed
    if not total:
        return DeploymentState.NONE, 0, 0, None
    if pending:
        return DeploymentState.DEPLOYING, total, len(confirmed), None
    if failed:
        return DeploymentState.FAILED, total, len(confirmed), None
    return DeploymentState.DEPLOYED, total, total, max(confirmed)
