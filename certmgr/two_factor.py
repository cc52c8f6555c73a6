"""Two-factor authentication for the admin: authenticator apps (TOTP, through django-otp) and the rule of an
organization that says which of its roles must use one.

A password login is half a login for a user who has a device, or who must have one: ``pending`` says so,
and ``certmgr.two_factor_middleware`` keeps such a session on the second step (the code, or enrolling a
device) until ``verify`` or ``confirm_enrollment`` marks it verified. API tokens are not concerned.

Every state change here is audited in each organization of the user: enrolling, removing and resetting a
device, a verified or wrong code at login (``auth.two_factor_*``), changing an organization's rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import django_otp
from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth import get_user_model, logout
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.dispatch import receiver
from django.utils import timezone

from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict, PermissionDenied
from certmgr.logins import record_for_user
from certmgr.middleware import client_ip
from certmgr.models import Membership, Organization, TOTPDevice
from certmgr.permissions import ROLE_RANK, Action, TwoFactorRequirement, two_factor_required

if TYPE_CHECKING:
    from django.http import HttpRequest

METHOD = "totp"
WRONG_CODE = "That code is not valid. Enter the current 6-digit code from your authenticator app."


class LockedOut(Exception):
    """Too many failed logins (passwords and codes alike) for this user or address: signed out."""


# --- who must, who has ---------------------------------------------------------------------------------
def required_for(user: Any) -> bool:
    """Whether ``user`` must sign in to the admin with a second factor: a role one of their organizations
    requires it of, or a superuser when ``CERTMGR_TWO_FACTOR_SUPERUSERS`` is on."""
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser and settings.CERTMGR_TWO_FACTOR_SUPERUSERS:
        return True
    return _required_memberships(user).exists()


def _required_memberships(user: Any) -> Any:
    """The user's memberships whose organization's rule covers their role (one query, for every page)."""
    covered = Q()
    for requirement in TwoFactorRequirement.values:
        if requirement:
            roles = [role for role in ROLE_RANK if two_factor_required(requirement, role)]
            covered |= Q(organization__two_factor_required=requirement, role__in=roles)
    return Membership.objects.filter(covered, user=user)


def device_of(user: Any) -> TOTPDevice | None:
    """The user's confirmed authenticator app, if any."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def pending(request: HttpRequest) -> str | None:
    """The second step this signed-in session still owes: "verify" (enter a code), "enroll" (set up a
    device first), or None (verified, or a second factor is neither set up nor required)."""
    user = request.user
    if not user.is_authenticated or user.is_verified():  # type: ignore[attr-defined]  # django-otp adds it
        return None
    return _second_step(user)


def _second_step(user: Any) -> str | None:
    # every admin page of a session not yet verified asks this: one query answers both questions
    has_device, required = (
        get_user_model()
        .objects.filter(pk=user.pk)
        .values_list(
            Exists(TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)),
            Exists(_required_memberships(user)),
        )
        .get()
    )
    if has_device:
        return "verify"
    superuser_rule = user.is_superuser and settings.CERTMGR_TWO_FACTOR_SUPERUSERS
    return "enroll" if required or superuser_rule else None


def _login_complete(request: HttpRequest, user: Any) -> None:
    """django-axes forgets the failed logins of this user name and address (its reset on success, moved
    here: a password that still owes a code is not a success)."""
    AxesProxyHandler.reset_attempts(
        ip_address=client_ip(request), username=user.get_username(), ip_or_username=True
    )


@receiver(user_logged_in)
def _password_accepted(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if request is not None and _second_step(user) is None:
        _login_complete(request, user)


# --- enrolment -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Enrollment:
    device: TOTPDevice
    secret: str  # base32, for typing into the app; shown on the enrolment page only
    uri: str  # otpauth:// URI, the content of the QR code

    @property
    def secret_groups(self) -> str:
        return " ".join(self.secret[i : i + 4] for i in range(0, len(self.secret), 4))


def _enrollment(device: TOTPDevice) -> Enrollment:
    return Enrollment(device=device, secret=device.base32_key, uri=_otpauth_uri(device))


def enrollment_in_progress(user: Any) -> Enrollment | None:
    """The set-up the user started and has not confirmed yet (shown again after a wrong code)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return _enrollment(device) if device is not None else None


def _otpauth_uri(device: TOTPDevice) -> str:
    issuer = settings.CERTMGR_TWO_FACTOR_ISSUER.replace(":", "")
    label = f"{issuer}:{device.user.get_username()}"
    params = urlencode(
        {"secret": device.base32_key, "algorithm": "SHA1", "digits": device.digits, "period": device.step}
    )
    return f"otpauth://totp/{quote(label)}?{params}&issuer={quote(issuer)}"


def start_enrollment(user: Any) -> Enrollment:
    """A new, unconfirmed device with a fresh key for ``user`` (replacing an earlier unconfirmed one, so a
    key is shown once). Nothing is audited until the user confirms it with a code."""
    with transaction.atomic():
        if TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).exists():
            raise Conflict(
                "You already use an authenticator app. Remove it first to set up another one.", field="code"
            )
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    return _enrollment(device)


def confirm_enrollment(request: HttpRequest, code: str) -> TOTPDevice:
    """Confirm the user's new device with a code from it; the session counts as verified from then on."""
    user = request.user

    def confirm(device: TOTPDevice) -> None:
        device.confirmed = True
        device.save(update_fields=["confirmed"])

    device = _change_with_code(
        user,
        code,
        "two_factor.enroll",
        confirmed=False,
        change=confirm,
        missing="Start again: this set-up has expired or was finished elsewhere.",
    )
    _mark_verified(request, device)
    _login_complete(request, user)
    return device


# --- the second step of a login ----------------------------------------------------------------------------
def verify(request: HttpRequest, code: str) -> TOTPDevice:
    """Check a code at login. A wrong one is a failed login: audited, throttled by the device (exponential
    back-off) and counted by django-axes toward the lockout of the user and the address; at the lockout the
    session is signed out (``LockedOut``)."""
    user = request.user
    username = user.get_username()
    if AxesProxyHandler.is_locked(request, {"username": username}):
        _sign_out_locked(request)
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
        reason = _check(device, code)
    if device is None:
        raise ValidationError({"code": ["You have no authenticator app any more: sign in again."]})
    if reason is not None:
        user_login_failed.send(
            sender=__name__,
            credentials={"username": username, "second_factor": METHOD, "reason": reason},
            request=request,
        )
        if getattr(request, "axes_locked_out", False):
            _sign_out_locked(request)
        raise ValidationError({"code": [reason]})
    with transaction.atomic():
        record_for_user("auth.two_factor_verified", user, method=METHOD)
    _mark_verified(request, device)
    _login_complete(request, user)
    return device


def _sign_out_locked(request: HttpRequest) -> None:
    request.axes_locked_out = True  # type: ignore[attr-defined]  # AxesMiddleware answers with its page
    logout(request)
    raise LockedOut("too many failed logins")


def _check(device: TOTPDevice | None, code: str) -> str | None:
    """None if ``code`` is accepted by ``device``, else why not (the device's back-off, or a wrong code)."""
    if device is None:
        return "no device"
    allowed, info = device.verify_is_allowed()
    if device.verify_token(code):
        return None
    if not allowed and info and info.get("locked_until"):
        wait = max(1, int((info["locked_until"] - timezone.now()).total_seconds()) + 1)
        return f"Too many wrong codes. Wait {wait} second{'s' if wait > 1 else ''} before trying again."
    return WRONG_CODE


def _change_with_code(
    user: Any, code: str, action: str, *, confirmed: bool, change: Callable[[TOTPDevice], Any], missing: str
) -> TOTPDevice:
    """Apply ``change`` to the user's device if ``code`` is a current code from it; audit either way."""
    with transaction.atomic():  # the throttling counter of a wrong code is kept: no exception inside
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=confirmed).first()
        refusal = _check(device, code)
        if device is not None and refusal is None:
            change(device)
            record_for_user(action, user, target=_user_target(user), method=METHOD)
    if device is None:
        raise ValidationError({"code": [missing]})
    if refusal is not None:
        record_for_user(
            action, user, target=_user_target(user), outcome="failure", error=refusal, method=METHOD
        )
        raise ValidationError({"code": [refusal]})
    return device


def _mark_verified(request: HttpRequest, device: TOTPDevice) -> None:
    request.session.cycle_key()  # a new session id for the now complete login
    django_otp.login(request, device)


# --- removal and reset -------------------------------------------------------------------------------------
def remove_device(request: HttpRequest, code: str) -> None:
    """The user removes their own authenticator app, confirming with a current code from it. If one of their
    organizations requires a second factor, the next admin page asks them to set up a new one."""
    user = request.user
    _change_with_code(
        user,
        code,
        "two_factor.remove",
        confirmed=True,
        change=lambda device: TOTPDevice.objects.filter(user=user).delete(),
        missing="You have no authenticator app.",
    )
    request.session.pop(django_otp.DEVICE_ID_SESSION_KEY, None)


def reset_two_factor(user: Any, *, actor: Actor) -> int:
    """Remove every device of ``user`` (a member who lost their phone): they set up a new one at their next
    sign-in if they must. Only someone who manages the members of every organization the user belongs to
    may (or a superuser): an administrator of one organization must not weaken a login that guards another.
    Returns the number of devices removed."""
    actor = as_actor(actor)
    target = _user_target(user)
    with audit.failures(actor, "two_factor.reset", target, organization=_first_organization(user, actor)):
        org_ids = list(Membership.objects.filter(user=user).values_list("organization_id", flat=True))
        if not actor.is_superuser:
            if user.is_superuser or not org_ids:
                raise PermissionDenied(
                    "only a superuser can reset the two-factor authentication of this user"
                )
            if not all(actor.can(Action.MANAGE_MEMBERS, org_id) for org_id in org_ids):
                raise PermissionDenied(
                    f"{user.get_username()} also belongs to an organization whose members you do not manage; "
                    "ask a superuser to reset their two-factor authentication"
                )
        with transaction.atomic():
            removed, _ = TOTPDevice.objects.filter(user=user).delete()
            record_for_user("two_factor.reset", user, actor=actor, target=target, devices=removed)
    return removed


def set_requirement(organization: Organization, requirement: str, *, actor: Actor) -> Organization:
    """Which roles of ``organization`` must use a second factor (``TwoFactorRequirement``)."""
    actor = as_actor(actor)
    if requirement not in TwoFactorRequirement.values:
        choices = ", ".join(repr(v) for v in TwoFactorRequirement.values)
        raise ValidationError({"two_factor_required": [f"Choose one of: {choices}."]})
    with audit.failures(actor, "organization.two_factor", organization, required_for=requirement):
        if not actor.can(Action.MANAGE_MEMBERS, organization.pk):
            raise PermissionDenied("your role does not allow changing this organization's rules")
        with transaction.atomic():
            organization = Organization.objects.select_for_update().get(pk=organization.pk)
            old = organization.two_factor_required
            organization.two_factor_required = requirement
            organization.save(update_fields=["two_factor_required"])
            audit.record(
                actor, "organization.two_factor", organization, old_required_for=old, required_for=requirement
            )
    return organization


def _user_target(user: Any) -> tuple[str, Any, str]:
    return ("auth.user", user.pk, user.get_username())


def _first_organization(user: Any, actor: Actor) -> int | None:
    """Where a refused reset is recorded: an organization of the user that the actor belongs to."""
    shared = set(actor.roles()) & set(
        Membership.objects.filter(user=user).values_list("organization_id", flat=True)
    )
    return min(shared) if shared else None
