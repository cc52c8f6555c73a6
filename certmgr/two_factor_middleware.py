"""Keeps a half-done login (password, but not yet the second factor it owes) on the second step.

On an admin page such a session is sent to the code page or, for a user who must use a second factor and
has none yet, to the enrolment page; anywhere else (the API's session authentication) it is anonymous. Only
the second-step pages, the login and the logout page see the signed-in user.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from certmgr import two_factor

STEP_URLS = {"verify": "two-factor-verify", "enroll": "two-factor-enroll"}
OPEN_URLS = ("two-factor-verify", "two-factor-enroll", "admin:login", "admin:logout")


class TwoFactorMiddleware:
    """After ``django_otp.middleware.OTPMiddleware``, which tells whether the session is verified."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        step = two_factor.pending(request)
        if step is None or request.path in {reverse(name) for name in OPEN_URLS}:
            return self.get_response(request)
        if request.path.startswith(reverse("admin:index")):
            target = request.get_full_path()
            query = urlencode({"next": target}) if _safe(request, target) else ""
            return HttpResponseRedirect(f"{reverse(STEP_URLS[step])}{'?' + query if query else ''}")
        request.user = AnonymousUser()
        return self.get_response(request)


def _safe(request, url: str) -> bool:
    return url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()})
