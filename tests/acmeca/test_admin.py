"""The ACME admin through the Django test client: registering an ACME CA against Pebble, its form errors,
the write-only EAB HMAC key, issuing from an ACME subscriber, the order page and its buttons, accounts,
challenge records, auditors, tenancy and the order list's query count."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from acmeca.models import AcmeAccount, AcmeChallenge, AcmeOrder, AcmeSettings
from certmgr.models import AuditEvent
from dnsproviders import services as dns_services
from pki.models import CertificateAuthority
from tests.acmeca.conftest import acme_subscriber, make_acme_ca, unique_name
from tests.conftest import make_tenant
from tests.pki.test_admin import action_choices, login, texts

CA_URL = "/admin/pki/certificateauthority/"
ACME_ADD = f"{CA_URL}acme/add/"
SUB_URL = "/admin/pki/subscriber/"
ORDER_URL = "/admin/acmeca/acmeorder/"
ACCOUNT_URL = "/admin/acmeca/acmeaccount/"
CHALLENGE_URL = "/admin/acmeca/acmechallenge/"

live = pytest.mark.django_db(transaction=True)


def acme_form(tenant, **overrides) -> dict:
    data = {
        "organization": tenant.organization.pk,
        "name": "Pebble",
        "vendor": "custom",
        "directory_url": "",
        "email": "pki@acme.test",
        "eab_kid": "",
        "eab_hmac_key": "",
        "dns_connection": "",
        "hosted_zone_id": "",
        "challenge_type": "dns-01",
        "profile": "",
        "preferred_chain": "",
        "tls_ca_bundle": "",
        "propagation_timeout": "60",
        "propagation_interval": "0.5",
        "account_key_kind": "ec-p256",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def form_errors(response) -> dict:
    assert response.status_code == 200, response.status_code
    return response.context["form"].errors


def issue_through_admin(client, subscriber) -> AcmeOrder:
    response = client.post(
        SUB_URL, {"action": "issue_now", "_selected_action": [subscriber.pk], "index": "0"}
    )
    assert response.status_code == 302
    order = AcmeOrder.objects.filter(subscriber=subscriber).latest("id")
    messages = texts(response)
    assert any(f"ACME order {order.pk}</a> started" in m for m in messages), messages
    assert any(f'href="{ORDER_URL}{order.pk}/change/"' in m for m in messages), messages
    order.refresh_from_db()
    return order


def manual_ca(tenant, pebble, name: str = "Pebble manual"):
    manual = dns_services.create_connection(
        tenant.organization, name=f"by hand {name}", kind="manual", credentials={}, actor=tenant.admin.user
    )
    return make_acme_ca(tenant, pebble, name=name, connection=manual)


# --- registering an ACME CA ------------------------------------------------------------------------------
@live
def test_operator_registers_an_acme_ca_at_pebble_through_the_admin(tenant, pebble, pdns_connection):
    client = login(tenant.operator)
    listing = client.get(CA_URL)
    assert ACME_ADD.encode() in listing.content  # "Add ACME CA" next to the other CA tools
    page = client.get(ACME_ADD)
    assert page.status_code == 200
    html = page.content.decode()
    assert "ZeroSSL — EAB required" in html and "https://acme.zerossl.com/v2/DV90" in html
    assert "Let&#x27;s Encrypt</option>" in html or "Let's Encrypt</option>" in html  # no EAB note
    assert f'value="{pdns_connection.pk}"' in html

    response = client.post(
        ACME_ADD,
        acme_form(
            tenant,
            directory_url=pebble.directory_url,
            tls_ca_bundle=pebble.tls_ca_bundle,
            dns_connection=pdns_connection.pk,
            hosted_zone_id="zone-1",
            profile="",
            preferred_chain="Pebble Root",
            direct_issuance="on",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    ca = CertificateAuthority.objects.get(name="Pebble")
    assert response["Location"] == f"{CA_URL}{ca.pk}/change/"
    assert ca.kind == "acme" and ca.organization == tenant.organization
    row = AcmeSettings.objects.get(ca=ca)
    assert row.directory_url == pebble.directory_url and row.dns_connection == pdns_connection
    assert row.direct_issuance and row.preferred_chain == "Pebble Root" and row.propagation_timeout == 60
    account = row.account
    assert account.status == "valid" and account.account_url.startswith("https://")
    assert AuditEvent.objects.filter(action="ca.create", outcome="success").exists()

    page = client.get(f"{CA_URL}{ca.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    for text in (pebble.directory_url, account.account_url, "Valid", "pdns", "Edit settings", "ACME orders"):
        assert text in html, text
    assert "PRIVATE KEY" not in html and "Publish CRL" not in html and "download/pem" not in html

    # Edit: the form comes back filled (no secret), a change goes through update_acme_ca, a rename too.
    edit = client.get(f"{CA_URL}{ca.pk}/acme/")
    assert edit.status_code == 200
    assert edit.context["form"].initial["directory_url"] == pebble.directory_url
    data = acme_form(
        tenant,
        organization=None,
        account_key_kind=None,
        name="Pebble renamed",
        directory_url=pebble.directory_url,
        tls_ca_bundle=pebble.tls_ca_bundle,
        dns_connection=pdns_connection.pk,
        email="ops@acme.test",
        propagation_timeout="90",
    )
    response = client.post(f"{CA_URL}{ca.pk}/acme/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    ca.refresh_from_db()
    row.refresh_from_db()
    assert ca.name == "Pebble renamed" and row.email == "ops@acme.test" and row.propagation_timeout == 90
    assert not row.direct_issuance  # an unchecked box turns it off
    assert row.account_id == account.pk  # same directory: the account stays, its email is updated
    assert AcmeAccount.objects.get(pk=account.pk).email == "ops@acme.test"

    # Disable / enable / delete are the CA's own buttons and services.
    assert client.post(f"{CA_URL}{ca.pk}/status/disabled/").status_code == 302
    ca.refresh_from_db()
    assert ca.status == "disabled"
    response = client.post(f"{CA_URL}{ca.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not CertificateAuthority.objects.filter(pk=ca.pk).exists()
    assert AcmeAccount.objects.filter(pk=account.pk).exists()  # the account outlives its CA


@live
def test_bad_acme_ca_input_is_a_form_error_and_stores_nothing(tenant, pebble, pdns_connection):
    client = login(tenant.operator)

    errors = form_errors(client.post(ACME_ADD, acme_form(tenant, dns_connection=pdns_connection.pk)))
    assert "directory_url" in errors and "custom" in str(errors["directory_url"])

    # A URL that answers, but is no ACME directory: the CA's refusal lands on the directory URL.
    not_acme = pebble.directory_url.rsplit("/", 1)[0] + "/no-such-directory"
    errors = form_errors(
        client.post(
            ACME_ADD,
            acme_form(
                tenant,
                directory_url=not_acme,
                tls_ca_bundle=pebble.tls_ca_bundle,
                dns_connection=pdns_connection.pk,
            ),
        )
    )
    assert list(errors) == ["directory_url"], errors

    # Half an EAB pair.
    errors = form_errors(
        client.post(
            ACME_ADD,
            acme_form(
                tenant,
                directory_url=pebble.directory_url,
                dns_connection=pdns_connection.pk,
                eab_kid="kid-only",
            ),
        )
    )
    assert "eab_hmac_key" in errors

    # Let's Encrypt needs no EAB (only the missing connection is wrong); ZeroSSL does and says so.
    errors = form_errors(client.post(ACME_ADD, acme_form(tenant, vendor="letsencrypt")))
    assert list(errors) == ["dns_connection"], errors
    errors = form_errors(client.post(ACME_ADD, acme_form(tenant, vendor="zerossl")))
    assert "eab_kid" in errors and "external account binding" in str(errors["eab_kid"])
    # A preset with another URL is refused rather than silently replaced.
    errors = form_errors(
        client.post(
            ACME_ADD,
            acme_form(
                tenant,
                vendor="letsencrypt",
                directory_url=pebble.directory_url,
                dns_connection=pdns_connection.pk,
            ),
        )
    )
    assert "directory_url" in errors or "vendor" in errors

    assert not CertificateAuthority.objects.exists()
    assert not AcmeAccount.objects.exists() and not AcmeSettings.objects.exists()


@live
def test_eab_hmac_key_is_never_rendered(tenant, pebble_eab, pdns_connection):
    client = login(tenant.admin)
    secret = pebble_eab.eab_hmac_key
    # A refused form does not echo the HMAC key back.
    refused = client.post(
        ACME_ADD,
        acme_form(tenant, eab_kid=pebble_eab.eab_kid, eab_hmac_key=secret, dns_connection=pdns_connection.pk),
    )
    assert refused.status_code == 200 and secret.encode() not in refused.content
    response = client.post(
        ACME_ADD,
        acme_form(
            tenant,
            name="Pebble EAB",
            directory_url=pebble_eab.directory_url,
            tls_ca_bundle=pebble_eab.tls_ca_bundle,
            dns_connection=pdns_connection.pk,
            eab_kid=pebble_eab.eab_kid,
            eab_hmac_key=secret,
        ),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    ca = CertificateAuthority.objects.get(name="Pebble EAB")
    row = AcmeSettings.objects.get(ca=ca)
    assert row.eab_hmac_key == secret and row.account.eab_kid == pebble_eab.eab_kid
    account = row.account
    edit_url = f"{CA_URL}{ca.pk}/acme/"
    for url in (
        CA_URL,
        f"{CA_URL}{ca.pk}/change/",
        edit_url,
        f"{CA_URL}{ca.pk}/delete/",
        f"{CA_URL}{ca.pk}/history/",
        ACCOUNT_URL,
        f"{ACCOUNT_URL}{account.pk}/change/",
        f"{ACCOUNT_URL}{account.pk}/rollover/",
    ):
        page = client.get(url)
        assert page.status_code == 200, url
        assert secret.encode() not in page.content, url
    page = client.get(edit_url)
    assert b"leave empty to keep it" in page.content and pebble_eab.eab_kid.encode() in page.content
    assert b"HMAC key stored (hidden)" in client.get(f"{CA_URL}{ca.pk}/change/").content

    # Saving with the HMAC field empty keeps the stored key and the account (no account setting changed).
    data = acme_form(
        tenant,
        organization=None,
        account_key_kind=None,
        name="Pebble EAB",
        directory_url=pebble_eab.directory_url,
        tls_ca_bundle=pebble_eab.tls_ca_bundle,
        dns_connection=pdns_connection.pk,
        eab_kid=pebble_eab.eab_kid,
        profile="",
        hosted_zone_id="zone-2",
    )
    response = client.post(edit_url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    row.refresh_from_db()
    assert row.eab_hmac_key == secret and row.hosted_zone_id == "zone-2" and row.account_id == account.pk


# --- issuing and the order page --------------------------------------------------------------------------
@live
def test_issue_from_acme_subscriber_shows_the_order_with_its_challenges(tenant, pebble, pebble_ca, powerdns):
    name = unique_name(powerdns.zone, "admin")
    sub = acme_subscriber(tenant, pebble_ca, [name])
    client = login(tenant.operator)
    order = issue_through_admin(client, sub)
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    cert = order.certificate

    page = client.get(f"{ORDER_URL}{order.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    (ch,) = order.challenges.all()
    for text in ("Done", "Valid", name, ch.record_name, ch.record_value, "DNS-01", cert.serial):
        assert text in html, text
    download = f"/admin/pki/certificate/{cert.pk}/download/fullchain/"
    assert download in html and f"/admin/pki/certificate/{cert.pk}/change/" in html
    bundle = client.get(download)
    assert bundle.status_code == 200 and bundle.content.count(b"BEGIN CERTIFICATE") >= 2
    assert b"PRIVATE KEY" not in page.content
    # Finished: no refresh or cancel; retrying a done order is refused by the service.
    assert f"{ORDER_URL}{order.pk}/cancel/".encode() not in page.content
    response = client.post(f"{ORDER_URL}{order.pk}/retry/", follow=True)
    assert any("done" in m for m in texts(response))

    listing = client.get(ORDER_URL)
    assert listing.status_code == 200 and name.encode() in listing.content
    assert [o.pk for o in client.get(f"{ORDER_URL}?q={name[:12]}").context["cl"].result_list] == [order.pk]
    assert list(client.get(f"{ORDER_URL}?q=nothing-like-this").context["cl"].result_list) == []
    assert [
        o.pk for o in client.get(f"{ORDER_URL}?step=done&ca={pebble_ca.pk}").context["cl"].result_list
    ] == [order.pk]
    challenges = client.get(CHALLENGE_URL)
    assert challenges.status_code == 200
    assert ch.record_name.encode() in challenges.content and b"Valid" in challenges.content
    detail = client.get(f"{CHALLENGE_URL}{ch.pk}/change/")
    assert detail.status_code == 200 and ch.record_value.encode() in detail.content
    assert f"{ORDER_URL}{order.pk}/change/".encode() in detail.content

    # The subscriber page's own button lands on the order too.
    sub2 = acme_subscriber(tenant, pebble_ca, [unique_name(powerdns.zone, "button")])
    response = client.post(f"{SUB_URL}{sub2.pk}/issue/")
    order2 = AcmeOrder.objects.get(subscriber=sub2)
    assert response.status_code == 302 and response["Location"] == f"{ORDER_URL}{order2.pk}/change/"

    # A finished order can be deleted; its certificate stays.
    response = client.post(f"{ORDER_URL}{order.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not AcmeOrder.objects.filter(pk=order.pk).exists()
    cert.refresh_from_db()


@live
def test_manual_dns_order_buttons_refresh_confirm_cancel_retry(tenant, pebble, powerdns, acme_env):
    ca = manual_ca(tenant, pebble)
    client = login(tenant.operator)
    sub = acme_subscriber(tenant, ca, [unique_name(powerdns.zone, "manual")])
    order = issue_through_admin(client, sub)
    assert order.step == AcmeOrder.Step.WAITING_MANUAL
    (ch,) = order.challenges.all()
    page = client.get(f"{ORDER_URL}{order.pk}/change/")
    html = page.content.decode()
    assert "Create these DNS records" in html and ch.record_value in html and "IN TXT" in html
    for button in ("refresh", "confirm", "retry", "cancel"):
        assert f"{ORDER_URL}{order.pk}/{button}/" in html, button
    assert client.get(f"{ORDER_URL}{order.pk}/cancel/").status_code == 405  # buttons are POST only

    # The page's live panel polls the order's status: the step, the challenges, the attempts.
    status = client.get(f"{ORDER_URL}{order.pk}/status/")
    assert status.status_code == 200 and 'id="acme-live"' in html and "order_live.js" in html
    state = status.json()
    assert state["step"] == "waiting_manual" and not state["finished"] and state["certificate"] is None
    assert state["step_label"] == "Waiting for the DNS record" and state["max_attempts"] >= 1
    assert [c["status"] for c in state["challenges"]] == [ch.status]
    other = make_tenant("Initech")
    assert login(other.operator).get(f"{ORDER_URL}{order.pk}/status/").status_code == 404

    # Refresh: the worker looks again and it still waits for the record.
    response = client.post(f"{ORDER_URL}{order.pk}/refresh/")
    assert response.status_code == 302 and any("refreshed" in m for m in texts(response))
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.WAITING_MANUAL
    assert AuditEvent.objects.filter(action="acme.order.refresh", outcome="success").exists()

    # Cancel, then retry: the retry is a new order (the page redirects to it).
    response = client.post(f"{ORDER_URL}{order.pk}/cancel/")
    order.refresh_from_db()
    assert (
        order.step == AcmeOrder.Step.CANCELLED and not order.challenges.filter(record_present=True).exists()
    )
    response = client.post(f"{ORDER_URL}{order.pk}/retry/")
    again = AcmeOrder.objects.filter(subscriber=sub).latest("id")
    assert again.pk != order.pk and response["Location"] == f"{ORDER_URL}{again.pk}/change/"
    assert again.step == AcmeOrder.Step.WAITING_MANUAL
    assert again.retry_of_id == order.pk
    # Both pages show the chain: the retry names the order it retries, the cancelled order its retry.
    for shown, other, says in ((again, order, "Retry of order"), (order, again, "Retried as order")):
        chain = client.get(f"{ORDER_URL}{shown.pk}/change/").content.decode()
        assert f'href="{ORDER_URL}{other.pk}/change/"' in chain and says in chain, chain

    # The operator creates the record and confirms it (here as a changelist action): the order completes.
    (ch,) = again.challenges.all()
    powerdns.set_txt(ch.record_name, [ch.record_value])
    try:
        response = client.post(
            ORDER_URL, {"action": "confirm_orders", "_selected_action": [again.pk], "index": "0"}
        )
        assert response.status_code == 302
        again.refresh_from_db()
        assert again.step == AcmeOrder.Step.DONE, again.last_error
    finally:
        powerdns.set_txt(ch.record_name, [])
    page = client.get(f"{ORDER_URL}{again.pk}/change/")
    assert b"Download certificate" in page.content and b"Create these DNS records" not in page.content

    # Bulk: deleting a running order is refused with a message, finished ones go.
    # (a fresh name: Pebble may reuse the valid authorization of the name above and finish at once)
    third = issue_through_admin(client, acme_subscriber(tenant, ca, [unique_name(powerdns.zone, "third")]))
    assert third.step == AcmeOrder.Step.WAITING_MANUAL
    response = client.post(
        ORDER_URL,
        {"action": "delete_selected", "_selected_action": [order.pk, third.pk], "post": "yes", "index": "0"},
    )
    assert response.status_code == 302
    assert (
        not AcmeOrder.objects.filter(pk=order.pk).exists() and AcmeOrder.objects.filter(pk=third.pk).exists()
    )
    client.post(ORDER_URL, {"action": "cancel_orders", "_selected_action": [third.pk], "index": "0"})
    third.refresh_from_db()
    assert third.step == AcmeOrder.Step.CANCELLED


@live
def test_accounts_list_deactivate_rollover_and_delete(tenant, pebble, pdns_connection):
    ca = make_acme_ca(tenant, pebble, connection=pdns_connection)
    account = AcmeSettings.objects.get(ca=ca).account
    client = login(tenant.operator)
    listing = client.get(ACCOUNT_URL)
    assert listing.status_code == 200
    html = listing.content.decode()
    for text in ("pki@acme.test", "Custom directory URL", "Valid", pebble.directory_url):
        assert text in html, text
    assert client.get(f"{ACCOUNT_URL}?status=valid&vendor=custom").context["cl"].result_list[0] == account
    page = client.get(f"{ACCOUNT_URL}{account.pk}/change/")
    assert account.account_url.encode() in page.content and b"PRIVATE KEY" not in page.content
    assert b"Roll over key" in page.content and b"Deactivate" in page.content

    old_key = account.private_key
    response = client.post(f"{ACCOUNT_URL}{account.pk}/rollover/", {"key_kind": "ec-p384"})
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.key_kind == "ec-p384" and account.private_key != old_key and account.key_rolled_at

    # Deleting is refused while the CA uses it.
    response = client.post(f"{ACCOUNT_URL}{account.pk}/delete/", {"post": "yes"})
    assert AcmeAccount.objects.filter(pk=account.pk).exists()
    response = client.post(
        ACCOUNT_URL, {"action": "deactivate_accounts", "_selected_action": [account.pk], "index": "0"}
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.status == "deactivated"
    # Deactivated, the CA must register a new account (an edit does), after which the old one can go.
    client.post(f"{CA_URL}{ca.pk}/status/disabled/")
    pki_delete = client.post(f"{CA_URL}{ca.pk}/delete/", {"post": "yes"})
    assert pki_delete.status_code == 302 and not CertificateAuthority.objects.filter(pk=ca.pk).exists()
    response = client.post(f"{ACCOUNT_URL}{account.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not AcmeAccount.objects.filter(pk=account.pk).exists()
    assert AuditEvent.objects.filter(action="acme.account.delete", outcome="success").exists()


# --- roles and tenancy -----------------------------------------------------------------------------------
@live
def test_auditor_reads_everything_and_changes_nothing(tenant, pebble, powerdns, acme_env):
    ca = manual_ca(tenant, pebble)
    order = issue_through_admin(
        login(tenant.operator), acme_subscriber(tenant, ca, [unique_name(powerdns.zone)])
    )
    account = AcmeSettings.objects.get(ca=ca).account
    client = login(tenant.auditor)
    for url in (ORDER_URL, ACCOUNT_URL, CHALLENGE_URL):
        page = client.get(url)
        assert page.status_code == 200 and len(page.context["cl"].result_list) >= 1, url
        assert action_choices(page) == set(), url
    assert ACME_ADD.encode() not in client.get(CA_URL).content
    pages = {
        f"{CA_URL}{ca.pk}/change/": [b"Edit settings", b'name="disable"'],
        f"{ORDER_URL}{order.pk}/change/": [b"/refresh/", b"/cancel/", b"/retry/", b"/confirm/", b"/delete/"],
        f"{ACCOUNT_URL}{account.pk}/change/": [b"/rollover/", b"/deactivate/", b"/delete/"],
    }
    for url, absent in pages.items():
        page = client.get(url)
        assert page.status_code == 200, url
        for text in absent:
            assert text not in page.content, (url, text)
    assert b"IN TXT" in client.get(f"{ORDER_URL}{order.pk}/change/").content  # reading is fine
    for method, url in (
        ("get", ACME_ADD),
        ("post", ACME_ADD),
        ("get", f"{CA_URL}{ca.pk}/acme/"),
        ("post", f"{ORDER_URL}{order.pk}/refresh/"),
        ("post", f"{ORDER_URL}{order.pk}/retry/"),
        ("post", f"{ORDER_URL}{order.pk}/cancel/"),
        ("post", f"{ORDER_URL}{order.pk}/confirm/"),
        ("post", f"{ACCOUNT_URL}{account.pk}/deactivate/"),
        ("get", f"{ACCOUNT_URL}{account.pk}/rollover/"),
        ("post", f"{ACCOUNT_URL}{account.pk}/delete/"),
        ("post", f"{ORDER_URL}{order.pk}/delete/"),
    ):
        assert getattr(client, method)(url).status_code == 403, (method, url)
    # A forged action post changes nothing.
    client.post(ORDER_URL, {"action": "cancel_orders", "_selected_action": [order.pk], "index": "0"})
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.WAITING_MANUAL
    login(tenant.operator).post(f"{ORDER_URL}{order.pk}/cancel/")


@live
def test_other_organization_sees_no_acme_rows_and_gets_404(tenant, other_tenant, pebble, powerdns, acme_env):
    ca = manual_ca(tenant, pebble)
    order = issue_through_admin(
        login(tenant.operator), acme_subscriber(tenant, ca, [unique_name(powerdns.zone)])
    )
    account = AcmeSettings.objects.get(ca=ca).account
    (ch,) = order.challenges.all()
    for role in ("admin", "operator", "auditor"):
        client = login(other_tenant.member(role))
        for url in (ORDER_URL, ACCOUNT_URL, CHALLENGE_URL, CA_URL):
            response = client.get(url)
            assert response.status_code == 200 and list(response.context["cl"].result_list) == [], (role, url)
            assert (
                ch.record_name.encode() not in response.content and b"Pebble manual" not in response.content
            )
        for url in (
            f"{ORDER_URL}{order.pk}/change/",
            f"{ACCOUNT_URL}{account.pk}/change/",
            f"{CHALLENGE_URL}{ch.pk}/change/",
            f"{CA_URL}{ca.pk}/change/",
        ):
            assert client.get(url).status_code == 302, (
                url
            )  # Django's admin: a missing object goes to the index
        for method, url in (
            ("get", f"{CA_URL}{ca.pk}/acme/"),
            ("post", f"{ORDER_URL}{order.pk}/refresh/"),
            ("post", f"{ORDER_URL}{order.pk}/cancel/"),
            ("post", f"{ORDER_URL}{order.pk}/retry/"),
            ("post", f"{ORDER_URL}{order.pk}/confirm/"),
            ("post", f"{ACCOUNT_URL}{account.pk}/deactivate/"),
            ("get", f"{ACCOUNT_URL}{account.pk}/rollover/"),
        ):
            assert getattr(client, method)(url).status_code == 404, (role, method, url)
    # The other organization's add form offers none of this organization's DNS connections.
    page = login(other_tenant.admin).get(ACME_ADD)
    assert not page.context["form"].fields["dns_connection"].queryset.filter(organization=tenant.organization)
    forged = login(other_tenant.admin).post(
        ORDER_URL, {"action": "cancel_orders", "_selected_action": [order.pk], "index": "0"}
    )
    assert forged.status_code in (200, 302)
    order.refresh_from_db()
    assert order.step == AcmeOrder.Step.WAITING_MANUAL
    login(tenant.operator).post(f"{ORDER_URL}{order.pk}/cancel/")


# --- lists at scale --------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_order_and_challenge_lists_have_no_query_per_row(tenant):
    from acmeca.models import AcmeAuthorization
    from pki import services as pki_services

    ca = CertificateAuthority.objects.create(organization=tenant.organization, name="ext", kind="acme")
    sub = pki_services.save_subscriber(
        tenant.organization,
        actor=tenant.admin.user,
        name="s",
        ca=ca,
        common_name="a.acme.test",
        validity_days=30,
    )

    def fill(count: int, prefix: str) -> None:
        for i in range(count):
            order = AcmeOrder.objects.create(
                organization=tenant.organization,
                ca=ca,
                subscriber=sub if i % 2 else None,
                identifiers=[{"type": "dns", "value": f"{prefix}{i}.acme.test"}],
                challenge_type="dns-01",
                step="failed",
                last_error="urn:ietf:params:acme:error:unauthorized " * 5,
            )
            authz = AcmeAuthorization.objects.create(
                order=order, identifier=f"{prefix}{i}.acme.test", url="https://x/a"
            )
            AcmeChallenge.objects.create(
                organization=tenant.organization,
                order=order,
                authorization=authz,
                type="dns-01",
                url="https://x/c",
                token=f"t{prefix}{i}",
                record_name=f"_acme-challenge.{prefix}{i}.acme.test",
                record_value="v" * 43,
                status=["not_ready", "ready", "valid", "invalid"][i % 4],
            )

    client = login(tenant.admin)
    client.get(ORDER_URL)  # warm the session

    def queries(url: str) -> list[str]:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200
        return [q["sql"] for q in ctx.captured_queries]

    fill(3, "a")
    small = {url: queries(url) for url in (ORDER_URL, CHALLENGE_URL)}
    fill(40, "b")
    for url, before in small.items():
        after = queries(url)
        assert len(after) == len(before), (url, len(before), len(after))
        for sql in after:
            assert '"private_key"' not in sql and '"csr_pem"' not in sql and '"certificate_pem"' not in sql, (
                sql
            )
            if "COUNT(" in sql.upper():
                assert "LIMIT" in sql.upper(), sql
    page = client.get(f"{CHALLENGE_URL}?status=not_ready")
    statuses = {c.get_status_display() for c in page.context["cl"].result_list}
    assert statuses == {"Not ready"} and b"Not ready" in page.content
    assert b"Ready" in client.get(f"{CHALLENGE_URL}?status=ready").content
    assert len(client.get(f"{ORDER_URL}?step=failed").context["cl"].result_list) == 43
    assert re.search(rb"unauthorized", client.get(ORDER_URL).content)


# --- "Create ACME order" (direct issuance) -----------------------------------------------------------
@live
def test_create_acme_order_from_a_stored_csr_or_names(tenant, pebble, powerdns, pebble_ca):
    from acmeca.services import update_acme_ca
    from pki import services as pki_services
    from pki.models import Certificate

    client = login(tenant.operator)
    add = f"{ORDER_URL}add/"
    assert client.get(add).status_code == 200
    assert not client.get(add).context["form"].fields["ca"].queryset.exists()  # direct issuance is off
    update_acme_ca(pebble_ca, actor=tenant.admin.user, direct_issuance=True)
    assert b'href="/admin/acmeca/acmeorder/add/"' in client.get(ORDER_URL).content

    name = unique_name(powerdns.zone, "direct")
    csr = pki_services.generate_csr(
        tenant.organization, name="direct csr", common_name=name, sans=[name], actor=tenant.operator.user
    )
    response = client.post(add, {"ca": pebble_ca.pk, "csr": csr.pk, "names": "", "key_algorithm": "ec-p256"})
    assert response.status_code == 302, response.context["form"].errors if response.context else response
    order = AcmeOrder.objects.latest("id")
    assert response["Location"] == f"{ORDER_URL}{order.pk}/change/"
    assert order.step == AcmeOrder.Step.DONE and order.subscriber is None, order.last_error
    cert = Certificate.objects.get(pk=order.certificate_id)
    assert cert.sans == [name] and cert.private_key == csr.private_key  # the CSR's key came along

    errors = form_errors(client.post(add, {"ca": pebble_ca.pk, "names": "", "key_algorithm": "ec-p256"}))
    assert "names" in errors
    errors = form_errors(
        client.post(add, {"ca": pebble_ca.pk, "names": "bad_label.pdns.test", "key_algorithm": "ec-p256"})
    )
    assert any("bad_label" in e for e in errors.get("names", []) + errors.get("__all__", [])), errors
    assert AcmeOrder.objects.count() == 1

    auditor = login(tenant.auditor)
    assert auditor.get(add).status_code == 403
    assert b'href="/admin/acmeca/acmeorder/add/"' not in auditor.get(ORDER_URL).content
