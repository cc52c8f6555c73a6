"""Admin screens a browser had not driven before, walked as their users walk them, one browser for them all:
the ACME server profile (the client snippets carry the directory URL the server answers on; a new EAB key is
shown once), an SSH sync destination (its pinned host key; re-pinning after the host's key was replaced,
confirmed on a page that shows both keys), delegated DNS (the NS records to create) and the CAA records to
publish, and an invitation accepted by a newcomer and by a signed-in user.

Every page must show no console error, uncaught exception or CSP violation (``watch_console``); a screenshot
of each screen is saved (``CERTMGR_SCREENSHOTS`` chooses the folder).
"""

from __future__ import annotations

import re

import pytest
from django.core import mail

from acmeserver.models import AcmeEabKey
from certmgr.models import Membership
from dnsproviders import services as connections
from dnsproviders.credentials import host_key_fingerprint
from syncs import services as syncs
from tests.acmeca.conftest import (  # noqa: F401  fixtures used by name
    acme_env,
    acme_subscriber,
    bind,
    dnsdist,
    make_acme_ca,
    pebble,
    powerdns,
    unique_name,
)
from tests.acmeserver.conftest import make_profile
from tests.browser.conftest import login, screenshot_dir, watch_console
from tests.browser.test_admin_browser import open_page, server_error_text, submit
from tests.conftest import PASSWORD, SYSTEM
from tests.dnsservers import CERTMGR_DNS_NAME
from tests.pki import conftest as pki_fixtures
from tests.webservers import sshd

hierarchy = pki_fixtures.hierarchy
pytestmark = pytest.mark.browser


def shoot(page, name: str) -> None:
    page.screenshot(path=str(screenshot_dir() / f"screen-{name}.png"), full_page=True)


def content(page) -> str:
    return page.locator("#content").inner_text()


def readonly(page, field: str) -> str:
    """The text of a read-only field of a change page."""
    return page.locator(f".form-row.field-{field} .readonly").inner_text()


# Read-only values wider than their box (the module's rounded corners would cut them off).
CUT_OFF = """() => [...document.querySelectorAll('.form-row .readonly')]
  .filter(e => e.scrollWidth > e.clientWidth + 1)
  .map(e => e.closest('.form-row').className + ': ' + e.scrollWidth + ' > ' + e.clientWidth)"""


def fits_the_window(page) -> None:
    """Nothing sticks out of the window, no read-only value is cut off (long lines scroll in their box), and
    no inline event handler waits for a click (the CSP would refuse to run it: data-confirm does that)."""
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] + 1, f"{page.url} is wider than the window: {width}"
    assert page.evaluate(CUT_OFF) == [], page.url
    assert page.locator("[onsubmit], [onclick], [onchange]").count() == 0, page.url


# --- the ACME server profile ---------------------------------------------------------------------------
@pytest.fixture
def acme_profile(tenant, hierarchy, live_server, settings):
    settings.CERTMGR_BASE_URL = live_server.url  # what the page shows clients is where they reach certmgr
    return make_profile(tenant, hierarchy[1], eab_required=True)


def test_acme_profile_shows_client_snippets_and_a_new_eab_key_once(live_server, page, tenant, acme_profile):
    base = live_server.url
    profile = acme_profile
    directory = f"{base}/acme/{tenant.organization.slug}/{profile.slug}/directory"
    login(page, base, tenant.operator.user.username)

    open_page(page, base + "/admin/acmeserver/acmeprofile/")
    submit(page, f"#result_list a[href$='/acmeserver/acmeprofile/{profile.pk}/change/']")
    assert readonly(page, "directory") == directory, server_error_text(page)
    commands = readonly(page, "client_commands")
    assert f"certbot certonly --standalone --server {directory} " in commands, commands
    assert f"lego --server {directory} " in commands and "--eab --kid <kid> --hmac <hmac_key>" in commands
    issuer = readonly(page, "cert_manager")
    assert "kind: ClusterIssuer" in issuer and f"    server: {directory}\n" in issuer, issuer
    assert "externalAccountBinding:" in issuer  # the profile requires EAB
    fits_the_window(page)  # the ClusterIssuer's long caBundle line scrolls in its box, not the page
    shoot(page, "acme-profile")

    # The URL the snippets carry is the server's directory.
    answer = page.request.get(directory)
    assert answer.status == 200 and answer.json()["meta"]["externalAccountRequired"] is True

    # A new EAB key: its HMAC key is on the page once, right after creation.
    submit(page, "button.acme-create-eab-key")
    key = AcmeEabKey.objects.get(profile=profile)
    message = page.locator("ul.messagelist li.success").inner_text()
    hmac = re.search(r"--eab-hmac-key (\S+)", message)
    assert f"--eab-kid {key.kid}" in message and hmac, message
    assert "not shown again" in message
    shoot(page, "acme-profile-eab-key")
    page.reload()
    assert hmac.group(1) not in page.content() and key.kid not in page.locator("body").inner_text()
    open_page(page, f"{base}/admin/acmeserver/acmeeabkey/{key.pk}/change/")
    assert key.kid in content(page) and hmac.group(1) not in page.content()


# --- an SSH sync destination: the pinned key and re-pinning --------------------------------------------
@pytest.fixture
def ssh_destination(tenant, tmp_path, settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # the test's sshd is on loopback
    with sshd(tmp_path / "sshd") as host:
        conn = connections.create_connection(
            tenant.organization,
            name="web1",
            kind="ssh",
            credentials={
                "host": "127.0.0.1",
                "port": host.port,
                "username": host.user,
                "private_key": host.client_key,
            },
            actor=SYSTEM,
        )
        assert connections.test_connection(conn, actor=SYSTEM).ok  # pins the host key on first use
        dest = syncs.create_destination(
            tenant.organization,
            name="web1-nginx",
            kind="ssh",
            connection=conn,
            options={"directory": str(tmp_path)},
            actor=SYSTEM,
        )
        yield host, dest


def test_ssh_destination_shows_the_pinned_key_and_re_pins_after_confirming(
    live_server, page, tenant, ssh_destination
):
    host, dest = ssh_destination
    base = live_server.url
    old = host_key_fingerprint(host.host_key_line)
    login(page, base, tenant.operator.user.username)

    open_page(page, f"{base}/admin/syncs/syncdestination/{dest.pk}/change/")
    assert old in readonly(page, "host_key"), server_error_text(page)
    assert page.locator("button.sync-test").is_enabled() and page.locator("button.sync-now").is_enabled()
    fits_the_window(page)
    shoot(page, "ssh-destination")

    # The host's key is replaced: the Test says so and names the way out.
    host.new_host_key()
    new = host_key_fingerprint(host.host_key_line)
    submit(page, "button.sync-test")
    error = page.locator("ul.messagelist li.error").inner_text()
    assert "changed" in error and new in error and "re-pin" in error, error

    # Re-pin: a confirmation page shows the pinned key and the one the host shows now; Cancel leads back.
    submit(page, ".object-tools a.repin-host-key")
    assert page.locator("code.repin-pinned").inner_text() == old, server_error_text(page)
    assert page.locator("code.repin-shown").inner_text() == new
    assert page.locator("input[type=submit][name=apply]").is_enabled()
    fits_the_window(page)
    shoot(page, "ssh-repin-confirm")
    submit(page, ".submit-row a.closelink")
    assert page.url.endswith(f"/admin/syncs/syncdestination/{dest.pk}/change/"), page.url
    assert old in readonly(page, "host_key")  # cancelled: nothing changed
    submit(page, ".object-tools a.repin-host-key")
    submit(page, "input[type=submit][name=apply]")
    assert page.url.endswith(f"/admin/syncs/syncdestination/{dest.pk}/change/"), page.url
    assert f"host key re-pinned: {new}" in page.locator("ul.messagelist li.success").inner_text()
    assert new in readonly(page, "host_key") and old not in readonly(page, "host_key")
    submit(page, "button.sync-test")
    assert "OK" in page.locator("ul.messagelist li.success").inner_text()


# --- delegated DNS and CAA records ---------------------------------------------------------------------
@pytest.fixture
def delegated_subscriber(tenant, pebble, powerdns, acme_env, settings):  # noqa: F811
    settings.CERTMGR_DNS_SERVER_NAME = CERTMGR_DNS_NAME
    conn = connections.create_connection(
        tenant.organization, name="delegated", kind="delegated", credentials={}, actor=SYSTEM
    )
    ca = make_acme_ca(tenant, pebble, name="Pebble delegated", connection=conn, caa_identifiers="pebble.test")
    apex = unique_name(powerdns.zone, "screens")
    return conn, acme_subscriber(tenant, ca, [apex, f"*.{apex}", f"www.{apex}"]), apex


def test_delegated_dns_and_caa_panels(live_server, page, tenant, delegated_subscriber):
    conn, subscriber, apex = delegated_subscriber
    base = live_server.url
    login(page, base, tenant.operator.user.username)

    open_page(page, f"{base}/admin/dnsproviders/appconnection/{conn.pk}/change/")
    records = page.locator("ul.delegation-records li").all_inner_texts()
    assert records == [
        f"_acme-challenge.{apex}. NS {CERTMGR_DNS_NAME}",
        f"_acme-challenge.www.{apex}. NS {CERTMGR_DNS_NAME}",
    ], records
    assert CERTMGR_DNS_NAME in readonly(page, "delegation_records")
    assert page.locator("button.test-connection").is_enabled()
    fits_the_window(page)
    shoot(page, "delegated-dns")

    open_page(page, f"{base}/admin/pki/subscriber/{subscriber.pk}/change/")
    hints = page.locator(".pki-publication")
    assert hints.count() == 2, content(page)  # the apex (with its wildcard) and www
    account = subscriber.ca.acme.account.account_url
    first = hints.first.inner_text()
    assert f"CAA records for {apex}" in first
    assert f'{apex}. CAA 0 issue "pebble.test; accounturi={account}; validationmethods=dns-01"' in first
    assert f'{apex}. CAA 0 issuewild "pebble.test; accounturi={account}; validationmethods=dns-01"' in first
    fits_the_window(page)
    shoot(page, "caa-records")


# --- an invitation -------------------------------------------------------------------------------------
def invite(page, base: str, tenant, email: str, role: str) -> str:
    """The administrator invites ``email`` in the admin; the link the e-mail carries."""
    open_page(page, base + "/admin/certmgr/invitation/add/")
    select = page.locator("select#id_organization")
    if select.count():
        select.select_option(str(tenant.organization.pk))
    page.fill("#id_email", email)
    page.select_option("#id_role", role)
    submit(page, "input[name=_save]")
    assert f"Invitation sent to {email}." in page.locator("ul.messagelist").inner_text()
    return re.search(r"/invite/[^/\s]+/", mail.outbox[-1].body).group(0)


def test_an_invitation_is_accepted_by_a_newcomer_and_by_a_signed_in_user(
    live_server, browser, page, tenant, other_tenant
):
    base = live_server.url
    login(page, base, tenant.admin.user.username)
    link = invite(page, base, tenant, "kim@example.com", "operator")

    # A newcomer opens the link in another browser (no session): the page says what the invitation is.
    newcomer = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        guest = newcomer.new_page()
        problems = watch_console(guest)
        open_page(guest, base + link)
        text = content(guest)
        assert "You are invited to join Acme as Operator" in text and "kim@example.com" in text, text
        assert guest.locator("#new-account input[type=submit]").is_enabled()
        assert guest.locator("#nav-sidebar").count() == 0  # no admin navigation for a newcomer
        shoot(guest, "invitation")
        guest.fill("#id_username", "kim")
        guest.fill("#id_password", "a sufficiently long passphrase 9")
        guest.fill("#id_password_again", "not the same passphrase 9")
        submit(guest, "#new-account input[type=submit]")
        assert "The two passwords differ." in content(guest)
        guest.fill("#id_password", "a sufficiently long passphrase 9")
        guest.fill("#id_password_again", "a sufficiently long passphrase 9")
        submit(guest, "#new-account input[type=submit]")
        assert "/admin/login/" in guest.url, guest.url
        assert "Account kim created: sign in to Acme." in guest.locator("ul.messagelist").inner_text()
        login(guest, base, "kim", "a sufficiently long passphrase 9")
        assert Membership.objects.get(user__username="kim").organization == tenant.organization
        used = guest.goto(base + link)  # used: the link says so, and nothing else
        assert used is not None and used.status == 404
        assert guest.locator(".errornote").count() == 1 and "Acme" not in content(guest)
        assert not problems, problems
    finally:
        newcomer.close()

    # A signed-in member of another organization accepts with one button.
    link = invite(page, base, tenant, "globex-operator@example.com", "auditor")
    page.context.clear_cookies()  # the administrator signs out
    login(page, base, other_tenant.operator.user.username, PASSWORD)
    open_page(page, base + link)
    user = other_tenant.operator.user.username
    assert f"You are signed in as {user}." in content(page)
    accept = page.locator("input[type=submit][value='Accept and join Acme']")
    assert accept.is_enabled()
    shoot(page, "invitation-signed-in")
    submit(page, "input[type=submit][value='Accept and join Acme']")
    assert page.url.rstrip("/").endswith("/admin"), page.url
    assert "You joined Acme." in page.locator("ul.messagelist").inner_text()
    assert Membership.objects.filter(
        user=other_tenant.operator.user, organization=tenant.organization
    ).exists()
