"""The dashboard in a real browser: an auditor opens it from the admin index, the SVG chart has 26 bars with
accessible labels, and the "expiring within 7 days" link leads to the filtered certificate list.

Runs Debian's chromium (``/usr/bin/chromium``) through Playwright against pytest-django's live server;
see ``conftest.py`` for the fixtures.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import login
from tests.pki import conftest as pki_fixtures
from tests.reports.test_dashboard import make_cert

# The PKI fixtures, shared with tests/pki/ (a conftest there is not seen from here).
hierarchy, subscriber, issued = pki_fixtures.hierarchy, pki_fixtures.subscriber, pki_fixtures.issued
pytestmark = pytest.mark.browser


def test_auditor_opens_dashboard_chart_and_expiring_link(live_server, page, tenant, issued):
    soon = make_cert(tenant.organization, ca=issued.ca, days=3)
    make_cert(tenant.organization, ca=issued.ca, days=45)
    base = live_server.url

    login(page, base, tenant.auditor.user.username)
    with page.expect_navigation():
        page.click("#certmgr-dashboard-link a")
    assert page.url.endswith("/admin/dashboard/"), page.url
    assert page.locator("h1").inner_text() == "Dashboard"

    chart = page.locator("svg#cm-expiry-chart")
    assert chart.is_visible()
    bars = chart.locator("rect.bar")
    assert bars.count() == 26
    labels = bars.evaluate_all("rects => rects.map(r => r.querySelector('title').textContent)")
    assert all(label.startswith("Week of ") for label in labels)
    assert sum(int(c) for c in bars.evaluate_all("rects => rects.map(r => r.dataset.count)")) == 3
    assert chart.get_attribute("aria-labelledby") == "cm-chart-title cm-chart-desc"

    # The renewal queue links to the certificate the sweep renews next.
    assert page.locator(f"#cm-renewal-queue a[href$='/pki/certificate/{issued.pk}/change/']").count() == 1

    seven = page.locator("a.cm-expiring[data-days='7']")
    assert "1" in seven.inner_text()
    with page.expect_navigation() as navigation:
        seven.click()
    assert navigation.value.status == 200
    assert "expiring_within=7" in page.url
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert soon.common_name in rows.first.inner_text()
