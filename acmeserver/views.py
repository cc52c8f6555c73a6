"""The ACME protocol door, ``/acme/<organization slug>/<profile slug>/...`` (RFC 8555 §7).

Every answer carries a fresh ``Replay-Nonce`` and ``Link: <directory>;rel="index"``; every refusal is an
``application/problem+json`` document with the RFC's type. A POST is checked in §6's order: the body is a
flattened JWS with an accepted ``alg``; its ``url`` is the URL requested; ``kid`` (an account of this
profile) or ``jwk`` (newAccount, revokeCert by the certificate's key) as the resource demands; the
signature; then the nonce, used up here (``badNonce`` otherwise, and the answer's nonce is the one to
retry with). Then the resource's service in ``acmeserver.services`` does the work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlencode

from acme import messages
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from acmeserver import jws, resources, services
from acmeserver.choices import AccountStatus, AuthorizationStatus, ChallengeStatus, OrderStatus
from acmeserver.models import (
    AcmeProfile,
    AcmeServerAccount,
    AcmeServerAuthorization,
    AcmeServerChallenge,
    AcmeServerOrder,
)
from acmeserver.problems import AcmeProblem, malformed, unauthorized
from certmgr import sql
from pki.models import Certificate

log = logging.getLogger(__name__)
JOSE = "application/jose+json"
RETRY_AFTER_SECONDS = 1
ORDERS_PER_PAGE = 100  # an account's order list, per page (RFC 8555 §7.1.2.1)


class Answer:
    """What a resource handler answers: a JSON body (or raw bytes), a status and extra headers."""

    def __init__(
        self,
        body: Any = None,
        *,
        status: int = 200,
        location: str | None = None,
        links: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        retry_after: bool | int = False,
    ):
        self.body, self.status, self.location = body, status, location
        self.links = links or []
        self.content_type = content_type
        self.retry_after = retry_after


def _respond(
    urls: resources.Urls | None, answer: Answer, *, nonce: bool = True, fresh: str | None = None
) -> HttpResponse:
    """``fresh``: the nonce handed out already (with the one the request used up), else a new one."""
    if isinstance(answer.body, bytes | str):
        content: bytes | str = answer.body
    elif answer.body is None:
        content = b""
    else:
        content = json.dumps(answer.body, indent=1)
    response = HttpResponse(content, status=answer.status, content_type=answer.content_type)
    if nonce:
        response["Replay-Nonce"] = fresh or services.new_nonce()
        response["Cache-Control"] = "no-store"
    links = list(answer.links)
    if urls is not None:
        links.insert(0, (urls.directory, "index"))
    if links:
        response["Link"] = ", ".join(f'<{url}>;rel="{rel}"' for url, rel in links)
    if answer.location:
        response["Location"] = answer.location
    if answer.retry_after:
        seconds = RETRY_AFTER_SECONDS if answer.retry_after is True else int(answer.retry_after)
        response["Retry-After"] = str(seconds)
    return response


def _problem(urls: resources.Urls | None, problem: AcmeProblem, *, fresh: str | None = None) -> HttpResponse:
    if urls is not None:
        services.count_problem(urls.profile, problem)
    return _respond(
        urls,
        Answer(
            problem.to_json(),
            status=problem.status,
            content_type="application/problem+json",
            location=problem.location,
            retry_after=problem.retry_after or False,
        ),
        fresh=fresh,
    )


# Every request reads its profile (with what it signs with and under), and most their account: compiled once
# per connection (compiling the querysets cost more than running them). Read on every request, never
# cached: a profile disabled, a CA or policy changed, counts from the next request on. The CA's key is not
# read here (pki.services.ca_material decrypts it once per process).
_PROFILE = sql.Prepared(
    lambda organization, slug: (
        AcmeProfile.objects.select_related("organization", "ca", "policy")
        .defer("ca__private_key")
        .filter(organization__slug=organization, slug=slug)
        .order_by()
    ),
    kinds=(str, str),
)
_ACCOUNT = sql.Prepared(
    lambda profile_id, public_id: AcmeServerAccount.objects.filter(
        profile_id=profile_id, public_id=public_id
    ).order_by(),
    kinds=(int, str),
)
_ORDER = sql.Prepared(
    lambda account_id, public_id: AcmeServerOrder.objects.filter(
        account_id=account_id, public_id=public_id
    ).order_by(),
    kinds=(int, str),
)
_ORDER_AUTHORIZATIONS = sql.Prepared(
    lambda order_id: AcmeServerAuthorization.objects.filter(orders=order_id).order_by("id")
)
_AUTHORIZATION = sql.Prepared(
    lambda account_id, public_id: AcmeServerAuthorization.objects.filter(
        account_id=account_id, public_id=public_id
    ).order_by(),
    kinds=(int, str),
)
_CHALLENGES = sql.Prepared(
    lambda authz_id: AcmeServerChallenge.objects.filter(authorization_id=authz_id).order_by("id")
)
_CHALLENGE = sql.Prepared(
    lambda account_id, public_id: (
        AcmeServerChallenge.objects.select_related("authorization")
        .filter(authorization__account_id=account_id, public_id=public_id)
        .order_by()
    ),
    kinds=(int, str),
)
_CERTIFICATE_PEM = sql.Prepared(
    lambda pk: Certificate.objects.filter(pk=pk).only("certificate_pem", "chain_pem").order_by()
)


def _profile(organization: str, profile: str) -> AcmeProfile:
    found = cast(AcmeProfile | None, _PROFILE.first(organization, profile))
    if found is None:
        raise AcmeProblem("malformed", "no ACME directory here", status=404)
    if not found.enabled:
        raise unauthorized(f"the ACME profile {found.name!r} is disabled")
    return found


# --- the POST pipeline --------------------------------------------------------------------------------
class BadNonce(AcmeProblem):
    def __init__(self, fresh: str):
        super().__init__("badNonce", "the nonce was used, expired or never issued: retry with the new one")
        self.fresh = fresh  # RFC 8555 §6.5: the answer's nonce is the one to retry with


class Signed:
    """A verified request: its JWS, the account of ``kid`` (or None when signed with ``jwk``)."""

    def __init__(self, request: jws.SignedRequest, account: AcmeServerAccount | None, fresh_nonce: str):
        self.jws = request
        self.account = account
        self.fresh_nonce = fresh_nonce  # handed out with the use of the request's nonce: the answer's

    @property
    def payload(self) -> dict[str, Any]:
        return self.jws.json()

    def require_account(self) -> AcmeServerAccount:
        if self.account is None:
            raise malformed("this resource takes a request signed with an account key (kid)")
        if self.account.status != AccountStatus.VALID:
            raise unauthorized(f"the account is {self.account.status}")
        return self.account


def _authenticate(request: HttpRequest, urls: resources.Urls, key: str) -> Signed:
    """§6.2-6.5. ``key``: "jwk" (newAccount), "kid" (every account resource) or "either" (revokeCert)."""
    content_type = request.content_type or ""
    if content_type != JOSE:
        raise AcmeProblem("malformed", f"the Content-Type must be {JOSE}", status=415)
    try:
        body = request.body
    except RequestDataTooBig:
        cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raise AcmeProblem(
            "malformed",
            f"the request body is larger than the cap of {cap} bytes (CERTMGR_MAX_REQUEST_BYTES)",
            status=413,
        ) from None
    signed = jws.parse(body)
    if signed.url != request.build_absolute_uri():
        raise unauthorized(f"the JWS url {signed.url!r} is not the URL requested")
    account = None
    if signed.jwk is not None:
        if key == "kid":
            raise malformed("this resource takes a kid (the account URL), not a jwk")
        jwk = signed.jwk
    else:
        if key == "jwk":
            raise malformed("newAccount takes a jwk, not a kid")
        account = _account_of_kid(urls, signed.kid or "")
        jwk = account.jwk
    jws.verify(signed, jwk)
    used, fresh = services.use_nonce(signed.nonce)
    if not used:
        raise BadNonce(fresh)
    return Signed(signed, account, fresh)


def _account_of_kid(urls: resources.Urls, kid: str) -> AcmeServerAccount:
    public_id = kid.rstrip("/").rsplit("/", 1)[-1]
    account = (
        cast(AcmeServerAccount | None, _ACCOUNT.first(urls.profile.pk, public_id))
        if jws.is_token(public_id)
        else None
    )
    if account is None or urls.account(account) != kid:
        raise AcmeProblem("accountDoesNotExist", "no account of this profile has that kid")
    account.profile = urls.profile  # the one already loaded, with its CA and policy
    return account


Handler = Callable[[HttpRequest, resources.Urls, Signed, str | None], Answer]


def _door(key: str, handler: Handler) -> Callable[..., HttpResponse]:
    @csrf_exempt
    def view(
        request: HttpRequest, organization: str, profile: str, public_id: str | None = None
    ) -> HttpResponse:
        urls: resources.Urls | None = None
        fresh: str | None = None  # the nonce handed out when the request's own was used up
        try:
            found = _profile(organization, profile)
            urls = resources.Urls(request, found)
            if request.method != "POST":
                raise AcmeProblem("malformed", "this resource takes POST (or POST-as-GET) only", status=405)
            if public_id is not None and not jws.is_token(public_id):  # never one of ours
                raise AcmeProblem("malformed", "no such resource", status=404)
            signed = _authenticate(request, urls, key)
            fresh = signed.fresh_nonce
            return _respond(urls, handler(request, urls, signed, public_id), fresh=fresh)
        except BadNonce as problem:
            return _problem(urls, problem, fresh=problem.fresh)
        except AcmeProblem as problem:
            return _problem(urls, problem, fresh=fresh)
        except Exception:
            log.exception("ACME server error")
            return _problem(
                urls, AcmeProblem("serverInternal", "the server failed; try again later"), fresh=fresh
            )

    return view


# --- GET resources ------------------------------------------------------------------------------------
@csrf_exempt
def directory(request: HttpRequest, organization: str, profile: str) -> HttpResponse:
    try:
        urls = resources.Urls(request, _profile(organization, profile))
    except AcmeProblem as problem:
        return _problem(None, problem)
    if request.method not in ("GET", "HEAD"):
        return _problem(urls, AcmeProblem("malformed", "the directory takes GET", status=405))
    # §7.2: nonces come from newNonce and the POSTs' answers, not the directory
    return _respond(None, Answer(resources.directory(urls)), nonce=False)


@csrf_exempt
def renewal_info(request: HttpRequest, organization: str, profile: str, cert_id: str) -> HttpResponse:
    """RFC 9773 §4.2 (GET, unauthenticated): the suggested window, Retry-After: when to ask again."""
    urls: resources.Urls | None = None
    try:
        urls = resources.Urls(request, _profile(organization, profile))
        if request.method not in ("GET", "HEAD"):
            raise AcmeProblem("malformed", "renewalInfo takes GET", status=405)
        start, end = services.renewal_info(urls.profile, cert_id)
    except AcmeProblem as problem:
        return _problem(urls, problem)
    body = messages.RenewalInfo(suggested_window=messages.RenewalInfo.SuggestedWindow(start=start, end=end))
    response = _respond(urls, Answer(body.to_json()), nonce=False)
    response["Retry-After"] = str(settings.CERTMGR_ACME_ARI_RETRY_SECONDS)
    return response


@csrf_exempt
def new_nonce(request: HttpRequest, organization: str, profile: str) -> HttpResponse:
    try:
        urls = resources.Urls(request, _profile(organization, profile))
    except AcmeProblem as problem:
        return _problem(None, problem)
    if request.method not in ("GET", "HEAD"):
        return _problem(urls, AcmeProblem("malformed", "newNonce takes HEAD or GET", status=405))
    return _respond(urls, Answer(status=200 if request.method == "HEAD" else 204))


# --- accounts -----------------------------------------------------------------------------------------
def _new_account(request: HttpRequest, urls: resources.Urls, signed: Signed, _: str | None) -> Answer:
    payload = signed.payload
    assert signed.jws.jwk is not None
    if payload.get("onlyReturnExisting"):
        existing = services.find_account(urls.profile, jws.thumbprint(signed.jws.jwk))
        if existing is None:
            raise AcmeProblem("accountDoesNotExist", "no account of this profile has that key")
        account, created = existing, False
    else:
        account, created = services.new_account(
            urls.profile,
            jwk=signed.jws.jwk,
            contact=payload.get("contact"),
            terms_of_service_agreed=bool(payload.get("termsOfServiceAgreed")),
            binding=payload.get("externalAccountBinding"),
            url=signed.jws.url,
        )
    if account.status != AccountStatus.VALID:
        raise unauthorized(f"the account of this key is {account.status}")
    return Answer(
        resources.account(urls, account), status=201 if created else 200, location=urls.account(account)
    )


def _account(request: HttpRequest, urls: resources.Urls, signed: Signed, public_id: str | None) -> Answer:
    account = signed.require_account()
    if account.public_id != public_id:
        raise unauthorized("an account can only read or change itself")
    if not signed.jws.post_as_get:
        account = services.update_account(account, signed.payload)
    return Answer(resources.account(urls, account), location=urls.account(account))


def _account_orders(
    request: HttpRequest, urls: resources.Urls, signed: Signed, public_id: str | None
) -> Answer:
    """§7.1.2.1: the account's orders that are not invalid, newest first, ``ORDERS_PER_PAGE`` at a time;
    a further page is a ``Link: rel="next"`` (``?cursor=`` the last order of this page)."""
    account = signed.require_account()
    if account.public_id != public_id:
        raise unauthorized("an account can only list its own orders")
    orders = AcmeServerOrder.objects.filter(
        account=account,
        status__in=[OrderStatus.PENDING, OrderStatus.READY, OrderStatus.PROCESSING, OrderStatus.VALID],
    ).order_by("-created_at", "-id")
    cursor = request.GET.get("cursor")
    if cursor is not None:
        last = AcmeServerOrder.objects.filter(account=account, public_id=cursor).values("created_at", "id")
        if not last:
            raise malformed("cursor is not an order of this account")
        at, pk = last[0]["created_at"], last[0]["id"]
        orders = orders.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=pk))
    ids = list(orders.values_list("public_id", flat=True)[: ORDERS_PER_PAGE + 1])
    links = []
    if len(ids) > ORDERS_PER_PAGE:
        ids = ids[:ORDERS_PER_PAGE]
        next_page = urls.url("account-orders", account.public_id) + "?" + urlencode({"cursor": ids[-1]})
        links.append((next_page, "next"))
    return Answer({"orders": [urls.url("order", i) for i in ids]}, links=links)


def _key_change(request: HttpRequest, urls: resources.Urls, signed: Signed, _: str | None) -> Answer:
    """§7.3.5: the payload is a JWS signed with the new key (its jwk), for this URL, naming the account and
    its old key."""
    account = signed.require_account()
    inner = jws.parse(json.dumps(signed.payload).encode(), inner=True)
    if inner.url != signed.jws.url:
        raise malformed("the inner JWS's url is not the keyChange URL")
    assert inner.jwk is not None
    jws.verify(inner, inner.jwk)
    change = inner.json()
    if change.get("account") != signed.jws.kid:
        raise malformed("the key change names another account than the one signing it")
    old = change.get("oldKey")
    if not isinstance(old, dict) or jws.thumbprint(old) != account.thumbprint:
        raise malformed("oldKey is not the account's current key")
    try:
        account = services.change_key(account, inner.jwk)
    except services.KeyInUse as exc:
        exc.location = urls.account(exc.holder)
        raise
    return Answer(resources.account(urls, account), location=urls.account(account))


# --- orders -------------------------------------------------------------------------------------------
def _order_answer(
    urls: resources.Urls,
    order: AcmeServerOrder,
    *,
    status: int = 200,
    authorizations: list[AcmeServerAuthorization] | None = None,
) -> Answer:
    """``authorizations``: the order's, when the caller has them already."""
    if authorizations is None:
        authorizations = cast(list[AcmeServerAuthorization], _ORDER_AUTHORIZATIONS.all(order.pk))
    return Answer(
        resources.order(urls, order, authorizations),
        status=status,
        location=urls.order(order),
        retry_after=order.status in (OrderStatus.PENDING, OrderStatus.PROCESSING),
    )


def _own_order(signed: Signed, public_id: str | None) -> AcmeServerOrder:
    account = signed.require_account()
    order = cast(AcmeServerOrder | None, _ORDER.first(account.pk, public_id))
    if order is None:
        raise AcmeProblem("malformed", "this account has no such order", status=404)
    order.account = account
    return services.expire(order)


def _new_order(request: HttpRequest, urls: resources.Urls, signed: Signed, _: str | None) -> Answer:
    order, authorizations = services.new_order(signed.require_account(), signed.payload)
    return _order_answer(urls, order, status=201, authorizations=authorizations)


def _order(request: HttpRequest, urls: resources.Urls, signed: Signed, public_id: str | None) -> Answer:
    if not signed.jws.post_as_get:
        raise malformed("an order is read by POST-as-GET (an empty payload)")
    return _order_answer(urls, _own_order(signed, public_id))


def _finalize(request: HttpRequest, urls: resources.Urls, signed: Signed, public_id: str | None) -> Answer:
    order = _own_order(signed, public_id)
    order = services.finalize(order, signed.payload, account_uri=urls.account(signed.require_account()))
    return _order_answer(urls, order)


def _certificate(request: HttpRequest, urls: resources.Urls, signed: Signed, public_id: str | None) -> Answer:
    if not signed.jws.post_as_get:
        raise malformed("a certificate is downloaded by POST-as-GET (an empty payload)")
    order = _own_order(signed, public_id)
    cert = (
        cast(Certificate | None, _CERTIFICATE_PEM.first(order.certificate_id))
        if order.status == OrderStatus.VALID and order.certificate_id
        else None
    )
    if cert is None:
        raise AcmeProblem("malformed", "this order has no certificate", status=404)
    chain = (
        cert.certificate_pem.strip()
        + "\n"
        + (cert.chain_pem.strip() + "\n" if cert.chain_pem.strip() else "")
    )
    return Answer(chain, content_type="application/pem-certificate-chain")


# --- authorizations and challenges --------------------------------------------------------------------
def _own_authz(signed: Signed, public_id: str | None) -> AcmeServerAuthorization:
    account = signed.require_account()
    authz = cast(AcmeServerAuthorization | None, _AUTHORIZATION.first(account.pk, public_id))
    if authz is None:
        raise AcmeProblem("malformed", "this account has no such authorization", status=404)
    return authz


def _authz_answer(urls: resources.Urls, authz: AcmeServerAuthorization) -> Answer:
    return Answer(
        resources.authorization(urls, authz, cast(list[AcmeServerChallenge], _CHALLENGES.all(authz.pk))),
        retry_after=resources.authorization_status(authz) == AuthorizationStatus.PENDING,
    )


def _authz(request: HttpRequest, urls: resources.Urls, signed: Signed, public_id: str | None) -> Answer:
    authz = _own_authz(signed, public_id)
    if not signed.jws.post_as_get:
        if signed.payload.get("status") != "deactivated":
            raise malformed("an authorization can only be deactivated")
        authz = services.deactivate_authorization(authz)
    else:
        authz = services.await_validation(authz)
    return _authz_answer(urls, authz)


def _challenge(request: HttpRequest, urls: resources.Urls, signed: Signed, public_id: str | None) -> Answer:
    account = signed.require_account()
    challenge = cast(AcmeServerChallenge | None, _CHALLENGE.first(account.pk, public_id))
    if challenge is None:
        raise AcmeProblem("malformed", "this account has no such challenge", status=404)
    if not signed.jws.post_as_get:
        signed.payload  # noqa: B018  (a JSON object, normally {}: malformed otherwise)
        challenge = services.respond(challenge)  # as stored now, with its authorization
    up = urls.authorization(challenge.authorization)
    return Answer(
        resources.challenge(urls, challenge),
        links=[(up, "up")],
        retry_after=challenge.status == ChallengeStatus.PROCESSING,
    )


# --- revocation ---------------------------------------------------------------------------------------
def _revoke(request: HttpRequest, urls: resources.Urls, signed: Signed, _: str | None) -> Answer:
    services.revoke(urls.profile, signed.payload, account=signed.account, jwk=signed.jws.jwk)
    return Answer()


new_account = _door("jwk", _new_account)
account = _door("kid", _account)
account_orders = _door("kid", _account_orders)
new_order = _door("kid", _new_order)
order = _door("kid", _order)
finalize = _door("kid", _finalize)
certificate = _door("kid", _certificate)
authorization = _door("kid", _authz)
challenge = _door("kid", _challenge)
revoke_cert = _door("either", _revoke)
key_change = _door("kid", _key_change)
