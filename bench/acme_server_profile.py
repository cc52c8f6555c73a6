"""Per-request cost of certmgr's ACME server, in process: SQL statements and CPU time of each resource of an
order, with Django's test client (no TLS, no gunicorn, no other process), so the numbers do not depend on the
machine's load the way the wall times of ``acme_server_bench.py`` do.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/certmgr_bench_acmeserver_profile \
        .venv/bin/python bench/acme_server_profile.py [--orders 30] [--cprofile out.pstats]

It recreates the database (its name must start with ``certmgr_bench_acmeserver``), makes the bench's
organization, CAs and profile, registers one account and runs ``--orders`` orders (HTTP-01 answered by the
bench's token server, names resolved by its DNS responder): newOrder, the order and authorization reads, the
challenge POST, the validation (``acmeserver.tasks.validate_challenge``, called here as the worker would),
finalize, the certificate download. Printed per step: the SQL statements of one request (the same for every
order) and the median CPU time of the process (``time.process_time``) over the orders.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import acme_server_bench as bench  # bench/ is the script's path (sets the bench's environment)
from acme_common import drop_database, recreate_database

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument("--cprofile", help="write a cProfile of the orders (not the setup) to this file")
    parser.add_argument("--sql", action="store_true", help="print the SQL of the last order's requests")
    args = parser.parse_args()
    recreate_database(bench.DB_PREFIX)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    try:
        run(args)
    finally:
        drop_database(bench.DB_PREFIX)


def run(args) -> None:
    import josepy as jose
    from acme import crypto_util
    from acme import jws as acme_jws
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from acmeserver.models import AcmeServerChallenge

    org, _root, _issuing, profile = bench.setup_certmgr()
    http = Client()
    base = f"http://testserver/acme/{org.slug}/{profile.slug}/"
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    state: dict[str, str | None] = {"kid": None, "nonce": None}
    cpu: dict[str, list[float]] = defaultdict(list)
    queries: dict[str, int] = {}
    sql: dict[str, list[str]] = {}

    def measure(step: str, call):
        with CaptureQueriesContext(connection) as captured:
            started = time.process_time()
            response = call()
            cpu[step].append(time.process_time() - started)
        queries[step] = len(captured)
        sql[step] = [q["sql"] for q in captured.captured_queries]
        return response

    def post(step: str, url: str, payload=None, *, use_jwk: bool = False):
        body = b"" if payload is None else json.dumps(payload).encode()
        nonce = state["nonce"] or http.head(base + "new-nonce")["Replay-Nonce"]
        signed = acme_jws.JWS.sign(
            body,
            key=key,
            alg=jose.ES256,
            nonce=jose.decode_b64jose(nonce),
            url=url,
            kid=None if use_jwk else state["kid"],
        )
        response = measure(
            step,
            lambda: http.post(url, signed.json_dumps(), content_type="application/jose+json"),
        )
        assert response.status_code in (200, 201), (step, response.status_code, response.content)
        state["nonce"] = response["Replay-Nonce"]
        return response

    tokens: dict[str, str] = {}
    port = bench.free_port()
    settings.CERTMGR_ACME_VALIDATION_HTTP_PORT = port
    settings.CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.CERTMGR_ACME_AUTHZ_HOLD_SECONDS = 0  # the validation runs in this process, in order
    with contextlib.ExitStack() as stack:
        dns_port = stack.enter_context(bench.dns_server())
        settings.CERTMGR_ACME_VALIDATION_RESOLVERS = f"{bench.HOST}:{dns_port}"
        stack.enter_context(bench.token_server(tokens, port))
        measure("newNonce (HEAD)", lambda: http.head(base + "new-nonce"))
        state["kid"] = post("newAccount", base + "new-account", {"termsOfServiceAgreed": True}, use_jwk=True)[
            "Location"
        ]
        profiler = cProfile.Profile(time.process_time) if args.cprofile else None
        for i in range(args.orders + 1):  # the first one warms up (compiled statements, caches)
            if i == 1:
                cpu.clear()
                if profiler is not None:
                    profiler.enable()
            name = f"p{i}-{os.getpid()}.{bench.ZONE}"
            order = post("newOrder", base + "new-order", {"identifiers": [{"type": "dns", "value": name}]})
            order_url, body = order["Location"], order.json()
            authz_url = body["authorizations"][0]
            authz = post("authorization (POST-as-GET)", authz_url).json()
            challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
            tokens[challenge["token"]] = f"{challenge['token']}.{_thumbprint(key)}"
            post("challenge POST", challenge["url"], {})
            pk = AcmeServerChallenge.objects.get(token=challenge["token"]).pk
            measure("validation (the worker's task)", lambda pk=pk: _validate(pk))
            post("authorization (POST-as-GET)", authz_url)
            post("order (POST-as-GET)", order_url)
            pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            csr = crypto_util.make_csr(pem, [name])
            from cryptography import x509 as cx509

            der = cx509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER)
            final = post("finalize", body["finalize"], {"csr": jose.encode_b64jose(der)}).json()
            assert final["status"] == "valid", final
            chain = post("certificate download", final["certificate"])
            assert chain["Content-Type"] == "application/pem-certificate-chain"
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
    print(
        f"{args.orders} orders after a warm-up one, one account, Django's test client, DEBUG={settings.DEBUG}"
    )
    print("| request | SQL statements | CPU ms (median) |")
    print("|---|---|---|")
    for step in queries:
        ms = statistics.median(cpu[step]) * 1000 if cpu.get(step) else float("nan")
        print(f"| {step} | {queries[step]} | {ms:.1f} |")
    if args.sql:
        for step, statements in sql.items():
            print(f"\n## {step}")
            for text in statements:
                print(" ", text[:300])


def _thumbprint(key) -> str:
    from acmeserver import jws

    return jws.thumbprint(key.public_key().to_json())


def _validate(pk: int) -> None:
    from acmeserver import tasks

    tasks.validate_challenge(pk)


if __name__ == "__main__":
    main()
