"""certmgr's ACME server (acmeserver) next to Debian's Pebble, the same clients against both in one run.

    .venv/bin/python bench/acme_server_bench.py [--count 50] [--threads 4] [--gunicorn-workers 2] \
        [--gunicorn-threads 4] [--q-workers 2] [--broker redis|orm] [--certbot-count 20] [--bad-input] \
        [--keep]

What it does, all on loopback:

- a tiny DNS server in this process answers ``A 127.0.0.1`` for every name (both servers' validators ask it:
  Pebble's ``-dnsserver`` and certmgr's ``CERTMGR_ACME_VALIDATION_RESOLVERS``), and a tiny HTTP server
  answers ``/.well-known/acme-challenge/<token>`` on the HTTP-01 port of each;
- drops and creates the PostgreSQL database ``certmgr_bench_acmeserver`` (``DATABASE_URL`` overrides),
  migrates, makes an organization, a root and an issuing CA and an ACME profile (HTTP-01, 30 days);
- starts certmgr as production runs it: ``gunicorn certmgr.wsgi`` with ``--certfile/--keyfile`` (gthread
  workers, ``DEBUG=0``) and ``manage.py qcluster`` (challenges are validated in the worker, as in
  production), with the README's production broker, Redis (``REDIS_URL``, ``--redis-url``; its queue emptied
  first), or with ``--broker orm`` the django-q2 ORM broker (``CERTMGR_ORM_POLL``, 0.1 s); and Debian's
  ``pebble`` (``PEBBLE_VA_NOSLEEP=1``, ``PEBBLE_WFE_NONCEREJECT=0``: no badNonce retries on either side);
- (a) the ``acme`` library in ``--threads`` threads (one account each, new P-256 key and CSR an order,
  HTTP-01, authorization and order polled every 10 ms, chain downloaded) issues ``--count`` certificates from
  each server, after one warm-up order; certmgr's are checked with ``openssl verify``;
- (c) while (a) runs against certmgr, a sampler reads ``VmRSS`` of gunicorn's master and workers from
  ``/proc/<pid>/status`` every 50 ms (the peak of each is printed);
- (b) certbot (the venv's, ``certonly --standalone`` on the HTTP-01 port) issues ``--certbot-count`` names in
  sequence against each server: certmgr's share of certbot's time is (certmgr - pebble) / certmgr;
- ``--bad-input``: each RFC 8555 §6 violation and a malformed CSR sent to certmgr by hand (requests over
  TLS), the problem type checked and the answer's wall time printed (target: each under 100 ms).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

from acme_common import drop_database, recreate_database  # bench/ is the script's path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_PREFIX = "certmgr_bench_acmeserver"
ENV = {
    "DJANGO_SETTINGS_MODULE": "certmgr.settings",
    "DEBUG": "0",
    "SECRET_KEY": "bench-" + "k" * 50,
    "CERTMGR_ENCRYPTION_KEYS": "tF2bN6l7Tq8u6R9rJ3xZ0m0E1wq7y8v5b4n3m2l1k0A=",
    "CERTMGR_AUDIT_KEYS": "bench-audit-key-not-for-production-0123456789",
    "ALLOWED_HOSTS": "*",
    "SECURE_SSL_REDIRECT": "0",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_PREFIX}",
    "CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS": "127.0.0.0/8",
    "LOG_LEVEL": "WARNING",
}
for _k, _v in ENV.items():
    os.environ.setdefault(_k, _v)
HOST = "127.0.0.1"
ZONE = "bench.test"


# --- loopback helpers -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def dns_server() -> Iterator[int]:
    """UDP and TCP DNS on loopback: A 127.0.0.1 for every name, nothing else (NOERROR, empty)."""
    import socketserver

    import dns.message
    import dns.rdatatype
    import dns.rrset

    def answer(wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for q in query.question:
            if q.rdtype == dns.rdatatype.A:
                response.answer.append(dns.rrset.from_text(q.name, 5, "IN", "A", HOST))
        return response.to_wire()

    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            sock.sendto(answer(data), self.client_address)

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            size = int.from_bytes(self.rfile.read(2), "big")
            out = answer(self.rfile.read(size))
            self.wfile.write(len(out).to_bytes(2, "big") + out)

    port = free_port()
    udp = socketserver.ThreadingUDPServer((HOST, port), Udp)
    tcp = socketserver.ThreadingTCPServer((HOST, port), Tcp)
    for server in (udp, tcp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield port
    finally:
        for server in (udp, tcp):
            server.shutdown()
            server.server_close()


@contextlib.contextmanager
def token_server(tokens: dict[str, str], port: int) -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = tokens.get(self.path.rsplit("/", 1)[-1])
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer((HOST, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


def vm_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``, fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found = [pid]
    for child in children(pid):
        found += tree(child)
    return found


def cpu_of(pids: list[int]) -> dict[int, float]:
    return {pid: cpu_seconds(pid) for pid in pids}


class RssSampler(threading.Thread):
    """Peak VmRSS of gunicorn's master and each worker, sampled every 50 ms."""

    def __init__(self, master: int):
        super().__init__(daemon=True)
        self.master = master
        self.peaks: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in [self.master, *children(self.master)]:
                self.peaks[pid] = max(self.peaks.get(pid, 0), vm_rss_kb(pid))
            time.sleep(0.05)


# --- certmgr --------------------------------------------------------------------------------------------
def setup_certmgr():
    from certmgr import services
    from certmgr.actors import Actor
    from pki import services as pki_services

    system = Actor.system("acme server bench")
    org = services.create_organization("Bench", actor=system)
    root = pki_services.create_internal_ca(
        org,
        name="Root",
        kind="internal-root",
        subject={"common_name": "Bench Root CA"},
        key_algorithm="ec-p384",
        validity_days=3650,
        max_path_length=1,
        actor=system,
    )
    issuing = pki_services.create_internal_ca(
        org,
        name="Issuing",
        kind="internal-intermediate",
        parent=root,
        subject={"common_name": "Bench Issuing CA"},
        key_algorithm="ec-p256",
        validity_days=1825,
        max_path_length=0,
        actor=system,
    )
    from acmeserver import services as acme_services

    profile = acme_services.save_profile(
        org,
        actor=system,
        name="Bench",
        slug="bench",
        ca=issuing,
        validity_days=30,
        challenge_types=["http-01"],
        orders_per_hour=100000,
        max_pending_authorizations=100000,
    )
    return org, root, issuing, profile


@contextlib.contextmanager
def certmgr_servers(base: Path, args, dns_port: int, http01_port: int) -> Iterator[SimpleNamespace]:
    from tests import acme_testbed

    ca_path, cert_path, key_path = acme_testbed._tls_material(base)
    port = free_port()
    env = {**os.environ}
    env.update(
        CERTMGR_ACME_VALIDATION_RESOLVERS=f"{HOST}:{dns_port}",
        CERTMGR_ACME_VALIDATION_HTTP_PORT=str(http01_port),
        CERTMGR_WORKERS=str(args.q_workers),
        CERTMGR_BASE_URL=f"https://localhost:{port}",
        REDIS_URL=args.redis_url if args.broker == "redis" else "",
    )
    bin_dir = Path(sys.executable).parent
    web = [
        str(bin_dir / "gunicorn"),
        "certmgr.wsgi:application",
        "--bind",
        f"{HOST}:{port}",
        "--certfile",
        str(cert_path),
        "--keyfile",
        str(key_path),
        "--workers",
        str(args.gunicorn_workers),
        "--threads",
        str(args.gunicorn_threads),
    ]
    worker = [sys.executable, str(ROOT / "manage.py"), "qcluster"]
    procs = []
    try:
        for name, cmd in (("gunicorn", web), ("qcluster", worker)):
            out = (base / f"{name}.log").open("ab")
            procs.append(
                subprocess.Popen(  # noqa: S603 - this venv's gunicorn and manage.py
                    cmd,
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        import requests

        url = f"https://localhost:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{url}/healthz", verify=str(ca_path), timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not start: {(base / 'gunicorn.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield SimpleNamespace(url=url, ca_bundle=ca_path, gunicorn=procs[0], qcluster=procs[1])
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- the acme library client ----------------------------------------------------------------------------
def acme_clients(directory_url: str, ca_bundle: Path, threads: int) -> list:
    import josepy as jose
    from acme import messages
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.acme_testbed import acme_client_for

    clients = []
    for _ in range(threads):
        key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        client = acme_client_for(
            SimpleNamespace(directory_url=directory_url, tls_ca_bundle_path=ca_bundle), key, attempts=8
        )
        client.net.account = client.new_account(
            messages.NewRegistration.from_data(email="bench@bench.test", terms_of_service_agreed=True)
        )
        clients.append(client)
    return clients


PHASES: dict[str, list[float]] = {}


def _phase(name: str, since: float) -> float:
    now = time.monotonic()
    PHASES.setdefault(name, []).append(now - since)
    return now


def issue(client, name: str, tokens: dict[str, str], *, finalize: bool = True):
    """One order for ``name``: HTTP-01 answered from ``tokens``, 10 ms polls; the chain PEM (or the ready
    order when ``finalize`` is false)."""
    from acme import challenges, crypto_util, messages
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    t = time.monotonic()
    orderr = client.new_order(crypto_util.make_csr(pem, [name]))
    t = _phase("newOrder", t)
    for authzr in orderr.authorizations:
        challb = next(c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = challb.response_and_validation(client.net.key)
        tokens[challb.chall.encode("token")] = validation
        client.answer_challenge(challb, response)
    t = _phase("challenge POST", t)
    for authzr in orderr.authorizations:
        while True:
            time.sleep(0.01)
            authzr, _ = client.poll(authzr)
            if authzr.body.status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                break
        assert authzr.body.status == messages.STATUS_VALID, authzr.body
    t = _phase("validation (polled)", t)
    if not finalize:
        return orderr
    body = client.begin_finalization(orderr).body
    t = _phase("finalize POST", t)
    while not (body.status == messages.STATUS_VALID and body.certificate):
        assert body.status != messages.STATUS_INVALID, body
        time.sleep(0.01)
        body = messages.Order.from_json(client._post_as_get(orderr.uri).json())
    t = _phase("order valid (polled)", t)
    chain = client._post_as_get(body.certificate).text
    _phase("certificate download", t)
    return chain


def phases_line(label: str) -> str:
    import statistics

    parts = [f"{k} {statistics.median(v) * 1000:.0f}" for k, v in PHASES.items()]
    PHASES.clear()
    return f"{label}, median ms per order: " + ", ".join(parts)


def batch(clients, names: list[str], tokens: dict[str, str]) -> tuple[float, list[str]]:
    todo: queue.Queue[str] = queue.Queue()
    for name in names:
        todo.put(name)
    failures: list[BaseException] = []
    chains: list[str] = []

    def work(client) -> None:
        while True:
            try:
                name = todo.get_nowait()
            except queue.Empty:
                return
            try:
                chains.append(issue(client, name, tokens))
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
    return wall, chains


def openssl_verify(chain_pem: str, root_pem: str, workdir: Path) -> bool:
    import re

    certs = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", chain_pem, re.S)
    (workdir / "leaf.pem").write_text(certs[0])
    (workdir / "chain.pem").write_text("".join(certs[1:]))
    (workdir / "root.pem").write_text(root_pem)
    done = subprocess.run(  # noqa: S603
        [  # noqa: S607 - Debian's openssl on PATH
            "openssl",
            "verify",
            "-CAfile",
            str(workdir / "root.pem"),
            "-untrusted",
            str(workdir / "chain.pem"),
            str(workdir / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


# --- certbot ------------------------------------------------------------------------------------------
def bench_certbot(
    certbot: str, directory_url: str, ca_bundle: Path, http01_port: int, count: int, base: Path, label: str
) -> float:
    work = Path(tempfile.mkdtemp(prefix=f"certbot-{label}-", dir=base))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REQUESTS_", "CURL_", "HTTP"))}
    env.update(HOME=str(work), REQUESTS_CA_BUNDLE=str(ca_bundle))
    common = [
        "--non-interactive",
        "--config-dir",
        str(work / "c"),
        "--work-dir",
        str(work / "w"),
        "--logs-dir",
        str(work / "l"),
        "--server",
        directory_url,
    ]
    subprocess.run(  # noqa: S603 - the certbot the operator named
        [certbot, "register", "--agree-tos", "--register-unsafely-without-email", *common],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    run_id = uuid.uuid4().hex[:6]
    start = time.monotonic()
    for i in range(count):
        done = subprocess.run(  # noqa: S603 - the certbot the operator named
            [
                certbot,
                "certonly",
                "--standalone",
                "--http-01-port",
                str(http01_port),
                "--http-01-address",
                HOST,
                "-d",
                f"cb{i}-{run_id}-{label}.{ZONE}",
                *common,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"certbot against {label} failed:\n{done.stdout}{done.stderr}")
    return time.monotonic() - start


# --- bad input ----------------------------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bad_input(certmgr, client, tokens: dict[str, str], dir_url: str) -> list[tuple[str, str, str, float]]:
    """Each §6 violation and a malformed CSR, by hand over TLS: (case, expected type, got type, ms)."""
    import josepy as jose
    import requests
    from acme import jws as acme_jws
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    http = requests.Session()
    http.trust_env = False  # REQUESTS_CA_BUNDLE of the environment would win over verify
    http.verify = str(certmgr.ca_bundle)
    directory = http.get(dir_url).json()
    key = client.net.key
    kid = client.net.account.uri
    rows = []

    def nonce() -> str:
        return http.head(directory["newNonce"]).headers["Replay-Nonce"]

    def signed(url, payload, *, use_kid=True, k=None, alg=jose.ES256, signed_url=None, nonce_value=None):
        body = b"" if payload is None else json.dumps(payload).encode()
        return acme_jws.JWS.sign(
            body,
            key=k or key,
            alg=alg,
            nonce=jose.decode_b64jose(nonce_value or nonce()),
            url=signed_url or url,
            kid=kid if use_kid else None,
        ).json_dumps()

    def send(case: str, expected: str, url: str, data: str | bytes) -> None:
        start = time.monotonic()
        r = http.post(url, data=data, headers={"Content-Type": "application/jose+json"})
        ms = (time.monotonic() - start) * 1000
        got = (
            r.json().get("type", "").rsplit(":", 1)[-1]
            if r.headers.get("Content-Type", "").startswith("application/problem")
            else f"HTTP {r.status_code}"
        )
        rows.append((case, expected, got, ms))

    acct = kid
    new_order = directory["newOrder"]
    ident = {"identifiers": [{"type": "dns", "value": f"bad-{uuid.uuid4().hex[:6]}.{ZONE}"}]}
    send(
        "JWS url is not the request URL",
        "unauthorized",
        new_order,
        signed(new_order, ident, signed_url=directory["newAccount"]),
    )
    used = nonce()
    send(
        "a valid POST-as-GET of the account (the nonce's first use)",
        "HTTP 200",
        acct,
        signed(acct, None, nonce_value=used),
    )
    send("nonce replayed", "badNonce", acct, signed(acct, None, nonce_value=used))
    send("nonce never issued", "badNonce", acct, signed(acct, None, nonce_value=b64(os.urandom(16))))
    other = acct.rsplit("/", 1)[0] + "/unknownaccount"
    send("unknown account (kid)", "accountDoesNotExist", acct, _with_kid(signed(acct, None), other))
    stranger = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    send("signature by another key", "malformed", acct, signed(acct, None, k=stranger))
    send("alg none", "badSignatureAlgorithm", acct, _with_alg(signed(acct, None), "none"))
    send("alg HS256", "badSignatureAlgorithm", acct, _with_alg(signed(acct, None), "HS256"))
    rsa_key = jose.JWKRSA(key=rsa.generate_private_key(65537, 2048))
    send(
        "alg ES256 with an RSA key (newAccount)",
        "badSignatureAlgorithm",
        directory["newAccount"],
        _with_alg(
            signed(
                directory["newAccount"],
                {"termsOfServiceAgreed": True},
                use_kid=False,
                k=rsa_key,
                alg=jose.RS256,
            ),
            "ES256",
        ),
    )
    send("jwk where a kid belongs", "malformed", new_order, signed(new_order, ident, use_kid=False))
    send(
        "kid on newAccount",
        "malformed",
        directory["newAccount"],
        signed(directory["newAccount"], {"termsOfServiceAgreed": True}),
    )
    send("not a flattened JWS (compact)", "malformed", acct, b"eyJhbGciOiJFUzI1NiJ9.e30.AAAA")
    send("body not JSON", "malformed", acct, b"{not json")
    send("oversized body (2 MB)", "malformed", acct, b"{" + b" " * 2_000_000 + b"}")
    # finalize with bad CSRs: an order made ready by the real flow first
    name = f"csr-{uuid.uuid4().hex[:6]}.{ZONE}"
    orderr = issue(client, name, tokens, finalize=False)
    fin = orderr.body.finalize
    send("malformed CSR (random bytes)", "badCSR", fin, signed(fin, {"csr": b64(os.urandom(64))}))
    ck = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.DNSName("other." + ZONE)]), critical=False
        )
        .sign(ck, hashes.SHA256())
    )
    der = csr.public_bytes(serialization.Encoding.DER)
    send("CSR names more than the order", "badCSR", fin, signed(fin, {"csr": b64(der)}))
    broken = bytearray(der)
    broken[-5] ^= 0xFF  # the signature's bytes
    send("CSR with a wrong signature", "badCSR", fin, signed(fin, {"csr": b64(bytes(broken))}))
    return rows


def _with_kid(jws_json: str, kid: str) -> str:
    """Re-sign nothing: swap the protected header's kid (the signature no longer matters, the kid is
    looked up first)."""
    body = json.loads(jws_json)
    header = json.loads(base64.urlsafe_b64decode(body["protected"] + "=="))
    header["kid"] = kid
    body["protected"] = b64(json.dumps(header).encode())
    return json.dumps(body)


def _with_alg(jws_json: str, alg: str) -> str:
    body = json.loads(jws_json)
    header = json.loads(base64.urlsafe_b64decode(body["protected"] + "=="))
    header["alg"] = alg
    body["protected"] = b64(json.dumps(header).encode())
    return json.dumps(body)


# --- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--gunicorn-threads", type=int, default=4)
    parser.add_argument("--q-workers", type=int, default=2)
    parser.add_argument(
        "--broker",
        choices=["redis", "orm"],
        default="redis",
        help="django-q2's; the README's production: Redis",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--certbot", default=str(Path(sys.executable).with_name("certbot")))
    parser.add_argument("--certbot-count", type=int, default=20, help="0 skips certbot")
    parser.add_argument("--bad-input", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.broker == "redis":
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()  # a database of its own: tasks of an earlier run

    base = Path(tempfile.mkdtemp(prefix="acme-server-bench-"))
    recreate_database(DB_PREFIX)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from tests import acme_testbed

    org, root, _issuing, profile = setup_certmgr()
    from django.db import connections

    connections.close_all()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = os.getloadavg()
    tokens: dict[str, str] = {}
    out: dict = {}
    certmgr_http = free_port()
    try:
        with contextlib.ExitStack() as stack:
            dns_port = stack.enter_context(dns_server())
            stack.enter_context(token_server(tokens, certmgr_http))
            pebble = stack.enter_context(
                acme_testbed._start_pebble(
                    Path(tempfile.mkdtemp(prefix="pebble", dir=base)),
                    f"{HOST}:{dns_port}",
                    eab_required=False,
                    nonce_reject=0,
                )
            )
            stack.enter_context(token_server(tokens, pebble.http_port))
            certmgr = stack.enter_context(certmgr_servers(base, args, dns_port, certmgr_http))
            cm_dir = f"{certmgr.url}/acme/{org.slug}/{profile.slug}/directory"
            run_id = uuid.uuid4().hex[:6]
            names = [f"o{i}-{run_id}.{ZONE}" for i in range(args.count)]

            # (a) + (c)
            cm_clients = acme_clients(cm_dir, certmgr.ca_bundle, args.threads)
            for i, c in enumerate(cm_clients):
                issue(c, f"warm{i}-{run_id}.{ZONE}", tokens)
            PHASES.clear()
            sampler = RssSampler(certmgr.gunicorn.pid)
            sampler.start()
            time.sleep(0.1)
            # CPU the 50 orders cost certmgr's processes (not PostgreSQL's), whatever else the cores run
            web, tasks = tree(certmgr.gunicorn.pid), tree(certmgr.qcluster.pid)
            cpu_before = cpu_of(web + tasks)
            out["certmgr"], chains = batch(cm_clients, names, tokens)
            cpu_after = cpu_of(web + tasks)
            out["cpu"] = {
                what: sum(cpu_after[p] - cpu_before[p] for p in pids)
                for what, pids in (("gunicorn", web), ("qcluster", tasks))
            }
            print(f"certmgr: {args.count} orders in {out['certmgr']:.2f} s", flush=True)
            out["phases_certmgr"] = phases_line("certmgr")
            print(out["phases_certmgr"], flush=True)
            sampler.stop.set()
            sampler.join()
            out["rss"] = sampler.peaks
            out["verified"] = sum(openssl_verify(c, root.certificate_pem, base) for c in chains)
            pb_clients = acme_clients(pebble.directory_url, pebble.tls_ca_bundle_path, args.threads)
            for i, c in enumerate(pb_clients):
                issue(c, f"pwarm{i}-{run_id}.{ZONE}", tokens)
            PHASES.clear()
            out["pebble"], _ = batch(pb_clients, [f"p{n}" for n in names], tokens)
            print(f"pebble: {args.count} orders in {out['pebble']:.2f} s", flush=True)
            out["phases_pebble"] = phases_line("pebble")
            print(out["phases_pebble"], flush=True)
            if args.bad_input:
                out["bad"] = bad_input(certmgr, cm_clients[0], tokens, cm_dir)
        # (b) certbot in sequence, with fresh servers: its standalone server answers HTTP-01 itself
        if args.certbot_count and Path(args.certbot).exists():
            out.update(run_certbot(args, base, org, profile))
    finally:
        if not args.keep:
            drop_database(DB_PREFIX)
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept: database {os.environ['DATABASE_URL']}, logs under {base}")
    report(args, out, started, load_start)


def run_certbot(args, base: Path, org, profile) -> dict:
    """certbot against each server, in sequence; certbot's standalone server answers HTTP-01 itself."""
    from tests import acme_testbed

    certbot_http_certmgr, result = free_port(), {}
    with contextlib.ExitStack() as stack:
        dns_port = stack.enter_context(dns_server())
        pebble = stack.enter_context(
            acme_testbed._start_pebble(
                Path(tempfile.mkdtemp(prefix="pebble-cb", dir=base)),
                f"{HOST}:{dns_port}",
                eab_required=False,
                nonce_reject=0,
            )
        )
        certmgr = stack.enter_context(certmgr_servers(base, args, dns_port, certbot_http_certmgr))
        result["certbot_certmgr"] = bench_certbot(
            args.certbot,
            f"{certmgr.url}/acme/{org.slug}/{profile.slug}/directory",
            certmgr.ca_bundle,
            certbot_http_certmgr,
            args.certbot_count,
            base,
            "certmgr",
        )
        result["certbot_pebble"] = bench_certbot(
            args.certbot,
            pebble.directory_url,
            pebble.tls_ca_bundle_path,
            pebble.http_port,
            args.certbot_count,
            base,
            "pebble",
        )
    return result


def report(args, out: dict, started: str, load_start) -> None:
    cores = os.cpu_count()
    load = os.getloadavg()
    print()
    print(
        f"Run of {started}, {cores} cores, load average {load_start[0]:.1f} at the start, "
        f"{load[0]:.1f} at the end"
    )
    print(
        f"gunicorn --workers {args.gunicorn_workers} --threads {args.gunicorn_threads} over TLS, "
        f"qcluster {args.q_workers} workers ({'Redis' if args.broker == 'redis' else 'ORM'} broker); "
        f"client: acme library, {args.threads} threads"
    )
    print()
    print("| what | wall s | certs/s | vs Pebble |")
    print("|---|---|---|---|")
    n = args.count
    print(f"| Pebble, {n} orders (HTTP-01) | {out['pebble']:.2f} | {n / out['pebble']:.1f} | 1 |")
    print(
        f"| certmgr, {n} orders (HTTP-01) | {out['certmgr']:.2f} | {n / out['certmgr']:.1f} | "
        f"{out['certmgr'] / out['pebble']:.1f}x |"
    )
    if "certbot_certmgr" in out:
        c, p = out["certbot_certmgr"], out["certbot_pebble"]
        k = args.certbot_count
        print(f"| certbot certonly --standalone, {k} names in sequence, Pebble | {p:.2f} | {k / p:.2f} | 1 |")
        print(
            f"| certbot certonly --standalone, {k} names in sequence, certmgr | {c:.2f} | {k / c:.2f} | "
            f"{c / p:.2f}x |"
        )
    print()
    rss = out["rss"]
    peaks = ", ".join(f"{pid}: {kb / 1024:.0f} MB" for pid, kb in rss.items())
    print(f"gunicorn peak VmRSS during the {n} orders (master first): {peaks}")
    cpu = out["cpu"]
    per_order = (cpu["gunicorn"] + cpu["qcluster"]) / n * 1000
    print(
        f"CPU of certmgr's processes during the {n} orders: gunicorn {cpu['gunicorn']:.2f} s, "
        f"qcluster {cpu['qcluster']:.2f} s ({per_order:.0f} ms an order; PostgreSQL not counted)"
    )
    print(f"openssl verify: {out['verified']} of {n} chains verify against the root")
    checks = [
        (f"within 3x Pebble ({out['certmgr'] / out['pebble']:.1f}x)", out["certmgr"] <= 3 * out["pebble"]),
        (f"{n} under 5 s ({out['certmgr']:.2f})", out["certmgr"] < 5),
        (f"each web process under 200 MB ({max(rss.values()) / 1024:.0f})", max(rss.values()) < 200 * 1024),
    ]
    if "certbot_certmgr" in out:
        share = (out["certbot_certmgr"] - out["certbot_pebble"]) / out["certbot_certmgr"]
        checks.append((f"certmgr adds under 10% to certbot ({share * 100:.1f}%)", share < 0.10))
    print("targets: " + "; ".join(f"{t}: {'met' if ok else 'NOT met'}" for t, ok in checks))
    if out.get("bad"):
        print()
        print("| bad input (certmgr, over TLS) | expected | answered | ms |")
        print("|---|---|---|---|")
        for case, expected, got, ms in out["bad"]:
            print(f"| {case} | {expected} | {got} | {ms:.1f} |")
        worst = max(ms for *_, ms in out["bad"])
        wrong = [c for c, e, g, _ in out["bad"] if e != g]
        print(
            f"bad input: slowest {worst:.1f} ms ({'met' if worst < 100 else 'NOT met'} < 100 ms); "
            f"problem types {'all as expected' if not wrong else 'WRONG for ' + ', '.join(wrong)}"
        )


if __name__ == "__main__":
    main()
