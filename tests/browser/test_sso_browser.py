"""Single sign-on in a real browser against a real OpenID provider (django-oidc-provider in its own process on
loopback, see ``tests/oidc_testbed.py``): the provider's groups become organization roles, a group taken away
takes the role away at the next sign-in, a user with no mapped group is refused with the reason, and every
step is in the audit log. Nothing of the provider (token endpoint included) is mocked.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from certmgr.models import ApiToken, AuditEvent, Membership, SingleSignOnIdentity
from tests.browser.conftest import login
from tests.oidc_testbed import oidc_provider  # noqa: F401  (the fixture)

pytestmark = pytest.mark.browser

IDP_PASSWORD = "idp password for the browser tests"


@pytest.fixture
def sso(oidc_provider, settings, tenant, other_tenant):  # noqa: F811
    """certmgr pointed at the provider, with a role map over the two organizations."""
    role_map = {
        "pki-admins": f"{tenant.organization.slug}:admin",
        "pki-ops": [f"{tenant.organization.slug}:operator", f"{other_tenant.organization.slug}:auditor"],
    }
    for name, value in oidc_provider.settings(role_map).items():
        setattr(settings, name, value)
    return oidc_provider


def sign_in_with_sso(page, base_url: str, username: str | None = None) -> None:
    """From the admin login page through the provider and back. ``username``: the provider asks for the
    password (no session there yet); None: the provider's session signs in without a form."""
    response = page.goto(f"{base_url}/admin/login/?next=/admin/")
    assert response is not None and response.status == 200
    button = page.locator("#sso-login a.button")
    assert button.inner_text().strip() == "Sign in with SSO"
    assert page.locator("#id_password").count() == 1, "the password form is gone"
    with page.expect_navigation():
        button.click()
    if username is not None:
        assert page.url.startswith("http://127.0.0.1:"), f"not at the provider: {page.url}"
        page.fill("#id_username", username)
        page.fill("#id_password", IDP_PASSWORD)
        with page.expect_navigation(url=f"{base_url}/**"):
            page.click("#op-login")
    page.wait_for_load_state()
    assert page.url.startswith(base_url), f"not back at certmgr: {page.url}"


def log_out(page) -> None:
    with page.expect_navigation():
        page.click("#logout-form button")


def roles_of(username: str) -> dict[str, str]:
    return dict(Membership.objects.filter(user__username=username).values_list("organization__slug", "role"))


def test_groups_become_roles_and_a_removed_group_takes_the_role_away(
    live_server, page, sso, tenant, other_tenant
):
    base = live_server.url
    acme, globex = tenant.organization, other_tenant.organization
    sso.user("alice", IDP_PASSWORD, groups=["pki-ops", "unrelated"])

    # First sign-in: the user is created from the provider's claims, with the roles the groups grant.
    sign_in_with_sso(page, base, "alice")
    assert page.url.rstrip("/").endswith("/admin"), page.url
    assert "alice" in page.locator("#user-tools").inner_text().lower()
    alice = get_user_model().objects.get(username="alice")
    assert alice.email == "alice@idp.example.test" and not alice.has_usable_password()
    identity = SingleSignOnIdentity.objects.get(user=alice)
    assert identity.issuer == sso.issuer and identity.subject
    assert roles_of("alice") == {acme.slug: "operator", globex.slug: "auditor"}
    created = AuditEvent.objects.filter(action="membership.create", actor_label="single sign-on of alice")
    assert sorted(created.values_list("organization__slug", "details__role")) == sorted(
        [(acme.slug, "operator"), (globex.slug, "auditor")]
    )
    assert AuditEvent.objects.filter(action="user.create", target_id=str(alice.pk)).count() == 1
    logins = AuditEvent.objects.filter(action="auth.login", actor_id=str(alice.pk))
    assert sorted(logins.values_list("organization__slug", "details__method")) == sorted(
        [(acme.slug, "sso"), (globex.slug, "sso")]
    )
    # The operator role works in the admin: Acme's certificates are listed, Globex's audit log is readable.
    response = page.goto(f"{base}/admin/pki/certificate/")
    assert response is not None and response.status == 200
    token = ApiToken.objects.create(
        organization=globex, user=alice, name="t", role="auditor", prefix="ssotest1", digest="x" * 64
    )
    log_out(page)

    # The provider moves alice from pki-ops to pki-admins: Acme admin, and no longer in Globex at all.
    sso.user("alice", IDP_PASSWORD, groups=["pki-admins"])
    sign_in_with_sso(page, base)  # the provider's session: no password asked
    assert page.url.rstrip("/").endswith("/admin"), page.url
    assert roles_of("alice") == {acme.slug: "admin"}
    token.refresh_from_db()
    assert token.revoked_at is not None, "the removed membership's tokens live on"
    changed = AuditEvent.objects.filter(
        actor_label="single sign-on of alice", action__startswith="membership."
    ).order_by("id")
    assert [(e.action, e.organization.slug, e.details.get("role")) for e in changed][-2:] == [
        ("membership.update", acme.slug, "admin"),
        ("membership.delete", globex.slug, None),
    ]
    log_out(page)

    # Out of every mapped group: the memberships go, and the sign-in is refused with the reason.
    sso.user("alice", IDP_PASSWORD, groups=["unrelated"])
    sign_in_with_sso(page, base)
    assert "/admin/login/" in page.url, page.url
    message = page.locator("ul.messagelist li.error").inner_text()
    assert "no group that certmgr maps to an organization" in message, message
    assert page.locator("#user-tools").count() == 0, "signed in although refused"
    assert roles_of("alice") == {}
    refused = AuditEvent.objects.filter(action="auth.login_failed", details__method="sso").latest("id")
    assert refused.outcome == "failure" and "no group" in refused.error
    assert refused.details["groups"] == ["unrelated"] and refused.details["username"] == "alice"
    # The admin refuses the old session's pages too: not signed in.
    response = page.goto(f"{base}/admin/pki/certificate/")
    assert "/admin/login/" in page.url


def test_first_sign_in_without_a_mapped_group_creates_no_user(live_server, page, sso):
    sso.user("bob", IDP_PASSWORD, groups=["marketing"])
    sign_in_with_sso(page, live_server.url, "bob")
    assert "/admin/login/" in page.url, page.url
    message = page.locator("ul.messagelist li.error").inner_text()
    assert "no group that certmgr maps" in message and "marketing" in message, message
    assert not get_user_model().objects.filter(username="bob").exists()
    refused = AuditEvent.objects.get(action="auth.login_failed", details__username="bob")
    assert refused.organization_id is None and refused.details["method"] == "sso"


def test_a_local_account_is_not_taken_over_by_a_provider_account_of_the_same_name(
    live_server, page, sso, tenant
):
    """The provider's ``preferred_username`` equal to a local administrator's: refused, the local account
    untouched (identities are matched by issuer and subject, never by name or e-mail)."""
    local = tenant.admin.user
    sso.user(local.username, IDP_PASSWORD, groups=["pki-admins"])
    sign_in_with_sso(page, live_server.url, local.username)
    assert "/admin/login/" in page.url, page.url
    assert "already exists" in page.locator("ul.messagelist li.error").inner_text()
    assert not SingleSignOnIdentity.objects.exists()
    assert page.locator("#user-tools").count() == 0


def test_password_login_still_works_next_to_sso(live_server, page, sso, tenant):
    login(page, live_server.url, tenant.operator.user.username)
    event = AuditEvent.objects.filter(action="auth.login").latest("id")
    assert event.details["method"] == "password"
