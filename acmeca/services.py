"""State changes of ACME CAs and accounts: register, edit, account deactivation and key rollover, and
revocation through the CA. Every CA call happens before the transaction that records its outcome."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from acmeca import client as acme
from acmeca import vendors
from acmeca.models import ACCOUNT_KEY_KINDS, AcmeAccount, AcmeSettings, ChallengeType
from certmgr import audit
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict, ServiceError
from certmgr.models import Organization
from certmgr.permissions import Action
from certmgr.services import audited_delete, require
from dnsproviders.models import AppConnection
from pki import services as pki_services
from pki import x509
from pki.models import Certificate, CertificateAuthority

if TYPE_CHECKING:
    import josepy as jose

_DOMAIN = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
)
LOST = "accountDoesNotExist"  # the CA's answer for an account it no longer knows (RFC 8555 §7.3.1)

_T = TypeVar("_T")

# What an ACME CA's settings may be given as (create and update alike).
SETTINGS_FIELDS = (
    "vendor",
    "directory_url",
    "email",
    "eab_kid",
    "eab_hmac_key",
    "dns_connection",
    "hosted_zone_id",
    "challenge_type",
    "profile",
    "caa_identifiers",
    "preferred_chain",
    "tls_ca_bundle",
    "direct_issuance",
    "reregister_automatically",
    "propagation_timeout",
    "propagation_interval",
)
# Changing one of these needs a new account at the CA.
_ACCOUNT_FIELDS = {"vendor", "directory_url", "eab_kid", "eab_hmac_key", "tls_ca_bundle"}


def _problem(exc: acme.AcmeProblem, field: str = "directory_url") -> ServiceError:
    """The CA's refusal as the user's error: a permanent one (not a directory, 4xx, TLS trust, EAB) is input
    to fix (400 on ``field``); an unreachable or failing server (transient) is upstream trouble (502)."""
    error = ServiceError(str(exc), field=field)  # the client's messages are written for users
    error.status, error.code = (502, "upstream_error") if exc.transient else (400, "acme_error")
    return error


def _clean_settings(row: AcmeSettings, organization_id: int, *, previous_vendor: str = "") -> None:
    """Check the settings; a retired vendor is refused unless the CA already had it (it keeps its record)."""
    errors: dict[str, list[str]] = {}
    try:
        if row.vendor != previous_vendor:
            vendors.current(row.vendor)
        row.directory_url = vendors.directory_url_for(row.vendor, (row.directory_url or "").strip())
    except ValueError as exc:
        errors["vendor" if "vendor" in str(exc) else "directory_url"] = [str(exc)]
    else:
        if not re.match(r"^https?://", row.directory_url):
            errors["directory_url"] = ["Enter an http(s) URL."]
        elif vendors.preset(row.vendor).eab_required and not (row.eab_kid and row.eab_hmac_key):
            errors["eab_kid"] = [
                f"{vendors.preset(row.vendor).label} requires external account binding: "
                "enter the EAB key id and HMAC key from your account there."
            ]
    if bool(row.eab_kid) != bool(row.eab_hmac_key):
        errors.setdefault("eab_hmac_key", ["Give both the EAB key id and the HMAC key, or neither."])
    if row.email:
        try:
            validate_email(row.email)
        except ValidationError:
            errors["email"] = ["Enter a valid email address."]
    if row.challenge_type not in ChallengeType.values:
        errors["challenge_type"] = [f"Choose one of: {', '.join(ChallengeType.values)}."]
    connection = row.dns_connection
    if connection is not None and connection.organization_id != organization_id:
        errors["dns_connection"] = ["Unknown DNS connection."]
    elif row.challenge_type == ChallengeType.DNS_01 and connection is None:
        errors["dns_connection"] = ["dns-01 needs a DNS app connection to write the TXT records with."]
    if row.tls_ca_bundle.strip():
        try:
            x509.load_pem_certificates(row.tls_ca_bundle)
        except x509.X509Error as exc:
            errors["tls_ca_bundle"] = [f"Not a PEM certificate bundle: {exc}"]
    identifiers = [i.strip().lower().rstrip(".") for i in (row.caa_identifiers or "").split(",") if i.strip()]
    if not identifiers and (known := vendors.PRESETS.get(row.vendor)):  # type: ignore[call-overload]  # a str key
        identifiers = list(known.caa_identifiers)
    bad = [i for i in identifiers if not _DOMAIN.fullmatch(i)]
    if bad:
        errors["caa_identifiers"] = [f"Not a domain name: {', '.join(bad)}."]
    row.caa_identifiers = ", ".join(identifiers)
    if not 5 <= int(row.propagation_timeout or 0) <= 3600:
        errors["propagation_timeout"] = ["Enter 5 to 3600 seconds."]
    if not 0.1 <= float(row.propagation_interval or 0) <= 60:
        errors["propagation_interval"] = ["Enter 0.1 to 60 seconds."]
    if errors:
        raise ValidationError(errors)


def _set(row: AcmeSettings, values: dict[str, Any]) -> None:
    for field, value in values.items():
        if field not in SETTINGS_FIELDS:
            raise ValidationError({field: ["This field cannot be set."]})
        if field == "dns_connection" and value is not None and not isinstance(value, AppConnection):
            value = AppConnection.objects.filter(pk=value).first()
            if value is None:
                raise ValidationError({"dns_connection": ["Unknown DNS connection."]})
        if isinstance(value, str):
            value = value.strip()
        setattr(row, field, value)


def _register(
    organization_id: int, row: AcmeSettings, key_kind: str, key: jose.JWK | None = None
) -> AcmeAccount:
    """Create the account at the CA (the network call) and return it unsaved; ``key``: an existing key."""
    if key_kind not in dict(ACCOUNT_KEY_KINDS):
        raise ValidationError({"account_key_kind": [f"Choose one of: {', '.join(dict(ACCOUNT_KEY_KINDS))}."]})
    key = key or acme.generate_account_key(key_kind)
    try:
        registered = acme.register_account(
            directory_url=row.directory_url,
            email=row.email,
            account_key=key,
            eab_kid=row.eab_kid,
            eab_hmac_key=row.eab_hmac_key,
            tls_ca_bundle=row.tls_ca_bundle,
        )
    except acme.AcmeProblem as exc:
        field = "eab_kid" if exc.kind in {"eabInvalid", "externalAccountRequired"} else "directory_url"
        if exc.kind == "tlsUntrusted":
            field = "tls_ca_bundle"
        raise _problem(exc, field) from exc
    now = timezone.now()
    return AcmeAccount(
        organization_id=organization_id,
        vendor=row.vendor,
        directory_url=row.directory_url,
        email=row.email,
        key_kind=key_kind,
        private_key=acme.account_key_to_pem(key),
        account_url=registered.uri,
        status=registered.status or AcmeAccount.Status.VALID,
        terms_of_service=registered.terms_of_service or "",
        terms_agreed_at=now,
        eab_kid=row.eab_kid,
    )


def create_acme_ca(
    organization: Organization,
    *,
    name: str,
    actor: Actor,
    account_key_kind: str = "ec-p256",
    **settings_values: Any,
) -> CertificateAuthority:
    """Register an external ACME CA: check the settings, create the account at the CA, store both."""
    actor = as_actor(actor)
    with audit.failures(actor, "ca.create", organization, name=name, kind="acme"):
        require(actor, Action.MANAGE, organization.pk)
        row = AcmeSettings()
        _set(row, settings_values)
        _clean_settings(row, organization.pk)
        ca = CertificateAuthority(
            organization=organization, name=pki_services.clean_name(name), kind=CertificateAuthority.Kind.ACME
        )
        pki_services.check_unique_ca_name(ca)
        account = _register(organization.pk, row, account_key_kind)
        with transaction.atomic():
            pki_services.check_unique_ca_name(ca)
            ca.subject_dn = row.directory_url[:500]
            ca.save()
            account.save()
            row.ca, row.account = ca, account
            row.save()
            audit.record(
                actor, "ca.create", ca, kind="acme", vendor=row.vendor, directory_url=row.directory_url
            )
            audit.record(actor, "acme.account.register", account, ca=ca.pk, account_url=account.account_url)
    return ca


def update_acme_ca(
    ca: CertificateAuthority, *, actor: Actor, name: str | None = None, **settings_values: Any
) -> CertificateAuthority:
    """Change an ACME CA's name and settings in one transaction; a new directory, EAB or TLS trust
    registers a new account first (a name already taken is refused before that)."""
    actor = as_actor(actor)
    with audit.failures(actor, "ca.update", ca):
        require(actor, Action.MANAGE, ca.organization_id)
        if name is not None:
            name = pki_services.clean_name(name)
            taken = CertificateAuthority.objects.filter(organization_id=ca.organization_id, name=name)
            if taken.exclude(pk=ca.pk).exists():
                raise Conflict(f"a CA named {name!r} already exists in this organization", field="name")
        row = AcmeSettings.objects.select_related("account").get(ca=ca)
        before = {f: getattr(row, f) for f in SETTINGS_FIELDS}
        _set(row, settings_values)
        _clean_settings(row, ca.organization_id, previous_vendor=before["vendor"])
        changed = sorted(f for f in SETTINGS_FIELDS if getattr(row, f) != before[f])
        account = row.account
        if _ACCOUNT_FIELDS & set(changed) or account is None or account.status != AcmeAccount.Status.VALID:
            account = _register(ca.organization_id, row, account.key_kind if account else "ec-p256")
        elif "email" in changed:
            try:
                acme.update_account(
                    directory_url=account.directory_url,
                    account_uri=account.account_url,
                    account_key=acme.account_key_from_pem(account.private_key),
                    email=row.email,
                    tls_ca_bundle=row.tls_ca_bundle,
                )
            except acme.AcmeProblem as exc:
                raise _problem(exc, "email") from exc
            account.email = row.email
        with transaction.atomic():
            if account.pk is None:
                account.save()
                audit.record(
                    actor, "acme.account.register", account, ca=ca.pk, account_url=account.account_url
                )
            elif "email" in changed:
                account.updated_at = timezone.now()
                account.save(update_fields=["email", "updated_at"])
            row.account = account
            row.save()
            ca = CertificateAuthority.objects.select_for_update().defer("private_key").get(pk=ca.pk)
            if name is not None and pki_services.set_name(ca, name):
                changed = sorted([*changed, "name"])
            ca.subject_dn = row.directory_url[:500]
            ca.updated_at = timezone.now()
            ca.save(update_fields=["name", "subject_dn", "updated_at"])
            audit.record(actor, "ca.update", ca, changed=changed)
    return ca


def _account_call(account: AcmeAccount, call: Callable[..., _T], **kwargs: Any) -> _T:
    acme_settings = AcmeSettings.objects.filter(account=account).first()
    try:
        return call(
            directory_url=account.directory_url,
            account_uri=account.account_url,
            account_key=acme.account_key_from_pem(account.private_key),
            tls_ca_bundle=acme_settings.tls_ca_bundle if acme_settings else "",
            **kwargs,
        )
    except acme.AcmeProblem as exc:
        if exc.kind == LOST:
            mark_account_lost(account, detail=exc.detail)
        raise _problem(exc, "account") from exc


def mark_account_lost(account: AcmeAccount, *, detail: str = "", actor: Actor | None = None) -> bool:
    """The CA answered accountDoesNotExist: the account is invalid here too (audited). True when this call
    changed it (a second report of the same loss changes nothing)."""
    actor = as_actor(actor or Actor.system("acme-worker"))
    with transaction.atomic():
        changed = AcmeAccount.objects.filter(pk=account.pk, status=AcmeAccount.Status.VALID).update(
            status=AcmeAccount.Status.INVALID, updated_at=timezone.now()
        )
        account.status = AcmeAccount.Status.INVALID
        if changed:
            audit.record(actor, "acme.account.lost", account, outcome="failure", error=detail[:2000])
    return bool(changed)


def reregister_account(
    account: AcmeAccount, *, actor: Actor, new_key: bool = False, key_kind: str | None = None
) -> AcmeAccount:
    """Register a new account at the CA for the ACME CA that used ``account`` (invalid, deactivated or
    revoked): with the same key, or a new one (``key_kind``, default the old kind). The CA uses it from now
    on; the old one stays, marked, for its orders' history."""
    actor = as_actor(actor)
    with audit.failures(actor, "acme.account.reregister", account):
        require(actor, Action.MANAGE, account.organization_id)
        if account.status == AcmeAccount.Status.VALID:
            raise Conflict("this account is valid at the CA: nothing to register again")
        row = AcmeSettings.objects.select_related("ca").filter(account=account).first()
        if row is None:
            raise Conflict("no ACME CA uses this account: edit the CA to register a new one")
        kind = key_kind or account.key_kind
        key = None if new_key else acme.account_key_from_pem(account.private_key)
        fresh = _register(account.organization_id, row, kind, key)
        with transaction.atomic():
            fresh.save()
            AcmeSettings.objects.filter(pk=row.pk).update(account=fresh)
            audit.record(
                actor,
                "acme.account.register",
                fresh,
                ca=row.ca_id,
                account_url=fresh.account_url,
                replaces=account.pk,
                same_key=not new_key,
            )
    return fresh


def deactivate_account(account: AcmeAccount, *, actor: Actor) -> AcmeAccount:
    """Deactivate the account at the CA (irreversible there); its CAs need a new one to order again."""
    actor = as_actor(actor)
    with audit.failures(actor, "acme.account.deactivate", account):
        require(actor, Action.MANAGE, account.organization_id)
        if account.status not in (AcmeAccount.Status.VALID, AcmeAccount.Status.INVALID):
            raise Conflict(f"this account is already {account.status}")
        status: str = AcmeAccount.Status.DEACTIVATED
        at_ca = False
        if account.status == AcmeAccount.Status.VALID:
            try:
                status = _account_call(account, acme.deactivate_account).status or status
                at_ca = True
            except ServiceError:
                if account.status != AcmeAccount.Status.INVALID:  # not lost meanwhile: a real refusal
                    raise
        # An account the CA does not know is deactivated here only: nothing to tell the CA.
        with transaction.atomic():
            account.status = status
            account.updated_at = timezone.now()
            account.save(update_fields=["status", "updated_at"])
            audit.record(actor, "acme.account.deactivate", account, at_ca=at_ca)
    return account


def rollover_account_key(account: AcmeAccount, *, actor: Actor, key_kind: str | None = None) -> AcmeAccount:
    """Replace the account key at the CA (RFC 8555 keyChange) and store the new one."""
    actor = as_actor(actor)
    with audit.failures(actor, "acme.account.rollover", account):
        require(actor, Action.MANAGE, account.organization_id)
        key_kind = key_kind or account.key_kind
        if key_kind not in dict(ACCOUNT_KEY_KINDS):
            raise ValidationError({"key_kind": [f"Choose one of: {', '.join(dict(ACCOUNT_KEY_KINDS))}."]})
        if account.status != AcmeAccount.Status.VALID:
            raise Conflict(f"this account is {account.status}")
        new_key = acme.generate_account_key(key_kind)
        _account_call(account, acme.rollover_account_key, new_key=new_key)
        with transaction.atomic():
            account.private_key = acme.account_key_to_pem(new_key)
            account.key_kind = key_kind
            account.key_rolled_at = account.updated_at = timezone.now()
            account.save(update_fields=["private_key", "key_kind", "key_rolled_at", "updated_at"])
            audit.record(actor, "acme.account.rollover", account, key_kind=key_kind)
    return account


def delete_account(account: AcmeAccount, *, actor: Actor) -> None:
    """Forget the account here (its certificates stay); refused while a CA still uses it, unless the CA no
    longer knows it (invalid): then that CA has no account until one is registered again."""

    def prepare(row: AcmeAccount) -> None:
        if row.status != AcmeAccount.Status.INVALID and row.settings.exists():
            raise Conflict("an ACME CA still uses this account: deactivate it or change the CA first")
        AcmeSettings.objects.filter(account=row).update(account=None)

    audited_delete(account, actor=actor, action="acme.account.delete", prepare=prepare)


def revoke_at_ca(certificate: Certificate, reason: str) -> None:
    """Ask the issuing ACME CA to revoke (revokeCert, signed by the account that ordered it)."""
    from acmeca.models import AcmeOrder

    order = AcmeOrder.objects.filter(certificate=certificate).select_related("account").first()
    account = order.account if order and order.account else None
    if account is None:
        row = AcmeSettings.objects.filter(ca_id=certificate.ca_id).select_related("account").first()
        account = row.account if row else None
    if account is None or account.status != AcmeAccount.Status.VALID:
        raise Conflict("no active ACME account of this CA can revoke the certificate")
    code = x509.RevocationReason.parse(reason).code
    leaf = x509.load_pem_certificates(certificate.certificate_pem)[0]

    def call(*, directory_url: str, account_uri: str, account_key: jose.JWK, tls_ca_bundle: str) -> None:
        with acme.open_session(
            directory_url=directory_url,
            account_key=account_key,
            account_uri=account_uri,
            tls_ca_bundle=tls_ca_bundle,
        ) as session:
            session.revoke(leaf, code)

    _account_call(account, call)
