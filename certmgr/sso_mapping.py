"""Single sign-on: which organization roles an identity provider's groups grant (pure: no Django).

The map is ``CERTMGR_OIDC_ROLE_MAP``, JSON ``{"<group claim value>": "<org-slug>:<role>"}`` (or a list of
such strings, for a group that grants roles in several organizations). A user in several mapped groups gets
the highest role each organization is granted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# Highest last; the same names as certmgr.permissions.Role (kept here so this module imports no Django).
ROLES = ("auditor", "operator", "admin")


class RoleMapError(ValueError):
    """The configured map cannot be read; the message says which entry and why."""


RoleMap = dict[str, list[tuple[str, str]]]  # group -> [(organization slug, role)]


def parse_role_map(raw: Any) -> RoleMap:
    """Read the map from its JSON text (or an already decoded object); raise RoleMapError naming the fault."""
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise RoleMapError(f"CERTMGR_OIDC_ROLE_MAP is not valid JSON: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise RoleMapError('CERTMGR_OIDC_ROLE_MAP must be a JSON object: {"<group>": "<org-slug>:<role>"}')
    parsed: RoleMap = {}
    for group, grants in raw.items():
        entries = grants if isinstance(grants, list) else [grants]
        parsed[str(group)] = [_grant(str(group), entry) for entry in entries]
    return parsed


def _grant(group: str, entry: Any) -> tuple[str, str]:
    if not isinstance(entry, str) or entry.count(":") != 1:
        raise RoleMapError(
            f'CERTMGR_OIDC_ROLE_MAP: group {group!r} maps to {entry!r}; write "<org-slug>:<role>"'
        )
    slug, role = (part.strip() for part in entry.split(":"))
    if not slug:
        raise RoleMapError(f"CERTMGR_OIDC_ROLE_MAP: group {group!r} names no organization slug")
    if role not in ROLES:
        raise RoleMapError(
            f"CERTMGR_OIDC_ROLE_MAP: group {group!r} maps to role {role!r}; choose one of {', '.join(ROLES)}"
        )
    return slug, role


def claim_values(claims: Mapping[str, Any], name: str) -> list[str]:
    """The values of the groups claim ``name``; a dotted name reaches into nested objects
    (``realm_access.roles``). A single string counts as one group; a missing claim as none."""
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return []
        value = value[part]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value if isinstance(v, str | int)]
    return []


def granted_roles(groups: list[str], role_map: RoleMap) -> dict[str, str]:
    """Organization slug -> the highest role any of ``groups`` grants in it."""
    granted: dict[str, str] = {}
    for group in groups:
        for slug, role in role_map.get(group, []):
            if slug not in granted or ROLES.index(role) > ROLES.index(granted[slug]):
                granted[slug] = role
    return granted


def mapped_organizations(role_map: RoleMap) -> set[str]:
    """The organizations whose memberships single sign-on manages (the map names them)."""
    return {slug for grants in role_map.values() for slug, _ in grants}
