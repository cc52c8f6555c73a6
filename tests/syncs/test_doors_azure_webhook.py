"""The doors for the Azure Key Vault and webhook kinds: app connections whose secrets are write-only,
destinations over the API and the admin form, their Test action, and the validation errors they give."""

from __future__ import annotations

import json

from django.test import Client

from pki import services as pki
from syncs.models import SyncDestination, SyncRun
from tests.conftest import PASSWORD, SYSTEM
from tests.syncs import keyvault_mock as mock
from tests.syncs.kind_fixtures import SECRET


def test_api_azure_connection_and_key_vault_destination(tenant, kv, subscriber):
    api = tenant.operator.client
    conn = api.post(
        "/api/v1/app-connections/",
        {
            "name": "azure",
            "kind": "azure",
            "credentials": {
                "tenant_id": mock.TENANT,
                "client_id": mock.CLIENT_ID,
                "client_secret": mock.CLIENT_SECRET,
            },
        },
        format="json",
    )
    assert conn.status_code == 201, conn.content
    assert mock.CLIENT_SECRET not in json.dumps(conn.json())
    tested = api.post(f"/api/v1/app-connections/{conn.json()['id']}/test/")
    assert tested.status_code == 200 and tested.json()["ok"] is True, tested.content
    assert "Key Vault token" in tested.json()["message"]
    refused = api.post(
        "/api/v1/sync-destinations/",
        {
            "name": "kv",
            "kind": "azure_key_vault",
            "connection": conn.json()["id"],
            "options": {"vault_url": "https://kv.attacker.example"},
        },
        format="json",
    )
    assert refused.status_code == 400 and "options" in refused.json()["error"]["fields"]
    created = api.post(
        "/api/v1/sync-destinations/",
        {
            "name": "kv",
            "kind": "azure_key_vault",
            "connection": conn.json()["id"],
            "options": {"vault_url": kv.vault_url()},
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    dest = created.json()
    no_key = api.post(
        "/api/v1/sync-rules/",
        {"destination": dest["id"], "subscriber": subscriber.pk, "include_private_key": False},
        format="json",
    )
    assert no_key.status_code == 400 and "include_private_key" in no_key.json()["error"]["fields"]
    tested = api.post(f"/api/v1/sync-destinations/{dest['id']}/test/")
    assert tested.status_code == 200 and tested.json()["ok"] is True, tested.content


def test_admin_webhook_connection_and_destination(
    tenant,
    receiver,
    subscriber,
    django_capture_on_commit_callbacks,
):
    operator = Client()
    assert operator.login(username=tenant.operator.user.username, password=PASSWORD)
    api = tenant.operator.client
    conn = api.post(
        "/api/v1/app-connections/",
        {"name": "hook", "kind": "webhook", "credentials": {"url": receiver.url, "signing_secret": SECRET}},
        format="json",
    )
    assert conn.status_code == 201, conn.content
    assert SECRET not in json.dumps(conn.json())
    added = operator.post(
        "/admin/syncs/syncdestination/add/",
        {
            "organization": tenant.organization.pk,
            "name": "hook",
            "kind": "webhook",
            "connection": conn.json()["id"],
            "region": "",
            "options": "{}",
            "enabled": "on",
        },
    )
    assert added.status_code == 302, added.content[:2000]
    dest = SyncDestination.objects.get(name="hook")
    page = operator.get(f"/admin/syncs/syncdestination/{dest.pk}/change/")
    assert page.status_code == 200 and SECRET.encode() not in page.content
    tested = operator.post(f"/admin/syncs/syncdestination/{dest.pk}/test/", follow=True)
    assert b"accepted a signed ping" in tested.content
    conn_page = operator.get(f"/admin/dnsproviders/appconnection/{conn.json()['id']}/change/")
    assert conn_page.status_code == 200 and SECRET.encode() not in conn_page.content
    api.post("/api/v1/sync-rules/", {"destination": dest.pk, "subscriber": subscriber.pk}, format="json")
    pki.issue(subscriber, actor=SYSTEM)  # outside the capture: its own on-commit run never runs
    with django_capture_on_commit_callbacks(execute=True):
        synced = api.post(f"/api/v1/sync-destinations/{dest.pk}/sync/", {}, format="json")
    assert synced.status_code == 202
    assert SyncRun.objects.get(destination=dest).status == "succeeded"
    assert receiver.deliveries[-1]["event"] == "deployed"
