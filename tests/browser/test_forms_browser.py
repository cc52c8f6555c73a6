"""Admin forms whose choices a script changes, in a real browser under the CSP (issue 11, items 4 and 15):
with two organizations the ACME CA form's DNS connections and the subscriber form's CAs follow the chosen
organization; a connection whose last test failed warns when chosen (item 17); with an ACME CA chosen the
subscriber form hides what the ACME CA decides."""

from __future__ import annotations

import pytest

from certmgr import services as core
from dnsproviders import services as dns_services
from pki import services as pki_services
from tests.acmeca.conftest import (  # noqa: F401  fixtures used by name
    acme_env,
    bind,
    dnsdist,
    pdns_connection,
    pebble,
    pebble_ca,
    powerdns,
)
from tests.browser.conftest import login
from tests.browser.test_admin_browser import open_page
from tests.conftest import SYSTEM

pytestmark = pytest.mark.browser


def options(page, selector: str) -> list[str]:
    texts = page.locator(f"{selector} option").all_inner_texts()
    return [t.strip() for t in texts if t.strip() not in ("", "---------")]


def choose_organization(page, org_id: int) -> None:
    page.select_option("#id_organization", str(org_id))
    page.wait_for_selector(f"form[data-organization-choices='{org_id}']")


def test_dependent_choices_follow_the_organization_and_acme_fields_hide(
    live_server,
    page,
    tenant,
    other_tenant,
    pebble_ca,  # noqa: F811
    powerdns,  # noqa: F811
):
    core.add_member(other_tenant.organization, tenant.operator.user, "operator", actor=SYSTEM)
    dns_services.create_connection(
        other_tenant.organization, name="globex-dns", kind="manual", credentials={}, actor=SYSTEM
    )
    pki_services.create_internal_ca(
        other_tenant.organization,
        name="Globex Root",
        kind="internal-root",
        subject={"common_name": "Globex Root"},
        key_algorithm="ec-p256",
        validity_days=365,
        actor=SYSTEM,
    )
    base = live_server.url
    login(page, base, tenant.operator.user.username)

    # The ACME CA form: nothing preselected; each organization's connections only.
    open_page(page, base + "/admin/pki/certificateauthority/acme/add/")
    assert page.locator("#id_organization").input_value() == ""
    choose_organization(page, other_tenant.organization.pk)
    offered = options(page, "#id_dns_connection")
    assert len(offered) == 1 and offered[0].startswith("globex-dns "), offered
    choose_organization(page, tenant.organization.pk)
    offered = options(page, "#id_dns_connection")
    assert offered and all(o.startswith("pdns") for o in offered), offered

    # A connection whose last test failed: marked in the list, and choosing it warns at once.
    broken = dns_services.create_connection(
        tenant.organization,
        name="pdns-broken",
        kind="powerdns",
        credentials=powerdns.credentials(api_key="not-the-key"),
        actor=SYSTEM,
    )
    assert not dns_services.test_connection(broken, actor=SYSTEM).ok
    open_page(page, base + "/admin/pki/certificateauthority/acme/add/")
    choose_organization(page, tenant.organization.pk)
    assert "pdns-broken (PowerDNS) — last test failed" in options(page, "#id_dns_connection")
    assert page.locator("#acme-connection-warning").inner_text() == ""
    page.select_option("#id_dns_connection", str(broken.pk))
    assert "failed its last test" in page.locator("#acme-connection-warning").inner_text()

    # The subscriber form: the CAs follow the organization; an ACME CA hides validity, usages, O/OU/C.
    open_page(page, base + "/admin/pki/subscriber/add/")
    choose_organization(page, other_tenant.organization.pk)
    assert options(page, "#id_ca") == ["Globex Root (Globex)"]
    choose_organization(page, tenant.organization.pk)
    assert options(page, "#id_ca") == [f"{pebble_ca.name} (Acme)"]
    page.select_option("#id_ca", str(pebble_ca.pk))
    for name in ("validity_days", "key_usages", "subject_organization", "subject_country"):
        assert page.locator(f".form-row.field-{name}").is_hidden(), name
    assert page.locator(".form-row.field-key_algorithm").is_visible()
    assert "This is an ACME CA" in page.locator("#pki-acme-note").inner_text()
    page.select_option("#id_issuer_type", "self-signed")
    assert page.locator(".form-row.field-validity_days").is_visible()
