"""Roles and what each may do: the one table used by the admin, the API, commands and services."""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class Role(models.TextChoices):
    AUDITOR = "auditor", "Auditor (read-only)"
    OPERATOR = "operator", "Operator (security staff)"
    ADMIN = "admin", "Administrator"


class TwoFactorRequirement(models.TextChoices):
    """Which members of an organization must use a second factor: a role and every role above it."""

    NOBODY = "", "Nobody (optional for everyone)"
    ADMIN = "admin", "Administrators"
    OPERATOR = "operator", "Operators and administrators"
    EVERYONE = "auditor", "Every member"


class Action(StrEnum):
    VIEW = "view"  # read the inventory, connections' metadata, CAs, subscribers, orders
    VIEW_AUDIT = "audit.view"  # read the audit log
    MANAGE = "manage"  # create, change, delete connections, CAs, policies, subscribers; issue, renew, revoke
    EXPORT_KEY = "key.export"  # download a certificate's private key
    CREATE_TOKEN = "token.create"  # create API tokens for oneself (role capped at one's own)
    MANAGE_MEMBERS = "members.manage"  # add and remove members, change roles, manage everyone's tokens


_AUDITOR = frozenset({Action.VIEW, Action.VIEW_AUDIT, Action.CREATE_TOKEN})
_OPERATOR = _AUDITOR | {Action.MANAGE, Action.EXPORT_KEY}
_ADMIN = _OPERATOR | {Action.MANAGE_MEMBERS}

ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    Role.AUDITOR: _AUDITOR,
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.ADMIN: frozenset(_ADMIN),
}

ROLE_RANK: dict[str, int] = {Role.AUDITOR: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def role_allows(role: str | None, action: Action | str) -> bool:
    return role is not None and action in ROLE_ACTIONS.get(role, frozenset())


def role_needed(action: Action | str) -> str:
    """The label of the lowest role that may do ``action``, for refusals ("needs the Operator role")."""
    for role in sorted(ROLE_ACTIONS, key=ROLE_RANK.__getitem__):
        if action in ROLE_ACTIONS[role]:
            return ROLE_NAMES[role]
    return "superuser"


ROLE_NAMES: dict[str, str] = {Role.AUDITOR: "Auditor", Role.OPERATOR: "Operator", Role.ADMIN: "Administrator"}


def refusal(action: Action | str, what: str = "this") -> str:
    """A refusal that says which role would be enough, never the action's code."""
    return f"{what[:1].upper()}{what[1:]} needs the {role_needed(action)} role in this organization."


def lower_role(a: str, b: str) -> str:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


def two_factor_required(requirement: str, role: str) -> bool:
    """Whether a member with ``role`` must use a second factor under an organization's ``requirement``."""
    return bool(requirement) and ROLE_RANK[role] >= ROLE_RANK[requirement]
