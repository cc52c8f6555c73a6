"""The seed workflow in a real browser, as a new user of an empty organization would walk it: connect
PowerDNS, add an ACME CA at Pebble, create a subscriber for an apex, a wildcard and a ``www`` name, issue
and watch the order finish on its page without reloading it, download the PEM and the PKCS#12, revoke.
Every step asserts on what the user sees.

The order is not run on the request that starts it (django-q's sync mode would finish it before the page
shows): the worker hand-off is held back, and the test drives the order while the browser watches the
order's page update itself (``acmeca/order_live.js`` polling the order's status endpoint).
"""

from __future__ import annotations

import pytest

from acmeca import orders
from acmeca.models import AcmeOrder
from pki.models import Certificate
from tests.acmeca.conftest import (  # noqa: F401  fixtures used by name
    acme_env,
    bind,
    dnsdist,
    pebble,
    powerdns,
    unique_name,
)
from tests.browser.conftest import login
from tests.browser.test_admin_browser import open_page, server_error_text, submit

pytestmark = pytest.mark.browser


@pytest.fixture
def held_orders(monkeypatch) -> list[int]:
    """Orders started now wait for the test instead of a worker (as if the worker were busy)."""
    held: list[int] = []
    monkeypatch.setattr(orders, "resume", held.append)
    return held


def choose_organization(page, name: str) -> None:
    """The organization select, where a form has one (the user's only organization may be preselected)."""
    select = page.locator("select#id_organization")
    if select.count() and select.is_enabled():
        select.select_option(label=name)


def content(page) -> str:
    return page.locator("#content").inner_text()


def test_a_new_user_walks_the_acme_seed_workflow(
    live_server,
    page,
    tenant,
    pebble,  # noqa: F811
    powerdns,  # noqa: F811
    acme_env,  # noqa: F811
    held_orders,
):
    from playwright.sync_api import expect

    base = live_server.url
    admin = tenant.admin.user
    login(page, base, admin.username)

    # 1. Connect PowerDNS: saving tests the connection; the Test button tests it again.
    open_page(page, base + "/admin/dnsproviders/appconnection/add/")
    choose_organization(page, tenant.organization.name)
    page.fill("#id_name", "pdns-lab")
    page.select_option("#id_kind", "powerdns")
    credentials = powerdns.credentials()
    page.fill("#id_cred_powerdns_api_url", credentials["api_url"])
    page.fill("#id_cred_powerdns_api_key", credentials["api_key"])
    if page.locator("#id_cred_powerdns_server_id").count():
        page.fill("#id_cred_powerdns_server_id", credentials["server_id"])
    submit(page, "input[name=_continue]")
    assert "pdns-lab" in content(page), server_error_text(page)
    saved = page.locator("ul.messagelist").text_content()
    # Tested on save; the message keeps the name's case.
    assert "pdns-lab: connection test passed: PowerDNS answered" in saved, saved
    submit(page, "button.test-connection")
    messages = page.locator("ul.messagelist").text_content()
    assert "pdns-lab" in messages and "PowerDNS answered" in messages, messages

    # 2. Add an ACME CA at Pebble, proving control through the connection.
    open_page(page, base + "/admin/pki/certificateauthority/")
    submit(page, "a.pki-add-acme-ca")
    choose_organization(page, tenant.organization.name)
    page.fill("#id_name", "Pebble")
    page.select_option("#id_vendor", "custom")
    page.fill("#id_directory_url", pebble.directory_url)
    page.fill("#id_email", "pki@acme.test")
    page.fill("#id_tls_ca_bundle", pebble.tls_ca_bundle)
    page.select_option("#id_dns_connection", label="pdns-lab (PowerDNS)")
    page.fill("#id_propagation_timeout", "60")
    page.fill("#id_propagation_interval", "0.5")
    submit(page, "#content form input[type=submit], #content form button[type=submit]")
    assert "Pebble" in content(page), server_error_text(page)
    assert "error" not in page.locator("ul.messagelist").text_content().lower()

    # 3. A subscriber for an apex, a wildcard and a www name.
    apex = unique_name(powerdns.zone, "seed")
    names = [apex, f"*.{apex}", f"www.{apex}"]
    open_page(page, base + "/admin/pki/subscriber/add/")
    choose_organization(page, tenant.organization.name)
    page.fill("#id_name", "seed-site")
    page.select_option("#id_ca", label="Pebble")
    page.fill("#id_common_name", apex)
    page.fill("#id_sans", "\n".join(names))
    submit(page, "input[name=_continue]")
    assert "seed-site" in content(page), server_error_text(page)

    # 4. Issue: the order's page opens and follows the order until its certificate, without a reload.
    submit(page, "button[name=issue]")
    assert "/admin/acmeca/acmeorder/" in page.url, page.url
    order = AcmeOrder.objects.get(subscriber__name="seed-site")
    assert held_orders == [order.pk]
    assert page.locator("#acme-live-step").inner_text() == "Queued"
    page.evaluate("window.__notReloaded = true")
    # The subscriber's page, open in a second tab, shows the same order running.
    subscriber_page = page.context.new_page()
    open_page(subscriber_page, f"{base}/admin/pki/subscriber/{order.subscriber_id}/change/")
    assert f"ACME order {order.pk} is running" in content(subscriber_page)
    finished = orders.drive(order.pk)  # the worker's part, while the pages poll
    assert finished.step == AcmeOrder.Step.DONE, finished.last_error
    expect(subscriber_page.locator("#acme-live-step")).to_have_text("Done", timeout=20_000)
    expect(subscriber_page.locator("#acme-live-certificate a")).to_be_visible()
    subscriber_page.close()
    expect(page.locator("#acme-live-step")).to_have_text("Done", timeout=20_000)
    expect(page.locator("#acme-live-status")).to_have_text("Valid")
    expect(page.locator("#acme-live-certificate a")).to_be_visible()
    assert page.evaluate("window.__notReloaded") is True  # the same page: it updated itself
    challenges = page.locator("#acme-live-challenges").inner_text()
    assert challenges.count("Valid") == 3, challenges  # one authorization per name

    # 5. The certificate: download the PEM and the PKCS#12.
    submit(page, "#acme-live-certificate a")
    cert = Certificate.objects.get(pk=finished.certificate_id)
    assert cert.serial in content(page)
    with page.expect_download() as pem:
        page.click("a.pki-download-cert")
    assert "BEGIN CERTIFICATE" in open(pem.value.path()).read()  # noqa: SIM115
    submit(page, "a[href$='/pkcs12/']")
    page.fill("#id_password", "seed-walk-pass-1")
    page.fill("#id_password_again", "seed-walk-pass-1")
    # The key leaves certmgr: the page asks for a reason and a confirmation (both go into the audit event).
    for field in page.locator("#content form textarea, #content form input[name=reason]").all():
        field.fill("browser walk")
    for box in page.locator("#content form input[type=checkbox]").all():
        box.check()
    with page.expect_download() as p12:
        page.click("#content form input[type=submit], #content form button[type=submit]")
    assert p12.value.suggested_filename.endswith(".p12")

    # 6. Revoke: the page says the ACME CA publishes the revocation; afterwards no renewal is planned.
    open_page(page, f"{base}/admin/pki/certificate/{cert.pk}/revoke/")
    assert "publishes the revocation itself" in content(page) and "republished" not in content(page)
    page.select_option("#id_reason", "superseded")
    submit(page, "#content form input[type=submit], #content form button[type=submit]")
    assert "Revoked 1 certificate" in page.locator("ul.messagelist").text_content(), server_error_text(page)
    tools = page.locator(".object-tools").text_content()
    assert "Renew now" not in tools and "Revoke" not in tools
    cert.refresh_from_db()
    assert cert.status == Certificate.Status.REVOKED and cert.next_renewal_at is None


def test_a_new_user_walks_the_private_ca_seed_workflow(live_server, page, tenant):
    from pki.models import CertificateAuthority, Policy

    base = live_server.url
    org = tenant.organization.name
    login(page, base, tenant.admin.user.username)

    # 1. A private root, then an intermediate signed by it.
    open_page(page, base + "/admin/pki/certificateauthority/add/")
    choose_organization(page, org)
    page.fill("#id_name", "Lab Root")
    page.select_option("#id_kind", "internal-root")
    page.fill("#id_subject_common_name", "Lab Root CA")
    submit(page, "input[name=_save]")
    assert "Lab Root" in content(page), server_error_text(page)
    root = CertificateAuthority.objects.get(name="Lab Root")

    open_page(page, base + "/admin/pki/certificateauthority/add/")
    choose_organization(page, org)
    page.fill("#id_name", "Lab Issuing")
    page.select_option("#id_kind", "internal-intermediate")
    page.select_option("#id_parent", str(root.pk))
    page.fill("#id_subject_common_name", "Lab Issuing CA")
    submit(page, "input[name=_save]")
    assert "Lab Issuing" in content(page), server_error_text(page)
    issuing = CertificateAuthority.objects.get(name="Lab Issuing")
    assert issuing.parent_id == root.pk

    # 2. A policy: names under corp.test, DNS names only, at most 90 days.
    open_page(page, base + "/admin/pki/policy/add/")
    choose_organization(page, org)
    page.fill("#id_name", "corp-web")
    page.fill("#id_common_name_patterns", "*.corp.test")
    page.fill("#id_san_patterns", "*.corp.test")
    page.check("input[name=allowed_san_types][value=dns]")
    page.fill("#id_max_validity_days", "90")
    submit(page, "input[name=_save]")
    assert "corp-web" in content(page), server_error_text(page)
    policy = Policy.objects.get(name="corp-web")

    # 3. A subscriber of the intermediate under the policy.
    open_page(page, base + "/admin/pki/subscriber/add/")
    choose_organization(page, org)
    page.fill("#id_name", "intranet")
    page.select_option("#id_ca", str(issuing.pk))
    page.select_option("#id_policy", str(policy.pk))
    page.fill("#id_common_name", "intranet.corp.test")
    page.fill("#id_sans", "intranet.corp.test")
    page.fill("#id_validity_days", "60")
    submit(page, "input[name=_continue]")
    assert "intranet" in content(page), server_error_text(page)

    # 4. Issue: the internal CA signs at once; the certificate's page shows it.
    submit(page, "button[name=issue]")
    cert = Certificate.objects.get(subscriber__name="intranet")
    assert page.url.endswith(f"/admin/pki/certificate/{cert.pk}/change/"), page.url
    assert cert.serial in content(page) and "intranet.corp.test" in content(page)
    assert "Renew now" in page.locator(".object-tools").text_content()

    # 5. Revoke: the issuing CA's CRL is republished; no renewal is planned, no "Renew now" offered.
    open_page(page, f"{base}/admin/pki/certificate/{cert.pk}/revoke/")
    assert "CRL, which is republished at once" in content(page)
    page.select_option("#id_reason", "key_compromise")
    submit(page, "#content form input[type=submit], #content form button[type=submit]")
    message = page.locator("ul.messagelist").text_content()
    assert "Revoked 1 certificate" in message and "republished" in message, message
    tools = page.locator(".object-tools").text_content()
    assert "Renew now" not in tools and "Revoke" not in tools
    assert "Revoked" in content(page) or "revoked" in content(page)
    cert.refresh_from_db()
    assert cert.status == Certificate.Status.REVOKED and cert.next_renewal_at is None
