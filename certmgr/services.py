"""State changes of the core: organizations, memberships, API tokens, encryption-key rotation.

Every door (admin, API, management commands) calls these; each checks permission, changes rows in
one transaction and writes its audit event in that same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from certmgr import audit, encryption
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict, PermissionDenied
from certmgr.models import ApiToken, Membership, Organization
from certmgr.permissions import ROLE_RANK, Action, Role, refusal

if TYPE_CHECKING:
    from django.contrib.auth.models import User as UserModel
    from django.db import models

User = get_user_model()

TOKEN_PREFIX = "cm_"


def require(actor: Actor, action: Action | str, organization_id: int | None) -> None:
    if not actor.can(action, organization_id):
        raise PermissionDenied(refusal(action))


Row = TypeVar("Row", bound="models.Model")


def audited_delete(
    obj: Row,
    *,
    actor: Actor,
    action: str,
    permission: Action = Action.MANAGE,
    lock: bool = False,
    prepare: Callable[[Row], None] | None = None,
    after: Callable[[Row], object] | None = None,
    label: str | None = None,
    in_use: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Delete an organization's row the way every service does: ``permission`` in its organization, then
    one transaction that (``lock``) re-reads the row ``FOR UPDATE``, runs ``prepare`` on it (raise Conflict
    for what blocks the delete; clear what must go first), deletes it, runs ``after`` (what the row's going
    changes elsewhere) and records ``action`` naming the deleted row (``label``, default its text) with
    ``details``. A refusal is audited too; a row still
    referenced (PROTECT) is a Conflict saying ``in_use``."""
    actor = as_actor(actor)
    organization_id: int | None = obj.organization_id  # type: ignore[attr-defined]  # every caller's row has one
    with audit.failures(actor, action, obj):
        require(actor, permission, organization_id)
        try:
            with transaction.atomic():
                row = type(obj)._default_manager.select_for_update().get(pk=obj.pk) if lock else obj
                if prepare is not None:
                    prepare(row)
                target = (row._meta.label_lower, row.pk, str(row) if label is None else label)
                row.delete()
                if after is not None:
                    after(row)
                audit.record(actor, action, target, organization=organization_id, **(details or {}))
        except IntegrityError as exc:
            raise Conflict(in_use or f"this {obj._meta.verbose_name} is in use") from exc


# --- organizations ---------------------------------------------------------------------------------
def create_organization(name: str, *, actor: Actor) -> Organization:
    actor = as_actor(actor)
    if not actor.is_superuser:
        raise PermissionDenied("only a superuser can create organizations")
    name = name.strip()
    if not name or "\x00" in name or len(name) > 100:
        raise ValidationError({"name": ["Enter a name of 1 to 100 characters."]})
    slug = slugify(name)[:100] or "org"
    with audit.failures(actor, "organization.create", ("certmgr.organization", "", name)):
        try:
            with transaction.atomic():
                if Organization.objects.filter(name__iexact=name).exists():
                    raise Conflict(f"an organization named {name!r} already exists", field="name")
                base, n = slug, 1
                while Organization.objects.filter(slug=slug).exists():
                    n += 1
                    slug = f"{base[:95]}-{n}"
                org = Organization.objects.create(name=name, slug=slug)
                audit.record(actor, "organization.create", org, name=name)
        except IntegrityError as exc:
            raise Conflict(f"an organization named {name!r} already exists", field="name") from exc
    return org


# --- memberships -----------------------------------------------------------------------------------
def add_member(organization: Organization, user: UserModel, role: str, *, actor: Actor) -> Membership:
    actor = as_actor(actor)
    _check_role(role)
    with audit.failures(actor, "membership.create", organization, user=user.get_username(), role=role):
        require(actor, Action.MANAGE_MEMBERS, organization.pk)
        with transaction.atomic():
            if Membership.objects.filter(organization=organization, user=user).exists():
                raise Conflict(f"{user.get_username()} is already a member of {organization}", field="user")
            membership = Membership.objects.create(organization=organization, user=user, role=role)
            if not user.is_staff:  # members sign in to the admin
                user.is_staff = True
                user.save(update_fields=["is_staff"])
            audit.record(actor, "membership.create", membership, user=user.get_username(), role=role)
    return membership


def change_role(
    membership: Membership, role: str, *, actor: Actor, keep_one_admin: bool = True
) -> Membership:
    """``keep_one_admin=False`` is for single sign-on, where the identity provider decides who is admin."""
    actor = as_actor(actor)
    _check_role(role)
    with audit.failures(actor, "membership.update", membership, role=role):
        require(actor, Action.MANAGE_MEMBERS, membership.organization_id)
        with transaction.atomic():
            membership = Membership.objects.select_for_update().get(pk=membership.pk)
            old = membership.role
            if keep_one_admin and old == Role.ADMIN and role != Role.ADMIN:
                _keep_one_admin(membership)
            membership.role = role
            membership.save(update_fields=["role"])
            audit.record(actor, "membership.update", membership, old_role=old, role=role)
    return membership


def remove_member(membership: Membership, *, actor: Actor, keep_one_admin: bool = True) -> None:
    def prepare(locked: Membership) -> None:
        if keep_one_admin and locked.role == Role.ADMIN:
            _keep_one_admin(locked)
        # The member's tokens for this organization die with the membership.
        ApiToken.objects.filter(
            organization_id=locked.organization_id, user_id=locked.user_id, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())

    audited_delete(
        membership,
        actor=actor,
        action="membership.delete",
        permission=Action.MANAGE_MEMBERS,
        lock=True,
        prepare=prepare,
        details={"user": membership.user.get_username()},
    )


def _keep_one_admin(membership: Membership) -> None:
    others = Membership.objects.filter(organization_id=membership.organization_id, role=Role.ADMIN).exclude(
        pk=membership.pk
    )
    if not others.exists():
        raise Conflict("an organization must keep at least one administrator", field="role")


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": [f"Choose one of: {', '.join(Role.values)}."]})


def get_or_create_user(username: str, *, email: str = "") -> tuple[Any, bool]:
    username = username.strip()
    if not username:
        raise ValidationError({"username": ["Enter a user name."]})
    user, created = User.objects.get_or_create(username=username, defaults={"email": email, "is_staff": True})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user, created


# --- API tokens --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # shown once to the caller, never stored


def secret_digest(secret: str) -> str:
    """How one-time secrets (API tokens, invitation links) are stored: their SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_token(
    organization: Organization,
    user: UserModel,
    *,
    name: str,
    role: str,
    expires_at: datetime | None = None,
    actor: Actor,
) -> NewToken:
    """Create a token for ``user`` in ``organization``; the secret is returned once."""
    actor = as_actor(actor)
    _check_role(role)
    with audit.failures(actor, "api_token.create", organization, name=name, role=role):
        own = actor.user is not None and user.pk == actor.user.pk
        require(actor, Action.CREATE_TOKEN if own else Action.MANAGE_MEMBERS, organization.pk)
        member_role = (
            Membership.objects.filter(organization=organization, user=user)
            .values_list("role", flat=True)
            .first()
        )
        if member_role is None:
            raise ValidationError({"user": [f"{user.get_username()} is not a member of {organization}."]})
        if ROLE_RANK[role] > ROLE_RANK[member_role]:
            raise ValidationError(
                {"role": [f"A token cannot have more rights than its owner ({member_role})."]}
            )
        parent = actor.token
        if parent is not None:
            if ROLE_RANK[role] > ROLE_RANK[parent.role]:
                raise ValidationError(
                    {"role": ["A token cannot create a token with more rights than itself."]}
                )
            if parent.expires_at is not None:
                if expires_at is None:
                    expires_at = parent.expires_at  # a token cannot outlive the token that made it
                elif expires_at > parent.expires_at:
                    raise ValidationError(
                        {
                            "expires_at": [
                                "A token cannot create a token that expires after itself "
                                f"({parent.expires_at:%Y-%m-%dT%H:%M:%SZ})."
                            ]
                        }
                    )
        if expires_at is not None and expires_at <= timezone.now():
            raise ValidationError({"expires_at": ["The expiry must be in the future."]})
        name = (name or "").strip()
        if not name:
            raise ValidationError({"name": ["Enter a name for the token."]})
        prefix = secrets.token_hex(4)
        secret = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        with transaction.atomic():
            token = ApiToken.objects.create(
                organization=organization,
                user=user,
                name=name,
                role=role,
                prefix=prefix,
                digest=secret_digest(secret),
                expires_at=expires_at,
                created_by_token=parent,
            )
            audit.record(
                actor,
                "api_token.create",
                token,
                role=role,
                owner=user.get_username(),
                expires_at=expires_at.isoformat() if expires_at else None,
            )
    return NewToken(token=token, secret=secret)


def revoke_api_token(token: ApiToken, *, actor: Actor) -> ApiToken:
    actor = as_actor(actor)
    with audit.failures(actor, "api_token.revoke", token):
        own = actor.user is not None and token.user_id == actor.user.pk
        require(actor, Action.CREATE_TOKEN if own else Action.MANAGE_MEMBERS, token.organization_id)
        with transaction.atomic():
            token = ApiToken.objects.select_for_update().get(pk=token.pk)
            now = timezone.now()
            if token.revoked_at is None:
                token.revoked_at = now
                token.save(update_fields=["revoked_at"])
            audit.record(actor, "api_token.revoke", token)
            # Tokens created with this one go with it, however deep (a stolen token's offspring too).
            children = list(ApiToken.objects.filter(created_by_token=token, revoked_at__isnull=True))
            while children:
                for child in children:
                    child.revoked_at = now
                    audit.record(actor, "api_token.revoke", child, because_of=token.pk)
                ApiToken.objects.bulk_update(children, ["revoked_at"])
                children = list(
                    ApiToken.objects.filter(created_by_token__in=children, revoked_at__isnull=True)
                )
    return token


class TokenRejected(Exception):
    def __init__(self, message: str, token: ApiToken | None = None):
        super().__init__(message)
        self.token = token


def authenticate_token(secret: str) -> ApiToken:
    """Find the token behind a bearer secret, or raise TokenRejected with the reason."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or f"{parts[0]}_" != TOKEN_PREFIX or len(parts[1]) != 8:
        raise TokenRejected("malformed API token")
    token = ApiToken.objects.select_related("user", "organization").filter(prefix=parts[1]).first()
    if token is None or not hmac.compare_digest(token.digest, secret_digest(secret)):
        raise TokenRejected("unknown API token")
    now = timezone.now()
    state = token.state(now)
    if state != "active":
        raise TokenRejected(f"API token is {state}", token)
    if not token.user.is_active:
        raise TokenRejected("the token's owner is deactivated", token)
    interval = timedelta(seconds=settings.CERTMGR_TOKEN_LAST_USED_INTERVAL)
    if token.last_used_at is None or now - token.last_used_at > interval:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


# --- encryption at rest --------------------------------------------------------------------------------
@dataclass
class Rotation:
    counts: dict[str, int] = field(default_factory=dict)  # "app.Model.field" -> secrets re-encrypted
    failed: list[tuple[str, Any]] = field(default_factory=list)  # ("app.Model.field", pk) not decryptable


def rotate_encryption_keys(*, actor: Actor, batch_size: int = 500) -> Rotation:
    """Re-encrypt every stored secret under the first configured key. Safe to re-run. A secret no configured
    key decrypts (tampered, or its key removed) is left as it is and named; the rest are rotated."""
    actor = as_actor(actor)
    if not actor.is_superuser:
        raise PermissionDenied("only a superuser or the system can rotate encryption keys")
    result = Rotation()
    for model, model_field in encryption.encrypted_fields():
        label = f"{model._meta.label}.{model_field.name}"
        result.counts[label] = 0
        last_pk = None
        while rows := _raw_batch(model, model_field, after=last_pk, limit=batch_size):
            with transaction.atomic():
                for pk, token in rows:
                    try:
                        rotated = encryption.rotate(token)
                    except encryption.DecryptionError:
                        result.failed.append((label, pk))
                        continue
                    model._base_manager.filter(pk=pk).update(
                        **{model_field.attname: encryption.RawToken(rotated)}
                    )
                    result.counts[label] += 1
            last_pk = rows[-1][0]
    with transaction.atomic():
        audit.record(
            actor,
            "encryption.rotate",
            ("encryption.keys", "", "encryption keys"),
            outcome="failure" if result.failed else "success",
            rotated=[{"field": label, "count": n} for label, n in result.counts.items()],
            not_decryptable=[f"{label} id {pk}" for label, pk in result.failed[:100]],
        )
    return result


def _raw_batch(
    model: type[models.Model], field: models.Field[Any, Any], *, after: Any, limit: int
) -> list[tuple[Any, str]]:
    """(pk, stored token) pairs, read past the field's decryption."""
    from django.db import connection

    # a concrete field has its column (encrypted_fields yields only those, and a primary key is one)
    assert field.column is not None and model._meta.pk.column is not None
    q = connection.ops.quote_name
    table, column, pk_column = q(model._meta.db_table), q(field.column), q(model._meta.pk.column)
    where, params = f"{column} IS NOT NULL AND {column} <> ''", []
    if after is not None:
        where += f" AND {pk_column} > %s"
        params.append(after)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {pk_column}, {column} FROM {table} WHERE {where} ORDER BY {pk_column} LIMIT %s",  # noqa: S608
            [*params, limit],
        )
        rows: list[tuple[Any, str]] = cursor.fetchall()  # the two columns selected: pk, token
        return rows


def record_test_outcome(obj: Any, *, ok: bool, message: str, actor: Actor, action: str) -> None:
    """Store and audit the outcome of a *Test* action on a row with ``last_tested_at``, ``last_test_ok`` and
    ``last_test_message`` (app connections, sync destinations), then refresh those fields on ``obj``."""
    fields = ["last_tested_at", "last_test_ok", "last_test_message"]
    with transaction.atomic():
        type(obj)._default_manager.filter(pk=obj.pk).update(
            last_tested_at=timezone.now(), last_test_ok=ok, last_test_message=message[:2000]
        )
        audit.record(actor, action, obj, outcome="success" if ok else "failure", error="" if ok else message)
    obj.refresh_from_db(fields=fields)
