"""ACME issuance: certmgr's workers against Pebble (DNS-01 through BIND, RFC 2136 + TSIG), next to the raw
``acme`` library (the ceiling), certbot and lego.

    .venv/bin/python bench/acme_bench.py [--count 50] [--workers 8] [--broker orm,redis] \
        [--door service|api] [--certbot /tmp/certbot-venv/bin/certbot] [--lego /usr/bin/lego] \
        [--peer-count N] [--ceiling-threads 4] [--patch NAME ...] [--keep]

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
- first the ceiling: the raw ``acme`` library in this process, ``--ceiling-threads`` threads with a ClientV2
  each, issues one certificate three times and then ``--count`` (10 ms polls, the TXT record through RFC 2136,
  no database);
- per order the worker writes its ``run_order`` CPU time and SQL statements to the trace; the bench prints
  their medians, the audit events an order wrote, and the POST's wall time, CPU and statements;
- then the peers, one name after another, against a second Pebble with ``PEBBLE_WFE_NONCEREJECT=0`` (certbot
  retries a badNonce only once): certbot (its own venv: ``python3 -m venv /tmp/certbot-venv &&
  /tmp/certbot-venv/bin/pip install certbot``; ``--manual`` with hooks that write and remove the TXT record
  with ``nsupdate`` and the TSIG key) and Debian's lego (``apt-get install -y lego``; ``--dns rfc2136``);
- prints a Markdown table (ratios to the ceiling of the same run), which of issue 10's targets are met, and,
  from the trace and the audit events, where an order's time goes.

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

from acme_common import drop_database, pebble_ca, recreate_database  # bench/ is the script's path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "certmgr.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-" + "k" * 50)
os.environ.setdefault("CERTMGR_ENCRYPTION_KEYS", "tF2bN6l7Tq8u6R9rJ3xZ0m0E1wq7y8v5b4n3m2l1k0A=")
os.environ.setdefault("CERTMGR_AUDIT_KEYS", "bench-audit-key-not-for-production-0123456789")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/certmgr_bench_acme")
os.environ.setdefault("CERTMGR_OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8")
os.environ.setdefault("LOG_LEVEL", "WARNING")

STEPS = ["acme.order.create", "acme.order.submitted", "acme.order.valid"]


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


def _install_counters(path: str) -> None:
    """Append "order _cpu <seconds> <statements>" per run_order: the worker's CPU (this process, all its
    threads) and the SQL statements it sent, around ``flow.run_order`` only (not django-q's own work)."""
    import functools

    from django.db import connection

    from acmeca import flow

    run_order = flow.run_order

    @functools.wraps(run_order)
    def counted(order_id, **kwargs):
        statements = [0]

        def count(execute, sql, params, many, context):
            statements[0] += 1
            return execute(sql, params, many, context)

        cpu = time.process_time()
        try:
            with connection.execute_wrapper(count):
                return run_order(order_id, **kwargs)
        finally:
            with open(path, "a") as out:
                out.write(f"{order_id} _cpu {time.process_time() - cpu:.6f} {statements[0]}\n")

    flow.run_order = counted


@contextlib.contextmanager
def counting_statements() -> Iterator[list[int]]:
    """The SQL statements this process sends inside the block (``[count]``)."""
    from django.db import connection

    statements = [0]

    def count(execute, sql, params, many, context):
        statements[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        yield statements


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


def setup_certmgr(bind, pebble, count: int, run_id: str):
    from django.contrib.auth import get_user_model

    from certmgr import services
    from certmgr.actors import Actor
    from pki import services as pki_services

    system = Actor.system("acme bench")
    org = services.create_organization("Bench", actor=system)
    user = get_user_model().objects.create_user("bench-operator", password=uuid.uuid4().hex)
    services.add_member(org, user, "operator", actor=system)
    token = services.create_api_token(org, user, name="bench", role="operator", actor=system).secret
    ca = pebble_ca(org, bind, pebble, actor=system, email="bench@bind.test")
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
        _install_counters(os.environ["ACME_BENCH_TRACE"])
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
            if pk not in created or phase == "_cpu":
                continue
            if phase == "run_order":
                first_start[pk] = min(first_start.get(pk, float(start)), float(start))
            totals[(pk, phase)] = totals.get((pk, phase), 0.0) + float(end) - float(start)
    for pk, start in first_start.items():
        phases.setdefault("pickup", []).append(start - created[pk])
    for (_pk, phase), seconds in totals.items():
        phases.setdefault(phase, []).append(seconds)
    return phases


def worker_costs(path: Path, order_ids: list[int]) -> tuple[float, float]:
    """Median worker CPU seconds and SQL statements per order (summed over an order's runs)."""
    wanted = set(order_ids)
    cpu: dict[int, float] = {}
    statements: dict[int, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            order_id, phase, seconds, count = line.split()
            if phase == "_cpu" and int(order_id) in wanted:
                cpu[int(order_id)] = cpu.get(int(order_id), 0.0) + float(seconds)
                statements[int(order_id)] = statements.get(int(order_id), 0) + int(count)
    if not cpu:
        return float("nan"), float("nan")
    return statistics.median(cpu.values()), statistics.median(statements.values())


def audit_events_per_order(order_ids: list[int]) -> float:
    """Median audit events an order wrote (its own acme.order.* events and its certificate's)."""
    from django.db.models import Count, Q

    from acmeca.models import AcmeOrder
    from certmgr.models import AuditEvent

    orders = dict(AcmeOrder.objects.filter(pk__in=order_ids).values_list("pk", "certificate_id"))
    mine = Q(target_type="acmeca.acmeorder", target_id__in=[str(pk) for pk in orders])
    mine |= Q(target_type="pki.certificate", target_id__in=[str(c) for c in orders.values() if c])
    rows = AuditEvent.objects.filter(mine).values("target_type", "target_id").annotate(n=Count("id"))
    counts = {(r["target_type"], r["target_id"]): r["n"] for r in rows}
    per_order = [
        counts.get(("acmeca.acmeorder", str(pk)), 0) + counts.get(("pki.certificate", str(c)), 0)
        for pk, c in orders.items()
    ]
    return statistics.median(per_order) if per_order else float("nan")


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
        with counting_statements() as post_statements:
            ids = [post_issue(client, token, s) for s in subs]
        posted = time.monotonic() - start
        post_cpu = time.process_time() - here
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
        order_cpu, order_statements = worker_costs(trace, ids)
        events = audit_events_per_order(ids)
        print(
            f"  per order: worker run_order CPU {order_cpu * 1000:.0f} ms (median), "
            f"{order_statements:.0f} SQL statements, {events:.0f} audit events; per {via_name(args)}: "
            f"{posted / args.count * 1000:.1f} ms wall, {post_cpu / args.count * 1000:.1f} ms CPU, "
            f"{post_statements[0] / args.count:.1f} SQL statements"
        )
        result.update(
            order_cpu=order_cpu,
            order_statements=order_statements,
            events=events,
            post_ms=posted / args.count * 1000,
            post_cpu_ms=post_cpu / args.count * 1000,
            post_statements=post_statements[0] / args.count,
        )
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


def via_name(args) -> str:
    return "API POST" if args.door == "api" else "issue() call"


def bench_ceiling(bind, pebble, count: int, threads: int, singles: int) -> dict:
    """The raw ``acme`` library in this process: ``threads`` threads, each with its own ClientV2 (one
    account), issue ``count`` certificates (new P-256 key and CSR each, DNS-01 written to BIND with RFC 2136,
    authorization and order polled every 10 ms, chain downloaded, record removed). No database, no
    propagation check, no retries beyond badNonce: what the protocol costs against this Pebble."""
    import queue
    import threading

    import josepy as jose
    from acme import challenges, crypto_util, messages
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.acme_testbed import acme_client_for

    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    first = acme_client_for(pebble, key, attempts=8)
    regr = first.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    clients = [first]
    for _ in range(threads - 1):
        client = acme_client_for(pebble, key, attempts=8)
        client.net.account = regr
        clients.append(client)
    zone = bind.zone.rstrip(".")
    run_id = uuid.uuid4().hex[:6]

    def post_as_get(client, url: str):
        return client._post_as_get(url)  # the library's own POST-as-GET (no public call outside its loops)

    def issue(client, name: str) -> str:
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        orderr = client.new_order(crypto_util.make_csr(pem, [name]))
        records = []
        for authzr in orderr.authorizations:
            challb = next(c for c in authzr.body.challenges if isinstance(c.chall, challenges.DNS01))
            record = challb.chall.validation_domain_name(authzr.body.identifier.value)
            bind.update_txt(record, [challb.chall.validation(client.net.key)])
            records.append(record)
            client.answer_challenge(challb, challb.chall.response(client.net.key))
        try:
            for authzr in orderr.authorizations:
                while True:
                    time.sleep(0.01)
                    authzr, _ = client.poll(authzr)
                    if authzr.body.status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                        break
                assert authzr.body.status == messages.STATUS_VALID, authzr.body
            body = client.begin_finalization(orderr).body
            while not (body.status == messages.STATUS_VALID and body.certificate):
                assert body.status != messages.STATUS_INVALID, body
                time.sleep(0.01)
                body = messages.Order.from_json(post_as_get(client, orderr.uri).json())
            return post_as_get(client, body.certificate).text
        finally:
            for record in records:
                bind.update_txt(record, [])

    def batch(names: list[str]) -> float:
        todo: queue.Queue[str] = queue.Queue()
        for name in names:
            todo.put(name)
        failures: list[BaseException] = []

        def work(client) -> None:
            while True:
                try:
                    name = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    issue(client, name)
                except BaseException as exc:  # reported after the run
                    failures.append(exc)

        start = time.monotonic()
        pool = [threading.Thread(target=work, args=(c,)) for c in clients]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.monotonic() - start
        assert not failures, failures[:3]
        return wall

    issue(first, f"cwarm-{run_id}.{zone}")  # connections, the first authorization: not measured
    one = []
    for i in range(singles):
        start = time.monotonic()
        issue(first, f"cone{i}-{run_id}.{zone}")
        one.append(time.monotonic() - start)
    cpu = time.process_time()
    wall = batch([f"c{i}-{run_id}.{zone}" for i in range(count)])
    cpu = time.process_time() - cpu
    bad_nonces = sum(c.net.bad_nonces for c in clients)
    for c in clients:
        c.net.session.close()
    print(
        f"  ceiling (raw acme library, {threads} threads, 10 ms polls): one certificate "
        f"{statistics.median(one):.3f}s; {count} certificates {wall:.2f}s ({count / wall:.1f}/s), "
        f"{cpu / count * 1000:.0f} ms CPU each in this process, {bad_nonces} badNonce retried"
    )
    return {"single": statistics.median(one), "batch": wall, "cpu_ms": cpu / count * 1000}


def bench_lego(lego: str, bind, pebble, count: int, base: Path) -> float:
    """Debian's lego with its rfc2136 provider (TSIG), one ``lego run`` per name, in sequence."""
    work = Path(tempfile.mkdtemp(prefix="lego", dir=base))
    env = {
        **os.environ,
        "LEGO_CA_CERTIFICATES": str(pebble.tls_ca_bundle_path),
        "RFC2136_NAMESERVER": f"{bind.server}:{bind.port}",
        "RFC2136_TSIG_KEY": bind.key_name,
        "RFC2136_TSIG_SECRET": bind.secret,
        "RFC2136_TSIG_ALGORITHM": bind.algorithm.rstrip(".") + ".",
        "RFC2136_PROPAGATION_TIMEOUT": "60",
        "RFC2136_POLLING_INTERVAL": "1",  # whole seconds; its smallest
        "RFC2136_TTL": "60",
    }
    run_id = uuid.uuid4().hex[:6]
    zone = bind.zone.rstrip(".")
    common = [
        "--accept-tos",
        "--email",
        "bench@bind.test",
        "--server",
        pebble.directory_url,
        "--path",
        str(work),
        "--dns",
        "rfc2136",
        "--dns.resolvers",
        f"{bind.server}:{bind.port}",
        "--dns.disable-cp",  # Pebble asks this named directly: no other authoritative server to wait for
        "--key-type",
        "ec256",
    ]
    start = time.monotonic()
    for i in range(count):
        done = subprocess.run(  # noqa: S603 - the lego the operator named
            [lego, *common, "--domains", f"lg{i}-{run_id}.{zone}", "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"lego failed for name {i}:\n{done.stdout}{done.stderr}")
    wall = time.monotonic() - start
    print(f"  lego: {count} certificates {wall:.2f}s ({wall / count:.2f}s each)")
    return wall


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
    parser.add_argument("--lego", default=shutil.which("lego") or "", help="'' skips lego")
    parser.add_argument("--peer-count", type=int, default=None, help="names for certbot and lego (--count)")
    parser.add_argument("--ceiling-threads", type=int, default=4, help="threads of the raw acme loop")
    parser.add_argument("--patch", action="append", default=[], choices=sorted(PATCHES))
    parser.add_argument("--keep", action="store_true", help="keep the database and the server logs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.patch)

    base = Path(tempfile.mkdtemp(prefix="acme-bench-"))
    recreate_database("certmgr_bench_acme")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    results = []
    ceiling = None
    peers: dict[str, float] = {}
    peer_count = args.count if args.peer_count is None else args.peer_count
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        with servers(base) as (bind, pebble):
            os.environ["CERTMGR_DNS_RESOLVERS"] = f"{bind.server}:{bind.port}"  # inherited by qcluster
            if args.ceiling_threads:
                ceiling = bench_ceiling(bind, pebble, args.count, args.ceiling_threads, args.singles)
            token, subscriber = setup_certmgr(bind, pebble, args.count, uuid.uuid4().hex[:6])
            for broker in [b.strip() for b in args.broker.split(",") if b.strip()]:
                redis_url = args.redis_url if broker == "redis" else ""
                results.append(
                    bench_certmgr(
                        token, subscriber, args, broker, redis_url, base, pebble.proc.pid, bind.proc.pid
                    )
                )
            if peer_count and (args.certbot or args.lego):
                # certbot retries a badNonce once (two in a row fail the run): its own Pebble, no rejection.
                from tests import acme_testbed

                with acme_testbed._start_pebble(
                    _TmpFactory(base).mktemp("pebble-peers"),
                    f"{bind.server}:{bind.port}",
                    eab_required=False,
                    nonce_reject=0,
                ) as quiet:
                    print("  peers run against a second Pebble with PEBBLE_WFE_NONCEREJECT=0 (no badNonce)")
                    if args.certbot:
                        peers["certbot"] = bench_certbot(args.certbot, bind, quiet, peer_count, base)
                    if args.lego:
                        peers["lego"] = bench_lego(args.lego, bind, quiet, peer_count, base)
    finally:
        if not args.keep:
            drop_database("certmgr_bench_acme")
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept: database {os.environ['DATABASE_URL']}, logs under {base}")

    print()
    print(f"Run of {started}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print()
    via = via_name(args)
    print("| what (DNS-01 via RFC 2136 to BIND, Pebble) | wall s | certs/s | vs ceiling |")
    print("|---|---|---|---|")
    if ceiling:
        name = f"ceiling: raw acme library, {args.ceiling_threads} threads, 10 ms polls"
        print(f"| {name}: one certificate (median of {args.singles}) | {ceiling['single']:.3f} | — | 1 |")
        rate = args.count / ceiling["batch"]
        print(f"| {name}: {args.count} certificates | {ceiling['batch']:.2f} | {rate:.1f} | 1 |")
    for r in results:
        name = f"certmgr, {args.workers} workers, {r['broker']} broker"
        runs = len(r["singles"])
        ratio = f"{r['single'] / ceiling['single']:.1f}x" if ceiling else "—"
        print(
            f"| {name}: one certificate, {via} to done (median of {runs}) | {r['single']:.3f} | — | {ratio} |"
        )
        ratio = f"{r['batch'] / ceiling['batch']:.1f}x" if ceiling else "—"
        rate = args.count / r["batch"]
        print(f"| {name}: {args.count} certificates | {r['batch']:.2f} | {rate:.1f} | {ratio} |")
    labels = {
        "certbot": "certbot --manual + nsupdate hooks, in sequence",
        "lego": "lego --dns rfc2136, in sequence",
    }
    for peer, wall in peers.items():
        ratio = f"{wall / peer_count * args.count / ceiling['batch']:.0f}x" if ceiling else "—"
        print(
            f"| {labels[peer]}, {peer_count} certificates (no nonce rejection) | {wall:.2f} | "
            f"{peer_count / wall:.2f} | {ratio} |"
        )
    print()
    for r in results:
        checks = [
            (f"{args.count} within 2x the ceiling", ceiling and r["batch"] <= 2 * ceiling["batch"]),
            (f"{via} under 10 ms ({r['post_ms']:.1f})", r["post_ms"] < 10),
            (f"worker CPU an order under 30 ms ({r['order_cpu'] * 1000:.0f})", r["order_cpu"] < 0.030),
            (f"one certificate under 0.2 s ({r['single']:.3f})", r["single"] < 0.2),
        ]
        print(
            f"targets, {r['broker']} broker: "
            + "; ".join(f"{t}: {'met' if ok else 'NOT met'}" for t, ok in checks)
        )


if __name__ == "__main__":
    main()
