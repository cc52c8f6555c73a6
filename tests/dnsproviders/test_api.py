"""App connections through the API: per-kind validation, write-only secrets, tenancy, audit."""

from __future__ import annotations

import json
import logging

import pytest
from django.db import connection as db

from certmgr.models import AuditEvent
from dnsproviders.models import AppConnection
from tests.conftest import assert_isolated

pytestmark = pytest.mark.django_db

PLANTED = "PLANTED-secret-9f8e7d6c5b4a"

POWERDNS = {
    "name": "pdns-prod",
    "kind": "powerdns",
    "description": "primary zones",
    "credentials": {"api_url": "https://pdns.example.net:8081", "api_key": PLANTED, "server_id": "localhost"},
}


def create(client, body=POWERDNS):
    return client.post("/api/v1/app-connections/", body, format="json")


def test_create_powerdns_connection(tenant):
    response = create(tenant.operator.client)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["kind"] == "powerdns"
    assert body["settings"] == {"api_url": "https://pdns.example.net:8081", "server_id": "localhost"}
    assert "credentials" not in body
    conn = AppConnection.objects.get(pk=body["id"])
    assert conn.credentials["api_key"] == PLANTED
    event = AuditEvent.objects.filter(action="app_connection.create").latest("id")
    assert event.target_id == str(conn.pk) and event.actor_type == "token"


def test_credentials_are_encrypted_at_rest(tenant):
    pk = create(tenant.operator.client).json()["id"]
    with db.cursor() as cursor:
        cursor.execute("SELECT credentials FROM dnsproviders_appconnection WHERE id = %s", [pk])
        stored = cursor.fetchone()[0]
    assert PLANTED not in stored and "pdns.example.net" not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"name": "x", "kind": "powerdns", "credentials": {"api_url": "ftp://x", "api_key": "k"}},
            "credentials",
        ),
        (
            {
                "name": "x",
                "kind": "rfc2136",
                "credentials": {"server": "ns1", "tsig_key_name": "k", "tsig_secret": "not base64!"},
            },
            "credentials",
        ),
        (
            {
                "name": "x",
                "kind": "aws",
                "credentials": {
                    "access_key_id": "AKIAEXAMPLE0000000",
                    "secret_access_key": "s",
                    "role_arn": "nope",
                },
            },
            "credentials",
        ),
        ({"name": "x", "kind": "cloudflare", "credentials": {}}, "credentials"),
        (
            {"name": "x", "kind": "cloudflare", "credentials": {"api_token": "t", "zone": "typo"}},
            "credentials",
        ),
        ({"name": "x", "kind": "carrier-pigeon", "credentials": {}}, "kind"),
        ({"name": "", "kind": "manual"}, "name"),
    ],
)
def test_bad_credentials_get_field_errors(tenant, body, field):
    response = create(tenant.operator.client, body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"], error
    assert not AppConnection.objects.exists()


def test_failed_create_is_audited_without_secrets(tenant):
    create(
        tenant.operator.client,
        {"name": "x", "kind": "powerdns", "credentials": {"api_url": "bad", "api_key": PLANTED}},
    )
    event = AuditEvent.objects.filter(action="app_connection.create").latest("id")
    assert event.outcome == "failure" and "api_url" in event.error
    assert PLANTED not in json.dumps(event.details) + event.error


def test_duplicate_name_is_409(tenant):
    create(tenant.operator.client)
    response = create(tenant.operator.client)
    assert response.status_code == 409
    assert "name" in response.json()["error"]["fields"]


def test_update_keeps_secret_when_omitted_and_replaces_when_given(tenant):
    pk = create(tenant.operator.client).json()["id"]
    url = f"/api/v1/app-connections/{pk}/"
    response = tenant.operator.client.patch(
        url,
        {
            "description": "moved",
            "credentials": {"api_url": "https://pdns.example.net:8081", "server_id": "other"},
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    conn = AppConnection.objects.get(pk=pk)
    assert conn.credentials["api_key"] == PLANTED and conn.credentials["server_id"] == "other"
    tenant.operator.client.patch(
        url, {"credentials": {"api_url": "https://pdns2.example.net", "api_key": "rotated"}}, format="json"
    )
    conn.refresh_from_db()
    assert conn.credentials["api_key"] == "rotated"
    assert conn.credentials["api_url"] == "https://pdns2.example.net"
    event = AuditEvent.objects.filter(action="app_connection.update").latest("id")
    assert event.details["changed"] == ["credentials"]


@pytest.mark.parametrize(
    ("kind", "credentials", "moved", "secret"),
    [
        (
            "powerdns",
            {"api_url": "https://pdns.example.net", "api_key": PLANTED},
            {"api_url": "https://evil.example"},
            "api_key",
        ),
        (
            "acme-dns",
            {
                "api_url": "https://auth.example.net",
                "username": "u",
                "password": PLANTED,
                "subdomain": "8e5700ea-a4bf-4bd2-a9d2-4c3a4b5d6e7f",
            },
            {"api_url": "https://evil.example"},
            "password",
        ),
        (
            "rfc2136",
            {"server": "ns1.example.net", "tsig_key_name": "k", "tsig_secret": "c2VjcmV0"},
            {"port": 5353},
            "tsig_secret",
        ),
        (
            "aws",
            {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": PLANTED},
            {"region": "eu-west-1"},
            "secret_access_key",
        ),
    ],
)
def test_a_kept_secret_cannot_be_redirected(tenant, kind, credentials, moved, secret):
    """Changing where a write-only secret is sent (URL, server, port, region) needs the secret again."""
    created = tenant.operator.client.post(
        "/api/v1/app-connections/", {"name": kind, "kind": kind, "credentials": credentials}, format="json"
    )
    assert created.status_code == 201, created.content
    url = f"/api/v1/app-connections/{created.json()['id']}/"
    public = {k: v for k, v in credentials.items() if k != secret}
    refused = tenant.operator.client.patch(url, {"credentials": {**public, **moved}}, format="json")
    assert refused.status_code == 400, refused.content
    (message,) = refused.json()["error"]["fields"]["credentials"]
    assert message.startswith(f"{secret}: Enter the") and "again" in message, message
    conn = AppConnection.objects.get(pk=created.json()["id"])
    assert {k: conn.credentials[k] for k in credentials} == credentials  # nothing changed
    again = tenant.operator.client.patch(
        url, {"credentials": {**public, **moved, secret: "dHlwZWQtYWdhaW4="}}, format="json"
    )
    assert again.status_code == 200, again.content


def test_kind_cannot_change(tenant):
    pk = create(tenant.operator.client).json()["id"]
    response = tenant.operator.client.patch(
        f"/api/v1/app-connections/{pk}/", {"kind": "manual"}, format="json"
    )
    assert AppConnection.objects.get(pk=pk).kind == "powerdns"
    assert response.status_code in (200, 400)


def test_delete(tenant):
    pk = create(tenant.operator.client).json()["id"]
    assert tenant.operator.client.delete(f"/api/v1/app-connections/{pk}/").status_code == 204
    assert not AppConnection.objects.filter(pk=pk).exists()
    event = AuditEvent.objects.filter(action="app_connection.delete").latest("id")
    assert event.target_id == str(pk) and event.organization_id == tenant.organization.pk


def test_isolation(tenant, other_tenant):
    pk = create(tenant.operator.client).json()["id"]
    url = f"/api/v1/app-connections/{pk}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/app-connections/",
        detail_url=url,
        write_calls=[
            ("post", "/api/v1/app-connections/", {"name": "m", "kind": "manual", "credentials": {}}),
            ("patch", url, {"description": "x"}),
            ("put", url, {"name": "y"}),
            ("delete", url, None),
            ("post", f"{url}test/", None),
        ],
    )


def test_manual_connection_test(tenant):
    pk = create(tenant.operator.client, {"name": "by hand", "kind": "manual"}).json()["id"]
    response = tenant.operator.client.post(f"/api/v1/app-connections/{pk}/test/")
    assert response.status_code == 200
    assert response.json()["ok"] is True


def test_connection_test_refuses_private_endpoints(tenant, settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []
    body = {**POWERDNS, "credentials": {**POWERDNS["credentials"], "api_url": "http://127.0.0.1:8081"}}
    pk = create(tenant.operator.client, body).json()["id"]
    response = tenant.operator.client.post(f"/api/v1/app-connections/{pk}/test/")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "outbound_refused"
    assert "CERTMGR_OUTBOUND_ALLOWED_NETWORKS" in error["message"]
    event = AuditEvent.objects.filter(action="app_connection.test").latest("id")
    assert event.outcome == "failure"


def test_planted_secret_never_leaves(tenant, other_tenant, caplog, settings):
    """The API key planted at creation appears in no response, no audit event and no log line."""
    caplog.set_level(logging.DEBUG)
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    client = tenant.admin.client
    created = create(client)
    pk = created.json()["id"]
    responses = [
        created,
        client.get("/api/v1/app-connections/"),
        client.get(f"/api/v1/app-connections/{pk}/"),
        client.patch(f"/api/v1/app-connections/{pk}/", {"description": "d"}, format="json"),
        client.get("/api/v1/audit-events/"),
        client.get("/api/v1/audit-events/", {"search": "pdns"}),
        client.get("/api/v1/schema/"),
        client.post(f"/api/v1/app-connections/{pk}/test/"),  # fails: nothing listens there
        client.patch(
            f"/api/v1/app-connections/{pk}/",
            {"credentials": {"api_url": "http://127.0.0.1:9"}},
            format="json",
        ),
        client.post(f"/api/v1/app-connections/{pk}/test/"),  # refused connection, logged
    ]
    for response in responses:
        assert PLANTED.encode() not in response.content, response.request["PATH_INFO"]
    for event in AuditEvent.objects.all():
        assert PLANTED not in json.dumps(event.details) + event.error + event.target_repr
    assert caplog.records and PLANTED not in caplog.text


@pytest.mark.parametrize(
    "credentials",
    [
        {"api_url": "http://[::1", "api_key": "k"},  # unbalanced bracket (found by the fuzzer)
        {"api_url": "http://pdns.example.net:x/", "api_key": "k"},
        {"api_url": "https://pdns.example.net", "api_key": "ключ"},  # would not fit in an HTTP header
        {"api_url": "https://pdns.example.net", "api_key": "a\x01b"},
    ],
)
def test_malformed_credentials_are_400_not_500(tenant, credentials):
    response = create(tenant.operator.client, {"name": "x", "kind": "powerdns", "credentials": credentials})
    assert response.status_code == 400, response.content
    assert "credentials" in response.json()["error"]["fields"]
