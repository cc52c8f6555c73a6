"""State changes of app connections. Every door calls these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.encryption import unreadable_secret
from certmgr.errors import Conflict
from certmgr.models import Organization
from certmgr.permissions import Action
from certmgr.services import audited_delete, record_test_outcome, require
from dnsproviders import credentials as creds
from dnsproviders.models import AppConnection

if TYPE_CHECKING:
    from dnsproviders.connection_checks import CheckResult

_EDITABLE = ("name", "description")


def _clean_text(field: str, value: str, max_length: int, *, required: bool = False) -> str:
    value = (value or "").strip()
    if required and not value:
        raise ValidationError({field: ["This field is required."]})
    if len(value) > max_length or "\x00" in value:
        raise ValidationError({field: [f"Enter at most {max_length} characters, without NUL."]})
    return value


def _validated(kind: str, data: Any, existing: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        return creds.validate(kind, data, existing=existing)
    except creds.CredentialError as exc:
        if "kind" in exc.errors:
            raise ValidationError(exc.errors) from exc
        raise ValidationError(
            {"credentials": [f"{k}: {' '.join(v)}" for k, v in exc.errors.items()]}
        ) from exc


def _duplicate(name: str) -> Conflict:
    return Conflict(f"a connection named {name!r} already exists in this organization", field="name")


def create_connection(
    organization: Organization,
    *,
    name: str,
    kind: str,
    credentials: dict[str, Any],
    description: str = "",
    actor: Actor,
) -> AppConnection:
    actor = as_actor(actor)
    with audit.failures(actor, "app_connection.create", organization, name=name, kind=kind):
        require(actor, Action.MANAGE, organization.pk)
        name = _clean_text("name", name, 100, required=True)
        description = _clean_text("description", description, 2000)
        cleaned = _validated(kind, credentials)
        try:
            with transaction.atomic():
                if AppConnection.objects.filter(organization=organization, name=name).exists():
                    raise _duplicate(name)
                conn = AppConnection.objects.create(
                    organization=organization,
                    name=name,
                    kind=kind,
                    description=description,
                    credentials=cleaned,
                )
                audit.record(
                    actor,
                    "app_connection.create",
                    conn,
                    kind=kind,
                    settings=creds.public_summary(kind, cleaned),
                )
        except IntegrityError as exc:
            raise _duplicate(name) from exc
    return conn


def update_connection(
    connection: AppConnection, *, actor: Actor, credentials: dict[str, Any] | None = None, **changes: Any
) -> AppConnection:
    """Change name/description and, when given, credentials (empty secret fields keep their value)."""
    actor = as_actor(actor)
    with audit.failures(actor, "app_connection.update", connection):
        require(actor, Action.MANAGE, connection.organization_id)
        unknown = set(changes) - set(_EDITABLE)
        if unknown:
            raise ValidationError({k: ["This field cannot be changed."] for k in unknown})
        try:
            with transaction.atomic():
                conn = AppConnection.objects.select_for_update().get(pk=connection.pk)
                changed = []
                if "name" in changes:
                    name = _clean_text("name", changes["name"], 100, required=True)
                    if name != conn.name:
                        if AppConnection.objects.filter(
                            organization_id=conn.organization_id, name=name
                        ).exists():
                            raise _duplicate(name)
                        conn.name = name
                        changed.append("name")
                if "description" in changes:
                    description = _clean_text("description", changes["description"], 2000)
                    if description != conn.description:
                        conn.description = description
                        changed.append("description")
                if credentials is not None:
                    # credentials no configured key decrypts are replaced whole: every field is required
                    readable = unreadable_secret(conn, "credentials") is None
                    existing = conn.credentials if readable else None
                    cleaned = _validated(conn.kind, credentials, existing=existing)
                    if not readable or cleaned != conn.credentials:
                        conn.credentials = cleaned
                        changed.append("credentials")
                conn.updated_at = timezone.now()
                conn.save()
                audit.record(
                    actor,
                    "app_connection.update",
                    conn,
                    changed=changed,
                    settings=conn.public_settings(),
                )
        except IntegrityError as exc:
            raise _duplicate(changes.get("name", "")) from exc
    return conn


def delete_connection(connection: AppConnection, *, actor: Actor) -> None:
    audited_delete(
        connection,
        actor=actor,
        action="app_connection.delete",
        lock=True,
        in_use="this connection is in use and cannot be deleted",  # PROTECTed by CAs that use it (ACME issue)
        details={"kind": connection.kind},
    )


def test_connection(connection: AppConnection, *, actor: Actor) -> CheckResult:
    """Make one cheap authenticated call to the provider; record and return the result."""
    from dnsproviders.connection_checks import check_connection

    actor = as_actor(actor)
    with audit.failures(actor, "app_connection.test", connection):
        require(actor, Action.MANAGE, connection.organization_id)
        result = check_connection(connection.kind, connection.credentials)
    if result.ok and result.host_key and not connection.credentials.get(creds.SSH_HOST_KEY):
        pin_host_key(connection, result.host_key, actor=actor)
    record_test_outcome(
        connection, ok=result.ok, message=result.message, actor=actor, action="app_connection.test"
    )
    return result


# --- SSH host keys ---------------------------------------------------------------------------------------
def pin_host_key(connection: AppConnection, key_line: str, *, actor: Actor) -> bool:
    """Trust on first use: store the key an SSH host showed when the connection has none pinned yet.
    False when another caller pinned one first (the caller's session then proved nothing about it)."""
    actor = as_actor(actor)
    with transaction.atomic():
        conn = AppConnection.objects.select_for_update().get(pk=connection.pk)
        if conn.kind != creds.Kind.SSH or conn.credentials.get(creds.SSH_HOST_KEY):
            pinned = str(conn.credentials.get(creds.SSH_HOST_KEY, ""))
            return pinned.split()[:2] == key_line.split()[:2]
        conn.credentials = {**conn.credentials, creds.SSH_HOST_KEY: key_line}
        conn.updated_at = timezone.now()
        conn.save(update_fields=["credentials", "updated_at"])
        audit.record(
            actor,
            "app_connection.pin_host_key",
            conn,
            host_key=creds.host_key_fingerprint(key_line),
            first_use=True,
        )
    connection.credentials, connection.updated_at = conn.credentials, conn.updated_at
    return True


def shown_host_key(connection: AppConnection, *, actor: Actor) -> str:
    """SSH: the fingerprint of the key the host shows now (no login), for a re-pin to be confirmed against;
    an unreachable host is a ValidationError naming why."""
    from dnsproviders import ssh

    require(as_actor(actor), Action.MANAGE, connection.organization_id)
    if connection.kind != creds.Kind.SSH:
        raise ValidationError({"kind": ["Only SSH connections have a host key."]})
    try:
        return creds.host_key_fingerprint(ssh.shown_host_key(connection.credentials))
    except ssh.SshError as exc:
        raise ValidationError({"credentials": [exc.message]}) from exc


def repin_host_key(connection: AppConnection, *, actor: Actor, expected: str | None = None) -> str:
    """Re-pin: connect accepting whatever key the host shows now and pin it (after a host's key was
    replaced on purpose). ``expected``, the fingerprint the operator confirmed (``shown_host_key``), must
    be the one the host shows, or nothing is pinned. Audited with the old and the new fingerprint; returns
    the new one."""
    from dnsproviders import ssh

    actor = as_actor(actor)
    with audit.failures(actor, "app_connection.repin_host_key", connection):
        require(actor, Action.MANAGE, connection.organization_id)
        if connection.kind != creds.Kind.SSH:
            raise ValidationError({"kind": ["Only SSH connections have a host key."]})
        try:
            session = ssh.connect(connection.credentials, pinned="")
        except ssh.SshError as exc:
            raise ValidationError({"credentials": [exc.message]}) from exc
        session.close()
        shown = creds.host_key_fingerprint(session.host_key)
        if expected is not None and shown != expected:
            raise ValidationError(
                {
                    "host_key": [
                        f"The host now shows {shown}, not the key you confirmed ({expected}): nothing was "
                        "re-pinned. Check the host, then re-pin again."
                    ]
                }
            )
        with transaction.atomic():
            conn = AppConnection.objects.select_for_update().get(pk=connection.pk)
            old = conn.credentials.get(creds.SSH_HOST_KEY, "")
            conn.credentials = {**conn.credentials, creds.SSH_HOST_KEY: session.host_key}
            conn.updated_at = timezone.now()
            conn.save(update_fields=["credentials", "updated_at"])
            new = creds.host_key_fingerprint(session.host_key)
            audit.record(
                actor,
                "app_connection.repin_host_key",
                conn,
                old_host_key=creds.host_key_fingerprint(old) or None,
                host_key=new,
            )
    connection.credentials, connection.updated_at = conn.credentials, conn.updated_at
    return new
