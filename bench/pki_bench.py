"""PKI at scale: a million certificates in PostgreSQL, then the API list, the admin changelist and issuance.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/certmgr_bench .venv/bin/python bench/pki_bench.py \
        [--certificates 1000000] [--requests 200] [--issue 300] [--batch 500 --batches 10] [--issuance-only]

The database named in DATABASE_URL is created if missing and filled once (re-runs reuse the rows when the
count matches). ``--issuance-only`` skips the fill and the request timings: the issuance section alone, on
whatever the database holds. Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
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


CERTIFICATE_COLUMNS = (
    "organization_id, ca_id, subscriber_id, source, serial, certificate_pem, chain_pem, private_key, "
    "fingerprint_sha256, fingerprint_sha1, subject_dn, issuer_dn, common_name, sans, names_text, "
    "key_algorithm, not_before, not_after, status, revocation_reason, next_renewal_at, created_at"
)


@contextlib.contextmanager
def certificate_copier(organization_id: int, pem: str, chain: str, rng: random.Random, now):
    """COPY synthetic certificate rows (one real PEM and chain, so rows are as wide as real ones); yields
    ``write(name, ca_id, subscriber_id, source, not_after, status, renew_at=None)``."""
    from django.db import connection

    with (
        connection.cursor() as cursor,
        cursor.connection.cursor().copy(f"COPY pki_certificate ({CERTIFICATE_COLUMNS}) FROM STDIN") as copy,
    ):

        def write(name, ca_id, subscriber_id, source, not_after, status, renew_at=None) -> None:
            copy.write_row(
                (
                    organization_id,
                    ca_id,
                    subscriber_id,
                    source,
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
                    renew_at,
                    now,
                )
            )

        yield write


def bench_setup(username: str, role: str):
    """The bench database migrated, its "Bench" organization and a member ``username`` with ``role``:
    returns (system actor, organization, user)."""
    ensure_database()
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from certmgr import services as core
    from certmgr.actors import Actor
    from certmgr.models import Organization

    call_command("migrate", verbosity=0)
    system = Actor.system("bench")
    org = Organization.objects.filter(slug="bench").first() or core.create_organization("Bench", actor=system)
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        user = get_user_model().objects.create_user(username, password="bench-password-123", is_staff=True)
        core.add_member(org, user, role, actor=system)
    return system, org, user


def bench_hierarchy(org, system):
    """The bench's internal CAs, made once: (Bench Root, Bench Issuing)."""
    from pki import services
    from pki.models import CertificateAuthority

    existing = {ca.name: ca for ca in CertificateAuthority.objects.filter(organization=org)}
    if "Bench Issuing" in existing:
        return existing["Bench Root"], existing["Bench Issuing"]
    root = services.create_internal_ca(
        org, name="Bench Root", kind="internal-root", subject={"common_name": "Bench Root"}, actor=system
    )
    issuing = services.create_internal_ca(
        org,
        name="Bench Issuing",
        kind="internal-intermediate",
        parent=root,
        subject={"common_name": "Bench Issuing"},
        actor=system,
    )
    return root, issuing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--certificates", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--issue", type=int, default=300, help="certificates for each one-at-a-time rate")
    parser.add_argument("--batch", type=int, default=500, help="certificates per issue_batch call")
    parser.add_argument("--batches", type=int, default=10, help="issue_batch calls")
    parser.add_argument("--issuance-only", action="store_true", help="no fill, no request timings")
    args = parser.parse_args()

    system, org, user = bench_setup("bench-operator", "operator")
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from certmgr import services as core
    from pki import services, x509
    from pki.models import Certificate, Subscriber

    _, ca = bench_hierarchy(org, system)
    sub = Subscriber.objects.filter(organization=org, name="bench").first() or services.save_subscriber(
        org, actor=system, name="bench", ca=ca, common_name="bench.example.com", validity_days=90
    )

    # --- fill ---------------------------------------------------------------------------------------------
    have = Certificate.objects.filter(organization=org).count()
    if have < args.certificates and not args.issuance_only:
        sample = services.issue(sub, actor=system).certificate
        pem, chain = sample.certificate_pem, sample.chain_pem
        now = timezone.now()
        rng = random.Random(42)  # noqa: S311 - synthetic data, not secrets
        start = time.perf_counter()
        with certificate_copier(org.pk, pem, chain, rng, now) as write:
            for i in range(have, args.certificates):
                name = f"host{i}.zone{i % 5000}.example.com"
                not_after = now + timedelta(days=rng.uniform(-60, 400))
                status = "revoked" if i % 97 == 0 else ("expired" if not_after < now else "active")
                write(name, ca.pk, None, "imported", not_after, status)
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
        ()
        if args.issuance_only
        else (
            ("API list, expiring within 30 days, 50 a page", api_list, args.requests),
            ("API search, partial domain", api_search, args.requests),
            ("admin changelist", admin_list, max(20, args.requests // 4)),
            ("admin changelist, expiring within 30 days", admin_expiring, max(20, args.requests // 4)),
        )
    ):
        fn()  # warm up
        samples = timed(fn, n)
        results[label] = (percentile(samples, 50), percentile(samples, 95), n)

    # --- issuance: raw cryptography vs the service, one at a time and in batches ------------------------
    from cryptography import x509 as cx509

    with connection.cursor() as cursor:  # fresh statistics, as autovacuum keeps them on a live system
        cursor.execute("ANALYZE pki_certificate")

    material = services.ca_material(ca)
    issuer_cert, issuer_key = material.certificate, material.key
    leaf_key = x509.generate_key("ec-p256")
    # Raw: cryptography's CertificateBuilder with the extensions a service-issued certificate carries (AKI,
    # CRL DP and AIA objects made once, as any tight loop would), a new SAN and serial each, key made once.
    sample = cx509.load_pem_x509_certificate(
        services.issue(sub, actor=system).certificate.certificate_pem.encode()
    )
    fixed = [e for e in sample.extensions if not isinstance(e.value, cx509.SubjectAlternativeName)]
    signing_hash = x509.signature_hash(x509.key_algorithm_of(issuer_key))
    now = timezone.now()

    def raw_sign(i: int) -> None:
        name = f"raw{i}.example.com"
        builder = (
            cx509.CertificateBuilder()
            .subject_name(x509.Subject(common_name=name).to_name())
            .issuer_name(issuer_cert.subject)
            .public_key(leaf_key.public_key())
            .serial_number(cx509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=90))
            .add_extension(cx509.SubjectAlternativeName([cx509.DNSName(name)]), critical=False)
        )
        for extension in fixed:
            builder = builder.add_extension(extension.value, critical=extension.critical)
        builder.sign(issuer_key, signing_hash)

    def rate(fn, n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        return n / (time.perf_counter() - start)

    raw_rate = rate(raw_sign, args.issue * 4)
    crl, aia = services.crl_url(ca), services.aia_url(ca)
    leaf_rate = rate(
        lambda i: x509.build_leaf_certificate(
            csr_or_public_key=leaf_key.public_key(),
            subject=x509.Subject(common_name=f"raw{i}.example.com"),
            sans=[f"raw{i}.example.com"],
            issuer_cert=issuer_cert,
            issuer_key=issuer_key,
            validity_days=90,
            crl_url=crl,
            aia_url=aia,
        ),
        args.issue * 4,
    )
    service_rate = rate(lambda i: services.issue(sub, actor=system).certificate, args.issue)
    services.issue_batch([sub] * args.batch, actor=system)  # warm up
    batch_rate = (
        rate(lambda i: services.issue_batch([sub] * args.batch, actor=system), args.batches) * args.batch
    )

    print(f"\n{total:,} certificates in PostgreSQL; {os.cpu_count()} cores\n")
    if results:
        print("| measurement | p50 ms | p95 ms | requests |")
        print("|---|---|---|---|")
        for label, (p50, p95, n) in results.items():
            print(f"| {label} | {p50:.1f} | {p95:.1f} | {n} |")
        print()
    print("| issuance (EC P-256 leaf, P-256 issuing CA) | per second | ratio to raw |")
    print("|---|---|---|")
    print(f"| raw `cryptography` build + sign, key made once | {raw_rate:,.0f} | 1.00 |")
    print(
        f"| `pki.x509.build_leaf_certificate` (checks + build + sign), key made once | {leaf_rate:,.0f} "
        f"| {leaf_rate / raw_rate:.2f} |"
    )
    print(
        "| `pki.services.issue`, one at a time (new key, policy, sign, encrypt key, store, audit, commit) "
        f"| {service_rate:,.0f} | {service_rate / raw_rate:.2f} |"
    )
    print(
        f"| `pki.services.issue_batch`, {args.batch} a call (the same work, one commit a batch) "
        f"| {batch_rate:,.0f} | {batch_rate / raw_rate:.2f} |"
    )
    if results:
        median = statistics.median([results[k][0] for k in results])
        print(f"\nmedian of the request timings: {median:.1f} ms", file=sys.stderr)


if __name__ == "__main__":
    main()
