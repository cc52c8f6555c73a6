"""The SSH host destination against real parts: OpenSSH's sshd on a free loopback port (a throwaway host
key, this user's login) and nginx serving TLS from the files the sync writes. After a renewal from the
internal CA, one sync run puts the new certificate where nginx serves it (``openssl s_client`` shows the
new serial); a replaced host key is refused until re-pinned; a failing reload fails the run with its
output and is retried; many certificates are one reload."""

from __future__ import annotations

import logging
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from certmgr.jobs import JobReport
from certmgr.models import AuditEvent
from dnsproviders import services as connections
from dnsproviders.credentials import host_key_fingerprint
from pki import services as pki
from pki.models import Certificate
from syncs import services
from syncs.models import Deployment, SyncRun
from tests.conftest import SYSTEM
from tests.pki.conftest import make_subscriber
from tests.webservers import Nginx, served_serial, sshd

SNI = "www.acme.test"


@pytest.fixture
def host(tmp_path, settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # the test's sshd and nginx are on loopback
    with sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def deploy_dir(tmp_path) -> Path:
    path = tmp_path / "deploy"
    path.mkdir()
    return path


@pytest.fixture
def ssh_connection(tenant, host):
    return connections.create_connection(
        tenant.organization,
        name="web1",
        kind="ssh",
        credentials={
            "host": "127.0.0.1",
            "port": host.port,
            "username": host.user,
            "private_key": host.client_key,
        },
        actor=SYSTEM,
    )


@pytest.fixture
def nginx(tmp_path, deploy_dir):
    """nginx serving deploy/web.fullchain.crt and deploy/web.key, started on a placeholder pair."""
    import subprocess

    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
            *("-subj", "/CN=placeholder", "-days", "1"),
            *("-keyout", str(deploy_dir / "web.key"), "-out", str(deploy_dir / "web.fullchain.crt")),
        ],
        check=True,
        capture_output=True,
    )
    root = tmp_path / "nginx"
    root.mkdir()
    server = Nginx(
        root,
        f"        ssl_certificate {deploy_dir}/web.fullchain.crt;\n"
        f"        ssl_certificate_key {deploy_dir}/web.key;\n"
        '        location / { return 200 "ok\\n"; }',
    ).start()
    yield server
    server.stop()


def make_destination(tenant, connection, deploy_dir, **options):
    return services.create_destination(
        tenant.organization,
        name="web1",
        kind="ssh",
        connection=connection,
        options={"directory": str(deploy_dir), **options},
        actor=SYSTEM,
    )


def issue(subscriber, capture, renewal_of=None) -> Certificate:
    with capture(execute=True):
        return pki.issue(subscriber, actor=SYSTEM, renewal_of=renewal_of).certificate


def test_a_renewal_is_served_by_nginx_after_one_sync_run(
    tenant, host, ssh_connection, deploy_dir, nginx, subscriber, django_capture_on_commit_callbacks, caplog
):
    caplog.set_level(logging.DEBUG)
    reload = " ".join(nginx.command) + " -s reload"
    dest = make_destination(
        tenant,
        ssh_connection,
        deploy_dir,
        reload_command=reload,
        verify_address=f"127.0.0.1:{nginx.port}",
        verify_server_name=SNI,
    )
    services.create_rule(dest, subscriber=subscriber, actor=SYSTEM)
    first = issue(subscriber, django_capture_on_commit_callbacks)
    run = SyncRun.objects.get(certificate=first)
    assert (run.status, run.attempts, run.error) == ("succeeded", 1, "")
    assert served_serial(nginx.port, SNI, expect=first.serial) == first.serial
    # trust on first use: the host's key is pinned on the connection, shown, and audited
    ssh_connection.refresh_from_db()
    assert ssh_connection.credentials["host_key"] == host.host_key_line
    assert ssh_connection.public_settings()["host_key"] == host_key_fingerprint(host.host_key_line)
    assert AuditEvent.objects.filter(action="app_connection.pin_host_key").count() == 1

    renewed = issue(subscriber, django_capture_on_commit_callbacks, renewal_of=first)
    assert renewed.serial != first.serial
    run = SyncRun.objects.get(certificate=renewed)
    assert (run.status, run.attempts, run.trigger) == ("succeeded", 1, "issuance")
    assert (
        served_serial(nginx.port, SNI, expect=renewed.serial) == renewed.serial
    )  # the new serial within that one run
    paths = run.identifier.split()
    assert paths == [f"{deploy_dir}/web.crt", f"{deploy_dir}/web.fullchain.crt", f"{deploy_dir}/web.key"]
    assert stat.S_IMODE((deploy_dir / "web.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((deploy_dir / "web.crt").stat().st_mode) == 0o644
    assert (deploy_dir / "web.key").read_text().strip() == renewed.private_key.strip()
    assert not [p for p in deploy_dir.iterdir() if p.name.endswith(".tmp")]  # renamed, none left over
    dep = Deployment.objects.get(destination=dest)
    assert (dep.certificate_id, dep.identifier) == (renewed.pk, run.identifier)

    # the drift check asks nginx (the configured host:port, the SNI name) what it serves: in step
    report = JobReport()
    assert services.check_drift(report) == []
    assert report.counts.get("in_step") == 1
    # nginx serves the old pair again (put back behind certmgr's back) while web.crt still holds the new
    # certificate: reading the file would say in step, the TLS read-back sees the drift
    (deploy_dir / "web.fullchain.crt").write_text(first.certificate_pem.strip() + "\n" + first.chain_pem)
    (deploy_dir / "web.key").write_text(first.private_key)
    nginx.reload()
    assert served_serial(nginx.port, SNI, expect=first.serial) == first.serial
    assert (deploy_dir / "web.crt").read_text().strip() == renewed.certificate_pem.strip()
    report, said = JobReport(), []
    with django_capture_on_commit_callbacks(execute=True):
        runs = services.check_drift(report, progress=said.append)
    assert report.counts.get("drifted") == 1 and len(runs) == 1
    assert f"127.0.0.1:{nginx.port} (SNI {SNI}): {first.fingerprint_sha256}" in said[0]
    assert SyncRun.objects.get(pk=runs[0].pk).status == "succeeded"  # pushed, reloaded, read back
    assert served_serial(nginx.port, SNI, expect=renewed.serial) == renewed.serial
    renewed.refresh_from_db()
    assert renewed.deployment_state == "deployed"

    key_texts = [c.private_key.strip().splitlines()[1] for c in (first, renewed)]
    for event in AuditEvent.objects.all():
        assert not any(k in str(event.details) for k in key_texts)
    assert not any(k in caplog.text for k in key_texts) and "PRIVATE KEY" not in caplog.text


def test_a_server_that_does_not_serve_the_pushed_certificate_leaves_the_run_unconfirmed(
    tenant,
    host,
    ssh_connection,
    deploy_dir,
    nginx,
    subscriber,
    settings,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    from syncs import ssh

    monkeypatch.setattr(ssh, "READ_BACK_SECONDS", 1.0)
    dest = make_destination(
        tenant,
        ssh_connection,
        deploy_dir,
        reload_command="true",  # files written, nginx not told: it keeps serving the placeholder
        verify_address=f"127.0.0.1:{nginx.port}",
        verify_server_name=SNI,
    )
    services.create_rule(dest, subscriber=subscriber, actor=SYSTEM)
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    run = SyncRun.objects.get(certificate=cert)
    assert run.status == "pending" and run.next_attempt_at > timezone.now()  # retried with backoff
    assert f"127.0.0.1:{nginx.port} (SNI {SNI}) serves the certificate with SHA-256" in run.error
    assert "did not pick up the new files" in run.error and cert.serial in run.error
    assert (deploy_dir / "web.crt").read_text().strip() == cert.certificate_pem.strip()  # the file is there
    assert not Deployment.objects.filter(destination=dest).exists()  # not served: not deployed
    cert.refresh_from_db()
    assert (cert.deployment_state, cert.deployment_confirmed) == ("deploying", 0)

    services.update_destination(
        dest,
        options={**dest.options, "reload_command": " ".join(nginx.command) + " -s reload"},
        actor=SYSTEM,
    )
    services.run_due(JobReport(), now=timezone.now() + timedelta(hours=2))
    run.refresh_from_db()
    assert (run.status, run.attempts) == ("succeeded", 2)
    cert.refresh_from_db()
    assert cert.deployment_state == "deployed"

    # the read-back goes through the outbound guard: a TLS endpoint it refuses is an error, not "in step"
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []
    report = JobReport()
    assert services.check_drift(report) == []
    assert "not reading back 127.0.0.1" in " ".join(report.errors) and "in_step" not in report.counts


def test_many_certificates_are_one_reload_and_a_rule_without_the_key_writes_no_key(
    tenant, hierarchy, host, ssh_connection, deploy_dir, tmp_path, django_capture_on_commit_callbacks
):
    reloads = tmp_path / "reloads"
    dest = make_destination(
        tenant,
        ssh_connection,
        deploy_dir,
        reload_command=f"echo reloaded >> {reloads}",
        chain_file="{name}.chain",
    )
    subs = [make_subscriber(tenant, hierarchy[1], f"site{i}") for i in range(5)]
    certs = [pki.issue(s, actor=SYSTEM).certificate for s in subs]
    services.create_rule(
        dest,
        name_patterns=["*.acme.test"],
        include_private_key=False,
        name_schema="{common_name}",
        actor=SYSTEM,
    )
    with django_capture_on_commit_callbacks(execute=True):
        runs = services.sync_now(actor=SYSTEM, destination=dest)
    assert len(runs) == 5
    assert {r.status for r in SyncRun.objects.filter(pk__in=[r.pk for r in runs])} == {"succeeded"}
    assert reloads.read_text().splitlines() == ["reloaded"]  # one reload for the five
    for cert in certs:
        assert (deploy_dir / f"{cert.common_name}.crt").read_text().strip() == cert.certificate_pem.strip()
        assert (deploy_dir / f"{cert.common_name}.chain").read_text().strip() == cert.chain_pem.strip()
        assert not (deploy_dir / f"{cert.common_name}.key").exists()  # the rule does not include the key


def test_a_replaced_host_key_is_refused_until_re_pinned(
    tenant, host, ssh_connection, deploy_dir, subscriber, django_capture_on_commit_callbacks
):
    dest = make_destination(tenant, ssh_connection, deploy_dir)
    assert services.test_destination(dest, actor=SYSTEM).ok  # pins on first use
    ssh_connection.refresh_from_db()
    old = ssh_connection.credentials["host_key"]
    assert old == host.host_key_line

    host.new_host_key()
    services.create_rule(dest, subscriber=subscriber, actor=SYSTEM)
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    run = SyncRun.objects.get(certificate=cert)
    assert run.status == "failed"  # permanent: no retry can make an unknown key trusted
    assert host_key_fingerprint(old) in run.error and host_key_fingerprint(host.host_key_line) in run.error
    assert "re-pin" in run.error
    assert not (deploy_dir / "web.crt").exists()  # nothing was sent
    ssh_connection.refresh_from_db()
    assert ssh_connection.credentials["host_key"] == old  # a mismatch never re-pins by itself

    new = connections.repin_host_key(ssh_connection, actor=SYSTEM)
    assert new == host_key_fingerprint(host.host_key_line)
    event = AuditEvent.objects.get(action="app_connection.repin_host_key")
    assert event.details["old_host_key"] == host_key_fingerprint(old) and event.details["host_key"] == new
    with django_capture_on_commit_callbacks(execute=True):
        services.retry_run(run, actor=SYSTEM)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert (deploy_dir / "web.crt").read_text().strip() == cert.certificate_pem.strip()

    # editing the connection keeps the pin; the pin itself cannot be typed
    same = {"host": "127.0.0.1", "port": host.port, "username": host.user}
    connections.update_connection(ssh_connection, credentials=same, actor=SYSTEM)
    ssh_connection.refresh_from_db()
    assert ssh_connection.credentials["host_key"] == host.host_key_line
    with pytest.raises(ValidationError, match="host_key"):
        connections.update_connection(
            ssh_connection, credentials={**same, "host_key": "ssh-ed25519 AAAA"}, actor=SYSTEM
        )


def test_a_failing_reload_is_reported_with_its_output_and_retried(
    tenant, host, ssh_connection, deploy_dir, subscriber, settings, django_capture_on_commit_callbacks
):
    dest = make_destination(
        tenant,
        ssh_connection,
        deploy_dir,
        reload_command="echo 'nginx: [emerg] cannot load certificate' >&2; exit 3",
    )
    services.create_rule(dest, subscriber=subscriber, actor=SYSTEM)
    cert = issue(subscriber, django_capture_on_commit_callbacks)
    run = SyncRun.objects.get(certificate=cert)
    assert run.status == "pending" and run.next_attempt_at > timezone.now()  # retried with backoff
    assert "exited 3" in run.error and "[emerg] cannot load certificate" in run.error
    assert run.alerted
    assert not Deployment.objects.filter(destination=dest).exists()  # not live: not deployed

    services.update_destination(
        dest, options={"directory": str(deploy_dir), "reload_command": "true"}, actor=SYSTEM
    )
    report = JobReport()
    services.run_due(report, now=timezone.now() + timedelta(hours=2))
    run.refresh_from_db()
    assert (run.status, run.attempts, run.error) == ("succeeded", 2, "")
    assert Deployment.objects.get(destination=dest).certificate_id == cert.pk


def test_options_are_checked(tenant, ssh_connection, deploy_dir):
    with pytest.raises(ValidationError, match="absolute path"):
        make_destination(tenant, ssh_connection, "relative/dir")
    with pytest.raises(ValidationError, match="key_mode"):
        make_destination(tenant, ssh_connection, deploy_dir, key_mode="0644")
    with pytest.raises(ValidationError, match="file name"):
        make_destination(tenant, ssh_connection, deploy_dir, key_file="../../etc/shadow")
    with pytest.raises(ValidationError, match="needs an aws connection"):
        services.create_destination(
            tenant.organization,
            name="x",
            kind="aws_acm",
            connection=ssh_connection,
            actor=SYSTEM,
        )


def test_api_and_admin_show_the_pinned_key_and_re_pin(tenant, host, deploy_dir):
    api = tenant.operator.client
    created = api.post(
        "/api/v1/app-connections/",
        {
            "name": "web1",
            "kind": "ssh",
            "credentials": {
                "host": "127.0.0.1",
                "port": host.port,
                "username": host.user,
                "private_key": host.client_key,
            },
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    conn = created.json()
    assert host.client_key.splitlines()[1] not in created.content.decode()  # write-only
    tested = api.post(f"/api/v1/app-connections/{conn['id']}/test/")
    assert tested.status_code == 200 and tested.json()["ok"], tested.content
    assert "now pinned" in tested.json()["message"]
    shown = api.get(f"/api/v1/app-connections/{conn['id']}/").json()
    fingerprint = host_key_fingerprint(host.host_key_line)
    assert fingerprint in str(shown)
    dest = api.post(
        "/api/v1/sync-destinations/",
        {"name": "web1", "kind": "ssh", "connection": conn["id"], "options": {"directory": str(deploy_dir)}},
        format="json",
    )
    assert dest.status_code == 201, dest.content
    assert dest.json()["host_key"] == fingerprint
    assert dest.json()["options"]["key_mode"] == "0600"

    refused = tenant.auditor.client.post(f"/api/v1/app-connections/{conn['id']}/repin-host-key/")
    assert refused.status_code == 403
    host.new_host_key()
    tested = api.post(f"/api/v1/app-connections/{conn['id']}/test/")
    assert not tested.json()["ok"] and "re-pin" in tested.json()["message"]
    wrong = api.post(
        f"/api/v1/app-connections/{conn['id']}/repin-host-key/", {"host_key": fingerprint}, format="json"
    )  # the operator confirmed the old key: the host shows another one, nothing is pinned
    assert wrong.status_code == 400, wrong.content
    assert "nothing was re-pinned" in str(wrong.json()["error"]["fields"]["host_key"])
    assert not api.post(f"/api/v1/app-connections/{conn['id']}/test/").json()["ok"]
    repinned = api.post(
        f"/api/v1/app-connections/{conn['id']}/repin-host-key/",
        {"host_key": host_key_fingerprint(host.host_key_line)},
        format="json",
    )
    assert repinned.status_code == 200, repinned.content
    assert repinned.json()["host_key"] == host_key_fingerprint(host.host_key_line)
    assert api.post(f"/api/v1/app-connections/{conn['id']}/test/").json()["ok"]
    assert AuditEvent.objects.filter(action="app_connection.repin_host_key", outcome="success").count() == 1


def test_admin_shows_the_pinned_key_and_re_pins(tenant, host, ssh_connection):
    from django.test import Client

    from tests.conftest import PASSWORD

    assert connections.test_connection(ssh_connection, actor=SYSTEM).ok  # pins on first use
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    page = client.get(f"/admin/dnsproviders/appconnection/{ssh_connection.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Pinned host key" in text and host_key_fingerprint(host.host_key_line) in text
    assert "Re-pin host key" in text and host.client_key.splitlines()[1] not in text
    old = host_key_fingerprint(host.host_key_line)
    host.new_host_key()
    new = host_key_fingerprint(host.host_key_line)
    url = f"/admin/dnsproviders/appconnection/{ssh_connection.pk}/repin-host-key/"
    confirm = client.get(url).content.decode()  # both keys, for the operator to compare
    assert old in confirm and new in confirm and 'name="apply"' in confirm
    # A POST pins only the key the operator confirmed: another one (the host changed again) is refused.
    refused = client.post(url, {"host_key": old}, follow=True).content.decode()
    assert f"not re-pinned: The host now shows {new}, not the key you confirmed ({old})" in refused
    ssh_connection.refresh_from_db()
    assert host_key_fingerprint(ssh_connection.credentials["host_key"]) == old
    assert client.post(url, {"next": "https://elsewhere.example/"}).status_code == 200  # no key: the page
    done = client.post(url, {"host_key": new, "next": "https://elsewhere.example/"})
    assert done.status_code == 302 and done["Location"] == url.replace("repin-host-key/", "change/")
    assert f"host key re-pinned: {new}" in client.get(done["Location"]).content.decode()
    ssh_connection.refresh_from_db()
    assert ssh_connection.credentials["host_key"] == host.host_key_line
    client.logout()
    assert client.login(username=tenant.auditor.user.username, password=PASSWORD)
    assert client.get(url).status_code == 403


def test_a_batch_is_claimed_by_one_worker_and_its_lease_outlives_a_long_batch(
    tenant, hierarchy, host, ssh_connection, deploy_dir, monkeypatch
):
    from syncs.models import SyncRun as Run

    dest = make_destination(tenant, ssh_connection, deploy_dir)
    subs = [make_subscriber(tenant, hierarchy[1], f"claim{i}") for i in range(3)]
    for s in subs:
        pki.issue(s, actor=SYSTEM)
    services.create_rule(dest, name_patterns=["*.acme.test"], name_schema="{common_name}", actor=SYSTEM)
    runs = services.sync_now(actor=SYSTEM, destination=dest, to_workers=False)
    ids = [r.pk for r in runs]
    now = timezone.now()
    assert services.claim_batch(ids, now) == sorted(ids)
    assert services.claim_batch(ids, now) == []  # the second claimer of the same batch gets nothing
    assert services.run_batch(ids, now=now) == []  # ... so it runs nothing
    assert set(Run.objects.filter(pk__in=ids).values_list("status", "attempts")) == {("running", 1)}
    # a worker that died: its lease runs out and the batch is due again, for one claimer
    later = now + services.LEASE + timedelta(seconds=1)
    assert services.claim_batch(ids, later) == sorted(ids)
    assert services.claim_batch(ids, later) == []

    # a batch that outlasts a third of its lease renews it while it runs
    Run.objects.filter(pk__in=ids).update(status="pending", next_attempt_at=now)
    monkeypatch.setattr(services, "LEASE_KEEP_EVERY", timedelta(0))  # every push is "a third later"
    kept, keep = [], services._keep_lease
    monkeypatch.setattr(services, "_keep_lease", lambda runs, at: (kept.append(at), keep(runs, at)))
    done = services.run_batch(ids, now=now)
    assert {r.status for r in done} == {"succeeded"}
    assert len(kept) == 3 and all(at >= now for at in kept)
    assert Run.objects.filter(pk__in=ids, lease_until__isnull=True).count() == 3  # released at the end
