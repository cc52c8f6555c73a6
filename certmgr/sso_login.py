"""The doors of single sign-on: mozilla-django-oidc's authentication backend and views, configured from
``CERTMGR_OIDC_*`` and the provider's discovery document, handing the verified claims to ``sso.sign_in``.

``/sso/login/`` sends the browser to the provider (authorization code flow with PKCE and a nonce);
``/sso/callback/`` takes the code back, exchanges it at the token endpoint, checks the ID token's signature
(the provider's JWKS), issuer, audience and nonce, reads userinfo, and signs the user in. Every refusal and
failure lands on the admin login page with the reason, and in the audit log.

mozilla-django-oidc calls the module-level ``requests.get``/``requests.post`` for the token, userinfo and
JWKS; its module sees ``_GuardedRequests`` as ``requests`` instead, so those calls go through the outbound
guard (``sso.session()``) like the discovery document does.
"""

from __future__ import annotations

from typing import Any

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.views.generic import View
from mozilla_django_oidc import auth as oidc_auth
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from certmgr import logins, sso
from certmgr.errors import ServiceError

CALLBACK_URL_NAME = "sso-callback"


class _GuardedRequests:
    """What mozilla-django-oidc's backend calls as ``requests``: a guarded session per call."""

    @staticmethod
    def get(url: str, **kwargs: Any) -> requests.Response:
        with sso.session() as http:
            return http.get(url, **kwargs)

    @staticmethod
    def post(url: str, **kwargs: Any) -> requests.Response:
        with sso.session() as http:
            return http.post(url, **kwargs)


oidc_auth.requests = _GuardedRequests()


def _setting(name: str, *default: Any) -> Any:
    """mozilla-django-oidc's settings, from certmgr's own (the endpoints come from discovery)."""
    ours = {
        "OIDC_RP_CLIENT_ID": settings.CERTMGR_OIDC_CLIENT_ID,
        "OIDC_RP_CLIENT_SECRET": settings.CERTMGR_OIDC_CLIENT_SECRET,
        "OIDC_RP_SIGN_ALGO": settings.CERTMGR_OIDC_SIGN_ALGO,
        "OIDC_RP_SCOPES": settings.CERTMGR_OIDC_SCOPES,
        "OIDC_USE_PKCE": True,
        "OIDC_TIMEOUT": settings.CERTMGR_OUTBOUND_TIMEOUT,
        "OIDC_AUTHENTICATION_CALLBACK_URL": CALLBACK_URL_NAME,
        "LOGIN_REDIRECT_URL": "admin:index",
    }
    if name in ours:
        return ours[name]
    return import_from_settings(name, *default)


class SingleSignOnBackend(OIDCAuthenticationBackend):
    """Answers only the callback of a sign-in that certmgr started (it carries the nonce)."""

    get_settings = staticmethod(_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Django builds a backend for every request of a signed-in user (``get_user``); the provider's
        # endpoints are looked up at sign-in only, so a provider outage never breaks existing sessions.
        self.UserModel = get_user_model()

    def get_user(self, user_id: Any) -> Any:
        # Django's check (mozilla-django-oidc's skips it): a deactivated user's session ends.
        return ModelBackend.get_user(self, user_id)

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        if request is None or "nonce" not in kwargs or not sso.enabled():
            return None
        endpoints = sso.provider()
        self.issuer = endpoints.issuer
        self.OIDC_OP_TOKEN_ENDPOINT = endpoints.token_endpoint
        self.OIDC_OP_USER_ENDPOINT = endpoints.userinfo_endpoint
        self.OIDC_OP_JWKS_ENDPOINT = endpoints.jwks_uri
        self.OIDC_RP_CLIENT_ID = settings.CERTMGR_OIDC_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.CERTMGR_OIDC_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.CERTMGR_OIDC_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        return super().authenticate(request, **kwargs)

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = super().verify_token(token, **kwargs)
        # mozilla-django-oidc checks the signature, expiry and nonce; not who issued the token, nor for whom.
        if str(payload.get("iss", "")).rstrip("/") != self.issuer.rstrip("/"):
            raise SuspiciousOperation(
                f"the ID token was issued by {payload.get('iss')!r}, not {self.issuer!r}"
            )
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("the ID token is meant for another client (aud)")
        return payload

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if not isinstance(userinfo, dict) or userinfo.get("sub") != payload.get("sub"):
            # OpenID Connect Core 5.3.2: userinfo about another subject must not be used.
            raise SuspiciousOperation("the userinfo answer is about another subject than the ID token")
        return sso.sign_in({**payload, **userinfo}, issuer=self.issuer)


def _back_to_login(request: HttpRequest, message: str) -> HttpResponse:
    messages.error(request, f"Single sign-on: {message}")
    return HttpResponseRedirect(reverse("admin:login"))


def _failed(request: HttpRequest, error: str, **details: Any) -> HttpResponse:
    logins.record_failure(None, error, method="sso", **details)
    return _back_to_login(request, error)


class SingleSignOnStartView(OIDCAuthenticationRequestView):
    get_settings = staticmethod(_setting)

    def __init__(self, **kwargs: Any) -> None:
        View.__init__(self, **kwargs)  # the endpoint comes from discovery, in get()

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso.enabled():
            raise Http404("single sign-on is not configured")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = sso.provider().authorization_endpoint
        except ServiceError as exc:
            return _failed(request, str(exc))
        self.OIDC_RP_CLIENT_ID = settings.CERTMGR_OIDC_CLIENT_ID
        return super().get(request)


class SingleSignOnCallbackView(OIDCAuthenticationCallbackView):
    get_settings = staticmethod(_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso.enabled():
            raise Http404("single sign-on is not configured")
        try:
            return super().get(request)
        except sso.SignInRefused as exc:  # audited by sign_in
            return _back_to_login(request, exc.message)
        except ServiceError as exc:
            return _failed(request, exc.message)
        except SuspiciousOperation as exc:
            return _failed(request, f"the answer of the identity provider was refused: {exc}")
        except requests.RequestException as exc:
            return _failed(request, f"the identity provider could not be reached: {_without_body(exc)}")

    def login_failure(self) -> HttpResponse:
        error = self.request.GET.get("error")
        if error:  # the provider said no, or the user cancelled there
            reason = self.request.GET.get("error_description") or error
            return _failed(self.request, f"the identity provider refused the sign-in: {reason[:200]}")
        return _failed(self.request, "the sign-in expired or was started elsewhere; sign in again")


def _without_body(exc: requests.RequestException) -> str:
    # The token endpoint's error body may echo the request (with the client secret): say only the status.
    response = exc.response
    if response is not None:
        return f"{response.url} answered {response.status_code}"
    return type(exc).__name__


urlpatterns = [
    path("sso/login/", SingleSignOnStartView.as_view(), name="sso-login"),
    path("sso/callback/", SingleSignOnCallbackView.as_view(), name=CALLBACK_URL_NAME),
]
