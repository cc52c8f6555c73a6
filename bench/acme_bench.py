"""ACME issuance: certmgr's workers against Pebble (DNS-01 through BIND, RFC 2136 + TSIG), next to certbot.

    .venv/bin/python bench/acme_bench.py [--count 50] [--workers 8] [--broker orm,redis] \
        [--door service|api] [--certbot /tmp/certbot-venv/bin/certbot] [--patch NAME ...] [--keep]

What it does, all on loopback:

- starts ``named`` (one zone, a TSIG key allowed to update TXT) and Debian's ``pebble`` with
  ``PEBBLE_VA_NOSLEEP=1`` and nonce rejection left on (5% ``badNonce``), with the test bed's helpers in
  ``tests/dnsservers.py`` and ``tests/acme_testbed.py``. Pebble asks ``named`` directly: one zone, so no
  dnsdist in between; ``CERTMGR_DNS_RESOLVERS`` points the propagation check at the same server;
- drops and creates the PostgreSQL database ``certmgr_bench_acme`` (``DATABASE_URL`` overrides), migrates,
  makes an organization, an API token, an RFC 2136 connection, an ACME CA at Pebble (vendor custom, TLS
  bundle) and ``--count`` subscribers, each with a distinct name in the BIND zone;
- per broker (the django-q2 ORM broker, Redis at ``--redis-url``): starts ``manage.py qcluster`` (this
  script with ``--worker``, so ``--patch`` can change the worker) with ``--workers`` workers, warms it up
  with one order, then times (a) one certificate end to end: ``pki.services.issue(subscriber)`` in this
  process (what the API view calls; ``--door api`` POSTs ``/api/v1/subscribers/<id>/issue/`` through the
  Django test client with a bearer token instead), the order enqueued on commit, a worker runs it, until
  the order is done in the database (polled every 10 ms); (b) ``--count`` certificates: all started, then
  until every order is done;
- then certbot (its own venv: ``python3 -m venv /tmp/certbot-venv && /tmp/certbot-venv/bin/pip install
  certbot``) issues ``--count`` fresh names in sequence against the same Pebble: ``--manual`` with hooks
  that write and remove the TXT record with ``nsupdate`` and the TSIG key;
- prints a Markdown table and, from the audit events, where an order's time goes.

``--patch profile`` cProfiles every order inside the workers and prints the batch's cumulative profile.
Every run also writes a per-phase trace of the worker and prints, per order, where its time went.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "certmgr.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-" + "k" * 50)
os.environ.setdefault("CERTMGR_ENCRYPTION_KEYS", "tF2bN6l7Tq8u6R9rJ3xZ0m0E1wq7y8v5b4n3m2l1k0A=")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/certmgr_bench_acme")
os.environ.setdefault("CERTMGR_OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8")
os.environ.setdefault("LOG_LEVEL", "WARNING")

STEPS = ["acme.order.create", "acme.order.submitted", "acme.order.challenge_ready"]
STEPS += ["acme.order.challenge_valid", "acme.order.finalize", "acme.order.valid"]


# --- what-if changes to the worker (applied in the qcluster process before it forks) ----------------
def _patch_profile() -> None:
    """cProfile each order the worker runs; one .prof file per order next to the trace (CPU, not waits)."""
    import cProfile
    import functools

    from acmeca import flow

    run_order = flow.run_order
    out = Path(os.environ.get("ACME_BENCH_TRACE", tempfile.gettempdir() + "/acme")).parent

    @functools.wraps(run_order)
    def profiled(order_id, **kwargs):
        profile = cProfile.Profile(time.process_time)
        try:
            return profile.runcall(run_order, order_id, **kwargs)
        finally:
            profile.dump_stats(out / f"order-{order_id}-{uuid.uuid4().hex[:6]}.prof")

    flow.run_order = profiled


def print_cpu_profile(logdir: Path, order_ids: list[int], top: int = 25) -> None:
    import pstats

    files = [str(f) for i in order_ids for f in logdir.glob(f"order-{i}-*.prof")]
    if not files:
        return
    stats = pstats.Stats(*files, stream=sys.stdout)
    stats.files = []  # no header line per file
    print(f"  CPU profile of the worker, {len(files)} runs of {len(order_ids)} orders (cumulative):")
    stats.sort_stats("cumulative").print_stats(top)


PATCHES = {"profile": _patch_profile}

TRACED = [
    "_client",
    "new_order",
    "authorize",
    "_fetch_order",
    "_present",
    "note",
    "_wait_for_propagation",
    "_answer",
    "_poll_authorizations",
]
TRACED += ["finalize", "_download"]


def _install_trace(path: str) -> None:
    """Append "order phase start end" for the worker's phases to ``path`` (one short line per call)."""
    import functools

    from acmeca import flow

    def record(order_id, phase: str, start: float) -> None:
        with open(path, "a") as out:
            out.write(f"{order_id} {phase} {start:.6f} {time.time():.6f}\n")

    def traced_method(name: str):
        method = getattr(flow._Runner, name)

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            start = time.time()
            try:
                return method(self, *args, **kwargs)
            finally:
                record(self.order.pk, name.lstrip("_"), start)

        return wrapper

    for name in TRACED:
        setattr(flow._Runner, name, traced_method(name))
    run_order = flow.run_order

    @functools.wraps(run_order)
    def traced_run(order_id, **kwargs):
        start = time.time()
        try:
            return run_order(order_id, **kwargs)
        finally:
            record(order_id, "run_order", start)

    flow.run_order = traced_run


# --- servers ---------------------------------------------------------------------------------------
class _TmpFactory:
    """What the test bed's fixtures ask of pytest's ``tmp_path_factory``."""

    def __init__(self, base: Path):
        self.base = base

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=self.base))


@contextlib.contextmanager
def servers(base: Path) -> Iterator[tuple]:
    from tests import acme_testbed, dnsservers

    bind_gen = dnsservers.bind._get_wrapped_function()(_TmpFactory(base))
    bind = next(bind_gen)
    try:
        with acme_testbed._start_pebble(
            _TmpFactory(base).mktemp("pebble"), f"{bind.server}:{bind.port}", eab_required=False
        ) as pebble:
            yield bind, pebble
    finally:
        with contextlib.suppress(StopIteration):
            next(bind_gen)


# --- database and fixtures -----------------------------------------------------------------------
def recreate_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    assert name.startswith("certmgr_bench_acme"), f"refusing to drop {name!r}"
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    url = os.environ["DATABASE_URL"]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def setup_certmgr(bind, pebble, count: int, run_id: str):
    from django.contrib.auth import get_user_model

    from acmeca import services as acme_services
    from certmgr import services
    from certmgr.actors import Actor
    from dnsproviders import services as dns_services
    from pki import services as pki_services

    system = Actor.system("acme bench")
    org = services.create_organization("Bench", actor=system)
    user = get_user_model().objects.create_user("bench-operator", password=uuid.uuid4().hex)
    services.add_member(org, user, "operator", actor=system)
    token = services.create_api_token(org, user, name="bench", role="operator", actor=system).secret
    connection = dns_services.create_connection(
        org, name="bind", kind="rfc2136", credentials=bind.credentials(), actor=system
    )
    ca = acme_services.create_acme_ca(
        org,
        name="Pebble",
        vendor="custom",
        directory_url=pebble.directory_url,
        tls_ca_bundle=pebble.tls_ca_bundle,
        email="bench@bind.test",
        dns_connection=connection,
        challenge_type="dns-01",
        actor=system,
    )
    zone = bind.zone.rstrip(".")

    def subscriber(label: str):
        name = f"{label}-{run_id}.{zone}"
        return pki_services.save_subscriber(
            org, actor=system, name=name, ca=ca, common_name=name, sans=[name], validity_days=90
        )

    return token, subscriber


# --- the worker ----------------------------------------------------------------------------------
def cpu_seconds(session: int | None = None, pid: int | None = None, cmdline: str = "") -> float:
    """CPU time (user + system) of the processes of ``session``, of ``pid``, or whose command line
    contains ``cmdline`` (PostgreSQL backends show their database there). Linux /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid pgrp session ... utime(12) stime(13)
        if session is not None and int(fields[3]) != session:
            continue
        if pid is not None and int(stat.parent.name) != pid:
            continue
        if cmdline:
            try:
                if cmdline.encode() not in (stat.parent / "cmdline").read_bytes():
                    continue
            except OSError:
                continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def qcluster(workers: int, redis_url: str, patches: list[str], log: Path) -> Iterator[int]:
    env = {**os.environ, "CERTMGR_WORKERS": str(workers), "REDIS_URL": redis_url}
    cmd = [sys.executable, __file__, "--worker", *[f"--patch={p}" for p in patches]]
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - this script, our own arguments
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc.pid  # its session id: the cluster and every worker it forks
    finally:
        proc.terminate()  # the cluster stops its workers on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def broker_here(redis_url: str) -> Iterator[None]:
    """Enqueue from this process into the broker the cluster reads (django-q reads its Conf at import)."""
    from django_q.conf import Conf

    saved = Conf.ORM, Conf.REDIS
    Conf.ORM, Conf.REDIS = (None, redis_url) if redis_url else ("default", saved[1])
    try:
        yield
    finally:
        Conf.ORM, Conf.REDIS = saved


def run_worker(patches: list[str]) -> None:
    import django

    django.setup()
    for name in patches:
        PATCHES[name]()
    if os.environ.get("ACME_BENCH_TRACE"):
        _install_trace(os.environ["ACME_BENCH_TRACE"])
    from django.core.management import call_command

    call_command("qcluster")


# --- timing --------------------------------------------------------------------------------------
def post_issue(client, token: str, subscriber) -> int:
    """Start one order through the door chosen with --door; returns the order id."""
    if client is None:  # --door service: what the API view calls, in this process
        from certmgr.actors import Actor
        from pki import services

        return services.issue(subscriber, actor=Actor.system("acme bench")).id
    response = client.post(
        f"/api/v1/subscribers/{subscriber.pk}/issue/", HTTP_AUTHORIZATION=f"Bearer {token}", format="json"
    )
    assert response.status_code == 202, (response.status_code, response.content[:500])
    return response.json()["order"]


def wait_done(order_ids: list[int], timeout: float) -> float:
    """Poll every 10 ms until every order is finished; returns the monotonic time it happened."""
    from acmeca.models import AcmeOrder

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not AcmeOrder.objects.filter(pk__in=order_ids).unfinished().exists():
            return time.monotonic()
        time.sleep(0.01)
    stuck = list(
        AcmeOrder.objects.filter(pk__in=order_ids)
        .unfinished()
        .values_list("pk", "step", "attempts", "next_attempt_at", "lease_until", "last_error")[:5]
    )
    raise TimeoutError(f"orders not finished after {timeout:.0f}s: {stuck}")


def check_done(order_ids: list[int]) -> None:
    from acmeca.models import AcmeOrder

    bad = list(
        AcmeOrder.objects.filter(pk__in=order_ids)
        .exclude(step="done")
        .values_list("pk", "step", "attempts", "last_error")
    )
    retried = AcmeOrder.objects.filter(pk__in=order_ids, attempts__gt=0).count()
    if retried:
        print(f"  note: {retried} order(s) needed a retry")
    assert not bad, f"orders not done: {bad}"


def timeline(order_ids: list[int]) -> dict[str, list[float]]:
    """Seconds from each order's creation to each step (from the audit events the flow writes)."""
    from certmgr.models import AuditEvent

    events: dict[str, dict[str, float]] = {}
    for target, action, at in AuditEvent.objects.filter(
        target_id__in=[str(i) for i in order_ids], action__in=STEPS
    ).values_list("target_id", "action", "time"):
        events.setdefault(target, {}).setdefault(action, at.timestamp())
    result: dict[str, list[float]] = {step: [] for step in STEPS[1:]}
    for steps in events.values():
        start = steps.get("acme.order.create")
        for step in STEPS[1:]:
            if start is not None and step in steps:
                result[step].append(steps[step] - start)
    return result


def read_trace(path: Path, order_ids: list[int]) -> dict[str, list[float]]:
    """Per phase, the seconds each order spent in it; "pickup" is creation to the worker's start."""
    from acmeca.models import AcmeOrder

    created = {
        pk: at.timestamp()
        for pk, at in AcmeOrder.objects.filter(pk__in=order_ids).values_list("pk", "created_at")
    }
    phases: dict[str, list[float]] = {}
    first_start: dict[int, float] = {}
    totals: dict[tuple[int, str], float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            order_id, phase, start, end = line.split()
            pk = int(order_id)
            if pk not in created:
                continue
            if phase == "run_order":
                first_start[pk] = min(first_start.get(pk, float(start)), float(start))
            totals[(pk, phase)] = totals.get((pk, phase), 0.0) + float(end) - float(start)
    for pk, start in first_start.items():
        phases.setdefault("pickup", []).append(start - created[pk])
    for (_pk, phase), seconds in totals.items():
        phases.setdefault(phase, []).append(seconds)
    return phases


def print_profile(label: str, path: Path, order_ids: list[int]) -> None:
    phases = read_trace(path, order_ids)
    order = ["pickup", "run_order", *[n.lstrip("_") for n in TRACED]]
    parts = [
        f"{p} {statistics.median(phases[p]) * 1000:.0f}/{max(phases[p]) * 1000:.0f}"
        for p in order
        if p in phases
    ]
    print(f"  {label}: ms per phase, median/max: " + ", ".join(parts))


def print_timeline(label: str, order_ids: list[int]) -> None:
    parts = []
    for step, values in timeline(order_ids).items():
        if values:
            parts.append(f"{step.rsplit('.', 1)[1]} {statistics.median(values) * 1000:.0f}")
    print(f"  {label}: median ms after create: " + ", ".join(parts))


def bench_certmgr(
    token: str, subscriber, args, broker: str, redis_url: str, logdir: Path, pebble_pid: int, named_pid: int
) -> dict:
    from rest_framework.test import APIClient

    client = APIClient() if args.door == "api" else None
    label = f"{broker}-{uuid.uuid4().hex[:6]}"
    trace = logdir / f"trace-{label}.txt"
    os.environ["ACME_BENCH_TRACE"] = str(trace)  # read by the worker (--worker) at start
    result: dict = {"broker": broker}
    with (
        broker_here(redis_url),
        qcluster(args.workers, redis_url, args.patch, logdir / f"qcluster-{broker}.log") as session,
    ):
        # Warm-up: the cluster's start, imports and first connections are not what we measure.
        warm = post_issue(client, token, subscriber(f"warm-{label}"))
        wait_done([warm], 120)
        check_done([warm])
        singles = []
        for i in range(args.singles):
            start = time.monotonic()
            order_id = post_issue(client, token, subscriber(f"one{i}-{label}"))
            singles.append(wait_done([order_id], 120) - start)
            check_done([order_id])
            print_timeline(f"single {i}", [order_id])
            print_profile(f"single {i}", trace, [order_id])
        subs = [subscriber(f"b{i}-{label}") for i in range(args.count)]  # made before the clock starts
        database = f" {os.environ['DATABASE_URL'].rsplit('/', 1)[1]} "
        cpu = (
            cpu_seconds(session=session),
            cpu_seconds(pid=pebble_pid),
            machine_busy_seconds(),
            cpu_seconds(cmdline=database),
            cpu_seconds(pid=named_pid),
        )
        here = time.process_time()
        start = time.monotonic()
        ids = [post_issue(client, token, s) for s in subs]
        posted = time.monotonic() - start
        batch = wait_done(ids, 600) - start
        workers_cpu = cpu_seconds(session=session) - cpu[0]
        pebble_cpu = cpu_seconds(pid=pebble_pid) - cpu[1]
        busy = machine_busy_seconds() - cpu[2]
        postgres_cpu = cpu_seconds(cmdline=database) - cpu[3]
        named_cpu = cpu_seconds(pid=named_pid) - cpu[4]
        print(
            f"  batch CPU seconds: workers {workers_cpu:.1f} "
            f"({workers_cpu / args.count * 1000:.0f} ms an order), "
            f"postgres backends {postgres_cpu:.1f}, pebble {pebble_cpu:.1f}, named {named_cpu:.1f}, "
            f"this process {time.process_time() - here:.1f}, "
            f"whole machine {busy:.1f} of {batch * (os.cpu_count() or 1):.1f} available"
        )
        check_done(ids)
        print_timeline("batch", ids)
        print_profile("batch", trace, ids)
        if "profile" in args.patch:
            print_cpu_profile(logdir, ids)
    result.update(single=statistics.median(singles), singles=singles, batch=batch, posted=posted)
    print(
        f"  {broker}: one certificate {result['single']:.3f}s (runs: "
        + ", ".join(f"{s:.3f}" for s in singles)
        + f"); {args.count} certificates {batch:.2f}s ({args.count / batch:.1f}/s; POSTs took {posted:.2f}s)"
    )
    return result


def bench_certbot(certbot: str, bind, pebble, count: int, base: Path) -> float:
    """certbot --manual with nsupdate hooks, one certificate after another; returns the wall time."""
    nsupdate = shutil.which("nsupdate")
    assert nsupdate, "nsupdate not found: install bind9-dnsutils"
    work = Path(tempfile.mkdtemp(prefix="certbot", dir=base))
    key = f"{bind.algorithm}:{bind.key_name}:{bind.secret}"
    hook = work / "hook.sh"
    hook.write_text(
        f"""#!/bin/sh
# $1: add | delete. certbot sets CERTBOT_DOMAIN and CERTBOT_VALIDATION.
name="_acme-challenge.$CERTBOT_DOMAIN."
if [ "$1" = add ]; then line="update add $name 60 TXT \\"$CERTBOT_VALIDATION\\""
else line="update delete $name TXT"; fi
printf 'server {bind.server} {bind.port}\\nzone {bind.zone}\\n%s\\nsend\\n' "$line" | {nsupdate} -y '{key}'
"""
    )
    hook.chmod(0o700)
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.tls_ca_bundle_path)}
    common = [
        "--server",
        pebble.directory_url,
        "--config-dir",
        str(work / "config"),
        "--work-dir",
        str(work / "work"),
        "--logs-dir",
        str(work / "logs"),
        "--non-interactive",
        "--agree-tos",
        "-m",
        "bench@bind.test",
    ]
    subprocess.run(  # noqa: S603 - the certbot the operator named
        [certbot, "register", *common], env=env, check=True, capture_output=True, timeout=120
    )
    run_id = uuid.uuid4().hex[:6]
    zone = bind.zone.rstrip(".")
    start = time.monotonic()
    for i in range(count):
        done = subprocess.run(  # noqa: S603 - the certbot the operator named
            [
                certbot,
                "certonly",
                *common,
                "--manual",
                "--preferred-challenges",
                "dns",
                "--manual-auth-hook",
                f"{hook} add",
                "--manual-cleanup-hook",
                f"{hook} delete",
                "-d",
                f"cb{i}-{run_id}.{zone}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"certbot failed for name {i}:\n{done.stdout}{done.stderr}")
    wall = time.monotonic() - start
    print(f"  certbot: {count} certificates {wall:.2f}s ({wall / count:.2f}s each)")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--singles", type=int, default=3, help="single-certificate runs (median reported)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--door",
        choices=["service", "api"],
        default="service",
        help="start orders with pki.services.issue here (default) or POST /api/v1/subscribers/<id>/issue/",
    )
    parser.add_argument("--broker", default="orm,redis", help="orm, redis or both (comma-separated)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument(
        "--certbot",
        default="/tmp/certbot-venv/bin/certbot",  # noqa: S108 - a throwaway venv
        help="'' skips certbot",
    )
    parser.add_argument("--patch", action="append", default=[], choices=sorted(PATCHES))
    parser.add_argument("--keep", action="store_true", help="keep the database and the server logs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.patch)

    base = Path(tempfile.mkdtemp(prefix="acme-bench-"))
    recreate_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    results = []
    certbot_wall = None
    try:
        with servers(base) as (bind, pebble):
            os.environ["CERTMGR_DNS_RESOLVERS"] = f"{bind.server}:{bind.port}"  # inherited by qcluster
            token, subscriber = setup_certmgr(bind, pebble, args.count, uuid.uuid4().hex[:6])
            for broker in [b.strip() for b in args.broker.split(",") if b.strip()]:
                redis_url = args.redis_url if broker == "redis" else ""
                results.append(
                    bench_certmgr(
                        token, subscriber, args, broker, redis_url, base, pebble.proc.pid, bind.proc.pid
                    )
                )
            if args.certbot:
                certbot_wall = bench_certbot(args.certbot, bind, pebble, args.count, base)
    finally:
        if not args.keep:
            drop_database()
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept: database {os.environ['DATABASE_URL']}, logs under {base}")

    print()
    via = "API POST" if args.door == "api" else "issue()"
    print(f"| what ({args.count} names, DNS-01 via RFC 2136) | wall s | certs/s | vs certbot |")
    print("|---|---|---|---|")
    for r in results:
        name = f"certmgr, {args.workers} workers, {r['broker']} broker"
        runs = len(r["singles"])
        print(f"| {name}: one certificate, {via} to done (median of {runs}) | {r['single']:.3f} | — | — |")
        ratio = f"{certbot_wall / r['batch']:.1f}x faster" if certbot_wall else "—"
        rate = args.count / r["batch"]
        print(f"| {name}: {args.count} certificates | {r['batch']:.2f} | {rate:.1f} | {ratio} |")
    if certbot_wall:
        rate = args.count / certbot_wall
        print(f"| certbot --manual + nsupdate, in sequence | {certbot_wall:.2f} | {rate:.2f} | 1 |")


if __name__ == "__main__":
    main()
