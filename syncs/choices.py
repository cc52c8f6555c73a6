"""The kinds of sync destination and the states of a sync run (pure: no Django)."""

from __future__ import annotations

from certmgr.choices import Choices


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
