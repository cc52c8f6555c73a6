"""Single sign-on through OpenID Connect: the provider's configuration and the sign-in service.

``sign_in`` is the one state change of a sign-in: it finds or creates the user behind the provider's
verified claims and makes their memberships in the organizations the role map names match the groups the
provider sent, through the membership services (so each change is audited like an administrator's).
Memberships in organizations the map does not name are left as administrators set them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from certmgr import audit, logins, outbound, services
from certmgr.actors import Actor
from certmgr.errors import OutboundRefused, PermissionDenied, ServiceError
from certmgr.models import Membership, Organization, SingleSignOnIdentity
from certmgr.sso_mapping import RoleMap, claim_values, granted_roles, mapped_organizations, parse_role_map

logger = logging.getLogger(__name__)

DISCOVERY_TTL_SECONDS = 3600.0
ALLOWED_NETWORKS = "CERTMGR_OIDC_ALLOWED_NETWORKS"
# Claims kept in audit details: enough to say who signed in and why, never a token.
_MAX_GROUPS_AUDITED = 50


class SignInRefused(PermissionDenied):
    """The provider vouched for the user, but certmgr does not let them in; the message says why."""


class ProviderUnavailable(ServiceError):
    status = 503
    code = "sso_unavailable"


def enabled() -> bool:
    return bool(settings.CERTMGR_OIDC_ISSUER and settings.CERTMGR_OIDC_CLIENT_ID)


def role_map() -> RoleMap:
    return parse_role_map(settings.CERTMGR_OIDC_ROLE_MAP)


def session() -> requests.Session:
    """Every request to the provider: through the outbound guard, its private networks allowed by
    CERTMGR_OIDC_ALLOWED_NETWORKS (the endpoints come from a document the provider serves)."""
    return outbound.session(setting=ALLOWED_NETWORKS)


# --- the provider ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str


_discovered: dict[str, tuple[float, Provider]] = {}


def provider() -> Provider:
    """The configured issuer's endpoints, from its discovery document (kept for an hour)."""
    issuer = settings.CERTMGR_OIDC_ISSUER.rstrip("/")
    cached = _discovered.get(issuer)
    if cached is not None and time.monotonic() - cached[0] < DISCOVERY_TTL_SECONDS:
        return cached[1]
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        with session() as http:
            response = http.get(url, timeout=settings.CERTMGR_OUTBOUND_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError, OutboundRefused) as exc:
        raise ProviderUnavailable(
            f"the identity provider's discovery document {url} could not be read: {exc}"
        ) from exc
    if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer:
        found = document.get("issuer") if isinstance(document, dict) else None
        raise ProviderUnavailable(
            f"the discovery document {url} names the issuer {found!r}, not CERTMGR_OIDC_ISSUER {issuer!r}"
        )
    keys = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
    missing = [key for key in keys if not document.get(key)]
    if missing:
        raise ProviderUnavailable(f"the discovery document {url} has no {', '.join(missing)}")
    found_provider = Provider(issuer=document["issuer"], **{key: str(document[key]) for key in keys})
    _discovered[issuer] = (time.monotonic(), found_provider)
    return found_provider


# --- signing in -----------------------------------------------------------------------------------
def sign_in(claims: Mapping[str, Any], *, issuer: str) -> Any:
    """The user the provider's verified ``claims`` (ID token and userinfo) name, created on first sign-in,
    with their memberships synced from the role map. Raises SignInRefused (audited) when the user may not
    enter: no mapped group, a deactivated account, a user name taken by a local account."""
    subject = str(claims.get("sub") or "")
    username = str(claims.get(settings.CERTMGR_OIDC_USERNAME_CLAIM) or "").strip()
    groups = claim_values(claims, settings.CERTMGR_OIDC_GROUPS_CLAIM)
    details: dict[str, Any] = {
        "issuer": issuer,
        "subject": subject,
        "username": username[:150],
        "groups": groups[:_MAX_GROUPS_AUDITED],
    }
    user = None
    try:
        if not subject:
            raise SignInRefused("the identity provider sent no subject ('sub') for this account")
        identity = (
            SingleSignOnIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
        )
        user = identity.user if identity is not None else None
        grants = granted_roles(groups, role_map())
        with transaction.atomic():
            if identity is None:
                identity = _first_sign_in(claims, issuer, subject, username, grants)
                user = identity.user
            elif not identity.user.is_active:
                raise SignInRefused(f"the certmgr account {identity.user.get_username()} is deactivated")
            else:
                _update_profile(identity.user, claims)
            identity.last_login_at = timezone.now()
            identity.save(update_fields=["last_login_at"])
            _sync_memberships(identity.user, grants)
        if not identity.user.is_superuser and not identity.user.memberships.exists():
            raise SignInRefused(_no_access_message(groups, grants))
    except (ServiceError, ValidationError, IntegrityError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        logins.record_failure(user, message, method="sso", **details)
        if isinstance(exc, SignInRefused):
            raise
        raise SignInRefused(message) from exc
    return identity.user


def _first_sign_in(
    claims: Mapping[str, Any], issuer: str, subject: str, username: str, grants: dict[str, str]
) -> SingleSignOnIdentity:
    """A new user for a provider account seen for the first time; refused before anything is written when
    no mapped group gives them an organization."""
    if not username:
        raise SignInRefused(
            f"the identity provider sent no {settings.CERTMGR_OIDC_USERNAME_CLAIM!r} claim to name the "
            "account by (CERTMGR_OIDC_USERNAME_CLAIM)"
        )
    if not Organization.objects.filter(slug__in=grants).exists():
        groups = claim_values(claims, settings.CERTMGR_OIDC_GROUPS_CLAIM)
        raise SignInRefused(_no_access_message(groups, grants))
    user_model = get_user_model()
    try:
        user_model.username_validator(username)
    except ValidationError as exc:
        raise SignInRefused(
            f"the user name {username!r} from the identity provider is not valid here"
        ) from exc
    if len(username) > 150 or user_model.objects.filter(username__iexact=username).exists():
        raise SignInRefused(
            f"a certmgr account named {username!r} already exists and does not sign in with this identity "
            "provider; ask a superuser to rename or remove it"
        )
    user, _ = services.get_or_create_user(username, email=str(claims.get("email") or "")[:254])
    _update_profile(user, claims, audit_changes=False)
    identity = SingleSignOnIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    audit.record(
        _actor(user), "user.create", user, organization=None, source="sso", issuer=issuer, subject=subject
    )
    return identity


_PROFILE_CLAIMS = {"email": "email", "first_name": "given_name", "last_name": "family_name"}


def _update_profile(user: Any, claims: Mapping[str, Any], *, audit_changes: bool = True) -> None:
    """The provider is the source of the user's e-mail address and names; the user name stays."""
    changed = []
    for attribute, claim in _PROFILE_CLAIMS.items():
        if claim not in claims:
            continue
        value = str(claims.get(claim) or "")[: user._meta.get_field(attribute).max_length]
        if getattr(user, attribute) != value:
            setattr(user, attribute, value)
            changed.append(attribute)
    if changed:
        user.save(update_fields=changed)
        if audit_changes:
            audit.record(_actor(user), "user.update", user, organization=None, source="sso", changed=changed)


def _sync_memberships(user: Any, grants: dict[str, str]) -> None:
    """Each organization the map names: the role the groups grant, or no membership. The provider is the
    authority there, so a group's removal demotes or removes even the last administrator."""
    actor = _actor(user)
    mapped = mapped_organizations(role_map())
    organizations = {org.slug: org for org in Organization.objects.filter(slug__in=mapped)}
    for slug in sorted(mapped - organizations.keys()):
        logger.warning("CERTMGR_OIDC_ROLE_MAP names the organization %r, which does not exist", slug)
    current = {
        m.organization.slug: m
        for m in Membership.objects.filter(user=user, organization__in=organizations.values()).select_related(
            "organization"
        )
    }
    for slug, organization in sorted(organizations.items()):
        role, membership = grants.get(slug), current.get(slug)
        if role and membership is None:
            services.add_member(organization, user, role, actor=actor)
        elif role and membership is not None and membership.role != role:
            services.change_role(membership, role, actor=actor, keep_one_admin=False)
        elif not role and membership is not None:
            services.remove_member(membership, actor=actor, keep_one_admin=False)


def _actor(user: Any) -> Actor:
    return Actor.system(f"single sign-on of {user.get_username()}")


def _no_access_message(groups: list[str], grants: dict[str, str]) -> str:
    if grants:
        return (
            "your groups map to organizations that do not exist in certmgr "
            f"({', '.join(sorted(grants))}); ask an administrator to fix CERTMGR_OIDC_ROLE_MAP"
        )
    return (
        "your identity provider account is in no group that certmgr maps to an organization "
        f"(groups: {', '.join(groups[:20]) or 'none'}); ask an administrator for access"
    )
