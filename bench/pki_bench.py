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
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "certmgr.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-" + "k" * 50)
os.environ.setdefault("CERTMGR_ENCRYPTION_KEYS", "tF2bN6l7Tq8u6R9rJ3xZ0m0E1wq7y8v5b4n3m2l1k0A=")
os.environ.setdefault("CERTMGR_AUDIT_KEYS", "bench-audit-key-not-for-production-0123456789")
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
    "key_algorithm, not_before, not_after, status, revocation_reason, next_renewal_at, created_at, csr_pem"
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
                    "",  # csr_pem: issued from a key certmgr made
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


def issuance_rates(org, ca, sub, system, args) -> dict[str, float]:
    """Certificates a second: raw cryptography, build_leaf_certificate, issue() one by one, issue_batch()."""
    from cryptography import x509 as cx509
    from django.db import connection
    from django.utils import timezone

    from pki import services, x509

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

    cpu: dict[str, float] = {}  # this process's CPU µs a certificate (the database's work not included)

    def rate(fn, n: int, *, per_call: int = 1, key: str = "") -> float:
        start, started_cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            fn(i)
        if key:
            cpu[key] = (time.process_time() - started_cpu) / (n * per_call) * 1e6
        return n * per_call / (time.perf_counter() - start)

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
    service_rate = rate(lambda i: services.issue(sub, actor=system).certificate, args.issue, key="issue")
    services.issue_batch([sub] * args.batch, actor=system)  # warm up
    batch_rate = rate(
        lambda i: services.issue_batch([sub] * args.batch, actor=system),
        args.batches,
        per_call=args.batch,
        key="batch",
    )
    return {"raw": raw_rate, "leaf": leaf_rate, "issue": service_rate, "batch": batch_rate} | {
        f"{k}_cpu": v for k, v in cpu.items()
    }


def print_issuance(rates: dict[str, float], args, *, rounds: int = 1) -> None:
    raw = rates["raw"]
    label = f"medians of {rounds} rounds" if rounds > 1 else "one round"
    print(
        f"| issuance (EC P-256 leaf, P-256 issuing CA; {label}) | per second | to raw "
        "| client CPU µs a certificate |"
    )
    print("|---|---|---|---|")
    rows = [
        ("raw `cryptography` build + sign, key made once", "raw"),
        ("`pki.x509.build_leaf_certificate` (checks + build + sign), key made once", "leaf"),
        (
            "django-ca 3.2 `Certificate.objects.create_cert`, one at a time (new key + CSR, `db` key "
            "backend, one INSERT in autocommit, no audit)",
            "djca",
        ),
        (
            "`pki.services.issue`, one at a time (new key, policy, sign, encrypt key, store, audit, commit)",
            "issue",
        ),
        (f"`pki.services.issue_batch`, {args.batch} a call (the same work, one commit a batch)", "batch"),
    ]
    for text, key in rows:
        if key in rates:
            used = f"{rates[key + '_cpu']:,.0f}" if key + "_cpu" in rates else ""
            print(f"| {text} | {rates[key]:,.0f} | {rates[key] / raw:.2f} | {used} |")
    if "djca" in rates:
        print(
            f"\ncertmgr to django-ca: issue() {rates['issue'] / rates['djca']:.2f}x, "
            f"issue_batch() {rates['batch'] / rates['djca']:.2f}x"
        )


# --- issuance against the django-ca peer, in rounds on fresh databases ------------------------------------
PEER = "django-ca==3.2.0"


def peer_python(venv: str) -> str:
    """django-ca's interpreter: its own virtualenv, made here once (django-ca is no certmgr dependency)."""
    import subprocess

    python = Path(venv) / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)  # noqa: S603 - our own arguments
    probe = subprocess.run([str(python), "-c", "import django_ca"], capture_output=True)  # noqa: S603
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEER, "psycopg[binary]"], check=True)  # noqa: S603
    return str(python)


def fresh_database(name: str) -> None:
    import psycopg

    url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def use_database(name: str) -> None:
    """Point this process's Django at database ``name`` (fresh, migrated by the caller)."""
    from django.conf import settings
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections

    connections.close_all()
    settings.DATABASES["default"]["NAME"] = name
    connections["default"].settings_dict["NAME"] = name
    ContentType.objects.clear_cache()


def certmgr_round(name: str, args) -> dict[str, float]:
    fresh_database(name)
    os.environ["DATABASE_URL"] = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + name
    import django

    django.setup()
    use_database(name)
    system, org, _ = bench_setup("bench-operator", "operator")
    from pki import services
    from pki.models import Subscriber

    _, ca = bench_hierarchy(org, system)
    sub = Subscriber.objects.filter(organization=org, name="bench").first() or services.save_subscriber(
        org, actor=system, name="bench", ca=ca, common_name="bench.example.com", validity_days=90
    )
    return issuance_rates(org, ca, sub, system, args)


def peer_round(python: str, name: str, args) -> dict[str, float]:
    import json
    import subprocess

    fresh_database(name)
    with tempfile.TemporaryDirectory(prefix="djca-bench-") as directory:
        done = subprocess.run(  # noqa: S603 - our own interpreter and script
            [
                python,
                str(ROOT / "bench" / "djca_peer.py"),
                "--settings-dir",
                directory,
                "--database",
                name,
                "--issue",
                str(args.issue),
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=directory,
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  django-ca: {result['statements']} statement(s) a certificate, {result['versions']}",
        file=sys.stderr,
    )
    return {"djca": result["per_second"], "djca_cpu": result["cpu_us"]}


def issuance_rounds(args) -> None:
    """``--issuance-only``: certmgr and django-ca alternately, each round on fresh databases (same
    PostgreSQL, Django and cryptography); prints the medians."""
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
    python = None if args.no_peer else peer_python(args.peer_venv)
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        rates: dict[str, float] = {}
        steps = [("certmgr", lambda r=r: certmgr_round(f"{base}_issue_{r}", args))]
        if python is not None:
            steps.append(("django-ca", lambda r=r: peer_round(python, f"{base}_djca_{r}", args)))
        if r % 2:
            steps.reverse()  # alternate who goes first
        for who, step in steps:
            step_rates = step()
            rates.update(step_rates)
            print(
                f"round {r + 1} {who}: "
                + ", ".join(
                    f"{k} {v:,.0f} µs CPU" if k.endswith("_cpu") else f"{k} {v:,.0f}/s"
                    for k, v in step_rates.items()
                ),
                file=sys.stderr,
            )
        rounds.append(rates)
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores\n")
    print_issuance(medians, args, rounds=len(rounds))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--certificates", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--issue", type=int, default=300, help="certificates for each one-at-a-time rate")
    parser.add_argument("--batch", type=int, default=500, help="certificates per issue_batch call")
    parser.add_argument("--batches", type=int, default=10, help="issue_batch calls")
    parser.add_argument(
        "--issuance-only",
        action="store_true",
        help="no fill, no request timings: the issuance rows against the django-ca peer, in rounds",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating certmgr/django-ca rounds")
    parser.add_argument(
        "--peer-venv",
        default=os.path.join(tempfile.gettempdir(), "djca-venv"),
        help="django-ca's own virtualenv",
    )
    parser.add_argument("--no-peer", action="store_true", help="without the django-ca rows")
    args = parser.parse_args()
    if args.issuance_only:
        issuance_rounds(args)
        return

    system, org, user = bench_setup("bench-operator", "operator")
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from certmgr import services as core
    from pki import services
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

    issuance = issuance_rates(org, ca, sub, system, args)
    print(f"\n{total:,} certificates in PostgreSQL; {os.cpu_count()} cores\n")
    if results:
        print("| measurement | p50 ms | p95 ms | requests |")
        print("|---|---|---|---|")
        for label, (p50, p95, n) in results.items():
            print(f"| {label} | {p50:.1f} | {p95:.1f} | {n} |")
        print()
    print_issuance(issuance, args)
    if results:
        median = statistics.median([results[k][0] for k in results])
        print(f"\nmedian of the request timings: {median:.1f} ms", file=sys.stderr)


if __name__ == "__main__":
    main()
