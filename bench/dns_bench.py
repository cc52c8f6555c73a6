"""certmgr's DNS server (``manage.py dns_server``) at a fixed query rate, next to PowerDNS in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/certmgr_bench_dns .venv/bin/python bench/dns_bench.py

The script recreates the database (its name must start with ``certmgr_bench_dns``), migrates it, stores
``--rows`` live delegated challenges (one of them the TXT asked for) and starts certmgr's server as
``make run`` and production do (its own process, rate limit off: one client address sends everything), and
PowerDNS (``pdns_server``, gsqlite3, the test bed's configuration: no caches) serving the same TXT value.
Each round sends ``--rate`` UDP queries a second for ``--seconds`` from one Python client (a sender thread
on a fixed schedule, a receiver thread timing each answer by its ID), to each server in turn; who goes first
alternates. A query without an answer after 1 s is lost. Latency is from the scheduled send time, so a
client that falls behind counts against the server, not in its favour.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.message
import dns.rdatatype
from acme_common import drop_database, recreate_database  # bench/ is the script's path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "certmgr.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-" + "k" * 50)
os.environ.setdefault("CERTMGR_ENCRYPTION_KEYS", "tF2bN6l7Tq8u6R9rJ3xZ0m0E1wq7y8v5b4n3m2l1k0A=")
os.environ.setdefault("CERTMGR_AUDIT_KEYS", "bench-audit-key-not-for-production-0123456789")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/certmgr_bench_dns")
os.environ.setdefault("LOG_LEVEL", "WARNING")

VALUE = "bench-" + "v" * 37  # a DNS-01 value is 43 characters


class _TmpFactory:
    def __init__(self, base: Path):
        self.base = base

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=self.base))


def fill(rows: int) -> str:
    from datetime import timedelta

    from django.utils import timezone

    from certmgr.models import Organization
    from dnsproviders.models import DelegatedChallenge

    org = Organization.objects.create(name="DNS bench", slug="dns-bench")
    expires = timezone.now() + timedelta(days=1)
    name = "_acme-challenge.bench.example.com."
    DelegatedChallenge.objects.bulk_create(
        [DelegatedChallenge(organization=org, name=name, value=VALUE, expires=expires)]
        + [
            DelegatedChallenge(
                organization=org, name=f"_acme-challenge.n{i}.example.com.", value=VALUE, expires=expires
            )
            for i in range(rows - 1)
        ]
    )
    return name


def measure(host: str, port: int, name: str, rate: float, seconds: float) -> dict:
    """Send ``rate`` queries a second for ``seconds``; latency percentiles (ms), loss, answers checked."""
    total = int(rate * seconds)
    wire = bytearray(dns.message.make_query(name, dns.rdatatype.TXT).to_wire())
    sent: dict[int, float] = {}
    latencies: list[float] = []
    wrong = 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    sock.settimeout(0.2)
    done = threading.Event()

    def receive() -> None:
        nonlocal wrong
        while not done.is_set():
            try:
                data = sock.recv(4096)
            except (TimeoutError, ConnectionRefusedError):
                continue
            now = time.perf_counter()
            qid = int.from_bytes(data[:2], "big")
            start = sent.pop(qid, None)
            if start is None:
                continue
            if VALUE.encode() not in data:
                wrong += 1
            latencies.append((now - start) * 1000)

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    t0 = time.perf_counter() + 0.05
    behind = 0.0
    for i in range(total):
        due = t0 + i / rate
        while (wait := due - time.perf_counter()) > 0:
            time.sleep(wait if wait > 0.002 else 0)
        behind = max(behind, time.perf_counter() - due)
        qid = i % 65536
        wire[0:2] = qid.to_bytes(2, "big")
        sent[qid] = due  # from the schedule: a late send is counted as latency
        sock.send(wire)
    end = time.perf_counter() + 1.0
    while sent and time.perf_counter() < end:
        time.sleep(0.01)
    done.set()
    receiver.join()
    sock.close()
    latencies.sort()
    answered = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(answered - 1, int(p / 100 * answered))] if answered else float("nan")

    return {
        "sent": total,
        "answered": answered,
        "loss": 100.0 * (total - answered) / total,
        "wrong": wrong,
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "max": latencies[-1] if latencies else float("nan"),
        "mean": statistics.fmean(latencies) if latencies else float("nan"),
        "client_behind_ms": behind * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="queries a second (default 1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per round and server (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each server once a round (default 2)")
    parser.add_argument("--rows", type=int, default=1000, help="live delegated challenges stored (1000)")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()

    recreate_database("certmgr_bench_dns")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    name = fill(args.rows)
    from tests import dnsservers

    base = Path(tempfile.mkdtemp(prefix="dns-bench-"))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    pdns_gen = dnsservers.powerdns._get_wrapped_function()(_TmpFactory(base))
    pdns = next(pdns_gen)
    results: dict[str, list[dict]] = {"certmgr dns_server": [], "PowerDNS (pdns_server)": []}
    try:
        pdns_name = "_acme-challenge.bench." + pdns.zone
        pdns.set_txt(pdns_name, [VALUE])
        with dnsservers.start_certmgr_dns(
            base,
            os.environ["DATABASE_URL"],
            DJANGO_SETTINGS_MODULE="certmgr.settings",
            CERTMGR_DNS_CACHE_SECONDS="1",
        ) as certmgr:
            targets = {
                "certmgr dns_server": (certmgr.host, certmgr.port, name),
                "PowerDNS (pdns_server)": (pdns.host, pdns.dns_port, pdns_name),
            }
            for host, port, qname in targets.values():
                measure(host, port, qname, 200, 1)  # warm up
            for r in range(args.rounds):
                order = list(targets) if r % 2 == 0 else list(reversed(targets))
                for label in order:
                    host, port, qname = targets[label]
                    result = measure(host, port, qname, args.rate, args.seconds)
                    results[label].append(result)
                    print(f"round {r + 1} {label}: {_row(result)}", flush=True)
            assert certmgr.alive(), dnsservers.tail(certmgr.log)
    finally:
        with contextlib.suppress(StopIteration):
            next(pdns_gen)
        if not args.keep:
            drop_database("certmgr_bench_dns")
    print(
        f"\nRun of {started}: {args.rate:.0f} queries/s for {args.seconds:.0f} s a round, "
        f"{args.rounds} rounds"
    )
    print("| server | round | sent | answered | loss % | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, rows in results.items():
        for i, res in enumerate(rows, 1):
            print(
                f"| {label} | {i} | {res['sent']} | {res['answered']} | {res['loss']:.2f} | "
                f"{res['p50']:.2f} | {res['p90']:.2f} | {res['p99']:.2f} | {res['max']:.1f} |"
            )


def _row(res: dict) -> str:
    return (
        f"answered {res['answered']}/{res['sent']} (loss {res['loss']:.2f}%, wrong {res['wrong']}), "
        f"p50 {res['p50']:.2f} ms, p90 {res['p90']:.2f} ms, p99 {res['p99']:.2f} ms, "
        f"max {res['max']:.1f} ms, client behind at most {res['client_behind_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
