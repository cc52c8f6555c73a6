"""OCSP at scale: a private CA with 100,000 certificates, all pre-signed; the pre-signing time, then GET
requests a second and latency of the pre-signed responses through gunicorn, next to OpenSSL's own responder
(``openssl ocsp -index ... -port``, which signs every response) on the same machine, in the same run, with the
same load generator (Debian ``wrk``) and the same requests.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/certmgr_ocsp_bench .venv/bin/python bench/ocsp_bench.py \
        [--certificates 100000] [--workers 2] [--connections 8] [--duration 20] [--rounds 2]

The database named in DATABASE_URL is created if missing and filled once (bench-made rows: one real PEM
copied, random serials, 1% revoked; re-runs reuse them). Both responders get ``--workers`` processes
(gunicorn's sync workers, certmgr's production setup; ``openssl ocsp -multi``) and the same requests:
10,000 SHA-1 CertID GETs (RFC 5019 §5) for serials drawn from the CA's, in the same order, without nonces.
Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/certmgr_ocsp_bench")
sys.path.insert(0, str(ROOT))
from bench.pki_bench import bench_hierarchy, bench_setup, certificate_copier  # noqa: E402 (env first)

REQUESTS = 10_000  # distinct requests in the mix


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on {port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the CA and its certificates ---------------------------------------------------------------------------
def fill(org, ca, system, count: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from pki import services
    from pki.models import Certificate, Subscriber

    have = Certificate.objects.filter(ca=ca).count()
    if have >= count:
        return
    sub = Subscriber.objects.filter(organization=org, name="ocsp-bench").first() or services.save_subscriber(
        org, actor=system, name="ocsp-bench", ca=ca, common_name="ocsp-bench.example.com", validity_days=90
    )
    sample = services.issue(sub, actor=system).certificate
    now = timezone.now()
    rng = random.Random(13)  # noqa: S311 - synthetic data, not secrets
    start = time.perf_counter()
    with certificate_copier(org.pk, sample.certificate_pem, sample.chain_pem, rng, now) as write:
        for i in range(have + 1, count):
            status = "revoked" if i % 100 == 0 else "active"
            write(
                f"host{i}.ocsp.example.com",
                ca.pk,
                None,
                "imported",
                now + timedelta_days(30 + i % 300),
                status,
            )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pki_certificate SET revoked_at = now() - interval '1 day' WHERE status = 'revoked'"
        )
        cursor.execute("ANALYZE pki_certificate")
    print(f"filled {count - have} rows in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def timedelta_days(days: float):
    from datetime import timedelta

    return timedelta(days=days)


def presign_timings(ca) -> list[tuple[str, int, float]]:
    """(case, responses signed, seconds): from an empty table, then the refresh of every stored one."""
    from pki.models import OcspResponse
    from pki.services import ocsp as ocsp_service

    ocsp_service.responder(ca)  # the responder certificate exists (issued when OCSP was turned on)
    OcspResponse.objects.filter(ca=ca).delete()
    rows = []
    for case in ("none stored (first pre-signing)", "all stored (refresh: every row replaced)"):
        start = time.perf_counter()
        n = ocsp_service.presign(ca)
        rows.append((case, n, time.perf_counter() - start))
        print(f"presign {case}: {n} in {rows[-1][2]:.1f} s", file=sys.stderr)
    return rows


# --- the requests ------------------------------------------------------------------------------------------
def request_mix(ca, serials: list[str]) -> list[str]:
    """URL-escaped base64 DER requests (GET, RFC 5019 §5) for ``REQUESTS`` serials of the CA."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp as cocsp

    from pki.services import ocsp as ocsp_service

    name_hash, key_hash = ocsp_service._issuer_hashes(ca, "sha1")
    rng = random.Random(5)  # noqa: S311
    mix = []
    for serial in rng.sample(serials, min(REQUESTS, len(serials))):
        der = (
            cocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(name_hash, key_hash, int(serial, 16), hashes.SHA1())  # noqa: S303 - RFC 5019
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        mix.append(quote(base64.b64encode(der).decode(), safe=""))
    return mix


class _Http10(http.client.HTTPConnection):
    """HTTP/1.0: OpenSSL 3.0's responder keeps an HTTP/1.1 client's connection and spins once it is closed."""

    _http_vsn, _http_vsn_str = 10, "HTTP/1.0"


def check(port: int, prefix: str, path: str, expected: str) -> None:
    """One request answered successfully with ``expected`` (good / revoked), before the load."""
    from cryptography.x509 import ocsp as cocsp

    conn = _Http10("127.0.0.1", port, timeout=10)
    conn.request("GET", prefix + path)
    body = conn.getresponse().read()
    conn.close()
    response = cocsp.load_der_ocsp_response(body)
    if response.response_status != cocsp.OCSPResponseStatus.SUCCESSFUL:
        raise SystemExit(f"{prefix or 'openssl'}: {response.response_status}")
    status = response.certificate_status.name.lower()
    if status != expected:
        raise SystemExit(f"{prefix or 'openssl'}: {status}, expected {expected}")


WRK_LUA = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = "%(prefix)s" .. line end
local i = 0
function setup(thread)
  thread:set("offset", i * 1000)
  i = i + 1
end
local n = 0
function request()
  n = n + 1
  return wrk.format("GET", paths[((offset + n) %% #paths) + 1])
end
"""


def wrk(port: int, prefix: str, mix_file: Path, tmp: Path, args) -> dict[str, float | str]:
    script = tmp / f"mix-{port}.lua"
    script.write_text(WRK_LUA % {"paths": mix_file, "prefix": prefix})
    command = [
        *("wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency"),
        *("-s", str(script), f"http://127.0.0.1:{port}"),
    ]
    result = subprocess.run(  # noqa: S603 - our own arguments
        command, capture_output=True, text=True, timeout=args.duration + 60, check=True
    )
    out = result.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: (.*)", out)
    return {
        "rate": rate,
        "p50": ms("50"),
        "p99": ms("99"),
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket": sockets.group(1) if sockets else "none",
        "command": " ".join(command),
    }


# --- the servers -------------------------------------------------------------------------------------------
def gunicorn(port: int, workers: int) -> subprocess.Popen:
    env = {**os.environ, "DEBUG": "0", "CERTMGR_LOG_LEVEL": os.environ.get("CERTMGR_LOG_LEVEL", "WARNING")}
    command = [
        *(str(Path(sys.executable).with_name("gunicorn")), "certmgr.wsgi", "--bind", f"127.0.0.1:{port}"),
        *("--workers", str(workers), "--log-level", "warning"),
    ]
    proc = subprocess.Popen(  # noqa: S603 - our own arguments
        command, cwd=ROOT, env=env, process_group=0, stdout=subprocess.DEVNULL, stderr=sys.stderr
    )
    wait_port(port, proc)
    return proc


def index_openssl(ca, tmp: Path) -> None:
    """The files of ``openssl ocsp`` as a responder for the same CA: its index.txt lists the same serials (V,
    or R with the revocation time and reason); it signs with the same delegated responder certificate and
    key as certmgr."""
    from cryptography.hazmat.primitives import serialization

    from pki import x509
    from pki.models import Certificate

    responder = ca.ocsp_responders.first()
    (tmp / "ca.pem").write_text(ca.certificate_pem)
    (tmp / "responder.pem").write_text(responder.certificate_pem)
    key = x509.load_private_key(responder.private_key)
    (tmp / "responder.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    lines = []
    for serial, status, not_after, revoked_at in Certificate.objects.filter(ca=ca).values_list(
        "serial", "status", "not_after", "revoked_at"
    ):
        hexed = serial.upper()
        hexed = "0" + hexed if len(hexed) % 2 else hexed
        expiry = not_after.strftime("%y%m%d%H%M%SZ")
        if status == "revoked":
            lines.append(
                f"R\t{expiry}\t{revoked_at.strftime('%y%m%d%H%M%SZ')},keyCompromise\t{hexed}\tunknown\t/CN=x"
            )
        else:
            lines.append(f"V\t{expiry}\t\t{hexed}\tunknown\t/CN=x")
    (tmp / "index.txt").write_text("\n".join(lines) + "\n")
    (tmp / "index.txt.attr").write_text("unique_subject = no\n")


def openssl_responder(tmp: Path, port: int, workers: int) -> subprocess.Popen:
    """OpenSSL's responder on the files of ``index_openssl``, ``workers`` processes."""
    command = [
        *("openssl", "ocsp", "-index", "index.txt", "-port", str(port), "-CA", "ca.pem"),
        *("-rsigner", "responder.pem", "-rkey", "responder.key", "-nmin", "1440", "-multi", str(workers)),
    ]
    log = (tmp / "openssl.log").open("w")
    proc = subprocess.Popen(  # noqa: S603 - our own arguments
        command, cwd=tmp, process_group=0, stdout=log, stderr=subprocess.STDOUT
    )
    # Not wait_port: a connection closed without a request leaves one of its processes spinning.
    deadline = time.monotonic() + 30
    while "ACCEPT" not in (tmp / "openssl.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("openssl ocsp did not start: " + (tmp / "openssl.log").read_text())
        time.sleep(0.1)
    time.sleep(0.5)  # its children are forked after the ACCEPT line
    return proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--certificates", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per responder, alternating")
    parser.add_argument("--skip-presign", action="store_true", help="keep the stored responses")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("openssl") is None:
        raise SystemExit("needs Debian wrk and openssl (scripts/install-system-deps.sh)")

    system, org, _ = bench_setup("bench-operator", "operator")
    from pki import services
    from pki.models import Certificate, OcspResponse

    _, ca = bench_hierarchy(org, system)
    ca = services.set_ocsp(ca, enabled=True, actor=system)
    fill(org, ca, system, args.certificates)
    total = Certificate.objects.filter(ca=ca).count()
    print(f"load before: {loadavg()}", file=sys.stderr)

    presigned = [] if args.skip_presign else presign_timings(ca)
    stored = OcspResponse.objects.filter(ca=ca).count()
    serials = list(Certificate.objects.filter(ca=ca, status="active").values_list("serial", flat=True))
    revoked = Certificate.objects.filter(ca=ca, status="revoked").values_list("serial", flat=True).first()

    ours_label, peer_label = (
        f"certmgr (gunicorn, {args.workers} workers)",
        f"openssl ocsp -multi {args.workers}",
    )
    results: dict[str, list[dict]] = {ours_label: [], peer_label: []}
    revoked_serials = list(
        Certificate.objects.filter(ca=ca, status="revoked").values_list("serial", flat=True)
    )
    with tempfile.TemporaryDirectory(prefix="ocsp-bench-") as name:
        tmp = Path(name)
        mix_file = tmp / "mix.txt"
        mix_file.write_text("\n".join(request_mix(ca, serials + revoked_serials)) + "\n")
        check_good, check_revoked = request_mix(ca, serials[:1])[0], request_mix(ca, [revoked])[0]
        ours_port, peer_port = free_port(), free_port()
        prefix = f"/ocsp/{ca.pk}/"
        index_openssl(ca, tmp)
        ours = gunicorn(ours_port, args.workers)
        try:
            check(ours_port, prefix, check_good, "good")
            check(ours_port, prefix, check_revoked, "revoked")
            for round_ in range(args.rounds):
                results[ours_label].append(run_wrk(ours_port, prefix, mix_file, tmp, args))
                # OpenSSL 3.0's responder processes spin on the connections wrk leaves at the end of a run
                # (and answer nothing after): a fresh responder for every run.
                peer = openssl_responder(tmp, peer_port, args.workers)
                try:
                    check(peer_port, "/", check_good, "good")
                    check(peer_port, "/", check_revoked, "revoked")
                    results[peer_label].append(run_wrk(peer_port, "/", mix_file, tmp, args))
                finally:
                    stop(peer)
                print(
                    f"round {round_ + 1}: {results[ours_label][-1]} {results[peer_label][-1]}",
                    file=sys.stderr,
                )
        finally:
            stop(ours)

    print(f"\n{total:,} certificates of the CA, {stored:,} stored responses; {os.cpu_count()} CPUs")
    if presigned:
        print("\n| pre-signing | responses | seconds | responses/s |")
        print("|---|---|---|---|")
        for case, n, seconds in presigned:
            print(f"| {case} | {n:,} | {seconds:.1f} | {n / seconds:,.0f} |")
    print("\n| responder | round | requests/s | p50 ms | p99 ms | non-2xx | socket errors | load before |")
    print("|---|---|---|---|---|---|---|---|")
    for label, runs in results.items():
        for i, r in enumerate(runs, 1):
            row = (
                label,
                i,
                f"{r['rate']:,.0f}",
                f"{r['p50']:.2f}",
                f"{r['p99']:.2f}",
                r["non2xx"],
                r["socket"],
            )
            print("| " + " | ".join(str(cell) for cell in (*row, r["load"])) + " |")
    best = {label: max(r["rate"] for r in runs) for label, runs in results.items()}
    print(f"\ncertmgr / openssl (best rounds): {best[ours_label] / max(best[peer_label], 1):.2f}x")
    print(f"\nwrk: {results[ours_label][0]['command']}")


def run_wrk(port: int, prefix: str, mix_file: Path, tmp: Path, args) -> dict:
    load = loadavg()
    result = wrk(port, prefix, mix_file, tmp, args)
    result["load"] = load
    return result


if __name__ == "__main__":
    main()
