"""Per-request context (request id, client IP, user agent) for the audit log."""

from __future__ import annotations

import functools
import ipaddress
import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from certmgr import logs

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


@dataclass(frozen=True)
class RequestContext:
    request_id: str = ""
    ip: str | None = None
    user_agent: str = ""


current: ContextVar[RequestContext] = ContextVar("certmgr_request", default=RequestContext())  # noqa: B039 (frozen)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.cache
def trusted_proxies(setting: str) -> int | tuple[Network, ...]:
    """``CERTMGR_TRUST_X_FORWARDED_FOR``: off (empty, false, 0), how many proxies stand in front of certmgr
    (a number; ``true`` is one), or the proxies' networks (comma-separated CIDRs)."""
    value = setting.strip().lower()
    if value in ("", "false", "no", "off", "0"):
        return 0
    if value in ("true", "yes", "on"):
        return 1
    if value.isdigit():
        return int(value)
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()
        )
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"CERTMGR_TRUST_X_FORWARDED_FOR: {exc} (give a number of proxies or their CIDRs)"
        ) from exc


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_ip(request) -> str | None:
    """The client's address: REMOTE_ADDR, or with trusted proxies the right-most address in
    X-Forwarded-For that none of them added (anything left of it is the client's to forge). A malformed
    header gives no address at all (None), so it can never pass an allow-list as the proxy's own address."""
    remote = request.META.get("REMOTE_ADDR") or None
    trust = trusted_proxies(str(settings.CERTMGR_TRUST_X_FORWARDED_FOR))
    header = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if not trust or not header:
        return remote
    hops = [_address(part) for part in header.split(",")]
    if any(hop is None for hop in hops) or len(hops) > 64:
        return None
    if isinstance(trust, int):
        return str(hops[-trust]) if len(hops) >= trust else None
    chain = [*hops, _address(remote or "")]
    for hop in reversed(chain):
        if hop is None or not any(hop in network for network in trust):
            return str(hop) if hop is not None else None
    return None  # every hop is a trusted proxy: no client address


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = current.set(
            RequestContext(
                request_id=request_id,
                ip=client_ip(request),
                user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
            )
        )
        request.request_id = request_id
        logs.start_request(request_id)
        try:
            response = self.get_response(request)
        finally:
            current.reset(token)
        response["X-Request-ID"] = request_id
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        """After authentication: the signed-in user (and their organization, when they have only one) in the
        log context. API tokens bind theirs when the API authenticates them."""
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:

            def only_organization() -> str | None:
                slugs = list(user.memberships.values_list("organization__slug", flat=True)[:2])
                return slugs[0] if len(slugs) == 1 else None

            # looked up only if the request writes a log line: no query on every page
            logs.bind_actor(user.get_username(), logs.Deferred(only_organization))


class AdminServiceErrorMiddleware:
    """A service refusal that escapes an admin page (a GET that cannot be shown, e.g. an object whose secret
    no configured key decrypts) answers with its status and message in the admin's frame, never a 500; the API
    answers the same through its exception handler."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        from django.contrib import admin
        from django.template.response import TemplateResponse

        from certmgr.encryption import SecretUnreadable
        from certmgr.errors import ServiceError

        if not isinstance(exception, ServiceError) or not request.path.startswith("/admin/"):
            return None
        unreadable = isinstance(exception, SecretUnreadable)
        response = TemplateResponse(
            request,
            "admin/certmgr/service_error.html",
            {
                **admin.site.each_context(request),
                "title": "Secret cannot be decrypted" if unreadable else "Refused",
                "message": exception.message,
                "unreadable_secret": unreadable,
            },
            status=exception.status,
        )
        return response.render()
