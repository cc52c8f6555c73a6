"""Two-factor authentication for the admin (TOTP through django-otp), through the real login form and pages:
the second step after the password, enrolment forced by an organization's rule, wrong codes throttled,
counted toward the login lockout and audited, removal by the user and reset by an administrator, and the
key encrypted at rest and never shown back."""

from __future__ import annotations

import re
from binascii import unhexlify

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django_otp.oath import totp

from certmgr import two_factor
from certmgr.actors import Actor
from certmgr.errors import PermissionDenied
from certmgr.models import AuditEvent, Membership, Organization, TOTPDevice
from certmgr.permissions import Role, TwoFactorRequirement, two_factor_required
from tests.conftest import PASSWORD, SYSTEM, make_tenant

pytestmark = pytest.mark.django_db

ADDRESS = "203.0.113.7"
VERIFY = "/admin/two-factor/verify/"
ENROLL = "/admin/two-factor/set-up/"
MANAGE = "/admin/two-factor/"


def code(key_hex: str, offset: int = 0) -> str:
    """The code an authenticator app shows ``offset`` time steps from now (the next step's code is still
    accepted, and newer than one just used: replay protection refuses the same step twice)."""
    return f"{totp(unhexlify(key_hex), drift=offset):06d}"


def wrong_code(key_hex: str) -> str:
    valid = {code(key_hex, offset) for offset in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def device_for(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def password_login(user, address: str = ADDRESS) -> Client:
    client = Client(REMOTE_ADDR=address)
    answer = client.post(
        "/admin/login/?next=/admin/", {"username": user.username, "password": PASSWORD}, REMOTE_ADDR=address
    )
    assert answer.status_code == 302, answer.content[:500]
    return client


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def require(org: Organization, requirement: str) -> None:
    two_factor.set_requirement(org, requirement, actor=SYSTEM)


def test_which_roles_must_use_a_second_factor():
    table = {
        requirement: [role for role in Role.values if two_factor_required(requirement, role)]
        for requirement in TwoFactorRequirement.values
    }
    assert table == {
        "": [],
        "admin": ["admin"],
        "operator": ["operator", "admin"],
        "auditor": ["auditor", "operator", "admin"],
    }


def test_required_for_follows_each_organization_and_the_superuser_setting(tenant, other_tenant, settings):
    require(tenant.organization, TwoFactorRequirement.OPERATOR)
    assert two_factor.required_for(tenant.admin.user) and two_factor.required_for(tenant.operator.user)
    assert not two_factor.required_for(tenant.auditor.user)
    assert not two_factor.required_for(other_tenant.admin.user)  # the other organization has no rule
    Membership.objects.create(user=other_tenant.auditor.user, organization=tenant.organization, role="admin")
    assert two_factor.required_for(other_tenant.auditor.user)  # admin in the organization that requires it
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", password=PASSWORD)
    assert not two_factor.required_for(root)
    settings.CERTMGR_TWO_FACTOR_SUPERUSERS = True
    assert two_factor.required_for(root)


def test_a_user_with_a_device_enters_a_code_after_the_password(tenant):
    user = tenant.operator.user
    device = device_for(user)
    client = password_login(user)
    # the password alone opens no admin page and no API call
    answer = client.get("/admin/pki/certificate/")
    assert answer.status_code == 302 and answer["Location"].startswith(VERIFY), answer.get("Location")
    assert answer["Location"] == f"{VERIFY}?next=%2Fadmin%2Fpki%2Fcertificate%2F"
    assert client.get("/api/v1/certificates/").status_code in (401, 403)
    page = client.get(answer["Location"])
    assert page.status_code == 200 and b'autocomplete="one-time-code"' in page.content
    assert b"nav-sidebar" not in page.content and b"/admin/pki/ca" not in page.content  # no menu
    # a wrong code: refused, audited, counted by django-axes
    wrong = client.post(VERIFY, {"code": wrong_code(device.key), "next": "/admin/pki/certificate/"})
    assert wrong.status_code == 200 and b"not valid" in wrong.content
    assert client.get("/admin/").status_code == 302
    (failed,) = events("auth.two_factor_failed")
    assert (failed.outcome, failed.organization_id, failed.details["username"]) == (
        "failure",
        tenant.organization.pk,
        user.username,
    )
    from axes.models import AccessAttempt

    assert AccessAttempt.objects.get(username=user.username).failures_since_start == 1
    # the right code, after the back-off of one second
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_timestamp=None)
    right = client.post(VERIFY, {"code": code(device.key), "next": "/admin/pki/certificate/"})
    assert right.status_code == 302 and right["Location"] == "/admin/pki/certificate/"
    assert client.get("/admin/pki/certificate/").status_code == 200
    assert client.get("/api/v1/certificates/").status_code == 200
    (verified,) = events("auth.two_factor_verified")
    assert verified.actor_label == user.username and verified.details == {"method": "totp"}
    # the same code cannot sign in a second time (replay), the next one can
    again = password_login(user)
    assert again.post(VERIFY, {"code": code(device.key)}).status_code == 200
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_timestamp=None)
    assert again.post(VERIFY, {"code": code(device.key, 1)}).status_code == 302


def test_a_user_without_a_device_and_not_required_signs_in_with_the_password(tenant):
    require(tenant.organization, TwoFactorRequirement.ADMIN)
    client = password_login(tenant.operator.user)
    assert client.get("/admin/").status_code == 200
    assert client.get(VERIFY).status_code == 302  # nothing to verify
    page = client.get(MANAGE)
    assert page.status_code == 200 and b"is <strong>off</strong>" in page.content


def test_a_required_user_without_a_device_must_enrol_before_any_other_page(tenant):
    require(tenant.organization, TwoFactorRequirement.ADMIN)
    user = tenant.admin.user
    client = password_login(user)
    for url in ("/admin/", "/admin/certmgr/membership/", MANAGE, "/admin/password_change/"):
        answer = client.get(url)
        assert answer.status_code == 302 and answer["Location"].startswith(ENROLL), (
            url,
            answer.get("Location"),
        )
    page = client.get(ENROLL)
    assert page.status_code == 200 and b"requires two-factor authentication" in page.content
    assert b'src="data:image/svg+xml' in page.content  # the QR code, no script
    secret = re.search(rb'data-secret="([A-Z2-7]+)"', page.content).group(1).decode()
    device = TOTPDevice.objects.get(user=user)
    assert not device.confirmed and device.base32_key == secret
    # reloading makes a new key: the one shown before is gone
    page = client.get(ENROLL)
    device = TOTPDevice.objects.get(user=user)
    assert device.base32_key != secret
    # a wrong code: refused and audited; the page shows the same key again
    wrong = client.post(ENROLL, {"code": wrong_code(device.key)})
    assert wrong.status_code == 200 and device.base32_key.encode() in wrong.content
    assert [e.outcome for e in events("two_factor.enroll")] == ["failure"]
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_timestamp=None)
    done = client.post(ENROLL, {"code": code(device.key), "next": "/admin/certmgr/membership/"})
    assert done.status_code == 302 and done["Location"] == "/admin/certmgr/membership/"
    assert TOTPDevice.objects.get(user=user).confirmed
    assert client.get("/admin/certmgr/membership/").status_code == 200
    assert [e.outcome for e in events("two_factor.enroll")] == ["failure", "success"]
    # the next sign-in asks for a code
    again = password_login(user)
    assert again.get("/admin/")["Location"].startswith(VERIFY)


def test_the_key_is_encrypted_at_rest_and_never_shown_after_enrolment(tenant):
    user = tenant.admin.user
    enrollment = two_factor.start_enrollment(user)
    device = enrollment.device
    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM certmgr_totpdevice WHERE id = %s", [device.pk])
        stored = cursor.fetchone()[0]
    assert device.key not in stored and stored.startswith("gAAAA")  # a Fernet token
    TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
    client = password_login(user)
    assert client.post(VERIFY, {"code": code(device.key)}).status_code == 302
    secrets = [device.key.encode(), enrollment.secret.encode(), enrollment.secret_groups.encode()]
    membership = Membership.objects.get(user=user)
    for url in (
        MANAGE,
        ENROLL,
        "/admin/",
        "/admin/certmgr/membership/",
        f"/admin/certmgr/membership/{membership.pk}/change/",
        f"/admin/certmgr/organization/{tenant.organization.pk}/change/",
        "/admin/certmgr/auditevent/",
        "/api/v1/audit-events/",
    ):
        answer = client.get(url, follow=True)
        assert answer.status_code == 200, url
        for secret in secrets:
            assert secret not in answer.content, url
    for event in AuditEvent.objects.all():
        for secret in secrets:
            assert secret.decode() not in repr(event.details) + event.error, event.action


def test_wrong_codes_lock_the_user_out_like_wrong_passwords(tenant, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.CERTMGR_TWO_FACTOR_THROTTLE_SECONDS = 0  # the lockout alone, without the device's back-off
    user = tenant.auditor.user
    device = device_for(user)
    client = password_login(user)
    for _ in range(2):
        assert client.post(VERIFY, {"code": wrong_code(device.key)}).status_code == 200
    locked = client.post(VERIFY, {"code": wrong_code(device.key)})
    assert locked.status_code == 429 and b"Too many failed logins" in locked.content
    assert "_auth_user_id" not in client.session  # signed out
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="auth.").order_by("id")] == [
        "auth.login",
        "auth.two_factor_failed",
        "auth.two_factor_failed",
        "auth.locked_out",
        "auth.logout",
    ]
    # the password no longer opens a session either, from another address too
    other = Client(REMOTE_ADDR="198.51.100.3")
    answer = other.post("/admin/login/", {"username": user.username, "password": PASSWORD})
    assert answer.status_code == 429


def test_signing_in_again_with_the_password_does_not_wipe_wrong_codes(tenant, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.CERTMGR_TWO_FACTOR_THROTTLE_SECONDS = 0
    user = tenant.operator.user
    device = device_for(user)
    for _ in range(2):
        client = password_login(user)
        assert client.post(VERIFY, {"code": wrong_code(device.key)}).status_code in (200, 429)
    assert client.post(VERIFY, {"code": wrong_code(device.key)}).status_code == 429  # the third failure
    assert events("auth.locked_out")


def test_a_complete_login_forgets_the_failures(tenant):
    from axes.models import AccessAttempt

    user = tenant.operator.user
    device = device_for(user)
    client = password_login(user)
    client.post(VERIFY, {"code": wrong_code(device.key)})
    assert AccessAttempt.objects.filter(username=user.username).exists()
    password_login(user)  # the password alone is not a complete login
    assert AccessAttempt.objects.filter(username=user.username).exists()
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_timestamp=None)
    assert client.post(VERIFY, {"code": code(device.key)}).status_code == 302
    assert not AccessAttempt.objects.filter(username=user.username).exists()
    # without a second factor, the password is the complete login
    other = tenant.auditor.user
    Client(REMOTE_ADDR=ADDRESS).post("/admin/login/", {"username": other.username, "password": "wrong!"})
    assert AccessAttempt.objects.filter(username=other.username).exists()
    password_login(other)
    assert not AccessAttempt.objects.filter(username=other.username).exists()


def test_the_device_backs_off_after_a_wrong_code(tenant):
    user = tenant.operator.user
    device = device_for(user)
    client = password_login(user)
    assert client.post(VERIFY, {"code": wrong_code(device.key)}).status_code == 200
    # even the right code waits for the back-off (1 s after one failure)
    refused = client.post(VERIFY, {"code": code(device.key)})
    assert refused.status_code == 200 and b"Too many wrong codes. Wait" in refused.content
    assert client.get("/admin/").status_code == 302
    assert [e.error for e in events("auth.two_factor_failed")][-1].startswith("Too many wrong codes")


def test_the_user_removes_their_device_with_a_current_code(tenant):
    user = tenant.operator.user
    device = device_for(user)
    client = password_login(user)
    assert client.post(VERIFY, {"code": code(device.key)}).status_code == 302
    page = client.get(MANAGE)
    assert page.status_code == 200 and b"is <strong>on</strong>" in page.content
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)  # the code just used, again, for brevity
    assert client.post(MANAGE, {"code": wrong_code(device.key)}).status_code == 200
    assert TOTPDevice.objects.filter(user=user).exists()
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_timestamp=None)
    assert client.post(MANAGE, {"code": code(device.key)}).status_code == 302
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert [e.outcome for e in events("two_factor.remove")] == ["failure", "success"]
    assert client.get("/admin/").status_code == 200  # not required in this organization
    assert password_login(user).get("/admin/").status_code == 200


def test_an_administrator_resets_a_members_device_from_the_member_list(tenant):
    require(tenant.organization, TwoFactorRequirement.EVERYONE)
    admin_device = device_for(tenant.admin.user)
    device_for(tenant.operator.user)
    admin = password_login(tenant.admin.user)
    assert admin.post(VERIFY, {"code": code(admin_device.key)}).status_code == 302
    listing = admin.get("/admin/certmgr/membership/")
    assert listing.status_code == 200 and b"Reset two-factor" in listing.content
    operator_membership = Membership.objects.get(user=tenant.operator.user)
    answer = admin.post(
        "/admin/certmgr/membership/",
        {"action": "reset_two_factor", "_selected_action": [operator_membership.pk]},
    )
    assert answer.status_code == 302
    assert not TOTPDevice.objects.filter(user=tenant.operator.user).exists()
    (reset,) = events("two_factor.reset")
    assert (reset.actor_label, reset.target_repr, reset.organization_id, reset.details["devices"]) == (
        tenant.admin.user.username,
        tenant.operator.user.username,
        tenant.organization.pk,
        1,
    )
    # the operator sets up a new device at the next sign-in
    assert password_login(tenant.operator.user).get("/admin/")["Location"].startswith(ENROLL)


def test_a_reset_needs_the_right_to_manage_every_organization_of_the_member(tenant, other_tenant):
    device_for(tenant.operator.user)
    with pytest.raises(PermissionDenied):
        two_factor.reset_two_factor(tenant.operator.user, actor=Actor.for_user(tenant.auditor.user))
    # an administrator of Acme cannot weaken the login of someone who is also a member of Globex
    Membership.objects.create(user=tenant.operator.user, organization=other_tenant.organization, role="admin")
    with pytest.raises(PermissionDenied, match="also belongs to an organization"):
        two_factor.reset_two_factor(tenant.operator.user, actor=Actor.for_user(tenant.admin.user))
    assert TOTPDevice.objects.filter(user=tenant.operator.user).exists()
    refused = events("two_factor.reset")
    assert [(e.outcome, e.organization_id) for e in refused] == [
        ("failure", tenant.organization.pk),
        ("failure", tenant.organization.pk),
    ]
    # a superuser's command can
    call_command("reset_two_factor", tenant.operator.user.username)
    assert not TOTPDevice.objects.filter(user=tenant.operator.user).exists()
    assert {e.organization_id for e in events("two_factor.reset") if e.outcome == "success"} == {
        tenant.organization.pk,
        other_tenant.organization.pk,
    }


def test_an_administrator_sets_the_rule_in_the_admin_and_others_cannot(tenant):
    url = f"/admin/certmgr/organization/{tenant.organization.pk}/change/"
    operator = password_login(tenant.operator.user)
    assert operator.post(url, {"two_factor_required": "admin"}).status_code == 403
    admin = password_login(tenant.admin.user)
    answer = admin.post(url, {"two_factor_required": "operator"})
    assert answer.status_code == 302, answer.content[:2000]
    assert Organization.objects.get(pk=tenant.organization.pk).two_factor_required == "operator"
    (changed,) = events("organization.two_factor")
    assert changed.details == {"old_required_for": "", "required_for": "operator"}
    # the rule applies from the next page on: the administrator must now set up a device
    assert admin.get("/admin/")["Location"].startswith(ENROLL)


def test_api_tokens_are_not_asked_for_a_second_factor(tenant):
    require(tenant.organization, TwoFactorRequirement.EVERYONE)
    assert tenant.admin.client.get("/api/v1/certificates/").status_code == 200
    (org,) = tenant.auditor.client.get("/api/v1/organizations/").json()["results"]
    assert org["two_factor_required"] == "auditor"  # the rule, readable by every member


def test_tenancy_other_organizations_rules_do_not_apply(db):
    acme, globex = make_tenant("Acme"), make_tenant("Globex")
    require(globex.organization, TwoFactorRequirement.EVERYONE)
    assert password_login(acme.admin.user).get("/admin/").status_code == 200
    assert password_login(globex.auditor.user).get("/admin/")["Location"].startswith(ENROLL)
