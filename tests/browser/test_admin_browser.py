"""The admin in a real browser: an operator adds a PowerDNS connection through the per-kind form, the
secret never comes back in any page, and an auditor gets read-only pages.

Runs Debian's chromium (``/usr/bin/chromium``) through Playwright against pytest-django's live server;
see ``conftest.py`` for the fixtures.
"""

from __future__ import annotations

import secrets

import pytest

from certmgr.models import AuditEvent
from dnsproviders import services as connections
from dnsproviders.models import AppConnection
from tests.browser.conftest import login
from tests.conftest import SYSTEM

pytestmark = pytest.mark.browser

CHANGELIST = "/admin/dnsproviders/appconnection/"
ADD = f"{CHANGELIST}add/"
KINDS = ["aws", "cloudflare", "powerdns", "rfc2136", "acme-dns", "manual", "akamai"]


def planted_secret() -> str:
    """A secret no page could contain by accident."""
    return "pdns-key-" + secrets.token_hex(16)


def visible_kind_fieldsets(page) -> list[str]:
    visible = []
    for kind in KINDS:
        fieldset = page.locator(f"fieldset.kind-fields.kind-{kind}")
        assert fieldset.count() == 1, f"no fieldset for kind {kind}: the form lost a kind"
        if fieldset.is_visible():
            visible.append(kind)
    return visible


def server_error_text(page) -> str:
    return page.locator("body").inner_text()[:1500]


def open_page(page, url: str) -> None:
    """Navigate and insist on a 200: an admin page that answers 500 fails here, not in a locator timeout."""
    response = page.goto(url)
    assert response is not None, url
    assert response.status == 200, f"GET {url} answered {response.status}:\n{server_error_text(page)}"


def submit(page, selector: str) -> None:
    """Click a submit button or link and wait for the page it leads to, which must not be an error."""
    with page.expect_navigation() as navigation:
        page.click(selector)
    response = navigation.value
    assert response is not None and response.status < 400, (
        f"{selector} on {page.url} answered {response and response.status}:\n{server_error_text(page)}"
    )


def assert_secret_absent(page, secret: str, where: str) -> None:
    html = page.content()
    assert secret not in html, f"the planted secret appears in the HTML of {where} ({page.url})"
    # Not even as the value of an input (the DOM property, which page.content() would miss after typing).
    values = page.eval_on_selector_all("input, textarea", "els => els.map(e => e.value)")
    assert not [v for v in values if secret in v], f"the planted secret is the value of an input on {where}"


def test_operator_adds_powerdns_connection_and_secret_never_shown(live_server, page, tenant):
    base = live_server.url
    api_key = planted_secret()
    name = "pdns-browser-" + secrets.token_hex(3)
    api_url = "https://pdns.example.test:8081"

    login(page, base, tenant.operator.user.username)

    # The add form: one fieldset per kind, the script shows the chosen kind's only.
    open_page(page, base + ADD)
    assert page.locator("#id_kind").count() == 1, server_error_text(page)
    page.select_option("#id_organization", str(tenant.organization.pk))
    page.fill("#id_name", name)
    page.fill("#id_description", "added by the browser test")
    page.select_option("#id_kind", "powerdns")
    assert visible_kind_fieldsets(page) == ["powerdns"]
    page.select_option("#id_kind", "rfc2136")  # the fieldset follows the select
    assert visible_kind_fieldsets(page) == ["rfc2136"]
    page.select_option("#id_kind", "akamai")
    assert visible_kind_fieldsets(page) == ["akamai"]
    assert page.locator("#id_cred_akamai_client_secret").get_attribute("type") == "password"
    page.select_option("#id_kind", "powerdns")
    assert visible_kind_fieldsets(page) == ["powerdns"]

    assert page.locator("#id_cred_powerdns_api_key").get_attribute("type") == "password"
    page.fill("#id_cred_powerdns_api_url", api_url)
    page.fill("#id_cred_powerdns_api_key", api_key)
    page.fill("#id_cred_powerdns_server_id", "localhost")
    submit(page, "input[name=_save]")

    # Saved: back on the changelist, with a success message and the new row.
    assert page.url.endswith(CHANGELIST), (page.url, page.locator(".errornote, .errorlist").all_inner_texts())
    assert "was added successfully" in page.locator("ul.messagelist").inner_text()
    row = page.locator("#result_list tbody tr", has_text=name)
    assert row.count() == 1, page.locator("#result_list").inner_text()
    row_text = row.inner_text()
    assert "powerdns" in row_text.lower()
    assert api_url in row_text  # the endpoint column shows the public part
    assert tenant.organization.name in row_text
    assert_secret_absent(page, api_key, "the changelist")

    # The secret was really stored (so its absence from the pages means something).
    conn = AppConnection.objects.get(organization=tenant.organization, name=name)
    assert conn.kind == "powerdns"
    assert conn.credentials == {"api_url": api_url, "api_key": api_key, "server_id": "localhost"}

    # The change page: only the PowerDNS fieldset, the key input empty, "stored" hint instead.
    open_page(page, base + row.locator("th a, td a").first.get_attribute("href"))
    assert page.url.endswith(f"{CHANGELIST}{conn.pk}/change/"), page.url
    assert page.locator("fieldset.kind-fields").count() == 1
    assert page.locator("fieldset.kind-powerdns").is_visible()
    assert page.locator("#id_cred_powerdns_api_url").input_value() == api_url
    assert page.locator("#id_cred_powerdns_api_key").input_value() == ""
    assert "Stored; leave empty to keep it." in page.locator("fieldset.kind-powerdns").inner_text()
    assert page.locator("input[name=_save]").count() == 1  # the operator may edit
    assert_secret_absent(page, api_key, "the change page")

    # Saving the change page unchanged keeps the stored key (the empty password input is not a new value).
    page.fill("#id_description", "edited by the browser test")
    submit(page, "input[name=_save]")
    assert page.url.endswith(CHANGELIST), (page.url, page.locator(".errornote, .errorlist").all_inner_texts())
    conn.refresh_from_db()
    assert conn.description == "edited by the browser test"
    assert conn.credentials["api_key"] == api_key
    assert_secret_absent(page, api_key, "the changelist after an edit")

    # The audit log of the creation shows the settings, never the key.
    event = AuditEvent.objects.filter(action="app_connection.create", target_id=str(conn.pk)).get()
    open_page(page, f"{base}/admin/certmgr/auditevent/")
    assert "app_connection.create" in page.locator("#result_list").inner_text()
    assert_secret_absent(page, api_key, "the audit log")
    open_page(page, f"{base}/admin/certmgr/auditevent/{event.pk}/change/")
    assert api_url in page.content()
    assert_secret_absent(page, api_key, "the audit event page")


@pytest.fixture
def powerdns_connection(tenant):
    api_key = planted_secret()
    conn = connections.create_connection(
        tenant.organization,
        name="pdns-readonly",
        kind="powerdns",
        description="seen by the auditor",
        credentials={"api_url": "https://pdns.example.test:8081", "api_key": api_key},
        actor=SYSTEM,
    )
    return conn, api_key


def test_auditor_sees_connections_read_only(live_server, page, tenant, powerdns_connection):
    base = live_server.url
    conn, api_key = powerdns_connection
    login(page, base, tenant.auditor.user.username)

    open_page(page, base + CHANGELIST)
    assert page.locator("#result_list").count() == 1, server_error_text(page)
    assert page.locator("#result_list tbody tr", has_text=conn.name).count() == 1
    # No "Add app connection" link, neither in the object tools nor in the navigation sidebar (which
    # rightly keeps its "Add" link for API tokens: auditors may create their own).
    assert page.locator(".object-tools a.addlink").count() == 0, page.locator(
        ".object-tools"
    ).all_inner_texts()
    assert page.locator(f"a[href$='{ADD}']").count() == 0, page.locator(f"a[href$='{ADD}']").all_inner_texts()
    assert_secret_absent(page, api_key, "the auditor's changelist")

    link = page.locator("#result_list tbody tr", has_text=conn.name).locator("th a, td a").first
    open_page(page, base + link.get_attribute("href"))
    assert page.url.endswith(f"{CHANGELIST}{conn.pk}/change/"), page.url
    content = page.locator("#content").inner_text()
    assert "View app connection" in content, content[:500]
    assert conn.name in content
    # The public settings are shown (the key is not): the page must not claim the URL is "None".
    assert "https://pdns.example.test:8081" in content, content
    # Read-only: no Save buttons, no inputs for the connection's fields, no test or delete.
    assert (
        page.locator(
            "input[type=submit][name^=_save], input[name=_continue], input[name=_addanother]"
        ).count()
        == 0
    )
    assert page.locator("input[type=submit][value=Save]").count() == 0
    assert page.locator("#id_name, #id_description, #id_cred_powerdns_api_key").count() == 0
    assert page.locator("button.test-connection").count() == 0
    assert page.locator("a.deletelink").count() == 0
    assert page.locator(f"a[href$='{ADD}']").count() == 0
    assert_secret_absent(page, api_key, "the auditor's view page")

    # The add page itself is refused.
    response = page.goto(base + ADD)
    assert response is not None and response.status == 403, response and response.status


def test_swagger_ui_and_admin_work_under_the_content_security_policy(live_server, page, tenant):
    """The policy allows no inline script: the Swagger UI must still render the schema, the admin its
    pages (the page fixture fails the test on any violation the browser reports)."""
    response = page.goto(f"{live_server.url}/api/docs/")
    policy = response.headers.get("content-security-policy", "")
    assert (
        "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )
    page.wait_for_selector(".swagger-ui .info .title")
    assert "certmgr API" in page.inner_text(".swagger-ui .info .title")
    login(page, live_server.url, tenant.admin.user.username)
    for path in ("/admin/", "/admin/pki/certificateauthority/", "/admin/acmeca/acmeorder/"):
        answer = page.goto(f"{live_server.url}{path}")
        assert answer.status == 200 and "content-security-policy" in answer.headers, path
