"""ACME screens in a real browser: an operator opens the ACME order list and an order issued by Pebble, sees
its challenge records and follows the link to the certificate; the ACME CA form fills the directory URL
from the chosen vendor and says when the CA needs external account binding.

The order is made beforehand through the services against the real test bed (Pebble, PowerDNS, dnsdist);
the browser fixtures come from ``tests/browser/conftest.py``, the ACME ones from ``tests/acmeca/conftest.py``.
"""

from __future__ import annotations

import pytest

from acmeca.models import AcmeOrder
from pki import services as pki_services
from tests.acmeca.conftest import (  # noqa: F401  fixtures used by name
    acme_env,
    acme_subscriber,
    bind,
    dnsdist,
    pdns_connection,
    pebble,
    pebble_ca,
    powerdns,
    unique_name,
)
from tests.browser.conftest import login
from tests.browser.test_admin_browser import open_page, server_error_text, submit
from tests.outcomes import ordered

pytestmark = pytest.mark.browser

ORDERS = "/admin/acmeca/acmeorder/"


@pytest.fixture
def issued_order(tenant, pebble_ca, powerdns) -> AcmeOrder:  # noqa: F811  (fixtures imported above)
    name = unique_name(powerdns.zone, "browser")
    order = ordered(
        pki_services.issue(acme_subscriber(tenant, pebble_ca, [name]), actor=tenant.operator.user)
    )
    order.refresh_from_db()  # the worker ran on commit (django-q in sync mode)
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    return order


def test_operator_follows_an_acme_order_to_its_certificate(live_server, page, tenant, issued_order):
    base = live_server.url
    order = issued_order
    name = order.names[0]
    cert = order.certificate
    (challenge,) = order.challenges.all()
    login(page, base, tenant.operator.user.username)

    open_page(page, base + ORDERS)
    row = page.locator("#result_list tbody tr", has_text=name)
    assert row.count() == 1, server_error_text(page)
    row_text = row.inner_text()
    assert "Done" in row_text and "Valid" in row_text and pebble_ca_name(order) in row_text

    submit(page, f"#result_list a[href$='{ORDERS}{order.pk}/change/']")
    assert page.url.endswith(f"{ORDERS}{order.pk}/change/"), page.url
    table = page.locator("table.acme-challenges")
    assert table.count() == 1, server_error_text(page)
    table_text = table.inner_text()
    for text in (challenge.record_name, challenge.record_value, "DNS-01", "Valid"):
        assert text in table_text, (text, table_text)
    assert page.locator("a.acme-download-cert").count() == 1  # the PEM bundle of the certificate
    assert "PRIVATE KEY" not in page.content()

    submit(page, f"a[href$='/admin/pki/certificate/{cert.pk}/change/']")
    assert page.url.endswith(f"/admin/pki/certificate/{cert.pk}/change/"), page.url
    assert cert.serial in page.locator("#content").inner_text()


def pebble_ca_name(order: AcmeOrder) -> str:
    return order.ca.name


def test_acme_ca_form_fills_the_directory_url_from_the_vendor(live_server, page, tenant):
    base = live_server.url
    login(page, base, tenant.operator.user.username)
    open_page(page, base + "/admin/pki/certificateauthority/")
    submit(page, "a.pki-add-acme-ca")
    assert page.url.endswith("/admin/pki/certificateauthority/acme/add/"), page.url

    page.select_option("#id_vendor", "zerossl")
    assert page.locator("#id_directory_url").input_value() == "https://acme.zerossl.com/v2/DV90"
    assert "requires external account binding" in page.locator("#acme-vendor-note").inner_text()
    assert page.locator("#id_eab_hmac_key").get_attribute("type") == "password"
    page.select_option("#id_vendor", "letsencrypt")
    assert "acme-v02.api.letsencrypt.org" in page.locator("#id_directory_url").input_value()
    assert "no external account binding" in page.locator("#acme-vendor-note").inner_text()
    page.select_option("#id_vendor", "custom")
    assert page.locator("#id_directory_url").input_value() == ""
    assert page.locator("#id_directory_url").is_editable()
