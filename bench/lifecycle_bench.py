"""Lifecycle at a million certificates: the renewal sweep's due query, the dashboard, and /metrics.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/certmgr_bench_life .venv/bin/python \
        bench/lifecycle_bench.py [--subscribers 50000 --generations 12 --imported 400000] [--requests 50]

The database is created if missing and filled once with ``COPY`` (re-runs reuse it when the count matches):
``--subscribers`` subscribers with ``--generations`` certificates each (the newest active with a renewal
time spread over the next 60 days, the older ones expired, 1% revoked), plus ``--imported`` certificates
without a subscriber (expiry spread over -60..+400 days, like ``pki_bench.py``), and 20,000 finished ACME
orders. Rows carry a real PEM and chain, so the table is as wide as a real one. Prints EXPLAIN of the
sweep's due query and Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/certmgr_bench_life")

# pki_bench also sets the other bench defaults (environment)
from pki_bench import (  # noqa: E402
    bench_hierarchy,
    bench_setup,
    certificate_copier,
    percentile,
    timed,
)

DUE_TARGET = 1000  # certificates the sweep should find due


def fill(org, cas: list, args, *, system) -> None:
    """Subscribers (bulk_create), certificates (COPY), ACME orders (bulk_create)."""
    from django.db import connection
    from django.utils import timezone

    from acmeca.models import AcmeOrder
    from pki import services
    from pki.models import Subscriber

    rng = random.Random(42)  # noqa: S311 - synthetic data, not secrets
    now = timezone.now()
    start = time.perf_counter()
    issuing = cas[1]
    sample = services.issue(
        Subscriber.objects.filter(organization=org, name="bench-sample").first()
        or services.save_subscriber(
            org, actor=system, name="bench-sample", ca=issuing, common_name="sample.example.com"
        ),
        actor=system,
    ).certificate
    pem, chain = sample.certificate_pem, sample.chain_pem

    subscribers = Subscriber.objects.bulk_create(
        [
            Subscriber(
                organization=org,
                name=f"sub{i:06d}",
                ca=cas[1 + i % 2],
                common_name=f"svc{i}.zone{i % 5000}.example.com",
                validity_days=90,
                renew_before_days=30,
                # 1% failing: counted, backoff pending, listed on the dashboard.
                renewal_failures=2 if i % 100 == 0 else 0,
                last_error_category="rateLimited" if i % 100 == 0 else "",
                next_attempt_at=now + timedelta(hours=1) if i % 100 == 0 else None,
                last_operation_status="failed" if i % 100 == 0 else "success",
                last_operation_message="rate limited by the CA" if i % 100 == 0 else "",
                last_operation_at=now - timedelta(minutes=i % 1440),
            )
            for i in range(args.subscribers)
        ],
        batch_size=5000,
    )
    print(f"{len(subscribers)} subscribers in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    with certificate_copier(org.pk, pem, chain, rng, now) as write:
        for sub in subscribers:
            renew_at = now + timedelta(days=rng.uniform(0.01, 60))
            current_end = renew_at + timedelta(days=30)
            source = "acme" if sub.ca_id == cas[2].pk else "issued"
            write(sub.common_name, sub.ca_id, sub.pk, source, current_end, "active", renew_at)
            for generation in range(1, args.generations):
                status = "revoked" if rng.random() < 0.01 else "expired"
                end = current_end - timedelta(days=60 * generation)
                write(sub.common_name, sub.ca_id, sub.pk, source, end, status)
        for i in range(args.imported):
            name = f"host{i}.zone{i % 5000}.example.com"
            not_after = now + timedelta(days=rng.uniform(-60, 400))
            status = "revoked" if i % 97 == 0 else ("expired" if not_after < now else "active")
            ca_id = (None, cas[1].pk, cas[2].pk)[i % 3]
            write(name, ca_id, None, "imported", not_after, status)
    print(f"certificates copied in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    outcomes = ["done"] * 17 + ["failed", "failed", "cancelled"]
    orders = []
    for i in range(20_000):
        created = now - timedelta(minutes=rng.uniform(1, 60 * 24 * 90))
        step = outcomes[i % len(outcomes)]
        orders.append(
            AcmeOrder(
                organization=org,
                ca=cas[2],
                subscriber=subscribers[i % len(subscribers)],
                identifiers=[{"type": "dns", "value": f"svc{i}.example.com"}],
                challenge_type="dns-01",
                status="valid" if step == "done" else "invalid",
                step=step,
                error_type="urn:ietf:params:acme:error:rateLimited" if step == "failed" else "",
                last_error="too many certificates" if step == "failed" else "",
                created_at=created,
                finished_at=created + timedelta(seconds=rng.lognormvariate(3, 1)),
            )
        )
    AcmeOrder.objects.bulk_create(orders, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE pki_certificate")
        cursor.execute("ANALYZE pki_subscriber")
        cursor.execute("ANALYZE acmeca_acmeorder")
    print(f"filled in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=50_000)
    parser.add_argument("--generations", type=int, default=12, help="certificates per subscriber")
    parser.add_argument("--imported", type=int, default=400_000, help="certificates without a subscriber")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--fill-only", action="store_true")
    args = parser.parse_args()

    system, org, user = bench_setup("bench-auditor", "auditor")
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from certmgr import services as core
    from certmgr.actors import Actor
    from pki import lifecycle
    from pki.models import Certificate, CertificateAuthority

    root, issuing = bench_hierarchy(org, system)
    # An external CA row for the labels; no account: nothing here talks to it.
    acme = CertificateAuthority.objects.get_or_create(organization=org, name="Bench ACME", kind="acme")[0]
    cas = [root, issuing, acme]

    wanted = args.subscribers * args.generations + args.imported
    total = Certificate.objects.filter(organization=org).count()
    if total < wanted:
        fill(org, cas, args, system=system)
        total = Certificate.objects.filter(organization=org).count()
    if args.fill_only:
        return
    from reports import dashboard

    # --- the sweep's due query -----------------------------------------------------------------------
    now = timezone.now()
    current = Certificate.objects.filter(status="active", next_renewal_at__isnull=False).count()
    at = now + timedelta(days=60 * DUE_TARGET / max(current, 1))
    due = lifecycle.plan(at)
    sql, params = (
        lifecycle.due_for_renewal(at)
        .values_list("pk", "subscriber_id", "common_name", "names_text", "next_renewal_at", "not_after")
        .query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params)
        explain = "\n".join(line for (line,) in cursor.fetchall())

    secret = core.create_api_token(org, user, name="bench", role="auditor", actor=system).secret
    token_client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    settings.CERTMGR_METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    ip_client = Client(REMOTE_ADDR="127.0.0.1")
    admin = Client()
    admin.force_login(user)
    auditor = Actor.for_user(user)

    def metrics(client, cache_seconds: int = 0):
        """A scrape with the body cache off (every scrape computes) or on (CERTMGR_METRICS_CACHE_SECONDS)."""

        def fetch():
            settings.CERTMGR_METRICS_CACHE_SECONDS = cache_seconds
            response = client.get("/metrics")
            assert response.status_code == 200, response.content[:300]
            return response

        return fetch

    body = metrics(token_client)().content
    timings = {}
    for label, fn, n in (
        (f"`lifecycle.plan(at)`: {len(due):,} due of {total:,}", lambda: lifecycle.plan(at), args.requests),
        ("`dashboard.build()` (the queries alone)", lambda: dashboard.build(auditor), args.requests),
        ("admin dashboard page (session, auditor)", lambda: admin.get("/admin/dashboard/"), args.requests),
        ("`/metrics`, API token (one organization)", metrics(token_client), args.requests),
        ("`/metrics`, allow-listed IP (every organization)", metrics(ip_client), args.requests),
        ("`/metrics`, API token, cache on (30 s)", metrics(token_client, 30), args.requests),
        ("`/metrics`, allow-listed IP, cache on (30 s)", metrics(ip_client, 30), args.requests),
    ):
        fn()  # warm up
        samples = timed(fn, n)
        timings[label] = (percentile(samples, 50), percentile(samples, 95), n)

    print("```\n" + explain + "\n```\n")
    print(f"{total:,} certificates; {current:,} with a renewal time; {os.cpu_count()} cores")
    lines = body.count(b"\n")
    print(f"/metrics body: {len(body):,} bytes, {lines:,} lines\n")
    print("| measurement | p50 ms | p95 ms | runs |")
    print("|---|---|---|---|")
    for label, (p50, p95, n) in timings.items():
        print(f"| {label} | {p50:.1f} | {p95:.1f} | {n} |")


if __name__ == "__main__":
    main()
