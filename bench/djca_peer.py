"""The django-ca peer of ``pki_bench.py --issuance-only``: run by the interpreter of django-ca's own
virtualenv (``pki_bench.py`` makes it, django-ca is no certmgr dependency), never imported by certmgr.

    /tmp/djca-venv/bin/python bench/djca_peer.py --settings-dir DIR --database NAME --issue N

A standalone Django project (settings written to DIR) on a fresh PostgreSQL database: migrate, a P-256 root
and a P-256 intermediate CA whose keys live in django-ca's ``db`` key backend, then ``N`` certificates from
the intermediate with ``Certificate.objects.create_cert``, one at a time, each with a new P-256 key and CSR,
SHA-256 and one DNS SAN. Prints one JSON line: {"per_second": ..., "cpu_us": ..., "statements": ...,
"versions": {...}} (``cpu_us``: this process's CPU a certificate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

SETTINGS = """
SECRET_KEY = "djca-bench-" + "k" * 40
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_object_actions",
    "django_ca",
]
DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "USER": "postgres",
        "NAME": {database!r},
    }}
}}
CA_KEY_BACKENDS = {{"default": {{"BACKEND": "django_ca.key_backends.db.DBBackend"}}}}
CA_DEFAULT_HOSTNAME = "ca.example.com"
CA_DEFAULT_SIGNATURE_HASH_ALGORITHM = "SHA-256"
CA_MIN_KEY_SIZE = 2048
ROOT_URLCONF = "djca_bench_urls"
"""
URLS = """
from django.urls import include, path

urlpatterns = [path("django_ca/", include("django_ca.urls"))]
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings-dir", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--issue", type=int, default=300)
    args = parser.parse_args()

    directory = Path(args.settings_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "djca_bench_settings.py").write_text(SETTINGS.format(database=args.database))
    (directory / "djca_bench_urls.py").write_text(URLS)
    sys.path.insert(0, str(directory))
    os.environ["DJANGO_SETTINGS_MODULE"] = "djca_bench_settings"

    import django

    django.setup()
    import cryptography
    import django_ca
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_ca.key_backends import key_backends
    from django_ca.models import Certificate, CertificateAuthority

    call_command("migrate", verbosity=0)
    backend = key_backends["default"]
    now = datetime.now(tz=UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    create = backend.get_create_private_key_options("EC", None, "secp256r1", {})
    store = backend.get_store_private_key_options({})
    root = CertificateAuthority.objects.init(
        "Bench Root", backend, create, name("Bench Root"), now + timedelta(days=3650), key_type="EC",
        algorithm=hashes.SHA256(), path_length=1,
    )  # fmt: skip
    issuing = CertificateAuthority.objects.init(
        "Bench Issuing", backend, create, name("Bench Issuing"), now + timedelta(days=1825), key_type="EC",
        algorithm=hashes.SHA256(), parent=root,
        use_parent_private_key_options=backend.get_use_parent_private_key_options(root, {}),
    )  # fmt: skip
    del store
    use = backend.get_use_private_key_options(issuing, {})

    def one(i: int) -> Certificate:
        host = f"host{i}.example.com"
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(name(host)).sign(key, hashes.SHA256())
        san = x509.Extension(
            x509.SubjectAlternativeName.oid, False, x509.SubjectAlternativeName([x509.DNSName(host)])
        )
        return Certificate.objects.create_cert(
            issuing,
            use,
            csr,
            subject=name(host),
            not_after=timedelta(days=90),
            algorithm=hashes.SHA256(),
            extensions=[san],
        )

    one(-1)  # warm up
    with CaptureQueriesContext(connection) as queries:
        sample = one(-2)
    assert sample.pub.loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    start, started_cpu = time.perf_counter(), time.process_time()
    for i in range(args.issue):
        one(i)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - started_cpu
    print(
        json.dumps(
            {
                "per_second": args.issue / elapsed,
                "cpu_us": cpu / args.issue * 1e6,
                "statements": len(queries.captured_queries),
                "sql": [q["sql"][:120] for q in queries.captured_queries],
                "versions": {
                    "django-ca": django_ca.__version__,
                    "django": django.__version__,
                    "cryptography": cryptography.__version__,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
