"""Debian's other ACME clients against certmgr's ACME server over TLS (gunicorn with --certfile, like the
certbot tests): ``acme-tiny`` (HTTP-01), ``dehydrated`` (HTTP-01, and DNS-01 through a hook) and ``uacme``
(DNS-01 through a hook, then revoke; HTTP-01 for an IP address). The hooks are one operator's script,
acme_hook.sh: nsupdate into the test's BIND for DNS-01, token files served on the validation port for
HTTP-01. Each issued chain verifies with ``openssl verify`` against the CA's root; its SANs are checked."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from acmeserver.models import AcmeServerAccount, AcmeServerOrder
from certmgr.models import AuditEvent
from pki.models import Certificate
from tests import dnsservers
from tests.acmeserver.conftest import (
    assert_only_the_address,
    loopback_name,
    make_profile,
    sans,
    unique_name,
    verified_leaf,
)

pytestmark = pytest.mark.servers
HOOK = Path(__file__).with_name("acme_hook.sh")  # the challenge hook of uacme and dehydrated


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
    assert sans(verified_leaf(done.stdout, tls_certmgr.ca_bundle, tmp_path)) == [name]
    assert AcmeServerOrder.objects.get().status == "valid"


def tls_directory(tls_certmgr, profile) -> str:
    return f"{tls_certmgr.url}/acme/{profile.organization.slug}/{profile.slug}/directory"


def hook_env(tmp_path: Path, ca_bundle: str, bind=None, challenge_dir: Path | None = None) -> dict[str, str]:
    """The client's environment plus what ``acme_hook.sh`` reads: BIND and its TSIG key file (nsupdate -k),
    the directory of HTTP-01 tokens."""
    env = client_env(tmp_path, ca_bundle)
    if bind is not None:
        env.update(
            NSUPDATE_SERVER=bind.server,
            NSUPDATE_PORT=str(bind.port),
            NSUPDATE_KEYFILE=str(bind.workdir / "tsig.key"),
        )
    if challenge_dir is not None:
        env["CHALLENGE_DIR"] = str(challenge_dir)
    return env


def dehydrated_config(tmp_path: Path, directory: str, wellknown: Path | None = None) -> Path:
    """dehydrated's config: CA=<the profile's directory>, its files under tmp_path, an EC P-256 key."""
    (tmp_path / "base").mkdir()
    config = tmp_path / "config"
    lines = [f'CA="{directory}"', f'BASEDIR="{tmp_path / "base"}"', 'KEY_ALGO="prime256v1"']
    lines += ['CONTACT_EMAIL="ops@acme.test"', f'WELLKNOWN="{wellknown or tmp_path / "wellknown"}"']
    config.write_text("\n".join(lines) + "\n")
    return config


def test_dehydrated_issues_over_http01(tls_certmgr, profile, powerdns, tmp_path):
    """dehydrated (curl: trusts certmgr's HTTPS through CURL_CA_BUNDLE), CA=<the profile's directory>,
    WELLKNOWN=<a directory served on the validation port>."""
    binary = require("dehydrated")
    name = loopback_name(powerdns, "dehydrated")
    env = client_env(tmp_path, tls_certmgr.ca_bundle)
    wellknown = tmp_path / "wellknown"
    wellknown.mkdir()
    config = dehydrated_config(tmp_path, tls_directory(tls_certmgr, profile), wellknown)
    register = run([binary, "-f", str(config), "--register", "--accept-terms"], env)
    assert register.returncode == 0, register.stdout + register.stderr
    with serving(wellknown, tls_certmgr.http01_port):
        done = run([binary, "-f", str(config), "--cron", "--challenge", "http-01", "--domain", name], env)
    assert done.returncode == 0, done.stdout + done.stderr
    chain = (tmp_path / "base" / "certs" / name / "fullchain.pem").read_text()
    assert sans(verified_leaf(chain, tls_certmgr.ca_bundle, tmp_path)) == [name]
    assert AcmeServerOrder.objects.get().status == "valid"


def assert_dns01_through_bind(name: str, bind) -> AcmeServerOrder:
    """The order of ``name`` is valid through a dns-01 challenge read from BIND, and the hook cleaned up."""
    order = AcmeServerOrder.objects.get()
    assert order.status == "valid"
    challenge = order.authorizations.get().challenges.get(status="valid")
    assert challenge.type == "dns-01"
    assert challenge.validation_record[0]["resolvers"] == f"{bind.server}:{bind.port}"
    assert bind.txt_records(f"_acme-challenge.{name}") == []  # clean_challenge / done removed the TXT
    return order


def test_dehydrated_issues_over_dns01_through_an_nsupdate_hook(
    tls_certmgr, tenant, hierarchy, bind, tmp_path
):
    """``dehydrated --challenge dns-01 --hook acme_hook.sh``: the hook's deploy_challenge publishes the TXT
    record in BIND with nsupdate (TSIG), certmgr's validator reads it there, clean_challenge deletes it."""
    binary = require("dehydrated")
    require("nsupdate")
    profile = make_profile(tenant, hierarchy[1], name="DNS", slug="dns", challenge_types=["dns-01"])
    name = unique_name(bind.zone, "dehydrated-dns")
    env = hook_env(tmp_path, tls_certmgr.ca_bundle, bind)
    config = dehydrated_config(tmp_path, tls_directory(tls_certmgr, profile))
    register = run([binary, "-f", str(config), "--register", "--accept-terms"], env)
    assert register.returncode == 0, register.stdout + register.stderr
    done = run(
        [binary, "-f", str(config), "--cron", "--challenge", "dns-01", "--hook", str(HOOK), "--domain", name],
        env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    chain = (tmp_path / "base" / "certs" / name / "fullchain.pem").read_text()
    leaf = verified_leaf(chain, tls_certmgr.ca_bundle, tmp_path)
    assert sans(leaf) == [name]
    order = assert_dns01_through_bind(name, bind)
    assert order.certificate.fingerprint_sha256 == leaf.fingerprint(hashes.SHA256()).hex()


def uacme(
    tls_certmgr, profile, tmp_path: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess:
    """uacme (libcurl with GnuTLS) has no option or variable for a CA bundle: it trusts /etc/ssl/certs.
    It runs in a mount namespace of its own (unshare) where that directory holds certmgr's root, which is
    what a host whose operator added the root to its store looks like, and this machine's store is left
    alone."""
    binary = require("uacme")
    unshare = require("unshare")
    trust = tmp_path / "trust"
    if not trust.exists():
        trust.mkdir(parents=True)
        shutil.copy(tls_certmgr.ca_bundle, trust / "ca-certificates.crt")
    confdir = str(tmp_path / "uacme")
    directory = tls_directory(tls_certmgr, profile)
    command = [unshare, "--mount", "sh", "-c", 'mount --bind "$0" /etc/ssl/certs && exec "$@"', str(trust)]
    return run([*command, binary, "-v", "-c", confdir, "-a", directory, *args], env)


def test_uacme_dns01_through_an_nsupdate_hook_then_revoke(tls_certmgr, tenant, hierarchy, bind, tmp_path):
    """``uacme -h acme_hook.sh issue``: the hook's begin publishes the TXT record (the key authorization's
    digest) in BIND with nsupdate, done deletes it; then ``uacme -r 4 revoke`` with the account's key."""
    require("nsupdate")
    profile = make_profile(tenant, hierarchy[1], name="DNS", slug="dns", challenge_types=["dns-01"])
    name = unique_name(bind.zone, "uacme-dns")
    env = hook_env(tmp_path, tls_certmgr.ca_bundle, bind)
    new = uacme(tls_certmgr, profile, tmp_path, "-y", "new", "ops@acme.test", env=env)
    assert new.returncode == 0, new.stdout + new.stderr
    assert AcmeServerAccount.objects.get().contact == ["mailto:ops@acme.test"]
    issue = uacme(tls_certmgr, profile, tmp_path, "-h", str(HOOK), "issue", name, env=env)
    assert issue.returncode == 0, issue.stdout + issue.stderr
    cert_pem = tmp_path / "uacme" / name / "cert.pem"  # uacme saves the chain it downloaded
    leaf = verified_leaf(cert_pem.read_text(), tls_certmgr.ca_bundle, tmp_path)
    assert sans(leaf) == [name]
    order = assert_dns01_through_bind(name, bind)

    revoke = uacme(tls_certmgr, profile, tmp_path, "-r", "4", "revoke", str(cert_pem), env=env)
    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    cert = Certificate.objects.get(pk=order.certificate_id)
    assert cert.status == "revoked" and cert.revocation_reason == "superseded"
    assert AuditEvent.objects.filter(action="certificate.revoke", target_id=str(cert.pk)).exists()
    assert not cert_pem.exists()  # uacme renames a revoked certificate revoked-<timestamp>.pem


def test_uacme_http01_for_an_ip_address(tls_certmgr, tenant, hierarchy, tmp_path):
    """RFC 8738 with a real client: ``uacme issue 127.0.0.1`` orders an ``ip`` identifier, its hook writes
    the HTTP-01 token into a directory served at the address's validation port, and the certificate's SAN
    is the IP address (no DNS name)."""
    profile = make_profile(tenant, hierarchy[1], name="Addresses", slug="ip", allow_ip_identifiers=True)
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    env = hook_env(tmp_path, tls_certmgr.ca_bundle, challenge_dir=tokens)
    new = uacme(tls_certmgr, profile, tmp_path, "-y", "new", env=env)
    assert new.returncode == 0, new.stdout + new.stderr
    with serving(tokens, tls_certmgr.http01_port):
        issue = uacme(tls_certmgr, profile, tmp_path, "-h", str(HOOK), "issue", "127.0.0.1", env=env)
    assert issue.returncode == 0, issue.stdout + issue.stderr
    chain = (tmp_path / "uacme" / "127.0.0.1" / "cert.pem").read_text()
    leaf = verified_leaf(chain, tls_certmgr.ca_bundle, tmp_path)
    assert_only_the_address(leaf, "127.0.0.1")
    authorization = AcmeServerOrder.objects.get(status="valid").authorizations.get()
    assert (authorization.identifier_type, authorization.identifier_value) == ("ip", "127.0.0.1")
    assert authorization.challenges.get(status="valid").type == "http-01"
    assert list(tokens.iterdir()) == []  # the hook's done removed the token


def test_uacme_and_dehydrated_register_with_external_account_binding(
    tls_certmgr, tenant, hierarchy, tmp_path
):
    """The EAB flags the admin's commands show (acmeserver.services.uacme_command, dehydrated_command):
    uacme's ``-e <kid>:<hmac_key>``, dehydrated's EAB_KID and EAB_HMAC_KEY. Each key binds its account."""
    from acmeserver import services
    from tests.conftest import SYSTEM

    profile = make_profile(tenant, hierarchy[1], name="EAB", slug="eab", eab_required=True)
    uacme_key, uacme_hmac = services.create_eab_key(profile, actor=SYSTEM, name="uacme")
    dehydrated_key, dehydrated_hmac = services.create_eab_key(profile, actor=SYSTEM, name="dehydrated")
    env = client_env(tmp_path, tls_certmgr.ca_bundle)
    refused = uacme(tls_certmgr, profile, tmp_path / "no-eab", "-y", "new", env=env)
    assert refused.returncode != 0 and not AcmeServerAccount.objects.exists()
    assert "requires external credentials" in refused.stderr  # from the directory's externalAccountRequired
    new = uacme(tls_certmgr, profile, tmp_path, "-e", f"{uacme_key.kid}:{uacme_hmac}", "-y", "new", env=env)
    assert new.returncode == 0, new.stdout + new.stderr

    binary = require("dehydrated")
    config = dehydrated_config(tmp_path, tls_directory(tls_certmgr, profile))
    env.update(EAB_KID=dehydrated_key.kid, EAB_HMAC_KEY=dehydrated_hmac)
    register = run([binary, "-f", str(config), "--register", "--accept-terms"], env)
    assert register.returncode == 0, register.stdout + register.stderr
    for key in (uacme_key, dehydrated_key):
        key.refresh_from_db()
    accounts = set(AcmeServerAccount.objects.filter(profile=profile).values_list("pk", flat=True))
    assert {uacme_key.account_id, dehydrated_key.account_id} == accounts and len(accounts) == 2
