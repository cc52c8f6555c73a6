"""The real certbot (PyPI, in the test venv) against certmgr's ACME server on loopback: ``certonly
--standalone`` (HTTP-01 validated by certmgr against certbot's own server), ``revoke``, and a second
``revoke`` that fails because the certificate is revoked already; ``--ip-address`` (RFC 8738); DNS-01
through BIND with ``--dns-rfc2136``, renew with ARI, ``--preferred-profile``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes

from acmeserver.models import AcmeServerOrder
from certmgr.models import AuditEvent
from pki.models import Certificate
from tests.acmeserver.conftest import (
    assert_only_the_address,
    directory_url,
    loopback_name,
    make_profile,
    verified_leaf,
)
from tests.dnsservers import free_port

pytestmark = pytest.mark.servers
CERTBOT = Path(sys.executable).with_name("certbot")


def certbot(
    tmp_path: Path, *args: str, ca_bundle: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    if not CERTBOT.exists():
        pytest.fail(f"certbot is not installed in the test venv ({CERTBOT}): pip install -e '.[dev]'")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REQUESTS_", "CURL_", "HTTP"))}
    env["HOME"] = str(tmp_path)
    if ca_bundle:
        env["REQUESTS_CA_BUNDLE"] = ca_bundle  # certbot trusts certmgr's TLS certificate, nothing is skipped
    command = [
        str(CERTBOT),
        *args,
        "--non-interactive",
        "--config-dir",
        str(tmp_path / "config"),
        "--work-dir",
        str(tmp_path / "work"),
        "--logs-dir",
        str(tmp_path / "logs"),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def test_certbot_certonly_standalone_over_tls_then_revoke_twice(tls_certmgr, profile, powerdns, tmp_path):
    """certbot trusts certmgr's HTTPS (gunicorn with a certificate of certmgr's own CA) through
    REQUESTS_CA_BUNDLE; certmgr validates HTTP-01 against certbot's standalone server."""
    name = loopback_name(powerdns, "certbot")
    server = f"{tls_certmgr.url}/acme/{profile.organization.slug}/{profile.slug}/directory"
    run = certbot(
        tmp_path,
        "certonly",
        "--standalone",
        "--http-01-port",
        str(tls_certmgr.http01_port),
        "--http-01-address",
        "127.0.0.1",
        "-d",
        name,
        "--server",
        server,
        "--agree-tos",
        "-m",
        "ops@acme.test",
        ca_bundle=tls_certmgr.ca_bundle,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    live = tmp_path / "config" / "live" / name
    leaf = cx509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    names = leaf.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
    assert names.get_values_for_type(cx509.DNSName) == [name]
    # openssl verifies the chain certbot saved against the CA's root.
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            tls_certmgr.ca_bundle,
            "-untrusted",
            str(live / "chain.pem"),
            str(live / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    order = AcmeServerOrder.objects.select_related("certificate").get()
    assert order.certificate.fingerprint_sha256 == leaf.fingerprint(hashes.SHA256()).hex()

    revoke = certbot(
        tmp_path,
        "revoke",
        "--cert-path",
        str(live / "cert.pem"),
        "--reason",
        "keycompromise",
        "--no-delete-after-revoke",
        "--server",
        server,
        ca_bundle=tls_certmgr.ca_bundle,
    )
    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    cert = Certificate.objects.get(pk=order.certificate_id)
    assert cert.status == "revoked" and cert.revocation_reason == "key_compromise"
    assert AuditEvent.objects.filter(action="certificate.revoke", target_id=str(cert.pk)).exists()

    again = certbot(
        tmp_path,
        "revoke",
        "--cert-path",
        str(live / "cert.pem"),
        "--no-delete-after-revoke",
        "--server",
        server,
        ca_bundle=tls_certmgr.ca_bundle,
    )
    assert again.returncode != 0
    assert "already revoked" in again.stdout + again.stderr


def test_certbot_ip_address_over_http01(tls_certmgr, tenant, hierarchy, tmp_path):
    """RFC 8738: certbot 5.x's ``--ip-address 127.0.0.1`` orders an ``ip`` identifier; certmgr validates
    HTTP-01 at the address (certbot's standalone server) and the certificate's only SAN is the address."""
    profile = make_profile(tenant, hierarchy[1], name="Addresses", slug="ip", allow_ip_identifiers=True)
    run = certbot(
        tmp_path,
        "certonly",
        "--standalone",
        "--http-01-port",
        str(tls_certmgr.http01_port),
        "--http-01-address",
        "127.0.0.1",
        "--ip-address",
        "127.0.0.1",
        "--cert-name",
        "loopback",
        "--server",
        f"{tls_certmgr.url}/acme/{profile.organization.slug}/{profile.slug}/directory",
        "--agree-tos",
        "--register-unsafely-without-email",
        ca_bundle=tls_certmgr.ca_bundle,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    chain = (tmp_path / "config" / "live" / "loopback" / "fullchain.pem").read_text()
    leaf = verified_leaf(chain, tls_certmgr.ca_bundle, tmp_path)
    assert_only_the_address(leaf, "127.0.0.1")
    authorization = AcmeServerOrder.objects.get(status="valid").authorizations.get()
    assert (authorization.identifier_type, authorization.identifier_value) == ("ip", "127.0.0.1")
    assert authorization.challenges.get(status="valid").type == "http-01"


def test_certbot_revokes_with_the_certificates_key(live_server, profile, validation_env, settings, tmp_path):
    """Plain HTTP on loopback (pytest-django's live server): certbot's revoke --key-path signs with the
    certificate's own key instead of the account's."""
    port = free_port()
    settings.CERTMGR_ACME_VALIDATION_HTTP_PORT = port
    name = loopback_name(validation_env, "certbot")
    server = directory_url(live_server, profile)
    common = ["--server", server]
    run = certbot(
        tmp_path,
        "certonly",
        "--standalone",
        "--http-01-port",
        str(port),
        "--http-01-address",
        "127.0.0.1",
        "-d",
        name,
        "--agree-tos",
        "--register-unsafely-without-email",
        "--key-type",
        "rsa",
        *common,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    live = tmp_path / "config" / "live" / name
    revoke = certbot(
        tmp_path,
        "revoke",
        "--cert-path",
        str(live / "cert.pem"),
        "--key-path",
        str(live / "privkey.pem"),
        "--no-delete-after-revoke",
        *common,
    )
    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    cert = AcmeServerOrder.objects.get().certificate
    assert cert.status == "revoked" and cert.key_algorithm == "rsa-2048"
    assert AuditEvent.objects.get(action="certificate.revoke").actor_label.endswith("certificate key")


def test_certbot_dns_rfc2136_through_bind_then_renew(
    live_server, tenant, hierarchy, bind, settings, tmp_path
):
    """DNS-01: certbot's rfc2136 plugin writes the TXT record into BIND with TSIG, certmgr's validator reads
    it there; then ``certbot renew --force-renewal`` orders again and gets a second certificate."""
    from tests.acmeserver.conftest import make_profile, unique_name

    profile = make_profile(tenant, hierarchy[1], name="DNS", slug="dns", challenge_types=["dns-01"])
    settings.CERTMGR_ACME_VALIDATION_RESOLVERS = f"{bind.server}:{bind.port}"
    name = unique_name(bind.zone, "rfc2136")
    credentials = tmp_path / "rfc2136.ini"
    credentials.write_text(
        f"dns_rfc2136_server = {bind.server}\n"
        f"dns_rfc2136_port = {bind.port}\n"
        f"dns_rfc2136_name = {bind.key_name.rstrip('.')}\n"
        f"dns_rfc2136_secret = {bind.secret}\n"
        f"dns_rfc2136_algorithm = {bind.algorithm.rstrip('.').upper()}\n"
    )
    credentials.chmod(0o600)
    server = ["--server", directory_url(live_server, profile)]
    run = certbot(
        tmp_path,
        "certonly",
        "--dns-rfc2136",
        "--dns-rfc2136-credentials",
        str(credentials),
        "--dns-rfc2136-propagation-seconds",
        "1",
        "-d",
        name,
        "--agree-tos",
        "--register-unsafely-without-email",
        *server,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    first = AcmeServerOrder.objects.get()
    assert first.authorizations.get().challenges.get(status="valid").type == "dns-01"
    renew = certbot(tmp_path, "renew", "--force-renewal", "--no-random-sleep-on-renew", *server)
    assert renew.returncode == 0, renew.stdout + renew.stderr
    orders = list(AcmeServerOrder.objects.order_by("created_at"))
    assert len(orders) == 2 and all(o.status == "valid" for o in orders)
    assert orders[0].certificate_id != orders[1].certificate_id
    live = tmp_path / "config" / "live" / name / "cert.pem"
    leaf = cx509.load_pem_x509_certificate(live.read_bytes())
    assert leaf.fingerprint(hashes.SHA256()).hex() == orders[1].certificate.fingerprint_sha256
    # ARI: nothing is due, so a plain renew does nothing; once certmgr revokes the certificate (the same
    # service as the admin's), renewalInfo suggests a window in the past and certbot renews. (certbot 5.8
    # sends no ``replaces``; the acme-library tests cover it.)
    settings.CERTMGR_ACME_ARI_RETRY_SECONDS = 1  # certbot keeps Retry-After: ask again a second later
    quiet = certbot(tmp_path, "renew", "--no-random-sleep-on-renew", *server)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert AcmeServerOrder.objects.count() == 2
    from pki import services as pki_services
    from tests.conftest import SYSTEM

    pki_services.revoke(orders[1].certificate, reason="superseded", actor=SYSTEM)
    time.sleep(1.5)
    due = certbot(tmp_path, "renew", "--no-random-sleep-on-renew", *server)
    assert due.returncode == 0, due.stdout + due.stderr
    third = AcmeServerOrder.objects.order_by("-created_at").first()
    assert AcmeServerOrder.objects.count() == 3 and third.status == "valid"
    assert third.certificate_id not in (orders[0].certificate_id, orders[1].certificate_id)


def test_certbot_preferred_profile_then_an_early_renewal_makes_renew_order_again(
    live_server, tenant, profile, validation_env, settings, tmp_path
):
    """draft-ietf-acme-profiles: ``--preferred-profile`` picks an order profile of the directory's
    meta.profiles and the certificate has its validity; then an operator's early renewal (ARI, a mass
    re-issue) makes a plain ``certbot renew`` order again, under the same profile."""
    from acmeserver import services
    from pki import services as pki_services
    from tests.conftest import SYSTEM

    policy = pki_services.save_policy(tenant.organization, actor=SYSTEM, name="Week", max_validity_days=7)
    services.save_order_profile(
        profile, actor=SYSTEM, name="shortlived", description="a week", policy=policy, validity_days=6
    )
    port = free_port()
    settings.CERTMGR_ACME_VALIDATION_HTTP_PORT = port
    name = loopback_name(validation_env, "profile")
    standalone = ["--standalone", "--http-01-port", str(port), "--http-01-address", "127.0.0.1"]
    server = ["--server", directory_url(live_server, profile)]
    run = certbot(
        tmp_path,
        "certonly",
        *standalone,
        "-d",
        name,
        "--preferred-profile",
        "shortlived",
        "--agree-tos",
        "--register-unsafely-without-email",
        *server,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    first = AcmeServerOrder.objects.get()
    assert first.profile_name == "shortlived"
    leaf = cx509.load_pem_x509_certificate((tmp_path / "config" / "live" / name / "cert.pem").read_bytes())
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 6
    settings.CERTMGR_ACME_ARI_RETRY_SECONDS = 1
    quiet = certbot(tmp_path, "renew", "--no-random-sleep-on-renew", *standalone, *server)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert AcmeServerOrder.objects.count() == 1  # ARI: not due yet (the 6-day certificate is fresh)
    assert services.request_early_renewal(actor=SYSTEM, profile=profile, reason="re-issue") == 1
    time.sleep(1.5)
    due = certbot(tmp_path, "renew", "--no-random-sleep-on-renew", *standalone, *server)
    assert due.returncode == 0, due.stdout + due.stderr
    second = AcmeServerOrder.objects.order_by("-created_at").first()
    assert AcmeServerOrder.objects.count() == 2 and second.status == "valid"
    assert second.certificate_id != first.certificate_id and second.profile_name == "shortlived"
