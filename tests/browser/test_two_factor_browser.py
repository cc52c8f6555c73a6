"""Two-factor authentication in a real browser, under certmgr's Content-Security-Policy: an administrator of
an organization that requires it signs in with the password, is sent to the set-up page, reads the key off
the page (as an authenticator app would from the QR code), confirms with a code, signs out, signs back in
with a code, and is refused with a wrong one.

Runs Debian's chromium through Playwright against pytest-django's live server (``conftest.py``).
"""

from __future__ import annotations

from base64 import b32decode

import pytest
from django_otp.oath import totp

from certmgr import two_factor
from certmgr.models import AuditEvent, TOTPDevice
from certmgr.permissions import TwoFactorRequirement
from tests.conftest import PASSWORD, SYSTEM

pytestmark = pytest.mark.browser


def app_code(secret: str, offset: int = 0) -> str:
    """What an authenticator app holding ``secret`` (base32, as shown) displays ``offset`` steps from now."""
    key = b32decode(secret + "=" * (-len(secret) % 8))
    return f"{totp(key, drift=offset):06d}"


def sign_in_with_password(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.click("input[type=submit]")


def submit_code(page, code: str) -> int:
    page.fill("#id_code", code)
    with page.expect_navigation() as navigation:
        page.click("input[type=submit]")
    return navigation.value.status


def test_enrol_sign_out_and_sign_in_with_a_code(live_server, page, tenant):
    base = live_server.url
    two_factor.set_requirement(tenant.organization, TwoFactorRequirement.ADMIN, actor=SYSTEM)
    username = tenant.admin.user.username

    # the password alone leads to the set-up page, and nowhere else
    sign_in_with_password(page, base, username)
    assert "/admin/two-factor/set-up/" in page.url, page.url
    assert page.locator("text=Your organization requires two-factor authentication").count() == 1
    assert page.locator("#two-factor-sign-out button").is_visible()  # the only way out but setting it up
    qr = page.locator("img.qr")
    assert qr.get_attribute("src").startswith("data:image/svg+xml")
    assert qr.evaluate("img => img.complete && img.naturalWidth > 0"), "the QR code did not render"
    page.goto(f"{base}/admin/certmgr/membership/")
    assert "/admin/two-factor/set-up/" in page.url, page.url  # a new key: the one shown before is void

    secret = page.locator("#two-factor-secret").get_attribute("data-secret")
    shown = page.locator("#two-factor-secret").inner_text().replace(" ", "")
    assert secret and shown == secret
    assert submit_code(page, app_code(secret)) == 200
    assert page.url.endswith("/admin/certmgr/membership/"), page.url  # where the user was going
    assert page.locator("#user-tools").count() == 1
    assert TOTPDevice.objects.get(user=tenant.admin.user).confirmed

    # the user's page says it is on and never shows the key again
    page.click("#two-factor-link")
    assert page.locator("text=is on").count() == 1
    assert secret not in page.content()

    with page.expect_navigation():
        page.click("#logout-form button")

    # back in: the password, then a wrong code is refused, then the app's next code opens the admin
    sign_in_with_password(page, base, username)
    assert "/admin/two-factor/verify/" in page.url, page.url
    valid = {app_code(secret, offset) for offset in (-1, 0, 1, 2)}
    wrong = next(c for c in ("000000", "123456", "999999", "424242") if c not in valid)
    assert submit_code(page, wrong) == 200
    assert "/admin/two-factor/verify/" in page.url
    assert page.locator(".errornote").inner_text().startswith("That code is not valid")
    page.goto(f"{base}/admin/")
    assert "/admin/two-factor/verify/" in page.url, "a wrong code opened the admin"

    TOTPDevice.objects.filter(user=tenant.admin.user).update(throttling_failure_timestamp=None)  # no 1 s wait
    # the code used to enrol is spent: the next step's code is the one an app shows a moment later
    assert submit_code(page, app_code(secret, 1)) == 200
    assert page.url.rstrip("/").endswith("/admin"), page.url
    assert page.locator("#user-tools").count() == 1

    actions = list(
        AuditEvent.objects.filter(actor_label=username, action__regex=r"^(auth|two_factor)\.")
        .order_by("id")
        .values_list("action", "outcome")
    )
    assert actions == [
        ("auth.login", "success"),
        ("two_factor.enroll", "success"),
        ("auth.logout", "success"),
        ("auth.login", "success"),
        ("auth.two_factor_failed", "failure"),
        ("auth.two_factor_verified", "success"),
    ]
