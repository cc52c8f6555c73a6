"""The JSON bodies of the ACME resources (RFC 8555 §7.1), built with the ``acme`` library's message types,
and their URLs, absolute from the request the client sent (the URL it signs must be the one it asked)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import josepy as jose
from acme import challenges, messages
from django.http import HttpRequest
from django.urls import get_script_prefix, reverse
from django.utils import timezone

from acmeserver.choices import AuthorizationStatus, ChallengeStatus
from acmeserver.models import (
    AcmeProfile,
    AcmeServerAccount,
    AcmeServerAuthorization,
    AcmeServerChallenge,
    AcmeServerOrder,
)


class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737's challenge, which the acme library no longer ships: ``{"type": "tls-alpn-01", "token"}``
    like the others (not registered, so the library's own parsing is left as it is)."""

    typ = "tls-alpn-01"
    response_cls = challenges.KeyAuthorizationChallengeResponse

    def validation(self, account_key: jose.JWK, **unused_kwargs: Any) -> str:
        return self.key_authorization(account_key)


_CHALLENGES: dict[str, type[challenges.HTTP01] | type[challenges.DNS01] | type[TLSALPN01]] = {
    "http-01": challenges.HTTP01,
    "dns-01": challenges.DNS01,
    "tls-alpn-01": TLSALPN01,
}


# (script prefix, URL name, organization slug, profile slug, with an id) -> the path, ``_ID`` standing for
# the id: an answer names up to a dozen URLs, and reversing one costs more than the rest of its body.
_PATHS: dict[tuple[str, str, str, str, bool], str] = {}
_ID = "public.id"  # no slug holds a dot, and public ids are base64url: replaced, it cannot hit anything else


@dataclass(frozen=True)
class Urls:
    request: HttpRequest
    profile: AcmeProfile

    @cached_property
    def _origin(self) -> str:
        """``https://host:port`` as the client asked (``build_absolute_uri`` of an absolute path)."""
        return self.request.build_absolute_uri("/")[:-1]

    def url(self, name: str, public_id: str | None = None) -> str:
        organization, profile = self.profile.organization.slug, self.profile.slug
        key = (get_script_prefix(), name, organization, profile, public_id is not None)
        path = _PATHS.get(key)
        if path is None:
            kwargs = {"organization": organization, "profile": profile}
            if public_id is not None:
                kwargs["public_id"] = _ID
            if len(_PATHS) > 1024:
                _PATHS.clear()
            path = _PATHS[key] = reverse(f"acmeserver:{name}", kwargs=kwargs)
        return self._origin + (path.replace(_ID, public_id) if public_id is not None else path)

    @property
    def directory(self) -> str:
        return self.url("directory")

    def account(self, account: AcmeServerAccount) -> str:
        return self.url("account", account.public_id)

    def order(self, order: AcmeServerOrder) -> str:
        return self.url("order", order.public_id)

    def authorization(self, authz: AcmeServerAuthorization) -> str:
        return self.url("authz", authz.public_id)

    def challenge(self, challenge: AcmeServerChallenge) -> str:
        return self.url("challenge", challenge.public_id)


def directory(urls: Urls) -> dict[str, Any]:
    profile = urls.profile
    # draft-ietf-acme-profiles §3: {name: description} of the order profiles newOrder may name
    profiles = {p.name: p.description or p.name for p in profile.order_profiles.all()}
    meta = messages.Directory.Meta(
        external_account_required=profile.eab_required or None,
        terms_of_service=profile.terms_of_service_url or None,
        profiles=profiles or None,
        caa_identities=tuple(profile.caa_identities) or None,
    )
    body = {
        "newNonce": urls.url("new-nonce"),
        "newAccount": urls.url("new-account"),
        "newOrder": urls.url("new-order"),
        "revokeCert": urls.url("revoke-cert"),
        "keyChange": urls.url("key-change"),
        "renewalInfo": urls.url("renewal-info"),
        "meta": meta,
    }
    return messages.Directory(body).to_json()


def account(urls: Urls, acct: AcmeServerAccount) -> dict[str, Any]:
    body = messages.Registration(
        status=messages.Status(acct.status),
        contact=tuple(acct.contact),
        terms_of_service_agreed=acct.terms_of_service_agreed or None,
    ).to_json()
    body["orders"] = urls.url("account-orders", acct.public_id)
    return body


def _identifier(value: dict[str, str]) -> messages.Identifier:
    return messages.Identifier(typ=messages.IdentifierType(value["type"]), value=value["value"])


def order(urls: Urls, o: AcmeServerOrder, authorizations: list[AcmeServerAuthorization]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "status": messages.Status(o.status),
        "finalize": urls.url("finalize", o.public_id),
        "expires": o.expires_at,
    }
    if o.profile_name:
        fields["profile"] = o.profile_name
    if o.certificate_id and o.status == "valid":
        fields["certificate"] = urls.url("certificate", o.public_id)
    if o.error:
        fields["error"] = messages.Error.from_json(o.error)
    body: dict[str, Any] = messages.Order(**fields).to_json()
    # Required members, set after to_json (josepy's omitempty fails on an empty list).
    body["identifiers"] = [_identifier(i).to_json() for i in o.identifiers]
    body["authorizations"] = [urls.authorization(a) for a in authorizations]
    for name, value in (("notBefore", o.not_before), ("notAfter", o.not_after)):
        if value is not None:
            body[name] = value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return body


def challenge_body(urls: Urls, c: AcmeServerChallenge) -> messages.ChallengeBody:
    kind = _CHALLENGES[c.type]
    fields: dict[str, Any] = {
        "chall": kind(token=jose.decode_b64jose(c.token)),
        "uri": urls.challenge(c),
        "status": messages.Status(c.status),
    }
    if c.validated_at:
        fields["validated"] = c.validated_at
    if c.error:
        fields["error"] = messages.Error.from_json(c.error)
    return messages.ChallengeBody(**fields)


def challenge(urls: Urls, c: AcmeServerChallenge) -> dict[str, Any]:
    return challenge_body(urls, c).to_json()


def _shown_challenges(
    a: AcmeServerAuthorization, chall: list[AcmeServerChallenge]
) -> list[AcmeServerChallenge]:
    """§7.1.4: a pending authorization lists the challenges the client may answer; a settled one the
    challenge that settled it (the failed one of an invalid authorization, else the valid one). One with no
    such challenge (its state set by hand) lists them all rather than none."""
    if a.status == AuthorizationStatus.PENDING:
        return chall
    wanted = ChallengeStatus.INVALID if a.status == AuthorizationStatus.INVALID else ChallengeStatus.VALID
    return [c for c in chall if c.status == wanted] or chall


def authorization_status(a: AcmeServerAuthorization, now: datetime | None = None) -> str:
    """What the resource says: a pending authorization past its expiry is expired (§7.1.6)."""
    if a.status == AuthorizationStatus.PENDING and a.expires_at <= (now or timezone.now()):
        return AuthorizationStatus.EXPIRED
    return a.status


def authorization(urls: Urls, a: AcmeServerAuthorization, chall: list[AcmeServerChallenge]) -> dict[str, Any]:
    body: dict[str, Any] = messages.Authorization(
        identifier=_identifier({"type": a.identifier_type, "value": a.identifier_value}),
        status=messages.Status(authorization_status(a)),
        expires=a.expires_at,
        wildcard=True if a.wildcard else None,
    ).to_json()
    # Set after to_json: josepy's omitempty fails on an empty list (a TypeError, a 500), and the member is
    # required even when empty.
    body["challenges"] = [challenge(urls, c) for c in _shown_challenges(a, chall)]
    return body
