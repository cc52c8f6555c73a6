"""External ACME CAs through the API, against the real Pebble and PowerDNS: registration through /cas/,
issuance answering 202 with an order to follow, direct issuance, the order actions, accounts, challenges,
refusals that store nothing, tenancy, and query counts."""

from __future__ import annotations

import json
import socket

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from acmeca.models import AcmeAccount, AcmeChallenge, AcmeOrder, AcmeSettings
from dnsproviders import services as dns_services
from pki import services as pki_services
from pki.models import Certificate, CertificateAuthority, CertificateRequest
from tests.acmeca.conftest import acme_subscriber, make_acme_ca, unique_name
from tests.conftest import SYSTEM, assert_isolated
from tests.outcomes import ordered

pytestmark = pytest.mark.django_db(transaction=True)

CAS = "/api/v1/cas/"
ORDERS = "/api/v1/acme-orders/"
ACCOUNTS = "/api/v1/acme-accounts/"
CHALLENGES = "/api/v1/acme-challenges/"


def acme_body(pebble, connection_id, name="Pebble", **acme) -> dict:
    settings = {
        "vendor": "custom",
        "directory_url": pebble.directory_url,
        "tls_ca_bundle": pebble.tls_ca_bundle,
        "email": "pki@acme.test",
        "dns_connection": connection_id,
        "challenge_type": "dns-01",
        **acme,
    }
    return {"name": name, "kind": "acme", "acme": settings}


def post(client, url, body=None):
    return client.post(url, body, format="json")


def stored() -> tuple[int, int, int]:
    return (
        CertificateAuthority.objects.filter(kind="acme").count(),
        AcmeAccount.objects.count(),
        AcmeSettings.objects.count(),
    )


def assert_no_secret(response, *secrets: str) -> None:
    text = response.content.decode()
    assert 'eab_hmac_key"' not in text.replace("eab_hmac_key_set", "")
    for secret in secrets:
        assert secret not in text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- registration -----------------------------------------------------------------------------------------
def test_create_acme_ca_registers_the_account(tenant, pebble, pdns_connection):
    response = post(tenant.admin.client, CAS, acme_body(pebble, pdns_connection.pk, direct_issuance=True))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["kind"] == "acme" and body["status"] == "active"
    acme = body["acme"]
    assert acme["vendor"] == "custom" and acme["directory_url"] == pebble.directory_url
    assert acme["dns_connection"] == pdns_connection.pk and acme["challenge_type"] == "dns-01"
    assert acme["direct_issuance"] is True and acme["eab_hmac_key_set"] is False
    assert acme["account"]["status"] == "valid" and acme["account"]["account_url"].startswith("https://")
    assert "eab_hmac_key" not in acme
    account = AcmeAccount.objects.get(pk=acme["account"]["id"])
    assert account.organization_id == tenant.organization.pk
    # An internal CA reads with acme null, in the same list.
    pki_services.create_internal_ca(
        tenant.organization, name="Root", kind="internal-root", subject={"common_name": "R"}, actor=SYSTEM
    )
    rows = {row["name"]: row for row in tenant.auditor.client.get(CAS).json()["results"]}
    assert rows["Root"]["acme"] is None
    assert rows["Pebble"]["acme"] == acme


def test_eab_hmac_key_is_never_returned(tenant, pebble_eab, pdns_connection):
    body = acme_body(
        pebble_eab, pdns_connection.pk, eab_kid=pebble_eab.eab_kid, eab_hmac_key=pebble_eab.eab_hmac_key
    )
    response = post(tenant.admin.client, CAS, body)
    assert response.status_code == 201, response.content
    assert response.json()["acme"]["eab_hmac_key_set"] is True
    assert response.json()["acme"]["eab_kid"] == pebble_eab.eab_kid
    assert_no_secret(response, pebble_eab.eab_hmac_key)
    pk = response.json()["id"]
    for url in (CAS, f"{CAS}{pk}/", ACCOUNTS, f"{ACCOUNTS}{response.json()['acme']['account']['id']}/"):
        read = tenant.admin.client.get(url)
        assert read.status_code == 200
        assert_no_secret(read, pebble_eab.eab_hmac_key)
    assert tenant.admin.client.get(f"{CAS}{pk}/").json()["acme"]["eab_hmac_key_set"] is True
    patched = tenant.admin.client.patch(f"{CAS}{pk}/", {"acme": {"profile": ""}}, format="json")
    assert patched.status_code == 200, patched.content
    assert_no_secret(patched, pebble_eab.eab_hmac_key)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vendor": "nosuchca"}, "acme.vendor"),
        ({"directory_url": ""}, "acme.directory_url"),
        ({"dns_connection": None}, "acme.dns_connection"),
        ({"eab_kid": "kid-only"}, "acme.eab_hmac_key"),
        ({"vendor": "letsencrypt"}, "acme.directory_url"),  # the preset's URL is not Pebble's
        ({"challenge_type": "tls-alpn-01"}, "acme.challenge_type"),
        ({"email": "not an address"}, "acme.email"),
        ({"propagation_timeout": 1}, "acme.propagation_timeout"),
        ({"tls_ca_bundle": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"}, None),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_stored(tenant, pebble, pdns_connection, change, field):
    before = stored()
    response = post(tenant.admin.client, CAS, acme_body(pebble, pdns_connection.pk, **change))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    expected = field or "acme.tls_ca_bundle"
    assert expected in error["fields"], error
    assert error["message"].startswith(expected), error
    assert stored() == before


def test_another_orgs_dns_connection_is_unknown(tenant, other_tenant, pebble, pdns_connection, powerdns):
    theirs = dns_services.create_connection(
        other_tenant.organization,
        name="theirs",
        kind="powerdns",
        credentials=powerdns.credentials(),
        actor=other_tenant.admin.user,
    )
    before = stored()
    response = post(tenant.admin.client, CAS, acme_body(pebble, theirs.pk))
    assert response.status_code == 400
    assert "acme.dns_connection" in response.json()["error"]["fields"]
    assert stored() == before


def test_a_directory_url_that_is_not_acme_is_refused(tenant, pebble, pdns_connection, powerdns):
    before = stored()
    body = acme_body(pebble, pdns_connection.pk, directory_url=f"{powerdns.api_url}/api/v1", tls_ca_bundle="")
    response = post(tenant.admin.client, CAS, body)
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == ["acme.directory_url"]
    assert stored() == before


def test_an_unreachable_directory_answers_502(tenant, pebble, pdns_connection):
    before = stored()
    url = f"https://127.0.0.1:{closed_port()}/dir"
    response = post(tenant.admin.client, CAS, acme_body(pebble, pdns_connection.pk, directory_url=url))
    assert response.status_code == 502, response.content
    error = response.json()["error"]
    assert error["status"] == 502 and "acme.directory_url" in error["fields"]
    assert stored() == before


def test_internal_ca_creation_is_unchanged(tenant):
    body = {"name": "Root", "kind": "internal-root", "subject": {"common_name": "Root"}}
    response = post(tenant.admin.client, CAS, body)
    assert response.status_code == 201, response.content
    assert response.json()["acme"] is None
    pk = response.json()["id"]
    refused = tenant.admin.client.patch(f"{CAS}{pk}/", {"acme": {"direct_issuance": True}}, format="json")
    assert refused.status_code == 400 and "acme" in refused.json()["error"]["fields"]
    assert tenant.admin.client.patch(f"{CAS}{pk}/", {}, format="json").status_code == 400
    renamed = tenant.admin.client.patch(f"{CAS}{pk}/", {"name": "Root 2"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "Root 2"


def test_patch_an_acme_ca(tenant, other_tenant, pebble, pebble_ca, powerdns):
    url = f"{CAS}{pebble_ca.pk}/"
    account_id = tenant.admin.client.get(url).json()["acme"]["account"]["id"]
    body = {"name": "Pebble renamed", "acme": {"direct_issuance": True, "propagation_interval": 0.5}}
    response = tenant.admin.client.patch(url, body, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["name"] == "Pebble renamed"
    assert data["acme"]["direct_issuance"] is True and data["acme"]["propagation_interval"] == 0.5
    assert data["acme"]["account"]["id"] == account_id  # nothing that needs a new account changed
    theirs = dns_services.create_connection(
        other_tenant.organization,
        name="theirs",
        kind="powerdns",
        credentials=powerdns.credentials(),
        actor=other_tenant.admin.user,
    )
    refused = tenant.admin.client.patch(url, {"acme": {"dns_connection": theirs.pk}}, format="json")
    assert refused.status_code == 400 and "acme.dns_connection" in refused.json()["error"]["fields"]
    zerossl = {"acme": {"vendor": "zerossl", "directory_url": ""}}  # its preset URL, and EAB it needs
    refused = tenant.admin.client.patch(url, zerossl, format="json")
    assert refused.status_code == 400, refused.content
    assert "acme.eab_kid" in refused.json()["error"]["fields"]
    assert tenant.auditor.client.patch(url, {"name": "x"}, format="json").status_code == 403
    assert AcmeSettings.objects.get(ca=pebble_ca).vendor == "custom"


# --- issuance ---------------------------------------------------------------------------------------------
def test_subscriber_issue_answers_202_and_the_order_completes(tenant, pebble, pebble_ca, powerdns):
    client = tenant.operator.client
    name = unique_name(powerdns.zone, "api")
    body = {"name": "api", "ca": pebble_ca.pk, "common_name": name, "sans": [name]}
    created = post(client, "/api/v1/subscribers/", body)
    assert created.status_code == 201, created.content
    response = post(client, f"/api/v1/subscribers/{created.json()['id']}/issue/", {})
    assert response.status_code == 202, response.content
    accepted = response.json()
    assert set(accepted) == {"order", "status_url", "status", "step"}
    assert accepted["status_url"] == f"http://testserver{ORDERS}{accepted['order']}/"
    order = client.get(accepted["status_url"])
    assert order.status_code == 200
    body = order.json()
    assert body["step"] == "done" and body["status"] == "valid", body
    assert body["identifiers"] == [{"type": "dns", "value": name}]
    assert body["subscriber"] == created.json()["id"] and body["ca"] == pebble_ca.pk
    assert body["certificate"] is not None and body["error"] == "" and body["finished_at"]
    (challenge,) = body["challenges"]
    assert challenge["type"] == "dns-01" and challenge["status"] == "valid"
    assert challenge["record_name"] == f"_acme-challenge.{name}" and challenge["record_value"]
    certificates = client.get(f"/api/v1/certificates/?subscriber={created.json()['id']}").json()["results"]
    assert [c["id"] for c in certificates] == [body["certificate"]]
    assert certificates[0]["source"] == "acme"
    # the challenge list and its filters
    listed = client.get(f"{CHALLENGES}?order={accepted['order']}&status=valid&type=dns-01").json()
    assert [c["id"] for c in listed["results"]] == [challenge["id"]]
    assert client.get(f"{CHALLENGES}?order={accepted['order']}&status=invalid").json()["results"] == []
    # a finished order: cancel is refused, retry too (it issued), delete works
    assert post(client, f"{ORDERS}{accepted['order']}/cancel/").status_code == 409
    assert post(client, f"{ORDERS}{accepted['order']}/retry/").status_code == 409
    assert post(client, f"{ORDERS}{accepted['order']}/refresh/").status_code == 409
    assert post(client, f"{ORDERS}{accepted['order']}/confirm/").status_code == 409
    assert client.delete(f"{ORDERS}{accepted['order']}/").status_code == 204
    assert not AcmeOrder.objects.filter(pk=accepted["order"]).exists()
    assert client.get(f"/api/v1/certificates/{body['certificate']}/").status_code == 200


def test_csr_issue_through_an_acme_subscriber_answers_202_with_the_order(tenant, pebble, pebble_ca, powerdns):
    """Regression: the CSR door serialized the ACME order as if it were a certificate."""
    client = tenant.operator.client
    name = unique_name(powerdns.zone, "csr")
    sub = acme_subscriber(tenant, pebble_ca, [name])
    csr = post(client, "/api/v1/csrs/", {"name": "ops", "common_name": name, "sans": [name]})
    assert csr.status_code == 201, csr.content
    response = post(client, f"/api/v1/csrs/{csr.json()['id']}/issue/", {"subscriber": sub.pk})
    assert response.status_code == 202, response.content
    accepted = response.json()
    assert set(accepted) == {"order", "status_url", "status", "step"}
    order = client.get(accepted["status_url"]).json()
    assert order["step"] == "done", order
    cert = client.get(f"/api/v1/certificates/{order['certificate']}/").json()
    assert cert["sans"] == [name] and cert["has_private_key"] is True
    # the certificate is for the CSR's key, which went with it
    stored = CertificateRequest.objects.get(pk=csr.json()["id"])
    assert Certificate.objects.get(pk=cert["id"]).private_key == stored.private_key


def test_internal_subscriber_issue_still_answers_201(tenant):
    ca = pki_services.create_internal_ca(
        tenant.organization, name="Root", kind="internal-root", subject={"common_name": "R"}, actor=SYSTEM
    )
    sub = pki_services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="web", ca=ca, common_name="web.acme.test"
    )
    response = post(tenant.operator.client, f"/api/v1/subscribers/{sub.pk}/issue/", {})
    assert response.status_code == 201 and response.json()["common_name"] == "web.acme.test"


def test_direct_issuance(tenant, pebble, pdns_connection, powerdns):
    ca = make_acme_ca(tenant, pebble, connection=pdns_connection, direct_issuance=True)
    names = [unique_name(powerdns.zone, "direct"), unique_name(powerdns.zone, "direct")]
    response = post(tenant.operator.client, f"{CAS}{ca.pk}/issue/", {"names": names})
    assert response.status_code == 202, response.content
    order = tenant.operator.client.get(response.json()["status_url"]).json()
    assert order["step"] == "done" and order["subscriber"] is None, order
    assert sorted(i["value"] for i in order["identifiers"]) == sorted(names)
    cert = tenant.operator.client.get(f"/api/v1/certificates/{order['certificate']}/").json()
    assert sorted(cert["sans"]) == sorted(names) and cert["ca"] == ca.pk
    # names the challenge cannot prove are refused under the request's own field name
    refused = post(tenant.operator.client, f"{CAS}{ca.pk}/issue/", {"names": ["10.0.0.1"]})
    assert refused.status_code == 400 and "names" in refused.json()["error"]["fields"]
    assert post(tenant.operator.client, f"{CAS}{ca.pk}/issue/", {"names": []}).status_code == 400


def test_direct_issuance_refused_when_off_or_internal(tenant, pebble, pebble_ca):
    orders_before = AcmeOrder.objects.count()
    off = post(tenant.operator.client, f"{CAS}{pebble_ca.pk}/issue/", {"names": ["a.example.test"]})
    assert off.status_code == 409 and off.json()["error"]["code"] == "conflict"
    root = pki_services.create_internal_ca(
        tenant.organization, name="Root", kind="internal-root", subject={"common_name": "R"}, actor=SYSTEM
    )
    internal = post(tenant.operator.client, f"{CAS}{root.pk}/issue/", {"names": ["a.example.test"]})
    assert internal.status_code == 400 and "ca" in internal.json()["error"]["fields"]
    assert AcmeOrder.objects.count() == orders_before


def test_failed_order_retry_answers_202_with_a_new_order(tenant, pebble, pebble_ca, powerdns):
    # A name outside every zone PowerDNS serves: writing the TXT record fails, the order fails.
    sub = acme_subscriber(tenant, pebble_ca, ["nowhere.invalid-zone.test"])
    response = post(tenant.operator.client, f"/api/v1/subscribers/{sub.pk}/issue/", {})
    assert response.status_code == 202
    order_id = response.json()["order"]
    order = tenant.operator.client.get(f"{ORDERS}{order_id}/").json()
    assert order["step"] == "failed" and order["status"] == "invalid" and order["error"], order
    failed = tenant.operator.client.get(f"{ORDERS}?step=failed&subscriber={sub.pk}").json()["results"]
    assert [o["id"] for o in failed] == [order_id]
    retried = post(tenant.operator.client, f"{ORDERS}{order_id}/retry/")
    assert retried.status_code == 202, retried.content
    assert retried.json()["order"] != order_id
    assert retried.json()["status_url"].endswith(f"{ORDERS}{retried.json()['order']}/")
    # Each order names the other: the retry the order it retries, the failed order its retry.
    again = tenant.operator.client.get(retried.json()["status_url"]).json()
    assert again["retry_of"] == order_id and again["retried_as"] == []
    assert tenant.operator.client.get(f"{ORDERS}{order_id}/").json()["retried_as"] == [again["id"]]


def test_cancel_an_unfinished_order(tenant, pebble, powerdns, acme_env):
    manual = dns_services.create_connection(
        tenant.organization, name="by hand", kind="manual", credentials={}, actor=tenant.admin.user
    )
    ca = make_acme_ca(tenant, pebble, name="Pebble manual", connection=manual)
    sub = acme_subscriber(tenant, ca, [unique_name(powerdns.zone, "manual")])
    response = post(tenant.operator.client, f"/api/v1/subscribers/{sub.pk}/issue/", {})
    assert response.status_code == 202
    order_id = response.json()["order"]
    order = tenant.operator.client.get(f"{ORDERS}{order_id}/").json()
    assert order["step"] == "waiting_manual", order
    (challenge,) = order["challenges"]
    assert challenge["record_name"] in (challenge["instructions"] or "")
    assert tenant.operator.client.delete(f"{ORDERS}{order_id}/").status_code == 409  # not finished
    cancelled = post(tenant.operator.client, f"{ORDERS}{order_id}/cancel/")
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["step"] == "cancelled"
    assert post(tenant.operator.client, f"{ORDERS}{order_id}/cancel/").status_code == 409


# --- accounts ---------------------------------------------------------------------------------------------
def test_accounts_list_rollover_deactivate_delete(tenant, pebble, pebble_ca):
    client = tenant.admin.client
    (row,) = client.get(ACCOUNTS).json()["results"]
    assert row["directory_url"] == pebble.directory_url and row["status"] == "valid"
    assert row["vendor"] == "custom" and row["email"] == "pki@acme.test" and row["key_kind"] == "ec-p256"
    assert not {"private_key", "key"} & set(row)
    url = f"{ACCOUNTS}{row['id']}/"
    assert client.get(f"{ACCOUNTS}?status=deactivated").json()["results"] == []
    rolled = post(client, f"{url}rollover/", {"key_kind": "rsa-2048"})
    assert rolled.status_code == 200, rolled.content
    assert rolled.json()["key_kind"] == "rsa-2048" and rolled.json()["key_rolled_at"]
    assert post(client, f"{url}rollover/", {"key_kind": "dsa"}).status_code == 400
    # still used by the CA: not deleted
    assert client.delete(url).status_code == 409
    deactivated = post(client, f"{url}deactivate/")
    assert deactivated.status_code == 200 and deactivated.json()["status"] == "deactivated"
    assert post(client, f"{url}deactivate/").status_code == 409
    # a new account for the CA frees the old one
    edited = client.patch(f"{CAS}{pebble_ca.pk}/", {"acme": {"email": "new@acme.test"}}, format="json")
    assert edited.status_code == 200, edited.content
    assert edited.json()["acme"]["account"]["id"] != row["id"]
    assert client.delete(url).status_code == 204
    assert not AcmeAccount.objects.filter(pk=row["id"]).exists()


# --- tenancy ----------------------------------------------------------------------------------------------
def test_isolation_of_every_acme_endpoint(tenant, other_tenant, pebble, pebble_ca, powerdns):
    sub = acme_subscriber(tenant, pebble_ca, [unique_name(powerdns.zone, "iso")])
    order = ordered(pki_services.issue(sub, actor=SYSTEM))
    order.refresh_from_db()
    account = AcmeSettings.objects.get(ca=pebble_ca).account
    challenge = AcmeChallenge.objects.filter(order=order).first()
    ca_url = f"{CAS}{pebble_ca.pk}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url=CAS,
        detail_url=ca_url,
        write_calls=[
            ("post", CAS, {"name": "x", "kind": "acme", "acme": {"vendor": "letsencrypt"}}),
            ("patch", ca_url, {"acme": {"direct_issuance": True}}),
            ("post", f"{ca_url}issue/", {"names": ["a.example.test"]}),
        ],
    )
    assert_isolated(
        tenant,
        other_tenant,
        list_url=ACCOUNTS,
        detail_url=f"{ACCOUNTS}{account.pk}/",
        write_calls=[
            ("post", f"{ACCOUNTS}{account.pk}/deactivate/", None),
            ("post", f"{ACCOUNTS}{account.pk}/rollover/", {}),
            ("delete", f"{ACCOUNTS}{account.pk}/", None),
        ],
    )
    order_url = f"{ORDERS}{order.pk}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url=ORDERS,
        detail_url=order_url,
        write_calls=[
            ("post", f"{order_url}{verb}/", None) for verb in ("refresh", "retry", "cancel", "confirm")
        ]
        + [("delete", order_url, None)],
    )
    assert_isolated(
        tenant,
        other_tenant,
        list_url=CHALLENGES,
        detail_url=f"{CHALLENGES}{challenge.pk}/",
        write_calls=[],
    )
    assert tenant.auditor.client.get(order_url).status_code == 200
    assert AcmeOrder.objects.filter(pk=order.pk, step="done").exists()  # no write got through
    issue = post(other_tenant.admin.client, f"/api/v1/subscribers/{sub.pk}/issue/", {})
    assert issue.status_code == 404


# --- query counts -----------------------------------------------------------------------------------------
def _queries(client, url) -> tuple[int, int]:
    client.get(url)  # warm: the token's last-used stamp
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return len(ctx.captured_queries), len(response.json()["results"])


def test_list_query_counts_do_not_grow(tenant, pebble, pebble_ca, powerdns, django_assert_max_num_queries):
    client = tenant.auditor.client
    acme_settings = AcmeSettings.objects.get(ca=pebble_ca)
    acme_settings.direct_issuance = True
    acme_settings.save()
    from acmeca import orders

    orders.start_direct_order(pebble_ca, [unique_name(powerdns.zone, "q")], actor=SYSTEM)
    urls = [ORDERS, f"{ORDERS}?step=done&ca={pebble_ca.pk}", CHALLENGES, ACCOUNTS, CAS]
    baseline = {url: _queries(client, url) for url in urls}
    assert all(rows >= 1 for _, rows in baseline.values()), baseline
    for _ in range(3):
        names = [unique_name(powerdns.zone, "q"), unique_name(powerdns.zone, "q")]
        orders.start_direct_order(pebble_ca, names, actor=SYSTEM)
    for i in range(3):
        make_acme_ca(tenant, pebble, name=f"more {i}", connection=acme_settings.dns_connection)
    for url in urls:
        with django_assert_max_num_queries(baseline[url][0]):
            response = client.get(url)
        assert len(response.json()["results"]) > baseline[url][1], url
    assert max(count for count, _ in baseline.values()) <= 8, baseline
    body = json.dumps(client.get(ORDERS).json())
    assert "private_key" not in body and "csr_pem" not in body
