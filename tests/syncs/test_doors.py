"""The doors of syncs: the API (operators manage, auditors read, other tenants see nothing), the admin
screens (Test, Sync now, Retry, the deployments panel on pki's pages) and ``manage.py sync``."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from certmgr.models import AuditEvent
from pki import services as pki
from syncs import services
from syncs.models import SyncDestination, SyncRule, SyncRun
from tests.admin_queries import assert_queries_do_not_grow
from tests.conftest import PASSWORD, SYSTEM, assert_isolated
from tests.syncs.conftest import make_connection

pytestmark = pytest.mark.usefixtures("aws")


def login(member) -> Client:
    client = Client()
    assert client.login(username=member.user.username, password=PASSWORD)
    return client


def test_api_operators_manage_auditors_read_and_tenants_are_isolated(
    tenant, other_tenant, connection, subscriber, django_capture_on_commit_callbacks
):
    api = tenant.operator.client
    foreign = make_connection(other_tenant)
    refused = api.post(
        "/api/v1/sync-destinations/",
        {"name": "acm", "kind": "aws_acm", "connection": foreign.pk},
        format="json",
    )
    assert refused.status_code == 400 and "connection" in refused.json()["error"]["fields"]
    created = api.post(
        "/api/v1/sync-destinations/",
        {"name": "acm", "kind": "aws_acm", "connection": connection.pk, "options": {"tags": {"env": "prod"}}},
        format="json",
    )
    assert created.status_code == 201, created.content
    dest = created.json()
    assert "credentials" not in dest and dest["options"] == {"tags": {"env": "prod"}}
    no_key = api.post(
        "/api/v1/sync-rules/",
        {"destination": dest["id"], "subscriber": subscriber.pk, "include_private_key": False},
        format="json",
    )
    assert no_key.status_code == 400 and "include_private_key" in no_key.json()["error"]["fields"]
    rule = api.post(
        "/api/v1/sync-rules/", {"destination": dest["id"], "subscriber": subscriber.pk}, format="json"
    )
    assert rule.status_code == 201, rule.content
    cert = pki.issue(subscriber, actor=SYSTEM).certificate
    with django_capture_on_commit_callbacks(execute=True):
        synced = api.post(f"/api/v1/sync-destinations/{dest['id']}/sync/", {}, format="json")
    assert synced.status_code == 202 and [r["certificate"] for r in synced.json()] == [cert.pk]
    run_id = synced.json()[0]["id"]
    run = tenant.auditor.client.get(f"/api/v1/sync-runs/{run_id}/").json()
    assert run["status"] == "succeeded" and run["identifier"].startswith("arn:aws:acm:")
    assert run["serial"] == cert.serial
    listed = tenant.auditor.client.get(f"/api/v1/sync-runs/?certificate={cert.pk}").json()["results"]
    assert [r["id"] for r in listed] == [run_id]
    deployed = tenant.auditor.client.get(f"/api/v1/sync-destinations/{dest['id']}/deployments/").json()
    assert [d["certificate"] for d in deployed] == [cert.pk]
    tested = api.post(f"/api/v1/sync-destinations/{dest['id']}/test/")
    assert tested.status_code == 200 and tested.json()["ok"] is True
    changed = api.patch(f"/api/v1/sync-destinations/{dest['id']}/", {"region": "us-west-2"}, format="json")
    assert changed.status_code == 200 and changed.json()["region"] == "us-west-2"

    d, r = f"/api/v1/sync-destinations/{dest['id']}/", f"/api/v1/sync-rules/{rule.json()['id']}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/sync-destinations/",
        detail_url=d,
        write_calls=[
            ("patch", d, {"enabled": False}),
            (("post", d + "test/", None)),
            ("post", d + "sync/", {}),
            ("delete", d, None),
            (
                "post",
                "/api/v1/sync-destinations/",
                {"name": "x", "kind": "aws_acm", "connection": connection.pk},
            ),
        ],
    )
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/sync-rules/",
        detail_url=r,
        write_calls=[("patch", r, {"enabled": False}), ("delete", r, None)],
    )
    u = f"/api/v1/sync-runs/{run_id}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/sync-runs/",
        detail_url=u,
        write_calls=[("post", u + "retry/", None)],
    )
    assert api.delete(r).status_code == 204 and not SyncRule.objects.exists()
    assert api.delete(d).status_code == 204 and not SyncDestination.objects.exists()
    assert AuditEvent.objects.filter(action="sync_destination.delete").exists()


def test_admin_destination_test_sync_now_and_the_deployments_panel(
    tenant, acm, subscriber, django_capture_on_commit_callbacks
):
    services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)
    cert = pki.issue(subscriber, actor=SYSTEM).certificate
    operator = login(tenant.operator)
    page = operator.get(f"/admin/syncs/syncdestination/{acm.pk}/change/")
    assert page.status_code == 200 and b"Sync now" in page.content and b">Test<" in page.content
    tested = operator.post(f"/admin/syncs/syncdestination/{acm.pk}/test/", follow=True)
    assert b"OK" in tested.content
    with django_capture_on_commit_callbacks(execute=True):
        synced = operator.post(f"/admin/syncs/syncdestination/{acm.pk}/sync/", follow=True)
    assert b"1 certificate(s) queued" in synced.content
    run = SyncRun.objects.get()
    assert run.status == "succeeded"
    cert_page = operator.get(f"/admin/pki/certificate/{cert.pk}/change/")
    assert b"Deployed to" in cert_page.content and run.identifier.encode() in cert_page.content
    sub_page = operator.get(f"/admin/pki/subscriber/{subscriber.pk}/change/")
    assert run.identifier.encode() in sub_page.content
    assert operator.get("/admin/syncs/syncrun/").status_code == 200
    assert operator.get(f"/admin/syncs/syncrun/{run.pk}/change/").status_code == 200
    auditor = login(tenant.auditor)
    assert b"Sync now" not in auditor.get(f"/admin/syncs/syncdestination/{acm.pk}/change/").content
    assert auditor.post(f"/admin/syncs/syncdestination/{acm.pk}/sync/").status_code == 403


def test_admin_forms_create_destination_and_rule(tenant, connection, subscriber):
    operator = login(tenant.operator)
    added = operator.post(
        "/admin/syncs/syncdestination/add/",
        {
            "organization": tenant.organization.pk,
            "name": "sm",
            "kind": "aws_secrets_manager",
            "connection": connection.pk,
            "region": "",
            "options": "{}",
            "enabled": "on",
        },
    )
    assert added.status_code == 302, added.content[:2000]
    dest = SyncDestination.objects.get(name="sm")
    added = operator.post(
        "/admin/syncs/syncrule/add/",
        {
            "destination": dest.pk,
            "subscriber": subscriber.pk,
            "name_patterns": "",
            "name_schema": "{subscriber}",
            "enabled": "on",
        },
    )
    assert added.status_code == 302, added.content[:2000]
    rule = SyncRule.objects.get()
    assert rule.include_private_key is False  # an unticked box: this destination gets no key
    assert AuditEvent.objects.filter(action__in=["sync_destination.create", "sync_rule.create"]).count() == 2


def test_manage_py_sync_reports_progress_and_fails_on_failed_runs(tenant, acm, subscriber, monkeypatch):
    services.create_rule(acm, subscriber=subscriber, actor=SYSTEM)
    pki.issue(subscriber, actor=SYSTEM)
    out = StringIO()
    call_command("sync", stdout=out)
    assert "[1/1]" in out.getvalue() and "succeeded 1" in out.getvalue() and "runs/s" in out.getvalue()
    out = StringIO()
    call_command("sync", "--check-drift", stdout=out)
    assert "nothing to do" in out.getvalue() or "in_step" in out.getvalue()
    from tests.syncs.test_faults import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    out = StringIO()
    with pytest.raises(CommandError, match="did not succeed"):
        call_command("sync", "--destination", "acm", stdout=out)
    assert "cannot reach AWS" in out.getvalue()


def test_dashboard_counts_renewals_not_yet_deployed(tenant, other_tenant, secrets, subscriber):
    from datetime import timedelta

    from django.utils import timezone

    from certmgr.jobs import JobReport
    from reports import dashboard

    services.create_rule(secrets, subscriber=subscriber, actor=SYSTEM)
    first = pki.issue(subscriber, actor=SYSTEM).certificate
    pki.issue(subscriber, actor=SYSTEM, renewal_of=first)
    services.sync_now(destination=secrets, actor=SYSTEM)  # queued on commit: the test never commits
    assert dashboard.build(tenant.auditor.user).undeployed_renewals == 1
    assert dashboard.build(other_tenant.auditor.user).undeployed_renewals == 0
    page = login(tenant.auditor).get("/admin/dashboard/")
    assert "renewed but not yet deployed" in page.content.decode()
    assert "/admin/pki/certificate/?deployment=renewed_undeployed" in page.content.decode()  # its list
    services.run_due(JobReport(), now=timezone.now() + timedelta(seconds=1))
    assert dashboard.build(tenant.auditor.user).undeployed_renewals == 0


def test_admin_lists_take_as_many_queries_for_ten_rows_as_for_one(tenant, connection, subscriber, issued):
    def add(first: int, count: int) -> None:
        for i in range(first, first + count):
            dest = services.create_destination(
                tenant.organization, name=f"acm {i}", kind="aws_acm", connection=connection, actor=SYSTEM
            )
            rule = services.create_rule(dest, subscriber=subscriber, actor=SYSTEM)
            SyncRun.objects.create(
                organization=tenant.organization,
                destination=dest,
                rule=rule,
                certificate=issued,
                name=f"web-{i}",
                trigger="manual",
            )

    add(0, 1)
    lists = [f"/admin/syncs/{m._meta.model_name}/" for m in (SyncDestination, SyncRule, SyncRun)]
    assert_queries_do_not_grow(login(tenant.admin), lists, lambda: add(1, 9))
