"""Admin logins: throttled per user name and per client address (django-axes), and every login, logout,
failure and lockout in the audit log, in the logs of the organizations the user belongs to.

A wrong one-time code at the second step (``certmgr.two_factor``) is a failed login too: it is sent as
``user_login_failed`` with ``second_factor`` in the credentials, so django-axes counts it toward the same
lockout and it is audited as ``auth.two_factor_failed``."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.dispatch import receiver

from certmgr import audit
from certmgr.actors import Actor


class ThrottledLoginBackend(AxesStandaloneBackend):
    """django-axes' lockout check. A call without a request (code, tests' ``Client.login``) comes from no
    one who could guess passwords over HTTP, so it is not throttled; every web login has its request."""

    def authenticate(
        self, request: Any = None, username: str | None = None, password: str | None = None, **kw
    ):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kw)


def _organizations(user: Any) -> list[int | None]:
    if user is None or not getattr(user, "pk", None):
        return [None]
    return list(user.memberships.values_list("organization_id", flat=True)) or [None]


def record_for_user(
    action: str,
    user: Any,
    *,
    actor: Actor | None = None,
    target: Any = None,
    outcome: str = "success",
    error: str = "",
    **details: Any,
) -> None:
    """One event in the chain of every organization ``user`` belongs to (chain 0 if none). The actor is the
    user themself unless given."""
    if actor is None:
        actor = (
            Actor.for_user(user)
            if user is not None and getattr(user, "pk", None)
            else Actor.system("anonymous")
        )
    with transaction.atomic():
        for org_id in _organizations(user):
            audit.record(actor, action, target, organization=org_id, outcome=outcome, error=error, **details)


def _user_named(username: str | None) -> Any:
    if not username:
        return None
    return get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()


def record_failure(user: Any, error: str, **details: Any) -> None:
    """A sign-in refused or failed outside the password form (single sign-on), in the same events."""
    record_for_user("auth.login_failed", user, outcome="failure", error=error, **details)


SSO_BACKEND = "certmgr.sso_login.SingleSignOnBackend"


def _method(user: Any) -> str:
    # ``authenticate`` marks the user with the backend that let them in.
    return "sso" if getattr(user, "backend", "") == SSO_BACKEND else "password"


@receiver(user_logged_in)
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record_for_user("auth.login", user, method=_method(user))


@receiver(user_logged_out)
def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        record_for_user("auth.logout", user)


@receiver(user_login_failed)
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    if request is None or getattr(request, "axes_locked_out", False) or "username" not in credentials:
        # Not a web login, already locked out (the lockout itself is one event), or not the password form
        # (single sign-on records its own failures).
        return
    username = str(credentials.get("username") or "")[:150]
    if credentials.get("second_factor"):
        record_for_user(
            "auth.two_factor_failed",
            _user_named(username),
            outcome="failure",
            error=str(credentials.get("reason") or "wrong one-time code"),
            username=username,
            method=credentials["second_factor"],
        )
        return
    record_for_user(
        "auth.login_failed",
        _user_named(username),
        outcome="failure",
        error="wrong user name or password",
        username=username,
        method="password",
    )


@receiver(user_locked_out)
def _locked_out(
    sender: Any, request: Any, username: str | None = None, ip_address: str | None = None, **kwargs: Any
) -> None:
    record_for_user(
        "auth.locked_out",
        _user_named(username),
        outcome="failure",
        error="too many failed logins: locked out",
        username=(username or "")[:150],
        address=ip_address,
    )
