"""Soak: ACME orders under faults. A script, not a CI test.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/certmgr_soak .venv/bin/python bench/soak_acme.py \
        [--orders 200] [--workers 4] [--kill cluster|worker] [--kill-every 3] [--broker redis|orm] \
        [--settle 300] [--keep]

What it does, all on loopback:

- starts ``named`` (one zone, a TSIG key allowed to update TXT) and Debian's ``pebble`` with
  ``PEBBLE_WFE_NONCEREJECT=50`` (half of all POSTs answered ``badNonce``) and ``PEBBLE_VA_NOSLEEP=1``, with
  the test bed's helpers (``tests/dnsservers.py``, ``tests/acme_testbed.py``). One zone, so Pebble asks
  ``named`` directly (no dnsdist), and so does the propagation check (``CERTMGR_DNS_RESOLVERS``);
- drops and creates the database of ``DATABASE_URL`` (its name must start with ``certmgr_soak``),
  migrates (which also schedules the janitor every minute), and makes an organization, an RFC 2136
  connection to ``named``, an ACME CA at Pebble and ``--orders`` subscribers, one fresh name each;
- starts ``--workers`` django-q2 workers (``manage.py qcluster``, i.e. this script with ``--worker``):
  ``--kill cluster`` (default) as that many one-worker clusters, ``--kill worker`` as one cluster of that
  many workers; each worker writes its pid when it spawns (and a marker while it runs an order), so the
  script knows exactly which processes are workers and what they were doing when killed;
- starts one order per subscriber through ``pki.services.issue`` (what every door calls), all at once;
- while orders are unfinished (at most ``--fault-seconds``): every ``--kill-every`` seconds SIGKILLs a
  random worker's whole cluster and starts another (``--kill worker``: SIGKILLs the worker alone and
  django-q2's sentinel spawns the replacement; that can wedge django-q2, see docs/benchmarks.md), checking
  that a replacement is up; and restarts ``named`` twice (SIGTERM, ``--bind-down`` seconds down, start),
  when a third and when two thirds of the orders have finished;
- runs django-q2's scheduler every 30 s, as each cluster's sentinel does, so the janitor runs on its
  schedule (every minute) even when no cluster lives 30 s; ``CERTMGR_ACME_LEASE_SECONDS`` (30 here) is
  how long a dead worker's order waits before the janitor may resume it;
- then, with no more faults, waits at most ``--settle`` seconds for quiescence (every order finished, no
  lease held, no challenge record left to remove);
- reports, and exits 1 unless the bar (issued = orders, the other four 0) is met:

  issued       subscribers with a certificate;
  duplicates   certificates beyond the first of a subscriber, orders beyond the first of a subscriber, and
               orders Pebble created beyond the ones certmgr knows (a newOrder whose answer was lost);
  stuck        orders unfinished after the wait;
  orphan TXT   ``_acme-challenge`` TXT records ``named`` still serves for the subscribers' names;
  leases       orders still holding a worker's lease.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
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
os.environ.setdefault("SECRET_KEY", "soak-" + "k" * 50)
os.environ.setdefault("CERTMGR_ENCRYPTION_KEYS", "tF2bN6l7Tq8u6R9rJ3xZ0m0E1wq7y8v5b4n3m2l1k0A=")
os.environ.setdefault("CERTMGR_AUDIT_KEYS", "bench-audit-key-not-for-production-0123456789")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/certmgr_soak")
os.environ.setdefault("CERTMGR_OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("CERTMGR_ACME_LEASE_SECONDS", "30")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- servers ---------------------------------------------------------------------------------------
class _TmpFactory:
    """What the test bed's fixtures ask of pytest's ``tmp_path_factory``."""

    def __init__(self, base: Path):
        self.base = base

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=self.base))


@contextlib.contextmanager
def servers(base: Path, nonce_reject: int) -> Iterator[tuple]:
    from tests import acme_testbed, dnsservers

    bind_gen = dnsservers.bind._get_wrapped_function()(_TmpFactory(base))
    bind = next(bind_gen)
    try:
        with acme_testbed._start_pebble(
            _TmpFactory(base).mktemp("pebble"),
            f"{bind.server}:{bind.port}",
            eab_required=False,
            nonce_reject=nonce_reject,
        ) as pebble:
            yield bind, pebble
    finally:
        with contextlib.suppress(StopIteration):
            next(bind_gen)


# --- database and rows ---------------------------------------------------------------------------


def setup_certmgr(bind, pebble, count: int) -> list:
    """An organization, an RFC 2136 connection, an ACME CA at Pebble and ``count`` subscribers."""
    from certmgr import services
    from certmgr.actors import Actor
    from pki import services as pki_services

    system = Actor.system("acme soak")
    org = services.create_organization("Soak", actor=system)
    ca = pebble_ca(org, bind, pebble, actor=system, email="soak@bind.test")
    run_id, zone = uuid.uuid4().hex[:6], bind.zone.rstrip(".")
    subscribers = []
    for i in range(count):
        name = f"s{i}-{run_id}.{zone}"
        subscribers.append(
            pki_services.save_subscriber(
                org, actor=system, name=name, ca=ca, common_name=name, sans=[name], validity_days=90
            )
        )
    return subscribers


def start_orders(subscribers: list) -> dict[int, int]:
    """One ``pki.services.issue`` per subscriber; returns {subscriber id: order id}.

    The order is looked up rather than read from the return value: ``issue`` answered a Certificate or an
    AcmeOrder before the issuer seam, an Outcome after it."""
    from acmeca.models import AcmeOrder
    from certmgr.actors import Actor
    from pki import services

    actor = Actor.system("acme soak")
    for s in subscribers:
        services.issue(s, actor=actor)
    orders: dict[int, int] = {}
    for sub_id, order_id in (
        AcmeOrder.objects.filter(subscriber__in=subscribers).order_by("id").values_list("subscriber_id", "id")
    ):
        orders.setdefault(sub_id, order_id)
    return orders


# --- the worker cluster --------------------------------------------------------------------------
def run_worker(pid_dir: str) -> None:
    """The qcluster process. Every worker it spawns (first or replacement) writes ``pid_dir/<pid>`` holding
    its process group (= its cluster), and ``pid_dir-busy/<pid>`` while it runs an order."""
    import django

    django.setup()
    from django.core.management import call_command
    from django_q.signals import post_spawn

    from acmeca import tasks

    def spawned(sender, proc_name, **kwargs) -> None:
        Path(pid_dir, str(os.getpid())).write_text(str(os.getpgid(0)))

    post_spawn.connect(spawned, weak=False)
    run_order = tasks.run_order
    busy = Path(pid_dir + "-busy")

    def marked(order_id: int) -> str:
        marker = busy / str(os.getpid())
        marker.write_text(f"{os.getpgid(0)} {order_id}")
        try:
            return run_order(order_id)
        finally:
            marker.unlink(missing_ok=True)

    tasks.run_order = marked  # the cluster forks its workers after this: they inherit it
    call_command("qcluster")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in {"Z", "X"}


class Workers:
    """The django-q2 clusters and their worker processes.

    ``--kill cluster``: ``count`` qcluster processes of one worker each; a kill SIGKILLs one whole cluster
    (its process group: sentinel, pusher, monitor, worker) and starts a replacement cluster.
    ``--kill worker``: one qcluster of ``count`` workers; a kill SIGKILLs one worker process and django-q2's
    sentinel spawns the replacement (see docs/benchmarks.md: this can wedge the whole cluster)."""

    def __init__(self, mode: str, count: int, redis_url: str, base: Path):
        self.mode, self.count, self.redis_url, self.base = mode, count, redis_url, base
        self.pid_dir, self.busy_dir = base / "workers", base / "workers-busy"
        self.pid_dir.mkdir()
        self.busy_dir.mkdir()
        self.clusters: list[subprocess.Popen] = []
        self.log = base / "qcluster.log"

    def _start_cluster(self, workers: int) -> None:
        env = {**os.environ, "CERTMGR_WORKERS": str(workers), "REDIS_URL": self.redis_url}
        cmd = [sys.executable, __file__, "--worker", str(self.pid_dir)]
        with self.log.open("ab") as out:
            self.clusters.append(
                subprocess.Popen(  # noqa: S603 - this script, our own arguments
                    cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

    def start(self) -> None:
        if self.mode == "cluster":
            for _ in range(self.count):
                self._start_cluster(1)
        else:
            self._start_cluster(self.count)
        self.wait_full(60)

    def live(self) -> dict[int, int]:
        """{worker pid: its cluster's process group} of the workers alive now."""
        pids = {}
        for f in self.pid_dir.iterdir():
            pid = int(f.name)
            if _alive(pid):
                pids[pid] = int(f.read_text() or 0)
            else:
                f.unlink(missing_ok=True)
        return pids

    def wait_full(self, timeout: float) -> float | None:
        """Seconds until ``count`` workers are alive, None if they are not after ``timeout``."""
        start = time.monotonic()
        while len(self.live()) < self.count:
            if time.monotonic() - start > timeout:
                return None
            time.sleep(0.05)
        return time.monotonic() - start

    def busy_orders(self, group: int | None = None, pid: int | None = None) -> list[int]:
        """Orders the workers of cluster ``group`` (or worker ``pid``) are running now."""
        found = []
        for f in self.busy_dir.iterdir():
            with contextlib.suppress(OSError, ValueError):
                marker_group, order_id = f.read_text().split()
                if (group is not None and int(marker_group) == group) or (
                    pid is not None and f.name == str(pid)
                ):
                    found.append(int(order_id))
        return found

    def kill_one(self, rng: random.Random) -> tuple[list[int], float | None]:
        """SIGKILL a random worker (or its whole cluster); returns the orders it was running and how long
        until the replacement worker was up (None: not within 15 s)."""
        live = self.live()
        if not live:
            return [], self.wait_full(15)
        victim = rng.choice(sorted(live))
        group = live[victim]
        if self.mode == "cluster":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            busy = self.busy_orders(group=group)
            for proc in [c for c in self.clusters if c.pid == group]:
                proc.wait(timeout=10)
                self.clusters.remove(proc)
            for f in [*self.busy_dir.iterdir(), *self.pid_dir.iterdir()]:
                with contextlib.suppress(OSError):
                    if f.read_text().split()[0] == str(group):
                        f.unlink()
            self._start_cluster(1)
        else:
            os.kill(victim, signal.SIGKILL)
            busy = self.busy_orders(pid=victim)
            (self.busy_dir / str(victim)).unlink(missing_ok=True)
            time.sleep(0.05)
        return busy, self.wait_full(15)

    def stop(self) -> None:
        for proc in self.clusters:
            proc.terminate()  # a cluster stops its workers on SIGTERM
        for proc in self.clusters:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # what a wedged sentinel left behind


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


def clear_redis_queue(redis_url: str) -> None:
    """Tasks a previous (aborted) soak left in its Redis database would run against this one's rows."""
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("django_q:*"):
        client.delete(key)


# --- progress, faults and the report ------------------------------------------------------------
def progress(order_ids: list[int]) -> dict[str, int]:
    from django.db.models import Count

    from acmeca.models import AcmeOrder

    return dict(
        AcmeOrder.objects.filter(pk__in=order_ids).values_list("step").annotate(n=Count("id")).order_by()
    )


def quiet(order_ids: list[int]) -> bool:
    """Every order finished, no lease held, no record left to remove."""
    from django.db.models import Q

    from acmeca.models import AcmeChallenge, AcmeOrder

    orders = AcmeOrder.objects.filter(pk__in=order_ids)
    return not (
        orders.unfinished().exists()
        or orders.filter(Q(lease_until__isnull=False) | ~Q(lease_owner="")).exists()
        or orders.filter(cleanup_pending=True).exists()
        or AcmeChallenge.objects.filter(order_id__in=order_ids, record_present=True).exists()
    )


def pebble_orders(pebble) -> int:
    """How many orders Pebble created (its log says so once per newOrder that succeeded)."""
    text = pebble.log.read_text(errors="replace")
    return len(re.findall(r"Added order", text))


def report(subscribers: list, order_ids: list[int], bind, pebble) -> dict:
    from django.db.models import Count, Q, Sum

    from acmeca.models import AcmeChallenge, AcmeOrder
    from pki.models import Certificate
    from tests.dnsservers import txt_query

    sub_ids = [s.pk for s in subscribers]
    certs = dict(
        Certificate.objects.filter(subscriber_id__in=sub_ids)
        .values_list("subscriber_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    orders = AcmeOrder.objects.filter(subscriber_id__in=sub_ids)
    per_sub = dict(orders.values_list("subscriber_id").annotate(n=Count("id")).order_by())
    known_at_ca = orders.exclude(order_url="").count()
    at_ca = pebble_orders(pebble)
    orphans = []
    for s in subscribers:
        try:
            if txt_query(bind.server, bind.port, f"_acme-challenge.{s.common_name}"):
                orphans.append(s.common_name)
        except Exception as exc:  # a DNS failure here is a finding too
            orphans.append(f"{s.common_name} ({exc})")
    leases = orders.filter(Q(lease_until__isnull=False) | ~Q(lease_owner=""))
    stuck = orders.unfinished()
    failed = orders.filter(step=AcmeOrder.Step.FAILED)
    totals = orders.aggregate(attempts=Sum("attempts"), bad_nonces=Sum("bad_nonces"))
    result = {
        "issued": sum(1 for s in sub_ids if certs.get(s)),
        "duplicate certificates": sum(n - 1 for n in certs.values() if n > 1),
        "duplicate orders": sum(n - 1 for n in per_sub.values() if n > 1),
        "extra CA orders": max(0, at_ca - known_at_ca),
        "stuck": stuck.count(),
        "orphan TXT": len(orphans),
        "leases": leases.count(),
        "failed": failed.count(),
        "records marked present": AcmeChallenge.objects.filter(
            order__subscriber_id__in=sub_ids, record_present=True
        ).count(),
        "cleanup pending": orders.filter(cleanup_pending=True).count(),
        "retries (attempts)": totals["attempts"] or 0,
        "badNonce retries": totals["bad_nonces"] or 0,
        "orders at Pebble": at_ca,
    }
    result["duplicates"] = (
        result["duplicate certificates"] + result["duplicate orders"] + result["extra CA orders"]
    )
    for label, rows in (
        (
            "stuck",
            stuck.values_list("pk", "step", "attempts", "lease_until", "next_attempt_at", "last_error"),
        ),
        ("failed", failed.values_list("pk", "attempts", "error_type", "last_error")),
        ("leases", leases.values_list("pk", "step", "lease_owner", "lease_until")),
    ):
        for row in list(rows[:10]):
            say(f"  {label}: {row}")
    for name in orphans[:10]:
        say(f"  orphan TXT: {name}")
    return result


class Scheduler:
    """django-q2's scheduler, run from here every 30 s as each cluster's sentinel does (its guard calls it
    after 30 s of uptime, which a cluster killed every few seconds seldom reaches). It enqueues what is due
    by the schedule rows (the janitor every minute), so the janitor runs on schedule whatever is killed."""

    def __init__(self) -> None:
        self.last = 0.0

    def tick(self) -> None:
        if time.monotonic() - self.last < 30:
            return
        from django_q.brokers import get_broker
        from django_q.scheduler import scheduler

        self.last = time.monotonic()
        scheduler(broker=get_broker())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4, help="django-q2 worker processes")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between SIGKILLs of a worker")
    parser.add_argument("--bind-down", type=float, default=3.0, help="seconds named stays down per restart")
    parser.add_argument(
        "--nonce-reject", type=int, default=50, help="percent of POSTs Pebble answers badNonce"
    )
    parser.add_argument("--fault-seconds", type=float, default=600.0, help="at most this long under faults")
    parser.add_argument("--settle", type=float, default=300.0, help="then at most this long to quiesce")
    parser.add_argument(
        "--kill",
        choices=["cluster", "worker"],
        default="cluster",
        help="SIGKILL a whole one-worker qcluster and start another (default), or one worker of one qcluster",
    )
    parser.add_argument("--broker", choices=["redis", "orm"], default="redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the victim choice")
    parser.add_argument("--keep", action="store_true", help="keep the database and the server logs")
    parser.add_argument("--worker", metavar="PID_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker)
        return 0

    rng = random.Random(args.seed)  # noqa: S311 - which worker to kill, not a secret
    base = Path(tempfile.mkdtemp(prefix="acme-soak-"))
    redis_url = args.redis_url if args.broker == "redis" else ""
    if redis_url:
        clear_redis_queue(redis_url)
    recreate_database("certmgr_soak")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    stats = {
        "kills": 0,
        "killed busy": 0,
        "killed before the order URL": 0,
        "bind restarts": 0,
        "replacement waits": [],
    }
    result: dict = {}
    try:
        with servers(base, args.nonce_reject) as (bind, pebble):
            os.environ["CERTMGR_DNS_RESOLVERS"] = f"{bind.server}:{bind.port}"  # inherited by qcluster
            subscribers = setup_certmgr(bind, pebble, args.orders)
            workers = Workers(args.kill, args.workers, redis_url, base)
            with broker_here(redis_url), contextlib.ExitStack() as stack:
                stack.callback(workers.stop)
                workers.start()
                say(f"{args.workers} workers up; starting {args.orders} orders ({args.broker} broker)")
                start = time.monotonic()
                orders = start_orders(subscribers)
                order_ids = list(orders.values())
                say(f"{len(order_ids)} orders started in {time.monotonic() - start:.1f}s")
                schedule = Scheduler()
                result["faults"] = faults(args, rng, order_ids, workers, bind, stats, start, schedule)
                say(f"{result['faults']}; waiting for quiescence")
                settle_end = time.monotonic() + args.settle
                while not quiet(order_ids) and time.monotonic() < settle_end:
                    schedule.tick()
                    time.sleep(1.0)
                result["quiet"] = quiet(order_ids)
                result["wall"] = time.monotonic() - start
                state = "quiet" if result["quiet"] else "NOT quiet"
                say(f"{state} after {result['wall']:.0f}s: {progress(order_ids)}")
                from certmgr.models import JobRun

                result["janitor runs"] = JobRun.objects.filter(name="janitor").count()
                result["janitor counts"] = [
                    c for c in JobRun.objects.filter(name="janitor").values_list("counts", flat=True) if c
                ]
                result.update(report(subscribers, order_ids, bind, pebble))
    finally:
        if not args.keep:
            drop_database("certmgr_soak")
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept: database {os.environ['DATABASE_URL']}, logs under {base}")

    bar = [result.get(k) for k in ("issued", "duplicates", "stuck", "orphan TXT", "leases")]
    met = bar == [args.orders, 0, 0, 0, 0]
    print()
    print(
        f"orders {args.orders}, workers {args.workers} (kill {args.kill}), kill every {args.kill_every}s, "
        f"broker {args.broker}, "
        f"Pebble badNonce {args.nonce_reject}%, lease {os.environ['CERTMGR_ACME_LEASE_SECONDS']}s"
    )
    print(
        f"faults: {stats['kills']} SIGKILLs ({stats['killed busy']} of a worker mid-order, "
        f"{stats['killed before the order URL']} of them before the order URL was stored), "
        f"{stats['bind restarts']} named restarts; replacement worker up after "
        + (f"max {max(stats['replacement waits']):.1f}s" if stats["replacement waits"] else "—")
    )
    print(f"janitor runs: {result.get('janitor runs')}; what they did: {result.get('janitor counts')}")
    for key, value in result.items():
        if key not in {"janitor counts", "faults", "janitor runs"}:
            print(f"  {key}: {value if not isinstance(value, float) else round(value, 1)}")
    print(
        f"issued / duplicates / stuck / orphan TXT / leases: {' / '.join(str(v) for v in bar)}"
        f"  (bar {args.orders} / 0 / 0 / 0 / 0: {'met' if met else 'NOT met'})"
    )
    return 0 if met else 1


def faults(
    args,
    rng: random.Random,
    order_ids: list[int],
    workers: Workers,
    bind,
    stats: dict,
    start: float,
    schedule: Scheduler,
) -> str:
    """Kill workers and restart named until every order finished (or ``--fault-seconds`` passed)."""
    from acmeca.models import AcmeOrder

    total = len(order_ids)
    restarts_at = [total // 3, (2 * total) // 3]
    next_kill = time.monotonic() + args.kill_every
    last_print = 0.0
    end = start + args.fault_seconds
    while time.monotonic() < end:
        schedule.tick()
        steps = progress(order_ids)
        finished = sum(n for step, n in steps.items() if step in AcmeOrder.FINISHED_STEPS)
        if finished >= total:
            return "all orders finished under faults"
        if restarts_at and finished >= restarts_at[0]:
            restarts_at.pop(0)
            say(f"restarting named ({finished}/{total} finished)")
            bind.stop()
            time.sleep(args.bind_down)
            bind.start()
            stats["bind restarts"] += 1
            say("named is back")
        now = time.monotonic()
        if now >= next_kill:
            next_kill = now + args.kill_every
            busy, replaced = workers.kill_one(rng)
            stats["kills"] += 1
            stats["killed busy"] += int(bool(busy))
            # Killed before the CA's answer to newOrder was stored: that CA order may be lost for good.
            stats["killed before the order URL"] += AcmeOrder.objects.filter(
                pk__in=busy, order_url=""
            ).count()
            if replaced is None:
                say("no replacement worker within 15s")
            else:
                stats["replacement waits"].append(replaced)
        if now - last_print > 10:
            last_print = now
            kills, restarts = stats["kills"], stats["bind restarts"]
            say(f"{now - start:.0f}s: {steps}; {kills} kills, {restarts} named restarts")
        time.sleep(0.2)
    return f"faults stopped after {args.fault_seconds:.0f}s with orders unfinished"


if __name__ == "__main__":
    sys.exit(main())
