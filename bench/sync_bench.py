"""Certificate syncs: N certificates pushed to AWS Certificate Manager (moto's server on loopback), by
certmgr's runs next to raw boto3 ``import_certificate`` calls of the same certificates, in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/certmgr_bench_sync .venv/bin/python \
        bench/sync_bench.py [--certificates 1000] [--rounds 2]

certmgr's side is what ``manage.py sync`` does: ``sync_now`` makes one run per certificate, then each run is
claimed, pushed, recorded (run row, deployment row, one audit event) in this process. Round 1 imports (new
ARNs), later rounds re-import to the same ARNs; the raw peer does the same calls with the same PEMs and
keys (decrypted before its clock starts). Prints a Markdown table for docs/benchmarks.md.

``--target ssh``: the same N certificates to one SSH host instead (Debian's sshd started on a free loopback
port, as the tests start it): files only (certificate, full chain, key), one reload command per run of the
batch (``echo reloaded >> reloads``, counted). The peer, in the same run: raw paramiko over one SFTP session
writing the same files the same way (temporary file, chmod, rename), then the same reload once.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/certmgr_bench_sync")

from pki_bench import bench_hierarchy, bench_setup  # noqa: E402

KEYS = {
    "access_key_id": "AKIAIOSFODNN7EXAMPLE",
    "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}
REGION = "eu-west-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--certificates", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--target", choices=["acm", "ssh"], default="acm")
    args = parser.parse_args()
    if args.target == "ssh":
        os.environ["CERTMGR_OUTBOUND_ALLOWED_NETWORKS"] = "127.0.0.0/8"  # the bench's sshd is on loopback
        run_ssh(args)
        return

    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    try:
        run(args)
    finally:
        server.stop()


def certificates(args, org, system) -> list:
    from pki import services as pki
    from pki.models import Certificate, Subscriber

    _, issuing = bench_hierarchy(org, system)
    have = Subscriber.objects.filter(organization=org, name__startswith="sync-").count()
    for start in range(have, args.certificates, 500):
        subs = [
            pki.save_subscriber(
                org,
                actor=system,
                name=f"sync-{i}",
                ca=issuing,
                common_name=f"sync-{i}.bench.test",
                sans=[f"sync-{i}.bench.test"],
                validity_days=90,
            )
            for i in range(start, min(args.certificates, start + 500))
        ]
        pki.issue_batch(subs, actor=system)
    return list(
        Certificate.objects.filter(organization=org, subscriber__name__startswith="sync-", status="active")
        .order_by("subscriber_id", "-not_after")
        .distinct("subscriber_id")[: args.certificates]
    )


def run_ssh(args) -> None:
    import tempfile

    system, org, _ = bench_setup("bench-sync", "operator")
    import logging
    import posixpath

    logging.getLogger("paramiko").setLevel(logging.WARNING)  # a line per connection otherwise

    from dnsproviders import services as connections
    from dnsproviders import ssh
    from dnsproviders.models import AppConnection
    from syncs import services
    from syncs.models import SyncDestination, SyncRun
    from tests.webservers import sshd

    certs = certificates(args, org, system)
    with tempfile.TemporaryDirectory() as tmp, sshd(Path(tmp) / "sshd") as host:
        ours, theirs = Path(tmp) / "certmgr", Path(tmp) / "raw"
        ours.mkdir(), theirs.mkdir()
        SyncDestination.objects.filter(organization=org).delete()
        AppConnection.objects.filter(organization=org, name="bench-ssh").delete()
        credentials = {
            "host": "127.0.0.1",
            "port": host.port,
            "username": host.user,
            "private_key": host.client_key,
        }
        conn = connections.create_connection(
            org, name="bench-ssh", kind="ssh", credentials=credentials, actor=system
        )
        reloads = Path(tmp) / "reloads"
        dest = services.create_destination(
            org,
            name="bench-ssh",
            kind="ssh",
            connection=conn,
            options={"directory": str(ours), "reload_command": f"echo reloaded >> {reloads}"},
            actor=system,
        )
        services.create_rule(dest, name_patterns=["*.bench.test"], name_schema="{common_name}", actor=system)
        files = [
            (
                c.common_name,
                c.certificate_pem.strip() + "\n",
                c.certificate_pem.strip() + "\n" + c.chain_pem.strip() + "\n",
                c.private_key.strip() + "\n",
            )
            for c in certs
        ]
        rows = []
        for r in range(1, args.rounds + 1):
            before = len(reloads.read_text().splitlines()) if reloads.exists() else 0
            started = time.perf_counter()
            runs = services.sync_now(actor=system, destination=dest, to_workers=False)
            done = services.run_batch([run.pk for run in runs])
            ok = sum(run.status == "succeeded" for run in done)
            certmgr_s = time.perf_counter() - started
            reloaded = len(reloads.read_text().splitlines()) - before

            started = time.perf_counter()
            session = ssh.connect({**credentials, "host_key": host.host_key_line})
            sftp = session.sftp
            for name, cert, fullchain, key in files:
                for suffix, text, mode in (
                    (".crt", cert, 0o644),
                    (".fullchain.crt", fullchain, 0o644),
                    (".key", key, 0o600),
                ):
                    path = posixpath.join(str(theirs), name + suffix)
                    tmp_path = posixpath.join(str(theirs), f".{name}{suffix}.tmp")
                    with sftp.open(tmp_path, "wx") as handle:
                        sftp.chmod(tmp_path, mode)
                        handle.write(text.encode())
                    sftp.posix_rename(tmp_path, path)
            session.run(f"echo reloaded >> {reloads}.raw")
            session.close()
            raw_s = time.perf_counter() - started
            rows.append((r, len(runs), ok, reloaded, certmgr_s, raw_s))
            print(
                f"round {r}: certmgr {len(runs)} runs ({ok} ok, {reloaded} reload) in {certmgr_s:.1f} s; "
                f"raw paramiko {len(files)} certificates in {raw_s:.1f} s",
                flush=True,
            )
        print(f"\nruns in all: {SyncRun.objects.filter(destination=dest).count()}\n")
        print(
            "| round | runs | succeeded | reloads | certmgr s | certmgr runs/s | raw paramiko s "
            "| raw certs/s | certmgr / raw |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r, n, ok, reloaded, c, raw in rows:
            print(
                f"| {r} | {n:,} | {ok:,} | {reloaded} | {c:.1f} | {n / c:.0f} | {raw:.1f} "
                f"| {len(files) / raw:.0f} | {c / raw:.2f}x |"
            )


def run(args) -> None:
    system, org, _ = bench_setup("bench-sync", "operator")
    import logging

    for name in ("werkzeug", "botocore.configprovider"):  # moto's access log, boto3's endpoint notice
        logging.getLogger(name).setLevel(logging.WARNING)
    import boto3

    from dnsproviders import services as connections
    from dnsproviders.models import AppConnection
    from pki import services as pki
    from pki.models import Certificate, Subscriber
    from syncs import services
    from syncs.models import Deployment, SyncDestination, SyncRun

    _, issuing = bench_hierarchy(org, system)
    have = Subscriber.objects.filter(organization=org, name__startswith="sync-").count()
    for start in range(have, args.certificates, 500):
        subs = [
            pki.save_subscriber(
                org,
                actor=system,
                name=f"sync-{i}",
                ca=issuing,
                common_name=f"sync-{i}.bench.test",
                sans=[f"sync-{i}.bench.test"],
                validity_days=90,
            )
            for i in range(start, min(args.certificates, start + 500))
        ]
        pki.issue_batch(subs, actor=system)
    # a fresh destination each run (moto's server starts empty)
    SyncDestination.objects.filter(organization=org).delete()
    conn = AppConnection.objects.filter(
        organization=org, name="bench-aws"
    ).first() or connections.create_connection(
        org, name="bench-aws", kind="aws", credentials={**KEYS, "region": REGION}, actor=system
    )
    dest = services.create_destination(org, name="bench-acm", kind="aws_acm", connection=conn, actor=system)
    services.create_rule(dest, name_patterns=["*.bench.test"], actor=system)

    certs = list(
        Certificate.objects.filter(organization=org, subscriber__name__startswith="sync-", status="active")
        .order_by("subscriber_id", "-not_after")
        .distinct("subscriber_id")[: args.certificates]
    )
    material = [(c.certificate_pem.encode(), c.private_key.encode(), c.chain_pem.encode()) for c in certs]
    client = boto3.client(
        "acm",
        region_name=REGION,
        aws_access_key_id=KEYS["access_key_id"],
        aws_secret_access_key=KEYS["secret_access_key"],
    )
    raw_arns: list[str] = []
    rows = []
    for r in range(1, args.rounds + 1):
        started = time.perf_counter()
        runs = services.sync_now(actor=system, destination=dest, to_workers=False)
        made = time.perf_counter() - started
        ok = sum(services.run_sync(run.pk).status == "succeeded" for run in runs)
        certmgr_s = time.perf_counter() - started

        started = time.perf_counter()
        for i, (cert, key, chain) in enumerate(material):
            call = {"Certificate": cert, "PrivateKey": key, "CertificateChain": chain}
            if r > 1:
                client.import_certificate(CertificateArn=raw_arns[i], **call)
            else:
                raw_arns.append(client.import_certificate(**call)["CertificateArn"])
        raw_s = time.perf_counter() - started
        kind = "import (new ARNs)" if r == 1 else "re-import (same ARNs)"
        rows.append((r, kind, len(runs), ok, made, certmgr_s, raw_s))
        print(
            f"round {r}: {kind}: certmgr {len(runs)} runs ({ok} ok) in {certmgr_s:.1f} s "
            f"(making the runs {made:.2f} s); raw boto3 {len(material)} in {raw_s:.1f} s",
            flush=True,
        )
    arns = set(Deployment.objects.filter(destination=dest).values_list("identifier", flat=True))
    print(
        f"\ndeployments: {len(arns)} distinct ARNs for {len(certs)} certificates; "
        f"runs in all: {SyncRun.objects.filter(destination=dest).count()}\n"
    )
    print(
        "| round | what | runs | succeeded | certmgr s | certmgr runs/s | raw boto3 s | raw calls/s "
        "| certmgr / raw |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r, kind, n, ok, _made, c, raw in rows:
        print(
            f"| {r} | {kind} | {n:,} | {ok:,} | {c:.1f} | {n / c:.0f} | {raw:.1f} "
            f"| {len(material) / raw:.0f} "
            f"| {c / raw:.2f}x |"
        )


if __name__ == "__main__":
    main()
