"""Member invitations: the only way an organization administrator brings someone in.

An administrator never attaches an existing account by typing its user name (that would let them pull in a
user of another organization, and tell which names exist). They invite an e-mail address; the one-time link
goes there; whoever opens it signs in (an existing account) or creates an account under a free user name, and
accepts. Only the link's SHA-256 digest is stored, like API tokens.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict, NotFound
from certmgr.models import Invitation, Membership, Organization
from certmgr.permissions import Action, Role
from certmgr.services import require, secret_digest

if TYPE_CHECKING:
    from django.contrib.auth.models import User as UserModel

logger = logging.getLogger(__name__)
User = get_user_model()

# One message for every link that cannot be used (unknown, used, expired, revoked): the page tells nothing
# about which, so a guessed or an old link learns nothing.
INVALID_LINK = "This invitation link is not valid: it may have expired, been used or been withdrawn."


@dataclass
class SentInvitation:
    invitation: Invitation
    link: str  # shown once to the inviting administrator (for when e-mail is not set up)
    emailed: bool
    email_error: str = ""


def link_for(token: str) -> str:
    return f"{settings.CERTMGR_BASE_URL}/invite/{token}/"


def invite(organization: Organization, email: str, role: str, *, actor: Actor) -> SentInvitation:
    """Invite ``email`` to join ``organization`` as ``role``; e-mail the one-time link."""
    actor = as_actor(actor)
    email = (email or "").strip()
    with audit.failures(actor, "invitation.create", organization, email=email[:254], role=role):
        require(actor, Action.MANAGE_MEMBERS, organization.pk)
        try:
            validate_email(email)
        except ValidationError as exc:
            raise ValidationError({"email": ["Enter a valid e-mail address."]}) from exc
        if role not in Role.values:
            raise ValidationError({"role": [f"Choose one of: {', '.join(Role.values)}."]})
        token = secrets.token_urlsafe(32)
        with transaction.atomic():
            invitation = Invitation.objects.create(
                organization=organization,
                email=email,
                role=role,
                digest=secret_digest(token),
                invited_by=actor.user if actor.user is not None and actor.user.is_authenticated else None,
                expires_at=timezone.now() + timedelta(days=settings.CERTMGR_INVITATION_DAYS),
            )
            audit.record(actor, "invitation.create", invitation, email=email, role=role)
    sent = SentInvitation(invitation, link_for(token), emailed=False)
    try:
        _send(invitation, sent.link)
        sent.emailed = True
    except (OSError, mail.BadHeaderError) as exc:  # smtplib's errors are OSErrors
        logger.warning("invitation %s: e-mail not sent: %s", invitation.pk, exc.__class__.__name__)
        sent.email_error = "the e-mail could not be sent (check the EMAIL_* settings); pass the link on"
    return sent


def _send(invitation: Invitation, link: str) -> None:
    days = settings.CERTMGR_INVITATION_DAYS
    body = (
        f"You are invited to join {invitation.organization.name} in certmgr as "
        f"{invitation.get_role_display()}.\n\n"
        f"Open this link to accept (valid for {days} days, once):\n{link}\n\n"
        "If you did not expect this invitation, ignore this message.\n"
    )
    connection = mail.get_connection(fail_silently=False, timeout=settings.CERTMGR_OUTBOUND_TIMEOUT)
    mail.EmailMessage(
        f"Invitation to {invitation.organization.name} (certmgr)",
        body,
        to=[invitation.email],
        connection=connection,
    ).send()


def revoke(invitation: Invitation, *, actor: Actor) -> Invitation:
    actor = as_actor(actor)
    with audit.failures(actor, "invitation.revoke", invitation):
        require(actor, Action.MANAGE_MEMBERS, invitation.organization_id)
        with transaction.atomic():
            invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
            if invitation.state() != "pending":
                raise Conflict(f"the invitation is {invitation.state()}, not pending")
            invitation.revoked_at = timezone.now()
            invitation.save(update_fields=["revoked_at"])
            audit.record(actor, "invitation.revoke", invitation, email=invitation.email)
    return invitation


def pending(token: str) -> Invitation:
    """The pending invitation a link names, or NotFound with the one message for every unusable link."""
    invitation = (
        Invitation.objects.select_related("organization")
        .filter(digest=secret_digest(token or ""))
        .pending(timezone.now())
        .first()
    )
    if invitation is None:
        raise NotFound(INVALID_LINK)
    return invitation


def accept(token: str, user: UserModel) -> Membership:
    """``user`` (signed in) accepts: they become a member with the invited role, once."""
    with transaction.atomic():
        invitation = pending(token)
        invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
        if invitation.state() != "pending":
            raise NotFound(INVALID_LINK)
        if Membership.objects.filter(organization_id=invitation.organization_id, user=user).exists():
            raise Conflict(f"you are already a member of {invitation.organization.name}")
        membership = Membership.objects.create(
            organization_id=invitation.organization_id, user=user, role=invitation.role
        )
        if not user.is_staff:  # members sign in to the admin
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        invitation.accepted_at = timezone.now()
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_at", "accepted_by"])
        audit.record(
            user,
            "invitation.accept",
            invitation,
            email=invitation.email,
            user=user.get_username(),
            role=invitation.role,
        )
        audit.record(
            user,
            "membership.create",
            membership,
            user=user.get_username(),
            role=invitation.role,
            invitation=invitation.pk,
        )
    return membership


def accept_with_new_account(token: str, *, username: str, password: str) -> Membership:
    """Create an account under a free user name for whoever holds the link, then accept for it."""
    username = (username or "").strip()
    invitation = pending(token)
    errors: dict[str, list[str]] = {}
    if not username or len(username) > 150:
        errors["username"] = ["Enter a user name of 1 to 150 characters."]
    else:
        try:
            User.username_validator(username)
        except ValidationError as exc:
            errors["username"] = list(exc.messages)
    if not errors:
        try:
            validate_password(password, User(username=username, email=invitation.email))
        except ValidationError as exc:
            errors["password"] = list(exc.messages)
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            if User.objects.filter(username__iexact=username).exists():
                raise Conflict("this user name is taken: choose another", field="username")
            user = User.objects.create_user(
                username, email=invitation.email, password=password, is_staff=True
            )
            audit.record(
                user,
                "user.create",
                ("auth.user", user.pk, username),
                organization=invitation.organization_id,
                via="invitation",
            )
            return accept(token, user)
    except IntegrityError as exc:  # the same name, created a moment ago
        raise Conflict("this user name is taken: choose another", field="username") from exc
