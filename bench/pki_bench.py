"""PKI at scale: a million certificates in PostgreSQL, then the API list, the admin changelist and issuance.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/certmgr_bench .venv/bin/python bench/pki_bench.py \
        [--certificates 1000000] [--requests 200] [--issue 300]

The database named in DATABASE_URL is created if missing and filled once (re-runs reuse the rows when the
count matches). Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "certmgr.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-" + "k" * 50)
os.environ.setdefault("CERTMGR_ENCRYPTION_KEYS", "tF2bN6l7Tq8u6R9rJ3xZ0m0E1wq7y8v5b4n3m2l1k0A=")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/certmgr_bench")


def ensure_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(fn, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--certificates", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--issue", type=int, default=300)
    args = parser.parse_args()

    ensure_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from certmgr import services as core
    from certmgr.actors import Actor
    from certmgr.models import Organization
    from pki import services, x509
    from pki.models import Certificate, CertificateAuthority, Subscriber

    system = Actor.system("bench")
    org = Organization.objects.filter(slug="bench").first() or core.create_organization("Bench", actor=system)
    user = get_user_model().objects.filter(username="bench-operator").first()
    if user is None:
        user = get_user_model().objects.create_user(
            "bench-operator", password="bench-password-123", is_staff=True
        )
        core.add_member(org, user, "operator", actor=system)
    ca = CertificateAuthority.objects.filter(organization=org, name="Bench Issuing").first()
    if ca is None:
        root = services.create_internal_ca(
            org, name="Bench Root", kind="internal-root", subject={"common_name": "Bench Root"}, actor=system
        )
        ca = services.create_internal_ca(
            org,
            name="Bench Issuing",
            kind="internal-intermediate",
            parent=root,
            subject={"common_name": "Bench Issuing"},
            actor=system,
        )
    sub = Subscriber.objects.filter(organization=org, name="bench").first() or services.save_subscriber(
        org, actor=system, name="bench", ca=ca, common_name="bench.example.com", validity_days=90
    )

    # --- fill ---------------------------------------------------------------------------------------------
    have = Certificate.objects.filter(organization=org).count()
    if have < args.certificates:
        sample = services.issue(sub, actor=system)
        pem, chain = sample.certificate_pem, sample.chain_pem
        now = timezone.now()
        rng = random.Random(42)  # noqa: S311 - synthetic data, not secrets
        start = time.perf_counter()
        columns = (
            "organization_id, ca_id, subscriber_id, source, serial, certificate_pem, chain_pem, private_key, "
            "fingerprint_sha256, fingerprint_sha1, subject_dn, issuer_dn, common_name, sans, names_text, "
            "key_algorithm, not_before, not_after, status, revocation_reason, created_at"
        )
        with (
            connection.cursor() as cursor,
            cursor.connection.cursor().copy(f"COPY pki_certificate ({columns}) FROM STDIN") as copy,
        ):
            for i in range(have, args.certificates):
                name = f"host{i}.zone{i % 5000}.example.com"
                not_after = now + timedelta(days=rng.uniform(-60, 400))
                status = "revoked" if i % 97 == 0 else ("expired" if not_after < now else "active")
                copy.write_row(
                    (
                        org.pk,
                        ca.pk,
                        None,
                        "imported",
                        format(rng.getrandbits(120), "x"),
                        pem,
                        chain,
                        "",
                        format(rng.getrandbits(256), "064x"),
                        format(rng.getrandbits(160), "040x"),
                        f"CN={name}",
                        "CN=Bench Issuing",
                        name,
                        f'["{name}"]',
                        name,
                        rng.choice(["ec-p256", "rsa-2048"]),
                        not_after - timedelta(days=90),
                        not_after,
                        status,
                        "key_compromise" if status == "revoked" else "",
                        now,
                    )
                )
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE pki_certificate")
        print(
            f"filled {args.certificates - have} rows in {time.perf_counter() - start:.0f} s", file=sys.stderr
        )

    total = Certificate.objects.filter(organization=org).count()
    secret = core.create_api_token(org, user, name="bench", role="operator", actor=system).secret
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    admin = Client()
    admin.force_login(user)

    def api_list():
        response = api.get("/api/v1/certificates/", {"expires_within_days": 30, "page_size": 50})
        assert response.status_code == 200 and len(response.json()["results"]) == 50, response.content[:300]

    def api_search():
        response = api.get("/api/v1/certificates/", {"search": "zone4242.example", "page_size": 50})
        assert response.status_code == 200, response.content[:300]

    def admin_list():
        response = admin.get("/admin/pki/certificate/")
        assert response.status_code == 200

    def admin_expiring():
        response = admin.get("/admin/pki/certificate/", {"expiring_within": "30"})
        assert response.status_code == 200

    results = {}
    for label, fn, n in (
        ("API list, expiring within 30 days, 50 a page", api_list, args.requests),
        ("API search, partial domain", api_search, args.requests),
        ("admin changelist", admin_list, max(20, args.requests // 4)),
        ("admin changelist, expiring within 30 days", admin_expiring, max(20, args.requests // 4)),
    ):
        fn()  # warm up
        samples = timed(fn, n)
        results[label] = (percentile(samples, 50), percentile(samples, 95), n)

    # --- issuance: through the service vs raw cryptography build+sign ------------------------------------
    material = services.ca_material(ca)
    issuer_cert, issuer_key = material.certificate, material.key
    leaf_key = x509.generate_key("ec-p256")
    start = time.perf_counter()
    for i in range(args.issue):
        x509.build_leaf_certificate(
            csr_or_public_key=leaf_key.public_key(),
            subject=x509.Subject(common_name=f"raw{i}.example.com"),
            sans=[f"raw{i}.example.com"],
            issuer_cert=issuer_cert,
            issuer_key=issuer_key,
            validity_days=90,
        )
    raw_rate = args.issue / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(args.issue):
        services.issue(sub, actor=system)
    service_rate = args.issue / (time.perf_counter() - start)

    print(f"\n{total:,} certificates in PostgreSQL; {os.cpu_count()} cores\n")
    print("| measurement | p50 ms | p95 ms | requests |")
    print("|---|---|---|---|")
    for label, (p50, p95, n) in results.items():
        print(f"| {label} | {p50:.1f} | {p95:.1f} | {n} |")
    print()
    print("| issuance (EC P-256 leaf, new key each) | per second |")
    print("|---|---|")
    print(f"| raw `cryptography` build + sign (key made once) | {raw_rate:.0f} |")
    print(
        f"| `pki.services.issue` (key generation, policy, encrypt key, store, audit) | {service_rate:.0f} |"
    )
    print(f"| ratio | {service_rate / raw_rate:.2f} |")
    print(
        f"\nmedian of API list: {statistics.median([results[k][0] for k in results]):.1f} ms", file=sys.stderr
    )


if __name__ == "__main__":
    main()
