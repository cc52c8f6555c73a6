"""An ACME server that speaks ARI (RFC 9773) on loopback: acme2certifier (PyPI) with its file-based CA.

Debian's Pebble 2.4 has no ``renewalInfo``; acme2certifier does. It runs here as its plain WSGI variant (its
own SQLite store, no Django of its own) in a child Python process, served by a threading ``wsgiref`` server on
a free port of 127.0.0.1, over plain HTTP (certmgr's directory URL may be http; the outbound guard only needs
loopback allowed). Its ``openssl_ca_handler`` signs with a throwaway CA made here with ``cryptography``.

Fixture (session scoped; import it into a test module)::

    from tests import ari_testbed

    acme2certifier = ari_testbed.acme2certifier

- For an ACME CA in certmgr: ``directory_url`` (``tls_ca_bundle`` is empty: plain HTTP), challenge type
  ``http-01`` with no DNS connection: challenge validation is switched off (``challenge_validation_disable``,
  which acme2certifier only honours with ``ACME2CERTIFIER_I_KNOW_THE_RISK=1``), since the point is ARI.
- ``renewal_info(cert_id)``: the server's answer to ``GET renewalInfo/<id>`` (JSON and Retry-After), fetched
  with plain ``requests`` so tests compare certmgr's stored times with what the server said.
- The window: ``suggestedWindow.start`` = notBefore + ``RENEWAL_THRESHOLD_PCT`` % of the lifetime, ``end`` =
  start + ``WINDOW_SECONDS`` (acme2certifier's ``renewalthreshold_pctg`` / ``renewal_window_duration``);
  ``Retry-After`` = ``RETRY_AFTER_SECONDS``. All three differ from certmgr's fallbacks (2/3 of the lifetime,
  6 h) so a test can tell ARI from the fallback.
- ``posted("/acme/neworders")``: the decoded payloads certmgr POSTed there (recorded in front of the server),
  e.g. a renewal order's ``replaces``; ``orders()``: the server's stored orders (its SQLite ``orders`` table).
  acme2certifier 0.46 accepts ``replaces`` but ignores it (no ``alreadyReplaced``): that path stays untested.
- ``forget(pem)``: renewalInfo answers 404 for that certificate from then on (for ARI failure tests).
"""

from __future__ import annotations

import base64
import datetime
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.dnsservers import HOST, free_port, stop, tail, unavailable, wait_for

CERT_VALIDITY_DAYS = 30
RENEWAL_THRESHOLD_PCT = 50  # window start: half the lifetime (certmgr's fallback is two thirds)
WINDOW_SECONDS = 86400  # a one-day window
RETRY_AFTER_SECONDS = 7200  # two hours (the acme library's default is six)

# The child process: acme2certifier's WSGI application on a threading wsgiref server, behind a small recorder
# that appends each POST's JWS payload (decoded) to requests.jsonl: acme2certifier keeps no trace of a
# newOrder's ``replaces`` (it implements ARI's renewalInfo GET, not the ``replaces`` field), so the log is
# where a test sees what certmgr sent. Importing the module boots acme2certifier (reads
# ACME_SRV_CONFIGFILE, creates the SQLite schema).
_SERVE = textwrap.dedent(
    """
    import base64, io, json, sys, threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    from acme2certifier.share.acme2certifier_wsgi import application, get_handler_cls

    host, port, request_log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    lock = threading.Lock()

    def recording(environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            try:
                encoded = json.loads(body).get("payload") or ""
                payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)) or "null")
            except ValueError:
                payload = None
            with lock, open(request_log, "a") as log:
                log.write(json.dumps({"path": environ["PATH_INFO"], "payload": payload}) + "\\n")
        return application(environ, start_response)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    make_server(host, port, recording, Server, get_handler_cls()).serve_forever()
    """
)


@dataclass
class Acme2CertifierServer:
    directory_url: str
    base_url: str
    ca_cert_pem: str  # the issuing CA (self-signed): the trust anchor of what it issues
    workdir: Path
    dbfile: Path
    tls_ca_bundle: str = ""  # plain HTTP
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.workdir / "acme2certifier.log"

    def directory(self) -> dict:
        r = requests.get(self.directory_url, timeout=10)
        r.raise_for_status()
        return r.json()

    def renewal_info(self, cert_id: str) -> tuple[dict, requests.Response]:
        """``GET <renewalInfo>/<cert_id>``: the JSON body and the response (for Retry-After)."""
        r = requests.get(f"{self.directory()['renewalInfo'].rstrip('/')}/{cert_id}", timeout=10)
        r.raise_for_status()
        return r.json(), r

    @property
    def request_log(self) -> Path:
        return self.workdir / "requests.jsonl"

    def posted(self, path_suffix: str) -> list[dict]:
        """The decoded JWS payloads of the POSTs to paths ending in ``path_suffix``, oldest first."""
        if not self.request_log.exists():
            return []
        entries = [json.loads(line) for line in self.request_log.read_text().splitlines()]
        return [e["payload"] for e in entries if e["path"].endswith(path_suffix)]

    def forget(self, certificate_pem: str) -> None:
        """Make renewalInfo answer 404 for this certificate: blank the serial and AKI it is looked up by."""
        der = x509.load_pem_x509_certificate(certificate_pem.encode()).public_bytes(
            serialization.Encoding.DER
        )
        with sqlite3.connect(self.dbfile) as db:
            changed = db.execute(
                "UPDATE certificate SET serial = '', aki = '' WHERE cert_raw = ?",
                (base64.b64encode(der).decode(),),
            ).rowcount
        assert changed == 1, f"acme2certifier has {changed} rows for this certificate"

    def orders(self) -> list[dict]:
        """acme2certifier's stored orders, newest last."""
        with sqlite3.connect(self.dbfile) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM orders ORDER BY id")]

    def tail_log(self, lines: int = 80) -> str:
        return tail(self.log, lines)


def _issuing_ca(workdir: Path) -> tuple[Path, Path, Path]:
    """A self-signed issuing CA (key, certificate) and an empty CRL (the openssl handler needs all three)."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certmgr tests: acme2certifier CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=7))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path, crl_path = workdir / "ca-key.pem", workdir / "ca-cert.pem", workdir / "ca.crl"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path, crl_path


def _config(workdir: Path, key: Path, cert: Path, crl: Path, dbfile: Path) -> str:
    certs = workdir / "issued"
    certs.mkdir(exist_ok=True)
    return textwrap.dedent(
        f"""
        [DEFAULT]
        debug: False

        [Nonce]
        nonce_check_disable: False

        [CAhandler]
        handler_module: acme2certifier.cahandlers.openssl_ca_handler
        issuing_ca_key: {key}
        issuing_ca_cert: {cert}
        issuing_ca_crl: {crl}
        cert_save_path: {certs}
        ca_cert_chain_list: ["{cert}"]
        cert_validity_days: {CERT_VALIDITY_DAYS}

        [DBhandler]
        handler: wsgi
        dbfile: {dbfile}

        [Challenge]
        challenge_validation_disable: True

        [Order]
        tnauthlist_support: False

        [Renewalinfo]
        renewalthreshold_pctg: {RENEWAL_THRESHOLD_PCT}
        renewal_window_duration: {WINDOW_SECONDS}
        retry_after_timeout: {RETRY_AFTER_SECONDS}
        """
    )


@pytest.fixture(scope="session")
def acme2certifier(tmp_path_factory) -> Iterator[Acme2CertifierServer]:
    """acme2certifier with ARI on loopback; skipped (failed under CI=true) when the package is missing."""
    if importlib.util.find_spec("acme2certifier") is None:
        unavailable("acme2certifier not installed: pip install the dev extras (acme2certifier)")
    workdir = tmp_path_factory.mktemp("acme2certifier")
    key, cert, crl = _issuing_ca(workdir)
    dbfile = workdir / "acme_srv.db"
    config = workdir / "acme_srv.cfg"
    config.write_text(_config(workdir, key, cert, crl, dbfile))
    port = free_port()
    base_url = f"http://{HOST}:{port}"
    server = Acme2CertifierServer(
        directory_url=f"{base_url}/directory",
        base_url=base_url,
        ca_cert_pem=cert.read_text(),
        workdir=workdir,
        dbfile=dbfile,
    )
    # Its own settings only: nothing of certmgr's Django environment, nothing of another acme2certifier.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ACME_SRV_", "ACME2CERTIFIER_"))
    }
    env.update(ACME_SRV_CONFIGFILE=str(config), ACME2CERTIFIER_I_KNOW_THE_RISK="1")
    with server.log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, HOST, str(port), str(server.request_log)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server.proc = proc
    try:

        def ready() -> bool:
            r = requests.get(server.directory_url, timeout=1)
            return r.status_code == 200 and "newOrder" in r.json()

        wait_for(ready, proc, server.log, "acme2certifier")
        yield server
    finally:
        stop(proc)
