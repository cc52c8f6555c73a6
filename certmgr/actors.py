"""Who is acting: a signed-in user, an API token, or a system task.

Every service takes an ``Actor``. It answers "in which organizations may I do this action?", which is
all that tenancy and roles need, so the admin, the API, commands and tasks share one answer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from certmgr.permissions import Action, lower_role, role_allows

if TYPE_CHECKING:
    from typing import TypeAlias

    from django.contrib.auth.models import AnonymousUser, User
    from django.http import HttpRequest
    from rest_framework.request import Request
    from typing_extensions import TypeIs

    from certmgr.models import ApiToken


@dataclass
class Actor:
    kind: str  # "user" | "token" | "system"
    label: str
    user: User | AnonymousUser | None = None
    token: ApiToken | None = None
    _roles: dict[int, str] | None = field(default=None, repr=False)

    # --- constructors ---------------------------------------------------------------------------
    @classmethod
    def for_user(cls, user: User | AnonymousUser) -> Actor:
        return cls(kind="user", label=user.get_username(), user=user)

    @classmethod
    def for_token(cls, token: ApiToken) -> Actor:
        return cls(kind="token", label=f"token {token.prefix} ({token.name})", user=token.user, token=token)

    @classmethod
    def system(cls, task: str) -> Actor:
        return cls(kind="system", label=task)

    # --- questions ------------------------------------------------------------------------------
    @property
    def is_superuser(self) -> bool:
        return self.kind == "system" or bool(
            self.user is not None and self.token is None and self.user.is_active and self.user.is_superuser
        )

    @property
    def actor_id(self) -> str:
        if self.token is not None:
            return str(self.token.pk)
        if self.user is not None:
            return str(self.user.pk)
        return ""

    def roles(self) -> dict[int, str]:
        """organization id -> effective role. A token is capped by its owner's current membership."""
        if self._roles is None:
            if self.user is None or not self.user.is_active:
                self._roles = {}
            else:
                # Through the user's reverse relation: this module stays below the models whose querysets
                # restrict by actor.
                memberships = dict(self.user.memberships.values_list("organization_id", "role"))
                if self.token is not None:
                    own = memberships.get(self.token.organization_id)
                    self._roles = (
                        {self.token.organization_id: lower_role(self.token.role, own)} if own else {}
                    )
                else:
                    self._roles = memberships
        return self._roles

    def role_in(self, organization_id: int) -> str | None:
        return self.roles().get(organization_id)

    def can(self, action: Action | str, organization_id: int | None) -> bool:
        if self.is_superuser:
            return True
        return organization_id is not None and role_allows(self.role_in(organization_id), action)

    def organization_ids(self, action: Action | str) -> set[int] | None:
        """Organizations where ``action`` is allowed; None means every organization."""
        if self.is_superuser:
            return None
        return {org for org, role in self.roles().items() if role_allows(role, action)}


if TYPE_CHECKING:
    #: What a door has in hand: an actor already, a request (admin or API) or a user.
    ActorSource: TypeAlias = Actor | HttpRequest | Request | User | AnonymousUser


def _is_request(who: ActorSource) -> TypeIs[HttpRequest | Request]:
    return hasattr(who, "user") and hasattr(who, "META")  # an HttpRequest or DRF Request


def as_actor(who: ActorSource) -> Actor:
    """Accept an Actor, a user or a request (admin and API doors hand over what they have)."""
    if isinstance(who, Actor):
        return who
    actor = getattr(who, "certmgr_actor", None)
    if isinstance(actor, Actor):
        return actor
    if _is_request(who):
        auth = getattr(who, "auth", None)
        # An API token (``ApiToken.is_api_token``) acts with its own, capped role, never its owner's.
        if auth is not None and getattr(auth, "is_api_token", False):
            actor = Actor.for_token(auth)
        else:
            actor = Actor.for_user(who.user)
        with contextlib.suppress(AttributeError):
            # A per-request cache that neither request class declares.
            setattr(who, "certmgr_actor", actor)  # noqa: B010
        return actor
    return Actor.for_user(who)
