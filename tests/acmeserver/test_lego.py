"""Debian's ``lego`` against certmgr's ACME server served over HTTPS by gunicorn (``tls_certmgr``), trusting
certmgr's TLS certificate through ``LEGO_CA_CERTIFICATES``: HTTP-01 (lego's own server), TLS-ALPN-01 (lego's
own acme-tls/1 responder, validated by certmgr's worker), DNS-01 through BIND with lego's rfc2136 provider,
External Account Binding, ``renew`` and ``revoke``, and an IP address (refused: lego 4.9.1 has no RFC 8738).
Every certificate lego saves verifies with ``openssl verify`` against the CA's root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes

from acmeserver import services
from acmeserver.models import AcmeServerAccount, AcmeServerOrder
from certmgr.models import AuditEvent
from pki.models import Certificate
from tests.acmeserver.conftest import loopback_name, make_profile, sans, unique_name, verified_leaf
from tests.conftest import SYSTEM
from tests.dnsservers import require_executable

pytestmark = pytest.mark.servers


def lego(
    tls_certmgr, tmp_path: Path, profile, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    binary = require_executable(shutil.which("lego") or "/usr/bin/lego", "lego")
    server = f"{tls_certmgr.url}/acme/{profile.organization.slug}/{profile.slug}/directory"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LEGO_", "RFC2136_", "HTTP"))}
    environ.update(HOME=str(tmp_path), LEGO_CA_CERTIFICATES=tls_certmgr.ca_bundle, **(env or {}))
    command = [binary, "--server", server, "--path", str(tmp_path / "lego"), "--accept-tos", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environ, check=False)


def verify(tls_certmgr, tmp_path: Path, name: str) -> cx509.Certificate:
    """lego's ``<name>.crt`` is the bundle (leaf, then the issuing CA): it verifies against the root."""
    bundle = (tmp_path / "lego" / "certificates" / f"{name}.crt").read_text()
    return verified_leaf(bundle, tls_certmgr.ca_bundle, tmp_path)


def the_order_of(cert: cx509.Certificate) -> AcmeServerOrder:
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    return AcmeServerOrder.objects.select_related("certificate").get(
        certificate__fingerprint_sha256=fingerprint
    )


def test_lego_http01_then_renew_then_revoke(tls_certmgr, profile, powerdns, tmp_path):
    name = loopback_name(powerdns, "lego")
    common = ["--email", "ops@acme.test", "--domains", name, "--http", "--http.port"]
    common.append(f"127.0.0.1:{tls_certmgr.http01_port}")
    run = lego(tls_certmgr, tmp_path, profile, *common, "run")
    assert run.returncode == 0, run.stdout + run.stderr
    first = verify(tls_certmgr, tmp_path, name)
    assert sans(first) == [name]
    order = the_order_of(first)
    assert order.authorizations.get().challenges.get(status="valid").type == "http-01"
    assert AcmeServerAccount.objects.get().contact == ["mailto:ops@acme.test"]

    renew = lego(tls_certmgr, tmp_path, profile, *common, "renew", "--days", "9999", "--no-random-sleep")
    assert renew.returncode == 0, renew.stdout + renew.stderr
    second = verify(tls_certmgr, tmp_path, name)
    assert second.serial_number != first.serial_number
    assert AcmeServerOrder.objects.filter(status="valid").count() == 2

    revoke = lego(tls_certmgr, tmp_path, profile, *common, "revoke", "--reason", "4")
    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    cert = Certificate.objects.get(pk=the_order_of(second).certificate_id)
    assert cert.status == "revoked" and cert.revocation_reason == "superseded"
    assert AuditEvent.objects.filter(action="certificate.revoke", target_id=str(cert.pk)).exists()
    assert Certificate.objects.get(pk=order.certificate_id).status != "revoked"


def test_lego_tls_alpn01(tls_certmgr, profile, powerdns, tmp_path):
    """certmgr's worker makes the handshake with lego's acme-tls/1 responder and checks its certificate."""
    services.save_profile(None, actor=SYSTEM, instance=profile, challenge_types=["tls-alpn-01"])
    name = loopback_name(powerdns, "alpn")
    run = lego(
        tls_certmgr,
        tmp_path,
        profile,
        "--email",
        "ops@acme.test",
        "--domains",
        name,
        "--tls",
        "--tls.port",
        f"127.0.0.1:{tls_certmgr.tls01_port}",
        "run",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    cert = verify(tls_certmgr, tmp_path, name)
    assert sans(cert) == [name]
    challenge = the_order_of(cert).authorizations.get().challenges.get()
    assert challenge.type == "tls-alpn-01" and challenge.status == "valid"
    (entry,) = challenge.validation_record
    assert entry["address"] == "127.0.0.1" and entry["port"] == tls_certmgr.tls01_port
    assert entry["sni"] == name and entry["alpn"] == "acme-tls/1" and entry["san"] == [name]


def test_lego_ip_identifier_is_sent_as_a_dns_name_and_refused(tls_certmgr, tenant, hierarchy, tmp_path):
    """Debian's lego 4.9.1 cannot order an IP address: its ``OrderService.New`` (acme/api/order.go) types
    every name ``dns``, and its CSR (certcrypto.GenerateCSR) puts every name in the DNS SANs; ``--csr`` does
    not help either (certcrypto.ExtractDomainsCSR reads only the CN and the DNS SANs). RFC 8738 ``ip``
    identifiers came with lego 4.11.0 (go-acme/lego#1838). So ``--domains 127.0.0.1`` arrives as a ``dns``
    identifier, and certmgr does not guess: ``rejectedIdentifier`` saying which type to use, nothing left
    behind. (Real clients issuing IP identifiers: uacme in test_clients.py, certbot in test_certbot.py.)
    When Debian ships a lego of 4.11 or later, this test fails and becomes the issuing one."""
    profile = make_profile(tenant, hierarchy[1], name="Addresses", slug="ip", allow_ip_identifiers=True)
    run = lego(
        tls_certmgr,
        tmp_path,
        profile,
        "--email",
        "ops@acme.test",
        "--domains",
        "127.0.0.1",
        "--http",
        "--http.port",
        f"127.0.0.1:{tls_certmgr.http01_port}",
        "run",
    )
    assert run.returncode != 0
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in run.stderr, run.stdout + run.stderr
    assert "'127.0.0.1' is an IP address: use an identifier of type ip" in run.stderr
    assert not AcmeServerOrder.objects.exists() and not Certificate.objects.filter(common_name="127.0.0.1")


def test_lego_dns01_rfc2136_through_bind(tls_certmgr, tenant, hierarchy, bind, tmp_path):
    profile = make_profile(tenant, hierarchy[1], name="DNS", slug="dns", challenge_types=["dns-01"])
    name = unique_name(bind.zone, "lego-dns")
    algorithm = bind.algorithm if bind.algorithm.endswith(".") else f"{bind.algorithm}."
    env = {
        "RFC2136_NAMESERVER": f"{bind.server}:{bind.port}",
        "RFC2136_TSIG_KEY": bind.key_name,
        "RFC2136_TSIG_ALGORITHM": algorithm,
        "RFC2136_TSIG_SECRET": bind.secret,
        "RFC2136_PROPAGATION_TIMEOUT": "30",
        "RFC2136_POLLING_INTERVAL": "1",
    }
    run = lego(
        tls_certmgr,
        tmp_path,
        profile,
        "--email",
        "ops@acme.test",
        "--domains",
        name,
        "--dns",
        "rfc2136",
        "--dns.resolvers",
        f"{bind.server}:{bind.port}",
        "--dns.disable-cp",  # BIND is the zone's only server; lego asks it for the zone's SOA
        "run",
        env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    cert = verify(tls_certmgr, tmp_path, name)
    assert sans(cert) == [name]
    challenge = the_order_of(cert).authorizations.get().challenges.get(status="valid")
    assert challenge.type == "dns-01"
    assert challenge.validation_record[0]["resolvers"] == f"{bind.server}:{bind.port}"


def test_lego_with_external_account_binding(tls_certmgr, tenant, hierarchy, powerdns, tmp_path):
    profile = make_profile(tenant, hierarchy[1], name="EAB", slug="eab", eab_required=True)
    key, hmac_key = services.create_eab_key(profile, actor=SYSTEM, name="lego")
    name = loopback_name(powerdns, "lego-eab")
    common = ["--email", "ops@acme.test", "--domains", name, "--http", "--http.port"]
    common.append(f"127.0.0.1:{tls_certmgr.http01_port}")
    refused = lego(tls_certmgr, tmp_path / "no-eab", profile, *common, "run")
    assert refused.returncode != 0
    assert "Server requires External Account Binding" in refused.stdout + refused.stderr  # from the directory
    run = lego(tls_certmgr, tmp_path, profile, "--eab", "--kid", key.kid, "--hmac", hmac_key, *common, "run")
    assert run.returncode == 0, run.stdout + run.stderr
    verify(tls_certmgr, tmp_path, name)
    key.refresh_from_db()
    account = AcmeServerAccount.objects.get(profile=profile)
    assert key.account_id == account.pk
