"""The ACME server's state changes, one function each: profiles (by people, through the admin, the API and
``manage.py create_acme_profile``) and the protocol's (by ACME clients, through ``acmeserver.views``).

Protocol refusals are ``AcmeProblem``s. A certificate is issued by ``pki.services.enroll`` (the issuance
core: policy, inventory, audit, alerts) and revoked by ``pki.services.revoke``; accounts, orders,
finalizations and revocations are audit events of the profile's organization, by an actor that names the
account.
"""

from __future__ import annotations

import math
import random
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from acmeserver import identifiers as idents
from acmeserver.choices import (
    AccountStatus,
    AuthorizationStatus,
    ChallengeStatus,
    ChallengeType,
    OrderStatus,
)
from acmeserver.models import (
    AcmeEabKey,
    AcmeEarlyRenewal,
    AcmeNonce,
    AcmeOrderProfile,
    AcmeProfile,
    AcmeServerAccount,
    AcmeServerAuthorization,
    AcmeServerChallenge,
    AcmeServerOrder,
    AcmeServerProblemCount,
)
from acmeserver.problems import AcmeProblem, malformed, unauthorized
from certmgr import audit, sql, tally
from certmgr.actors import Actor, as_actor
from certmgr.errors import Conflict, ServiceError
from certmgr.models import Organization
from certmgr.permissions import Action
from certmgr.services import audited_delete, require
from pki import policy as policy_rules
from pki import services as pki
from pki import x509
from pki.choices import RevocationReason
from pki.models import Certificate, CertificateAuthority, Policy

# --- profiles -------------------------------------------------------------------------------------------
PROFILE_FIELDS = (
    "name",
    "slug",
    "ca",
    "policy",
    "validity_days",
    "eab_required",
    "challenge_types",
    "allow_wildcards",
    "allow_ip_identifiers",
    "enabled",
    "terms_of_service_url",
    "caa_identities",
    "orders_per_hour",
    "max_pending_authorizations",
)
MAX_VALIDITY_DAYS = 3650


def _check_profile(profile: AcmeProfile) -> None:
    errors: dict[str, list[str]] = {}
    ca: CertificateAuthority | None = profile.ca if profile.ca_id else None
    if ca is None or ca.organization_id != profile.organization_id:
        errors["ca"] = ["Choose a CA of this organization."]
    elif not ca.is_internal:
        errors["ca"] = ["Only a private (internal) CA signs for an ACME profile."]
    policy: Policy | None = profile.policy if profile.policy_id else None
    if policy is not None and policy.organization_id != profile.organization_id:
        errors["policy"] = ["Choose a policy of this organization."]
    if not 1 <= int(profile.validity_days or 0) <= MAX_VALIDITY_DAYS:
        errors["validity_days"] = [f"Enter 1 to {MAX_VALIDITY_DAYS} days."]
    elif policy is not None and policy.max_validity_days and profile.validity_days > policy.max_validity_days:
        errors["validity_days"] = [f"Policy {policy.name!r} allows at most {policy.max_validity_days} days."]
    types = profile.challenge_types
    if not isinstance(types, list) or not types or any(t not in ChallengeType.values for t in types):
        errors["challenge_types"] = [f"Choose one or more of: {', '.join(ChallengeType.values)}."]
    else:
        profile.challenge_types = [t for t in ChallengeType.values if t in types]
        if profile.allow_wildcards and ChallengeType.DNS_01 not in types:
            errors["allow_wildcards"] = ["Wildcards are proved by dns-01: offer it too."]
    caa_identities = profile.caa_identities if profile.caa_identities is not None else []
    if not isinstance(caa_identities, list) or any(
        not isinstance(d, str) or not idents.is_dns_name(d.strip().lower().rstrip("."))
        for d in caa_identities
    ):
        errors["caa_identities"] = ["Enter domain names, e.g. certmgr.internal."]
    else:
        profile.caa_identities = list(dict.fromkeys(d.strip().lower().rstrip(".") for d in caa_identities))
    if not profile.slug or slugify(profile.slug) != profile.slug:
        errors["slug"] = ["Enter a slug: lower-case letters, digits and hyphens."]
    if errors:
        raise ValidationError(errors)


def save_profile(
    organization: Organization | None,
    *,
    actor: Actor,
    instance: AcmeProfile | None = None,
    **values: Any,
) -> AcmeProfile:
    """Create (``instance`` None) or change an ACME profile."""
    actor = as_actor(actor)
    action = "acme_profile.update" if instance else "acme_profile.create"
    if instance is not None:
        org_id = instance.organization_id
    else:
        assert organization is not None
        org_id = organization.pk
    with audit.failures(actor, action, instance or organization):
        require(actor, Action.MANAGE, org_id)
        profile = instance or AcmeProfile(organization_id=org_id)
        for name, value in values.items():
            if name not in PROFILE_FIELDS:
                raise ValidationError({name: ["This field cannot be set."]})
            setattr(profile, name, value)
        profile.name = pki.clean_name(profile.name)
        if not profile.slug:
            profile.slug = slugify(profile.name)[:50]
        _check_profile(profile)
        profile.updated_at = timezone.now()
        try:
            with transaction.atomic():
                profile.save()
                audit.record(
                    actor,
                    action,
                    profile,
                    **{k: _audit_value(getattr(profile, k)) for k in values if k in PROFILE_FIELDS},
                )
        except IntegrityError as exc:
            raise Conflict("a profile with this name or slug exists already", field="slug") from exc
    return profile


# --- order profiles (draft-ietf-acme-profiles) -------------------------------------------------------------
ORDER_PROFILE_FIELDS = ("name", "description", "policy", "validity_days")
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _check_order_profile(order_profile: AcmeOrderProfile) -> None:
    errors: dict[str, list[str]] = {}
    profile = order_profile.profile
    if not PROFILE_NAME.fullmatch(order_profile.name or ""):
        errors["name"] = ["Enter a token: letters, digits, '.', '_' and '-', at most 64 characters."]
    order_profile.description = (order_profile.description or "").strip()
    if len(order_profile.description) > 300 or "\x00" in order_profile.description:
        errors["description"] = ["Enter at most 300 characters."]
    policy: Policy | None = order_profile.policy if order_profile.policy_id else None
    if policy is not None and policy.organization_id != profile.organization_id:
        errors["policy"] = ["Choose a policy of this organization."]
    policy = policy or (profile.policy if profile.policy_id else None)
    if not 1 <= int(order_profile.validity_days or 0) <= MAX_VALIDITY_DAYS:
        errors["validity_days"] = [f"Enter 1 to {MAX_VALIDITY_DAYS} days."]
    elif (
        policy is not None
        and policy.max_validity_days
        and order_profile.validity_days > policy.max_validity_days
    ):
        errors["validity_days"] = [f"Policy {policy.name!r} allows at most {policy.max_validity_days} days."]
    if errors:
        raise ValidationError(errors)


def save_order_profile(
    profile: AcmeProfile | None,
    *,
    actor: Actor,
    instance: AcmeOrderProfile | None = None,
    **values: Any,
) -> AcmeOrderProfile:
    """Create (``instance`` None) or change an ACME order profile of a directory: a name clients may send
    on newOrder, the policy and validity it maps to."""
    actor = as_actor(actor)
    action = "acme_order_profile.update" if instance else "acme_order_profile.create"
    owner = instance.profile if instance is not None else profile
    assert owner is not None
    with audit.failures(actor, action, instance or owner):
        require(actor, Action.MANAGE, owner.organization_id)
        order_profile = instance or AcmeOrderProfile(profile=owner)
        for name, value in values.items():
            if name not in ORDER_PROFILE_FIELDS:
                raise ValidationError({name: ["This field cannot be set."]})
            setattr(order_profile, name, value)
        _check_order_profile(order_profile)
        order_profile.updated_at = timezone.now()
        try:
            with transaction.atomic():
                order_profile.save()
                audit.record(
                    actor,
                    action,
                    order_profile,
                    organization=owner.organization_id,
                    profile=owner.pk,
                    **{k: _audit_value(getattr(order_profile, k)) for k in values},
                )
        except IntegrityError as exc:
            raise Conflict("this directory has an order profile with this name", field="name") from exc
    return order_profile


def delete_order_profile(order_profile: AcmeOrderProfile, *, actor: Actor) -> None:
    """Clients can no longer name it; its orders keep its name."""
    audited_delete(
        order_profile,
        actor=actor,
        action="acme_order_profile.delete",
        details={"name": order_profile.name},
    )


def directory_url(profile: AcmeProfile) -> str:
    """The profile's directory, absolute from CERTMGR_BASE_URL (what clients are given)."""
    from django.urls import reverse

    base: str = settings.CERTMGR_BASE_URL
    path = reverse(
        "acmeserver:directory", kwargs={"organization": profile.organization.slug, "profile": profile.slug}
    )
    return base + path


def certbot_command(profile: AcmeProfile) -> str:
    """What an operator pastes on a web server to enroll it (HTTP-01, certbot's own server on port 80), with
    the EAB flags when the profile requires them."""
    eab = " --eab-kid <kid> --eab-hmac-key <hmac_key>" if profile.eab_required else ""
    server = directory_url(profile)
    return f"certbot certonly --standalone --server {server} -d <name> --agree-tos -m <e-mail>{eab}"


def lego_command(profile: AcmeProfile) -> str:
    """The same for Debian's lego: its own solver for the first challenge type the profile offers (HTTP-01 on
    port 80, TLS-ALPN-01 on 443, or a DNS provider), with the EAB flags when the profile requires them."""
    solver = {
        ChallengeType.HTTP_01: "--http",
        ChallengeType.TLS_ALPN_01: "--tls",
        ChallengeType.DNS_01: "--dns <provider>",
    }[ChallengeType(profile.challenge_types[0])]
    eab = " --eab --kid <kid> --hmac <hmac_key>" if profile.eab_required else ""
    server = directory_url(profile)
    return f"lego --server {server} --email <e-mail> --accept-tos{eab} --domains <name> {solver} run"


def uacme_command(profile: AcmeProfile) -> str:
    """Debian's uacme: an account (``-e`` when the profile requires EAB), then ``issue`` through the hook
    uacme ships for the first challenge type the profile offers (uacme.sh writes HTTP-01 tokens under
    /var/www, nsupdate.sh publishes the TXT record, ualpn.sh hands TLS-ALPN-01 to a running ualpn)."""
    hook = {
        ChallengeType.HTTP_01: "/usr/share/uacme/uacme.sh",
        ChallengeType.DNS_01: "/usr/share/uacme/nsupdate.sh",
        ChallengeType.TLS_ALPN_01: "/usr/share/uacme/ualpn.sh",
    }[ChallengeType(profile.challenge_types[0])]
    eab = " -e <kid>:<hmac_key>" if profile.eab_required else ""
    server = directory_url(profile)
    return f"uacme -a {server}{eab} -y new <e-mail> && uacme -a {server} -h {hook} issue <name>"


def dehydrated_command(profile: AcmeProfile) -> str:
    """Debian's dehydrated: register (EAB through its EAB_KID/EAB_HMAC_KEY variables), then ``--cron`` with
    the profile's first challenge type (HTTP-01 tokens go to its WELLKNOWN directory; DNS-01 needs a hook)."""
    challenge = ChallengeType(profile.challenge_types[0])
    extra = {
        ChallengeType.HTTP_01: "",
        ChallengeType.DNS_01: " --hook <hook>",
        ChallengeType.TLS_ALPN_01: " --alpn <directory>",
    }[challenge]
    eab = "EAB_KID=<kid> EAB_HMAC_KEY=<hmac_key> " if profile.eab_required else ""
    server = directory_url(profile)
    return (
        f"{eab}dehydrated --ca {server} --register --accept-terms && "
        f"dehydrated --ca {server} --cron --challenge {challenge.value}{extra} --domain <name>"
    )


def client_commands(profile: AcmeProfile) -> list[tuple[str, str]]:
    """(client, command) of every client the profile's admin page shows."""
    return [
        ("certbot", certbot_command(profile)),
        ("lego", lego_command(profile)),
        ("uacme", uacme_command(profile)),
        ("dehydrated", dehydrated_command(profile)),
    ]


def cluster_issuer_yaml(profile: AcmeProfile) -> str:
    """cert-manager's ``ClusterIssuer`` for the profile (HTTP-01 through an ingress). ``caBundle`` is the
    profile CA's chain (base64 of the PEM), which trusts certmgr's HTTPS certificate when it comes from the
    same hierarchy; the ``externalAccountBinding`` block appears when the profile requires EAB (the key id
    and the Secret holding the HMAC key are the operator's to fill in: the key is shown once)."""
    import base64

    chain_pem = "".join(x509.to_pem(c) for c in pki.ca_chain(profile.ca))
    bundle = base64.b64encode(chain_pem.encode()).decode()
    name = f"certmgr-{profile.organization.slug}-{profile.slug}"[:63]
    lines = [
        "apiVersion: cert-manager.io/v1",
        "kind: ClusterIssuer",
        "metadata:",
        f"  name: {name}",
        "spec:",
        "  acme:",
        f"    server: {directory_url(profile)}",
        f"    caBundle: {bundle}",
        "    privateKeySecretRef:",
        f"      name: {name}-account-key",
    ]
    if profile.eab_required:
        lines += [
            "    externalAccountBinding:",
            "      keyID: <eab-kid>",
            "      keySecretRef:",
            f"        name: {name}-eab",
            "        key: secret",
        ]
    lines += [
        "    solvers:",
        "      - http01:",
        "          ingress:",
        "            ingressClassName: nginx",
    ]
    return "\n".join(lines) + "\n"


def _audit_value(value: Any) -> Any:
    return value.pk if hasattr(value, "pk") else value


# --- the protocol's actor -----------------------------------------------------------------------------
def actor_for(profile: AcmeProfile, account: AcmeServerAccount | None = None) -> Actor:
    """Who acts in the audit log: the ACME account (or the profile, before there is one)."""
    who = f"account {account.public_id}" if account is not None else "new account"
    return Actor.system(f"acme-server {profile.slug}: {who}")


# --- nonces -------------------------------------------------------------------------------------------
def _fresh_nonce() -> AcmeNonce:
    return AcmeNonce(
        value=secrets.token_urlsafe(24),
        expires_at=timezone.now() + timedelta(seconds=settings.CERTMGR_ACME_NONCE_SECONDS),
    )


def _purge_nonces() -> None:
    if random.random() < 0.01:  # noqa: S311  (housekeeping, not security)
        AcmeNonce.objects.filter(expires_at__lte=timezone.now()).delete()


@contextmanager
def _without_wal_flush() -> Iterator[None]:
    """A transaction of nonces whose commit does not wait for the WAL flush. Handing one out: a nonce lost
    in a crash is only a badNonce retry. Using one up: it is flushed with the next synchronous commit, which
    every request that changes something makes after it, so a crash can only give back the nonce of a
    request that changed nothing. Inside another transaction, that one's commit decides."""
    if connection.in_atomic_block or connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def new_nonce() -> str:
    nonce = _fresh_nonce()
    with _without_wal_flush():
        sql.saved(nonce, sql.execute(sql.insert(nonce)))
    _purge_nonces()
    return nonce.value


_USE_NONCE = f"DELETE FROM {AcmeNonce._meta.db_table} WHERE value = %s AND expires_at > %s RETURNING value"  # noqa: S608  # a table name from the model, no input


def use_nonce(value: str) -> tuple[bool, str]:
    """Use up ``value`` (whether it was a nonce handed out, unexpired and unused) and hand out the next one,
    which the answer carries whatever it is: one statement."""
    from acmeserver import jws

    nonce = _fresh_nonce()
    if not jws.is_token(value):
        return False, new_nonce()
    with _without_wal_flush():
        used = sql.execute(sql.Statement(_USE_NONCE, (value, timezone.now())), sql.insert(nonce))
    _purge_nonces()
    return len(used) == 1, nonce.value


# --- counting refusals (the metrics) -----------------------------------------------------------------------
def _write_problem_counts(counts: dict[tuple[int, str], int]) -> None:
    live = set(AcmeProfile.objects.filter(pk__in={p for p, _ in counts}).values_list("pk", flat=True))
    for (profile_id, kind), n in sorted(counts.items()):
        if profile_id in live:
            tally.add_to_row(AcmeServerProblemCount, n, profile_id=profile_id, type=kind)


# This process's refusals not yet added to ``AcmeServerProblemCount``: (profile id, error type) -> count.
_PROBLEMS: tally.Tally[tuple[int, str]] = tally.Tally(
    "ACME server problem", _write_problem_counts, lambda: float(settings.CERTMGR_ACME_COUNT_FLUSH_SECONDS)
)


def count_problem(profile: AcmeProfile, problem: AcmeProblem) -> None:
    """Count a refusal the profile's directory answered, for the metrics (badNonce, rateLimited...)."""
    _PROBLEMS.count((profile.pk, problem.kind))


def flush_problem_counts() -> None:
    _PROBLEMS.flush()


# --- accounts -------------------------------------------------------------------------------------------
def _clean_contact(contact: Any) -> list[str]:
    if contact is None:
        return []
    if not isinstance(contact, list | tuple) or any(not isinstance(c, str) for c in contact):
        raise malformed("contact must be a list of URLs")
    cleaned = []
    for url in contact:
        if not url.startswith("mailto:"):
            raise AcmeProblem("unsupportedContact", f"{url!r}: only mailto: contacts are supported")
        address = url[len("mailto:") :]
        local, _, domain = address.partition("@")
        if (
            not local
            or not domain
            or len(url) > 254
            or any(c in address for c in ",? ")
            or not url.isprintable()  # a NUL or a newline is no address (and no JSON column takes a NUL)
        ):
            raise AcmeProblem("invalidContact", f"{url!r} is not a single e-mail address")
        cleaned.append(url)
    if len(cleaned) > 10:
        raise AcmeProblem("invalidContact", "at most 10 contacts")
    return cleaned


def find_account(profile: AcmeProfile, thumbprint: str) -> AcmeServerAccount | None:
    return AcmeServerAccount.objects.filter(profile=profile, thumbprint=thumbprint).first()


def new_account(
    profile: AcmeProfile,
    *,
    jwk: dict[str, Any],
    contact: Any,
    terms_of_service_agreed: bool,
    binding: Any = None,
    url: str = "",
) -> tuple[AcmeServerAccount, bool]:
    """The account of ``jwk`` in ``profile``: the existing one (False) or a new one (True). ``binding``: the
    request's externalAccountBinding (``url``: the newAccount URL it must name); required when the profile
    says so, and bound to the new account (an EAB key binds one account)."""
    from acmeserver import jws

    public = jws.public_jwk(jwk)
    thumbprint = jws.thumbprint(public)
    existing = find_account(profile, thumbprint)
    if existing is not None:
        return existing, False
    if profile.terms_of_service_url and not terms_of_service_agreed:
        raise malformed(f"new accounts must agree to the terms of service ({profile.terms_of_service_url})")
    if binding is None and profile.eab_required:
        raise AcmeProblem(
            "externalAccountRequired", "this profile requires an external account binding (an EAB key)"
        )
    parsed = jws.parse_binding(binding) if binding is not None else None
    contacts = _clean_contact(contact)
    try:
        with transaction.atomic():
            eab = None
            if parsed is not None:
                eab = AcmeEabKey.objects.select_for_update().filter(profile=profile, kid=parsed.kid).first()
                if eab is None or eab.revoked_at is not None or eab.account_id is not None:
                    why = "unknown" if eab is None else "revoked" if eab.revoked_at else "bound to an account"
                    raise unauthorized(f"the EAB key {parsed.kid!r} is {why}")
                key = jws.b64decode(eab.hmac_key, "the EAB key")
                jws.verify_binding(parsed, hmac_key=key, account_jwk=public, url=url)
            account = AcmeServerAccount.objects.create(
                profile=profile,
                thumbprint=thumbprint,
                jwk=public,
                contact=contacts,
                terms_of_service_agreed=bool(terms_of_service_agreed),
            )
            if eab is not None:
                eab.account, eab.bound_at = account, timezone.now()
                eab.save(update_fields=["account", "bound_at"])
            audit.record(
                actor_for(profile, account),
                "acme_server.account.create",
                account,
                organization=profile.organization_id,
                profile=profile.pk,
                thumbprint=thumbprint,
                contact=contacts,
                eab_kid=eab.kid if eab is not None else None,
            )
    except IntegrityError:  # the same key registered concurrently
        account = AcmeServerAccount.objects.get(profile=profile, thumbprint=thumbprint)
        return account, False
    return account, True


class KeyInUse(AcmeProblem):
    def __init__(self, holder: AcmeServerAccount):
        super().__init__("malformed", "another account of this profile has that key", status=409)
        self.holder = holder


def change_key(account: AcmeServerAccount, new_jwk: dict[str, Any]) -> AcmeServerAccount:
    """RFC 8555 §7.3.5: the account's key is ``new_jwk`` from now on (checked by the caller: the inner JWS
    is signed with it). Another account of the profile with that key: a 409 naming it."""
    from acmeserver import jws

    public = jws.public_jwk(new_jwk)
    thumbprint = jws.thumbprint(public)
    profile = account.profile
    holder = find_account(profile, thumbprint)
    if holder is not None:
        raise KeyInUse(holder)
    old = account.thumbprint
    try:
        with transaction.atomic():
            account = (
                AcmeServerAccount.objects.select_for_update().select_related("profile").get(pk=account.pk)
            )
            if account.status != AccountStatus.VALID:
                raise unauthorized(f"the account is {account.status}")
            account.jwk, account.thumbprint, account.updated_at = public, thumbprint, timezone.now()
            account.save(update_fields=["jwk", "thumbprint", "updated_at"])
            audit.record(
                actor_for(profile, account),
                "acme_server.account.key_change",
                account,
                organization=profile.organization_id,
                old_thumbprint=old,
                thumbprint=thumbprint,
            )
    except IntegrityError:
        raise KeyInUse(AcmeServerAccount.objects.get(profile=profile, thumbprint=thumbprint)) from None
    return account


# --- EAB keys ---------------------------------------------------------------------------------------------
def create_eab_key(profile: AcmeProfile, *, actor: Actor, name: str = "") -> tuple[AcmeEabKey, str]:
    """A new EAB key of ``profile``; answers the row and its HMAC key (base64url), shown this once."""
    from acmeserver import jws

    actor = as_actor(actor)
    with audit.failures(actor, "acme_eab_key.create", profile):
        require(actor, Action.MANAGE, profile.organization_id)
        name = (name or "").strip()
        if len(name) > 100 or "\x00" in name:
            raise ValidationError({"name": ["Enter at most 100 characters."]})
        hmac_key = jws.b64encode(secrets.token_bytes(32))
        with transaction.atomic():
            key = AcmeEabKey.objects.create(profile=profile, name=name, hmac_key=hmac_key)
            audit.record(actor, "acme_eab_key.create", key, organization=profile.organization_id, kid=key.kid)
    return key, hmac_key


def revoke_eab_key(key: AcmeEabKey, *, actor: Actor) -> AcmeEabKey:
    """The key binds no account any more (an account it bound already stays as it is)."""
    actor = as_actor(actor)
    with audit.failures(actor, "acme_eab_key.revoke", key):
        require(actor, Action.MANAGE, key.profile.organization_id)
        with transaction.atomic():
            key = AcmeEabKey.objects.select_for_update().select_related("profile").get(pk=key.pk)
            if key.revoked_at is not None:
                raise Conflict("this EAB key is revoked already")
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            audit.record(
                actor, "acme_eab_key.revoke", key, organization=key.profile.organization_id, kid=key.kid
            )
    return key


def _deactivate(account: AcmeServerAccount) -> None:
    """RFC 8555 §7.3.6, inside the caller's transaction with the account locked: its pending authorizations
    are deactivated with it (their orders turn invalid); every later request of it is unauthorized."""
    account.status = AccountStatus.DEACTIVATED
    pending = list(
        AcmeServerAuthorization.objects.filter(
            account=account, status=AuthorizationStatus.PENDING
        ).values_list("pk", flat=True)
    )
    AcmeServerAuthorization.objects.filter(pk__in=pending).update(status=AuthorizationStatus.DEACTIVATED)
    orders = AcmeServerOrder.objects.filter(authorizations__in=pending, status=OrderStatus.PENDING)
    ids = list(orders.values_list("pk", flat=True).distinct())
    locked = AcmeServerOrder.objects.select_for_update().filter(pk__in=ids, status=OrderStatus.PENDING)
    for order in locked.order_by("pk"):
        _settle_order(order)


def update_account(account: AcmeServerAccount, payload: dict[str, Any]) -> AcmeServerAccount:
    """RFC 8555 §7.3.2 (contact) and §7.3.6 (deactivation), asked by the account itself."""
    profile = account.profile
    status = payload.get("status")
    if status is not None and status != AccountStatus.DEACTIVATED:
        raise malformed("an account's status can only be set to deactivated")
    changes: dict[str, Any] = {}
    if "contact" in payload:
        changes["contact"] = _clean_contact(payload["contact"])
    with transaction.atomic():
        account = AcmeServerAccount.objects.select_for_update().select_related("profile").get(pk=account.pk)
        if account.status != AccountStatus.VALID:
            raise unauthorized(f"the account is {account.status}")
        for name, value in changes.items():
            setattr(account, name, value)
        action = "acme_server.account.update"
        if status == AccountStatus.DEACTIVATED:
            _deactivate(account)
            action = "acme_server.account.deactivate"
        if changes or status:
            account.updated_at = timezone.now()
            account.save()
            audit.record(
                actor_for(profile, account),
                action,
                account,
                organization=profile.organization_id,
                **changes,
            )
    return account


def deactivate_account(account: AcmeServerAccount, *, actor: Actor) -> AcmeServerAccount:
    """An operator deactivates a client's account (the admin, the API): as if the client had asked
    (§7.3.6), for good; its certificates stay as they are."""
    actor = as_actor(actor)
    with audit.failures(
        actor, "acme_server.account.deactivate", account, organization=account.profile.organization_id
    ):
        require(actor, Action.MANAGE, account.profile.organization_id)
        with transaction.atomic():
            account = (
                AcmeServerAccount.objects.select_for_update(of=("self",))
                .select_related("profile")
                .get(pk=account.pk)
            )
            if account.status != AccountStatus.VALID:
                raise Conflict(f"the account is {account.get_status_display().lower()} already")
            _deactivate(account)
            account.updated_at = timezone.now()
            account.save(update_fields=["status", "updated_at"])
            audit.record(
                actor,
                "acme_server.account.deactivate",
                account,
                organization=account.profile.organization_id,
                profile=account.profile_id,
            )
    return account


# --- orders ---------------------------------------------------------------------------------------------
def _challenge_types(profile: AcmeProfile, ident: idents.Identifier) -> list[str]:
    offered = list(profile.challenge_types)
    if ident.wildcard:
        return [t for t in offered if t == ChallengeType.DNS_01]
    if ident.type == "ip":
        return [t for t in offered if t != ChallengeType.DNS_01]  # RFC 8738 §7: no dns-01 for addresses
    return offered


def _policy(profile: AcmeProfile, order_profile: AcmeOrderProfile | None) -> Policy | None:
    if order_profile is not None and order_profile.policy_id:
        return order_profile.policy
    return profile.policy if profile.policy_id else None


def _validity_days(profile: AcmeProfile, order_profile: AcmeOrderProfile | None) -> int:
    return order_profile.validity_days if order_profile is not None else profile.validity_days


def _order_profile(profile: AcmeProfile, name: Any) -> AcmeOrderProfile | None:
    """draft-ietf-acme-profiles §4: the order profile newOrder names (none: the directory's own settings);
    a name the directory does not list is an ``invalidProfile``."""
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise malformed("profile must be the name of one of the directory's meta.profiles")
    order_profile = (
        AcmeOrderProfile.objects.select_related("policy").filter(profile=profile, name=name).first()
        if PROFILE_NAME.fullmatch(name)
        else None
    )
    if order_profile is None:
        listed = ", ".join(profile.order_profiles.values_list("name", flat=True)) or "none"
        raise AcmeProblem(
            "invalidProfile", f"this directory has no profile {name[:64]!r} (its profiles: {listed})"
        )
    return order_profile


# How far in the past a notBefore may lie (clients' clocks), RFC 8555 §7.4.
NOT_BEFORE_SKEW = timedelta(minutes=5)


def _timestamp(payload: dict[str, Any], name: str) -> datetime | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise malformed(f"{name} must be an RFC 3339 date-time")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise malformed(f"{name} {value[:40]!r} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise malformed(f"{name} {value[:40]!r} has no time zone (RFC 3339 needs Z or an offset)")
    try:
        return parsed.astimezone(UTC).replace(microsecond=0)
    except OverflowError:  # year 1 or 9999 pushed past the range by its offset
        raise malformed(f"{name} {value[:40]!r} is out of range") from None


def _requested_validity(
    payload: dict[str, Any], validity_days: int, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """RFC 8555 §7.4 notBefore/notAfter, honoured when they fit the profile's validity: notBefore not
    earlier than a few minutes ago, notAfter after notBefore (and now), the span at most the validity.
    Otherwise ``malformed`` saying which bound fails."""
    not_before, not_after = _timestamp(payload, "notBefore"), _timestamp(payload, "notAfter")
    if not_before is None and not_after is None:
        return None, None
    start = not_before or now
    span = timedelta(days=validity_days)
    if not_before is not None and not_before < now - NOT_BEFORE_SKEW:
        raise malformed(f"notBefore {not_before:%Y-%m-%dT%H:%M:%SZ} lies in the past (backdating is refused)")
    if not_before is not None and not_before > now + span:
        raise malformed(f"notBefore lies more than the profile's validity ({validity_days} days) ahead")
    if not_after is not None:
        if not_after <= max(start, now):
            raise malformed(f"notAfter {not_after:%Y-%m-%dT%H:%M:%SZ} is not after notBefore and now")
        if not_after - start > span:
            raise malformed(
                f"notAfter {not_after:%Y-%m-%dT%H:%M:%SZ} is more than the profile's validity "
                f"({validity_days} days) after notBefore"
            )
    return not_before, not_after


def _policy_problems(
    profile: AcmeProfile, order_profile: AcmeOrderProfile | None, wanted: list[idents.Identifier]
) -> list[AcmeProblem]:
    policy = _policy(profile, order_profile)
    if policy is None:
        return []
    rules = pki.policy_of(policy)
    problems = []
    for ident in wanted:
        request = policy_rules.Request(
            common_name="",
            sans=[ident.value],
            key_algorithm="",
            validity_days=_validity_days(profile, order_profile),
            key_usages=[],
            extended_key_usages=[],
        )
        messages = [m for f, m in policy_rules.violations(rules, request) if f == "sans"]
        if messages:
            problems.append(
                AcmeProblem("rejectedIdentifier", "; ".join(messages), identifier=ident.to_json())
            )
    return problems


def new_order(
    account: AcmeServerAccount, payload: dict[str, Any]
) -> tuple[AcmeServerOrder, list[AcmeServerAuthorization]]:
    """RFC 8555 §7.4: an order for the payload's identifiers, each with a pending authorization and the
    challenges the profile offers for it (answered with the order). Names the policy refuses are refused
    here already."""
    profile = account.profile
    if account.status != AccountStatus.VALID:
        raise unauthorized(f"the account is {account.status}")
    order_profile = _order_profile(profile, payload.get("profile"))
    now = timezone.now()
    not_before, not_after = _requested_validity(payload, _validity_days(profile, order_profile), now)
    wanted = idents.clean(
        payload.get("identifiers"),
        allow_wildcards=profile.allow_wildcards,
        allow_ip=profile.allow_ip_identifiers,
    )
    problems = _policy_problems(profile, order_profile, wanted)
    for ident in wanted:
        if not _challenge_types(profile, ident):
            problems.append(
                AcmeProblem(
                    "rejectedIdentifier",
                    f"{ident.value}: this profile offers no challenge that proves it",
                    identifier=ident.to_json(),
                )
            )
    idents.raise_compound(problems)
    replaces = _replaced(account, payload.get("replaces")) if payload.get("replaces") is not None else None
    _check_rate_limits(account, len(wanted), now)
    expires = now + timedelta(days=settings.CERTMGR_ACME_ORDER_DAYS)
    with transaction.atomic():
        order = AcmeServerOrder.objects.create(
            account=account,
            identifiers=[i.to_json() for i in wanted],
            expires_at=expires,
            replaces=replaces,
            order_profile=order_profile,
            profile_name=order_profile.name if order_profile is not None else "",
            not_before=not_before,
            not_after=not_after,
        )
        authorizations = []
        reused = 0
        for ident in wanted:
            authz = _reusable(account, ident, now)
            if authz is None:
                authz = AcmeServerAuthorization.objects.create(
                    account=account,
                    identifier_type=ident.type,
                    identifier_value=ident.base,
                    wildcard=ident.wildcard,
                    expires_at=expires,
                )
                AcmeServerChallenge.objects.bulk_create(
                    AcmeServerChallenge(authorization=authz, type=t) for t in _challenge_types(profile, ident)
                )
            else:
                reused += 1
            authorizations.append(authz)
        order.authorizations.add(*authorizations)  # a new order: no SELECT of its links first
        if all(a.status == AuthorizationStatus.VALID for a in authorizations):
            order.status = OrderStatus.READY
            order.save(update_fields=["status"])
        audit.record(
            actor_for(profile, account),
            "acme_server.order.create",
            order,
            organization=profile.organization_id,
            account=account.public_id,
            identifiers=[i.value for i in wanted],
            reused_authorizations=reused,
            replaces=replaces.serial if replaces is not None else None,
            profile=order.profile_name or None,
            not_before=not_before.isoformat() if not_before else None,
            not_after=not_after.isoformat() if not_after else None,
        )
    return order, authorizations


# --- ARI (RFC 9773) ---------------------------------------------------------------------------------------
def certificate_of_id(profile: AcmeProfile, identifier: str) -> Certificate:
    """The certificate of the profile's CA named by an ARI certificate identifier (malformed, 404 if none)."""
    from cryptography import x509 as cx509

    from acmeserver import ari

    aki, serial = ari.parse_cert_id(identifier)
    certificate = Certificate.objects.filter(ca=profile.ca, serial=x509.serial_hex(serial)).first()
    if certificate is not None:
        leaf = cx509.load_pem_x509_certificate(certificate.certificate_pem.encode())
        try:
            own = leaf.extensions.get_extension_for_class(cx509.AuthorityKeyIdentifier).value.key_identifier
        except cx509.ExtensionNotFound:
            own = None
        if own == aki:
            return certificate
    raise AcmeProblem("malformed", "this profile's CA issued no certificate with that identifier", status=404)


def renewal_info(profile: AcmeProfile, identifier: str) -> tuple[datetime, datetime]:
    """RFC 9773 §4.2: the suggested renewal window of a certificate of the profile's CA."""
    from acmeserver import ari

    certificate = certificate_of_id(profile, identifier)
    early = AcmeEarlyRenewal.objects.filter(certificate=certificate).values_list("requested_at", flat=True)
    return ari.suggested_window(
        certificate.not_before,
        certificate.not_after,
        revoked=certificate.status == Certificate.Status.REVOKED,
        now=timezone.now(),
        early_renewal_at=early.first(),
    )


MAX_EARLY_RENEWAL_REASON = 200


def request_early_renewal(
    *,
    actor: Actor,
    profile: AcmeProfile | None = None,
    ca: CertificateAuthority | None = None,
    certificates: list[Certificate] | None = None,
    reason: str = "",
) -> int:
    """A mass re-issue over ARI (RFC 9773): the unexpired, unrevoked certificates of ``ca``, those issued
    through ``profile``'s orders, or the ``certificates`` given, get a suggested renewal window in the past,
    so their ACME clients renew at their next check. Answers how many certificates were marked (one asked
    again keeps its first time). One audit event per call, naming the serials."""
    actor = as_actor(actor)
    target: Any = profile or ca or (certificates[0] if certificates else None)
    with audit.failures(actor, "acme_server.early_renewal", target):
        if sum(x is not None for x in (profile, ca, certificates)) != 1:
            raise ValidationError({"non_field_errors": ["Name one of: a profile, a CA, certificates."]})
        reason = (reason or "").strip()
        if len(reason) > MAX_EARLY_RENEWAL_REASON or "\x00" in reason:
            raise ValidationError({"reason": [f"Enter at most {MAX_EARLY_RENEWAL_REASON} characters."]})
        now = timezone.now()
        if profile is not None:
            org_id = profile.organization_id
            chosen = Certificate.objects.filter(acme_server_orders__account__profile=profile)
        elif ca is not None:
            org_id = ca.organization_id
            chosen = Certificate.objects.filter(ca=ca)
        else:
            assert certificates
            org_id = certificates[0].organization_id
            if any(c.organization_id != org_id for c in certificates):
                raise ValidationError({"certificates": ["Choose certificates of one organization."]})
            chosen = Certificate.objects.filter(pk__in=[c.pk for c in certificates])
        require(actor, Action.MANAGE, org_id)
        chosen = chosen.filter(organization_id=org_id, not_after__gt=now).exclude(
            status=Certificate.Status.REVOKED
        )
        with transaction.atomic():
            rows = list(chosen.distinct().values_list("pk", "serial"))
            AcmeEarlyRenewal.objects.bulk_create(
                [AcmeEarlyRenewal(certificate_id=pk, reason=reason, requested_at=now) for pk, _ in rows],
                ignore_conflicts=True,
            )
            audit.record(
                actor,
                "acme_server.early_renewal",
                target,
                organization=org_id,
                reason=reason,
                count=len(rows),
                serials=[serial for _, serial in rows[:1000]],
            )
    return len(rows)


def _replaced(account: AcmeServerAccount, identifier: Any) -> Certificate:
    """RFC 9773 §5: the certificate a newOrder's ``replaces`` names, ordered by this account and not
    replaced by another of its orders yet."""
    if not isinstance(identifier, str):
        raise malformed("replaces must be a certificate identifier")
    certificate = certificate_of_id(account.profile, identifier)
    if not AcmeServerOrder.objects.filter(account=account, certificate=certificate).exists():
        raise unauthorized("replaces names a certificate this account did not order")
    if AcmeServerOrder.objects.filter(replaces=certificate).exclude(status=OrderStatus.INVALID).exists():
        raise AcmeProblem("alreadyReplaced", "another order replaces that certificate already")
    return certificate


def _check_rate_limits(account: AcmeServerAccount, new_names: int, now: datetime) -> None:
    """The profile's per-account limits: orders in the last hour, pending authorizations at once
    (``rateLimited`` with the seconds until the oldest order of the hour leaves it)."""
    profile = account.profile
    if profile.orders_per_hour is not None:
        hour_ago = now - timedelta(hours=1)
        # the limit-th newest order of the hour, if there are that many: the oldest one counted
        limit = profile.orders_per_hour
        oldest = list(
            AcmeServerOrder.objects.filter(account=account, created_at__gt=hour_ago)
            .order_by("-created_at")
            .values_list("created_at", flat=True)[max(0, limit - 1) : max(1, limit)]
        )
        if oldest or limit == 0:
            wait = max(1, int(((oldest[0] if oldest else now) - hour_ago).total_seconds()) + 1)
            raise AcmeProblem(
                "rateLimited",
                f"this account placed {profile.orders_per_hour} orders in the last hour, the profile's limit",
                retry_after=wait,
            )
    if profile.max_pending_authorizations is not None:
        pending = AcmeServerAuthorization.objects.filter(
            account=account, status=AuthorizationStatus.PENDING, expires_at__gt=now
        ).count()
        if pending + new_names > profile.max_pending_authorizations:
            raise AcmeProblem(
                "rateLimited",
                f"this account holds {pending} pending authorizations; the profile allows "
                f"{profile.max_pending_authorizations} (answer or deactivate some first)",
                retry_after=60,
            )


def _reusable(
    account: AcmeServerAccount, ident: idents.Identifier, now: datetime
) -> AcmeServerAuthorization | None:
    """The account's authorization of ``ident`` another order can use: valid and unexpired for another
    day, or pending (its challenges are still open) and unexpired."""
    return (
        AcmeServerAuthorization.objects.filter(
            account=account,
            identifier_type=ident.type,
            identifier_value=ident.base,
            wildcard=ident.wildcard,
        )
        .filter(
            Q(status=AuthorizationStatus.VALID, expires_at__gt=now + timedelta(days=1))
            | Q(status=AuthorizationStatus.PENDING, expires_at__gt=now + timedelta(hours=1))
        )
        .order_by("-status", "-expires_at")  # valid before pending
        .first()
    )


def expire(order: AcmeServerOrder) -> AcmeServerOrder:
    """An unfinished order past its expiry turns invalid (checked whenever it is read)."""
    if order.status in (OrderStatus.PENDING, OrderStatus.READY) and order.expires_at <= timezone.now():
        AcmeServerOrder.objects.filter(pk=order.pk, status=order.status).update(
            status=OrderStatus.INVALID, updated_at=timezone.now()
        )
        order.status = OrderStatus.INVALID
    return order


# The challenge flow's reads (respond, the worker, the orders it settles): compiled once per connection.
_PENDING_ORDERS_OF = sql.Prepared(
    lambda authz_id: (
        AcmeServerOrder.objects.select_for_update(of=("self",))
        .filter(authorizations=authz_id, status=OrderStatus.PENDING)
        .order_by("pk")
    )
)
_STATUSES_OF_ORDER = sql.Prepared(
    lambda order_id: AcmeServerAuthorization.objects.filter(orders=order_id).order_by().only("status")
)
_RESPONDING = sql.Prepared(
    lambda pk: (
        AcmeServerChallenge.objects.select_for_update(of=("self",))
        .select_related("authorization")
        .filter(pk=pk)
        .order_by()
    )
)
_TO_VALIDATE = sql.Prepared(
    lambda pk: (
        AcmeServerChallenge.objects.select_related("authorization__account__profile").filter(pk=pk).order_by()
    )
)
_LOCKED_CHALLENGE = sql.Prepared(
    lambda pk: AcmeServerChallenge.objects.select_for_update().filter(pk=pk).order_by()
)


def _settle_orders(authz: AcmeServerAuthorization) -> None:
    """The status of the authorization's pending orders from their authorizations (inside the caller's
    transaction; each order locked, and still pending once locked)."""
    for order in cast(list[AcmeServerOrder], _PENDING_ORDERS_OF.all(authz.pk)):
        _settle_order(order)


def _settle_order(order: AcmeServerOrder) -> None:
    """A pending order's status from its authorizations (the order locked by the caller)."""
    statuses = {a.status for a in cast(list[AcmeServerAuthorization], _STATUSES_OF_ORDER.all(order.pk))}
    if statuses == {AuthorizationStatus.VALID}:
        order.status = OrderStatus.READY
    elif statuses & {
        AuthorizationStatus.INVALID,
        AuthorizationStatus.DEACTIVATED,
        AuthorizationStatus.REVOKED,
    }:
        order.status = OrderStatus.INVALID
    else:
        return
    order.updated_at = timezone.now()
    sql.execute(sql.update_row(order, ["status", "updated_at"]))


def deactivate_authorization(authz: AcmeServerAuthorization) -> AcmeServerAuthorization:
    """RFC 8555 §7.5.2."""
    with transaction.atomic():
        authz = AcmeServerAuthorization.objects.select_for_update().get(pk=authz.pk)
        if authz.status not in (AuthorizationStatus.PENDING, AuthorizationStatus.VALID):
            raise unauthorized(f"the authorization is {authz.status}")
        authz.status = AuthorizationStatus.DEACTIVATED
        authz.save(update_fields=["status"])
        _settle_orders(authz)
    return authz


def respond(challenge: AcmeServerChallenge) -> AcmeServerChallenge:
    """RFC 8555 §7.5.1: the client says the challenge is ready; a worker validates it (enqueued on
    commit). Responding again to a challenge under way or done changes nothing."""
    with transaction.atomic():
        challenge = cast(AcmeServerChallenge, _RESPONDING.get(challenge.pk))
        authz = challenge.authorization
        if challenge.status != ChallengeStatus.PENDING:
            return challenge
        if authz.status != AuthorizationStatus.PENDING or authz.expires_at <= timezone.now():
            raise unauthorized(f"the authorization is {authz.status}")
        if _VALIDATING.all(authz.pk):  # another of its challenges (this one is pending)
            raise malformed("another challenge of this authorization is being validated")
        challenge.status = ChallengeStatus.PROCESSING
        challenge.updated_at = timezone.now()
        sql.execute(sql.update_row(challenge, ["status", "updated_at"]))
        challenge_id = challenge.pk
        transaction.on_commit(lambda: enqueue_validation(challenge_id))
    return challenge


def enqueue_validation(challenge_id: int) -> None:
    from django_q.tasks import async_task

    async_task(
        "acmeserver.tasks.validate_challenge",
        challenge_id,
        task_name=f"acme-server-challenge-{challenge_id}",
        group="acme-server",
    )


def await_validation(authz: AcmeServerAuthorization) -> AcmeServerAuthorization:
    """A poll of a pending authorization whose challenge a worker is validating is held until the outcome
    is stored, for at most ``CERTMGR_ACME_AUTHZ_HOLD_SECONDS``: clients that sleep a whole second after a
    pending answer (certbot, the ``acme`` library's ``poll_authorizations``) then see it valid at their
    first poll. Reads only; 0 turns the hold off."""
    deadline = time.monotonic() + settings.CERTMGR_ACME_AUTHZ_HOLD_SECONDS
    waited = False
    while authz.status == AuthorizationStatus.PENDING and time.monotonic() < deadline:
        if not _VALIDATING.all(authz.pk):
            # The worker may have committed between our read of the authorization and this one of its
            # challenges: read the authorization again rather than answer a stale "pending".
            return cast(AcmeServerAuthorization, _AUTHORIZATION_OF_PK.get(authz.pk)) if waited else authz
        time.sleep(0.01)
        waited = True
        authz = cast(AcmeServerAuthorization, _AUTHORIZATION_OF_PK.get(authz.pk))
    return authz


# what await_validation reads every 10 ms: compiled once per connection
_VALIDATING = sql.Prepared(
    lambda authz_id: (
        AcmeServerChallenge.objects.filter(authorization_id=authz_id, status=ChallengeStatus.PROCESSING)
        .order_by()
        .only("id")[:1]
    )
)
_AUTHORIZATION_OF_PK = sql.Prepared(lambda pk: AcmeServerAuthorization.objects.filter(pk=pk).order_by())


def validate_challenge(challenge_id: int) -> AcmeServerChallenge | None:
    """The worker's step: validate a processing challenge and store the outcome with its authorization's
    and order's new status. Idempotent: a challenge no longer processing is left alone."""
    from acmeserver import validation

    challenge = cast(AcmeServerChallenge | None, _TO_VALIDATE.first(challenge_id))
    if challenge is None or challenge.status != ChallengeStatus.PROCESSING:
        return challenge
    authz = challenge.authorization
    account = authz.account
    started = time.monotonic()
    outcome = validation.validate(challenge.type, authz.identifier_value, challenge.token, account.jwk)
    seconds = time.monotonic() - started
    now = timezone.now()
    with transaction.atomic():
        challenge = cast(AcmeServerChallenge, _LOCKED_CHALLENGE.get(challenge_id))
        if challenge.status != ChallengeStatus.PROCESSING:
            return challenge
        challenge.authorization = authz  # read above: the audit target's name shows it
        challenge.validation_record = outcome.record
        challenge.validation_seconds = seconds
        challenge.updated_at = now
        if outcome.valid:
            challenge.status = ChallengeStatus.VALID
            challenge.validated_at = now
            new_authz_status = AuthorizationStatus.VALID
        else:
            assert outcome.problem is not None
            challenge.status = ChallengeStatus.INVALID
            challenge.error = outcome.problem.to_json()
            new_authz_status = AuthorizationStatus.INVALID
        changes: dict[str, Any] = {"status": new_authz_status}
        if outcome.valid:  # a valid authorization lasts longer than the order that proved it (reuse)
            changes["expires_at"] = now + timedelta(days=settings.CERTMGR_ACME_AUTHORIZATION_DAYS)
        fields = ["status", "validation_record", "validation_seconds", "updated_at", "validated_at", "error"]
        sql.execute(  # the challenge and its authorization, one round trip
            sql.update_row(challenge, fields),
            sql.update(
                AcmeServerAuthorization.objects.filter(pk=authz.pk, status=AuthorizationStatus.PENDING),
                **changes,
            ),
        )
        _settle_orders(authz)
        audit.record(
            actor_for(account.profile, account),
            "acme_server.challenge.validate",
            challenge,
            organization=account.profile.organization_id,
            outcome=audit.AuditEvent.Outcome.SUCCESS if outcome.valid else audit.AuditEvent.Outcome.FAILURE,
            error=outcome.problem.detail if outcome.problem else "",
            type=challenge.type,
            identifier=authz.identifier_value,
        )
    return challenge


# --- finalize -------------------------------------------------------------------------------------------
def _check_caa(order: AcmeServerOrder, account_uri: str) -> None:
    """RFC 8659 with RFC 8657's ``accounturi`` and ``validationmethods``, when the profile names its CAA
    identities: each DNS name's relevant CAA records (climbing to the root, through the validator's
    resolvers) must let this directory issue, for this account and the method that proved the name. A
    forbidding record is a ``caa`` problem quoting it; a lookup that fails refuses too (``dns``): nothing is
    issued without the answer."""
    from acmeserver import validation
    from dnsproviders import caa

    profile = order.account.profile
    proved = {
        (a.identifier_value, a.wildcard): a.challenges.filter(status=ChallengeStatus.VALID)
        .values_list("type", flat=True)
        .first()
        for a in order.authorizations.all()
    }
    resolve = caa.resolver_lookup(validation.resolver())
    failed: list[str] = []

    def lookup(name: str) -> list[caa.CaaRecord] | None:
        records = resolve(name)
        if records is None:
            failed.append(name)
        return records

    problems = []
    for item in order.identifiers:
        if item["type"] != "dns":
            continue  # RFC 8659 is about domain names (RFC 8738 §6: no CAA for addresses)
        ident = idents.Identifier(item["type"], item["value"])
        refusals = caa.preflight(
            [ident.value],
            lookup,
            ca_identifiers=profile.caa_identities,
            account_uri=account_uri,
            method=proved.get((ident.base, ident.wildcard)) or "",
        )
        if failed:
            raise AcmeProblem(
                "dns",
                f"the CAA lookup of {failed[0]} failed: certmgr does not issue without its answer",
                identifier=ident.to_json(),
            )
        problems += [AcmeProblem("caa", str(r), identifier=ident.to_json()) for r in refusals]
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise AcmeProblem("caa", "; ".join(p.detail for p in problems), subproblems=problems)


def finalize(order: AcmeServerOrder, payload: dict[str, Any], *, account_uri: str = "") -> AcmeServerOrder:
    """RFC 8555 §7.4: check the CSR against the order (exactly its identifiers) and issue through the
    issuance core under the profile's policy. A refusal leaves the order ready and nothing issued."""
    from acmeserver import jws

    account = order.account
    profile = account.profile
    order = expire(order)
    if order.status != OrderStatus.READY:
        raise AcmeProblem("orderNotReady", f"the order is {order.status}, not ready")
    der = jws.b64decode(payload.get("csr"), "csr")
    try:
        csr = x509.load_csr(der)
        info = x509.csr_info(csr)
    except x509.X509Error as exc:
        raise AcmeProblem("badCSR", str(exc)) from None
    wanted = [idents.Identifier(i["type"], i["value"]) for i in order.identifiers]
    problem = idents.csr_problem(wanted, common_name=info.subject.common_name, sans=info.sans)
    if problem is not None:
        raise problem
    if profile.caa_identities:
        _check_caa(order, account_uri)
    actor = actor_for(profile, account)

    def mark_valid(certificate: Certificate) -> None:
        updated = AcmeServerOrder.objects.filter(pk=order.pk, status=OrderStatus.READY).update(
            status=OrderStatus.VALID, certificate=certificate, updated_at=timezone.now()
        )
        if not updated:
            raise AcmeProblem("orderNotReady", "the order was finalized meanwhile")
        order.status, order.certificate = OrderStatus.VALID, certificate
        audit.record(
            actor,
            "acme_server.order.finalize",
            order,
            organization=profile.organization_id,
            account=account.public_id,
            certificate=certificate.pk,
            serial=certificate.serial,
        )

    order_profile = order.order_profile if order.order_profile_id else None
    validity_days = _validity_days(profile, order_profile)
    if order.not_before or order.not_after:  # the client's window: the policy checks its length
        start = order.not_before or timezone.now()
        end = order.not_after or start + timedelta(days=validity_days)
        validity_days = max(1, math.ceil((end - start).total_seconds() / 86400))
    enrollment = pki.Enrollment(
        organization_id=profile.organization_id,
        ca=profile.ca,
        policy=_policy(profile, order_profile),
        csr_pem=x509.to_pem(csr),
        names=[i.value for i in wanted],
        validity_days=validity_days,
        not_before=order.not_before,
        not_after=order.not_after,
    )
    try:
        pki.enroll(enrollment, actor=actor, then=mark_valid)
    except pki.PolicyRefused as exc:
        fields = exc.fields or {}
        kind = "rejectedIdentifier" if set(fields) <= {"sans", "common_name"} and fields else "badCSR"
        raise AcmeProblem(kind, exc.message) from None
    except pki.CaUnavailable as exc:
        raise AcmeProblem("serverInternal", f"this profile cannot issue now: {exc.message}") from None
    except ValidationError as exc:
        raise AcmeProblem("badCSR", "; ".join(exc.messages)) from None
    except ServiceError as exc:
        raise AcmeProblem("serverInternal", exc.message) from None
    return order  # valid now, with its certificate (mark_valid)


# --- revocation -----------------------------------------------------------------------------------------
def revoke(
    profile: AcmeProfile,
    payload: dict[str, Any],
    *,
    account: AcmeServerAccount | None,
    jwk: dict[str, Any] | None,
) -> Certificate:
    """RFC 8555 §7.6: revoke a certificate this profile's CA issued, asked by the account that ordered it,
    by an account holding valid authorizations for all its names, or signed with the certificate's key."""
    from cryptography import x509 as cx509

    from acmeserver import jws

    der = jws.b64decode(payload.get("certificate"), "certificate")
    try:
        cert = cx509.load_der_x509_certificate(der)
    except ValueError:
        raise malformed("certificate is not a DER X.509 certificate") from None
    reason_code = payload.get("reason", 0)
    if not isinstance(reason_code, int) or isinstance(reason_code, bool):
        raise AcmeProblem("badRevocationReason", "reason must be an RFC 5280 reason code")
    try:
        reason = RevocationReason.parse(reason_code)
    except ValueError:
        raise AcmeProblem("badRevocationReason", f"{reason_code} is not an RFC 5280 reason code") from None
    fingerprint = x509.fingerprints(cert).sha256
    certificate = Certificate.objects.filter(
        ca=profile.ca, organization_id=profile.organization_id, fingerprint_sha256=fingerprint
    ).first()
    if certificate is None:
        raise AcmeProblem("malformed", "this profile's CA did not issue that certificate", status=404)
    if account is not None:
        if account.status != AccountStatus.VALID:
            raise unauthorized(f"the account is {account.status}")
        if not _may_revoke(account, certificate):
            raise unauthorized(
                "this account neither ordered this certificate nor holds authorizations for its names"
            )
        actor = actor_for(profile, account)
    else:
        assert jwk is not None
        if not jws.same_key(jwk, cert.public_key()):
            raise unauthorized("the request is signed neither by an account nor by the certificate's key")
        actor = Actor.system(f"acme-server {profile.slug}: certificate key")
    if certificate.status == Certificate.Status.REVOKED:
        raise AcmeProblem("alreadyRevoked", "the certificate is already revoked")
    try:
        return pki.revoke(certificate, reason=reason.value, actor=actor)
    except pki.AlreadyRevoked:
        raise AcmeProblem("alreadyRevoked", "the certificate is already revoked") from None
    except ServiceError as exc:
        raise AcmeProblem("serverInternal", exc.message) from None


def _may_revoke(account: AcmeServerAccount, certificate: Certificate) -> bool:
    if AcmeServerOrder.objects.filter(account=account, certificate=certificate).exists():
        return True
    names = {n.lower() for n in certificate.sans} or {certificate.common_name.lower()}
    held = set(
        AcmeServerAuthorization.objects.filter(
            account=account, status=AuthorizationStatus.VALID, expires_at__gt=timezone.now()
        ).values_list("identifier_value", "wildcard")
    )
    covered = {f"*.{value}" if wildcard else value for value, wildcard in held}
    return bool(names) and names <= covered
