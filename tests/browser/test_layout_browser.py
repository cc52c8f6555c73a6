"""The face of the admin in a real browser, at 1366x768 and 1920x1080: every main list page's table fits its
content area (measured from the elements' widths, not from screenshot pixels), the index is grouped by the
work, the CA hierarchy and the empty dashboard's checklist show, dark mode still turns the page dark, and
a screenshot of each main page is saved for people to look at (the folder is printed at the end of the run;
``CERTMGR_SCREENSHOTS`` chooses another).
"""

from __future__ import annotations

import re

import pytest

from dnsproviders import services as connections
from pki import services
from tests.browser.conftest import login, screenshot_dir, watch_console
from tests.conftest import SYSTEM
from tests.pki import conftest as pki_fixtures
from tests.reports.test_dashboard import acme_order, make_cert

hierarchy, subscriber, issued = pki_fixtures.hierarchy, pki_fixtures.subscriber, pki_fixtures.issued
pytestmark = pytest.mark.browser

VIEWPORTS = [(1366, 768), (1920, 1080)]
LIST_PAGES = {
    "certificates": "/admin/pki/certificate/",
    "subscribers": "/admin/pki/subscriber/",
    "cas": "/admin/pki/certificateauthority/",
    "csrs": "/admin/pki/certificaterequest/",
    "policies": "/admin/pki/policy/",
    "acme-orders": "/admin/acmeca/acmeorder/",
    "acme-accounts": "/admin/acmeca/acmeaccount/",
    "acme-challenges": "/admin/acmeca/acmechallenge/",
    "dns-providers": "/admin/dnsproviders/appconnection/",
    "alert-rules": "/admin/pki/alertrule/",
    "audit-log": "/admin/certmgr/auditevent/",
    "members": "/admin/certmgr/membership/",
}
MUST_HAVE_ROWS = {
    "certificates",
    "subscribers",
    "cas",
    "policies",
    "acme-orders",
    "dns-providers",
    "audit-log",
    "members",
}
OTHER_PAGES = {
    "index": "/admin/",
    "dashboard": "/admin/dashboard/",
    "ca-hierarchy": "/admin/pki/certificateauthority/hierarchy/",
}
# How far the table reaches past its box and the page past the window, in CSS pixels (rounding only).
SLACK = 1

MEASURE = """() => {
  const table = document.querySelector('#result_list');
  const box = document.querySelector('#changelist .results') || document.querySelector('#content-main');
  const content = document.querySelector('#content');
  if (!table) return null;
  return {
    table: table.getBoundingClientRect().width,
    tableScroll: table.scrollWidth,
    tableRight: table.getBoundingClientRect().right,
    box: box.clientWidth,
    boxScroll: box.scrollWidth,
    contentRight: content.getBoundingClientRect().right,
    page: document.documentElement.scrollWidth,
    window: window.innerWidth,
  };
}"""


def open_context(browser, width: int, height: int, **options):
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    return context, page, watch_console(page)


def visit(page, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status == 200, (url, response and response.status)


def shoot(page, name: str, width: int, height: int) -> None:
    path = screenshot_dir() / f"{name}-{width}x{height}.png"
    page.screenshot(path=str(path), full_page=True)


@pytest.fixture
def inventory(tenant, issued):
    """Enough rows that each list shows its widest columns: long names, every status, near expiries."""
    services.save_policy(
        tenant.organization, actor=SYSTEM, name="Internal web servers", san_patterns=["*.internal.example"]
    )
    connections.create_connection(
        tenant.organization,
        name="pdns-production-eu-west",
        kind="powerdns",
        description="the authoritative servers of the internal zones",
        credentials={"api_url": "https://pdns.example.test:8081", "api_key": "k-" + "x" * 30},
        actor=SYSTEM,
    )
    acme_order(tenant.organization, issued.ca, error="the CA said: too many certificates for this name " * 3)
    long = "a-rather-long-service-name-for-the-layout.eu-west-1.internal.example.test"
    for days, status in ((2, "active"), (20, "active"), (200, "active"), (-5, "expired"), (60, "revoked")):
        cert = make_cert(
            tenant.organization, ca=issued.ca, subscriber=issued.subscriber, days=days, status=status
        )
        cert.common_name = long
        cert.save(update_fields=["common_name"])
    return issued


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
def test_list_pages_fit_and_screens_are_saved(live_server, browser, tenant, inventory, width, height):
    context, page, violations = open_context(browser, width, height)
    try:
        login(page, live_server.url, tenant.admin.user.username)
        too_wide = []
        for name, url in LIST_PAGES.items():
            visit(page, live_server.url + url)
            shoot(page, name, width, height)
            size = page.evaluate(MEASURE)
            if size is None:  # an empty list has no table (this data has no CSRs, ACME accounts, alert rules)
                assert name not in MUST_HAVE_ROWS, f"{url}: no result table"
                continue
            if (
                size["tableScroll"] > size["box"] + SLACK
                or size["tableRight"] > size["contentRight"] + SLACK
                or size["page"] > size["window"] + SLACK
            ):
                too_wide.append(f"{url}: {size}")
        pages = {
            **OTHER_PAGES,
            "ca-page": f"/admin/pki/certificateauthority/{inventory.ca_id}/change/",
            "certificate-page": f"/admin/pki/certificate/{inventory.pk}/change/",
            "subscriber-page": f"/admin/pki/subscriber/{inventory.subscriber_id}/change/",
        }
        for name, url in pages.items():
            visit(page, live_server.url + url)
            shoot(page, name, width, height)
            assert page.evaluate("document.documentElement.scrollWidth") <= width + SLACK, url
        assert not too_wide, "tables wider than their content area:\n" + "\n".join(too_wide)
        assert not violations, violations
    finally:
        context.close()


def test_certificates_sorted_by_soonest_expiry_with_one_date_format(live_server, browser, tenant, inventory):
    context, page, _ = open_context(browser, 1366, 768)
    try:
        login(page, live_server.url, tenant.admin.user.username)
        visit(page, live_server.url + LIST_PAGES["certificates"])
        stamps = page.locator("#result_list td.field-not_after_display time").evaluate_all(
            "els => els.map(e => e.getAttribute('datetime'))"
        )
        assert len(stamps) >= 5
        assert stamps == sorted(stamps), stamps
        shown = page.locator("#result_list td.field-not_after_display").first.inner_text()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((in .+|.+ ago)\)", shown.strip()), shown
        assert page.locator("#result_list .pki-badge").count() >= 5  # a badge per status
    finally:
        context.close()


def test_index_grouped_by_the_work_and_framework_tables_for_superusers_only(
    live_server, browser, tenant, issued
):
    context, page, _ = open_context(browser, 1366, 768)
    try:
        login(page, live_server.url, tenant.admin.user.username)
        captions = page.locator("#content-main .module caption").all_inner_texts()
        assert captions[:8] == [
            "Inventory",
            "Issuance",
            "Certificate authorities",
            "Enrollment (ACME server)",
            "Deployment",
            "Connections",
            "Alerts",
            "Organization",
        ], captions
        text = page.locator("#content-main").inner_text()
        assert "Scheduled tasks" not in text and "Groups" not in text
        assert page.locator("#content-main a[href='/admin/pki/certificateauthority/hierarchy/']").count() >= 1

        # "/" and "View site" lead to the dashboard.
        visit(page, live_server.url + "/")
        assert page.url.endswith("/admin/dashboard/"), page.url
        assert (
            page.locator("#user-tools a", has_text="View site").get_attribute("href") == "/admin/dashboard/"
        )

        visit(page, live_server.url + OTHER_PAGES["ca-hierarchy"])
        rows = page.locator("#cm-ca-hierarchy tr.cm-ca-node")
        depths = rows.evaluate_all(
            "trs => trs.map(t => [t.querySelector('th a').textContent, t.dataset.depth])"
        )
        assert [d for _, d in depths][:2] == ["0", "1"], depths  # root, then its intermediate below it
        issuing = page.locator(f"#cm-ca-hierarchy tr[data-ca='{issued.ca_id}'] .cm-count-total")
        assert issuing.inner_text() == "1"
    finally:
        context.close()


def test_empty_dashboard_shows_the_checklist_and_dark_mode_is_dark(live_server, browser, tenant):
    context, page, violations = open_context(browser, 1366, 768, color_scheme="dark")
    try:
        login(page, live_server.url, tenant.admin.user.username)
        visit(page, live_server.url + OTHER_PAGES["dashboard"])
        steps = page.locator("#cm-getting-started li")
        assert steps.count() == 4
        assert "Connect a DNS provider" in steps.first.inner_text()
        assert steps.first.locator("a").get_attribute("href") == "/admin/dnsproviders/appconnection/add/"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        red, green, blue = (int(v) for v in re.findall(r"\d+", background)[:3])
        assert red + green + blue < 120, f"dark mode lost: body background {background}"
        shoot(page, "dashboard-empty-dark", 1366, 768)
        assert not violations, violations
    finally:
        context.close()
