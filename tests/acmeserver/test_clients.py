"""Debian's other ACME clients against certmgr's ACME server over TLS (gunicorn with --certfile, like the
certbot tests): ``acme-tiny`` and ``dehydrated``, both HTTP-01 with the challenge directory they write
served on the validation port. Each issued chain verifies with ``openssl verify`` against the CA's root."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from acmeserver.models import AcmeServerOrder
from tests import dnsservers
from tests.acmeserver.conftest import loopback_name

pytestmark = pytest.mark.servers


def require(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        message = f"{binary} is not installed (scripts/install-system-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextlib.contextmanager
def serving(directory: Path, port: int) -> Iterator[None]:
    """``GET /.well-known/acme-challenge/<token>`` answered from the files of ``directory``."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path: str) -> str:
            return str(directory / path.rsplit("/", 1)[-1])

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer((dnsservers.HOST, port), functools.partial(Handler))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def client_env(tmp_path: Path, ca_bundle: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REQUESTS_", "CURL_", "SSL_CERT"))}
    env.update(HOME=str(tmp_path), SSL_CERT_FILE=ca_bundle, CURL_CA_BUNDLE=ca_bundle)
    return env


def run(command: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def assert_verifies(chain_pem: str, root: str, tmp_path: Path) -> None:
    certs = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", chain_pem, re.S)
    assert len(certs) >= 2, chain_pem
    (tmp_path / "leaf.pem").write_text(certs[0])
    (tmp_path / "intermediates.pem").write_text("".join(certs[1:]))
    verify = run(
        [
            "openssl",
            "verify",
            "-CAfile",
            root,
            "-untrusted",
            str(tmp_path / "intermediates.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        env=dict(os.environ),
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_acme_tiny_issues_over_http01(tls_certmgr, profile, powerdns, tmp_path):
    """acme-tiny (Python's urllib: trusts certmgr's HTTPS through SSL_CERT_FILE) writes the challenge file
    into --acme-dir, which a plain HTTP server serves on the validation port."""
    binary = require("acme-tiny")
    name = loopback_name(powerdns, "tiny")
    env = client_env(tmp_path, tls_certmgr.ca_bundle)
    acme_dir = tmp_path / "challenges"
    acme_dir.mkdir()
    for command in (
        ["openssl", "genrsa", "-out", str(tmp_path / "account.key"), "2048"],
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(tmp_path / "domain.key"),
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-out",
            str(tmp_path / "domain.csr"),
        ],
    ):
        assert run(command, env).returncode == 0
    directory = f"{tls_certmgr.url}/acme/{profile.organization.slug}/{profile.slug}/directory"
    with serving(acme_dir, tls_certmgr.http01_port):
        done = run(
            [
                binary,
                "--account-key",
                str(tmp_path / "account.key"),
                "--csr",
                str(tmp_path / "domain.csr"),
                "--acme-dir",
                str(acme_dir),
                "--directory-url",
                directory,
                "--disable-check",
                "--contact",
                "mailto:ops@acme.test",
            ],
            env,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_verifies(done.stdout, tls_certmgr.ca_bundle, tmp_path)
    assert AcmeServerOrder.objects.get().status == "valid"


def test_dehydrated_issues_over_http01(tls_certmgr, profile, powerdns, tmp_path):
    """dehydrated (curl: trusts certmgr's HTTPS through CURL_CA_BUNDLE), CA=<the profile's directory>,
    WELLKNOWN=<a directory served on the validation port>."""
    binary = require("dehydrated")
    name = loopback_name(powerdns, "dehydrated")
    env = client_env(tmp_path, tls_certmgr.ca_bundle)
    wellknown = tmp_path / "wellknown"
    wellknown.mkdir()
    (tmp_path / "base").mkdir()
    config = tmp_path / "config"
    directory = f"{tls_certmgr.url}/acme/{profile.organization.slug}/{profile.slug}/directory"
    config.write_text(
        f'CA="{directory}"\nCHALLENGETYPE="http-01"\nWELLKNOWN="{wellknown}"\nBASEDIR="{tmp_path / "base"}"\n'
        'KEY_ALGO="prime256v1"\nCONTACT_EMAIL="ops@acme.test"\n'
    )
    register = run([binary, "-f", str(config), "--register", "--accept-terms"], env)
    assert register.returncode == 0, register.stdout + register.stderr
    with serving(wellknown, tls_certmgr.http01_port):
        done = run([binary, "-f", str(config), "--cron", "--domain", name], env)
    assert done.returncode == 0, done.stdout + done.stderr
    chain = (tmp_path / "base" / "certs" / name / "fullchain.pem").read_text()
    assert_verifies(chain, tls_certmgr.ca_bundle, tmp_path)
    assert AcmeServerOrder.objects.get().status == "valid"
