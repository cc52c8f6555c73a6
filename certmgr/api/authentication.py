"""``Authorization: Bearer <token>`` authentication; rejected tokens are audited as access attempts."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from certmgr import audit, auth_failures, logs, services
from certmgr.actors import Actor
from certmgr.middleware import client_ip


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer <token>'."
            )
        try:
            secret = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Malformed API token.") from exc
        try:
            token = services.authenticate_token(secret)
        except services.TokenRejected as exc:
            if exc.token is None:  # names no token: counted per address and minute, not one row each
                if auth_failures.throttled(auth_failures.note(client_ip(request), str(exc))):
                    raise exceptions.Throttled(
                        wait=60, detail="Too many requests with bad API tokens from this address."
                    ) from exc
                raise exceptions.AuthenticationFailed(f"{exc}.") from exc
            with transaction.atomic():
                audit.record(
                    Actor.for_token(exc.token),
                    "auth.token_rejected",
                    exc.token,
                    organization=exc.token.organization_id,
                    outcome="failure",
                    error=str(exc),
                    path=request.path[:200],
                )
            raise exceptions.AuthenticationFailed(f"{exc}.") from exc
        logs.bind_actor(Actor.for_token(token).label, token.organization.slug)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="certmgr"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API token: `cm_<prefix>_<secret>`."}
