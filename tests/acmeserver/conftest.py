"""The ACME server under test: a profile of the tenant's issuing CA served by pytest-django's live server
(a real HTTP server in a thread), ACME clients (the ``acme`` library, certbot) talking to it, and names that
resolve to loopback through a real PowerDNS (``CERTMGR_ACME_VALIDATION_RESOLVERS``)."""

from __future__ import annotations

import http.server
import ipaddress
import itertools
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import josepy as jose
import pytest
from acme import client as acme_client
from acme import messages
from cryptography import x509 as cx509
from cryptography.hazmat.primitives.asymmetric import ec

from acmeserver import services
from tests import dnsservers
from tests.conftest import SYSTEM
from tests.pki.conftest import hierarchy  # noqa: F401  (a fixture)

powerdns = dnsservers.powerdns
bind = dnsservers.bind
_counter = itertools.count()


def unique_name(zone: str = "pdns.test", label: str = "host") -> str:
    return f"{label}-{next(_counter)}-{uuid.uuid4().hex[:6]}.{zone.rstrip('.')}"


def make_profile(tenant, ca, **values):
    values = {"name": "Web servers", "slug": "web", "ca": ca, "validity_days": 30, **values}
    return services.save_profile(tenant.organization, actor=SYSTEM, **values)


def directory_url(live_server, profile) -> str:
    return f"{live_server.url}/acme/{profile.organization.slug}/{profile.slug}/directory"


@pytest.fixture
def profile(transactional_db, tenant, hierarchy):  # noqa: F811
    return make_profile(tenant, hierarchy[1])


@dataclass
class TokenServer:
    """A plain HTTP server on loopback answering /.well-known/acme-challenge/<token> from ``tokens``."""

    port: int
    tokens: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (Host header, path)


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    state = TokenServer(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append((self.headers.get("Host", ""), self.path))
            token = self.path.rsplit("/", 1)[-1]
            body = state.tokens.get(token)
            if not self.path.startswith("/.well-known/acme-challenge/") or body is None:
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

    server = http.server.ThreadingHTTPServer((dnsservers.HOST, 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def validation_env(settings, powerdns, token_server):
    """The validator asks PowerDNS for addresses and may reach loopback; HTTP-01 goes to ``token_server``."""
    settings.CERTMGR_ACME_VALIDATION_RESOLVERS = f"{powerdns.host}:{powerdns.dns_port}"
    settings.CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.CERTMGR_ACME_VALIDATION_HTTP_PORT = token_server.port
    settings.CERTMGR_ACME_VALIDATION_TIMEOUT = 3.0
    return powerdns


def loopback_name(powerdns, label: str = "host") -> str:
    """A fresh name of PowerDNS's zone with an A record for 127.0.0.1."""
    name = unique_name(powerdns.zone, label)
    powerdns.set_rrset(name, "A", ["127.0.0.1"])
    return name


def acme_client_for(url: str, key: jose.JWK | None = None, *, register: bool = True) -> acme_client.ClientV2:
    """An ``acme`` library client of the directory at ``url`` (an ES256 account key unless given)."""
    key = key or jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    alg = jose.ES256 if isinstance(key, jose.JWKEC) else jose.RS256
    net = acme_client.ClientNetwork(key, alg=alg, user_agent="certmgr-tests")
    directory = messages.Directory.from_json(net.get(url).json())
    client = acme_client.ClientV2(directory, net)
    if register:
        regr = client.new_account(
            messages.NewRegistration.from_data(email="ops@acme.test", terms_of_service_agreed=True)
        )
        client.net.account = regr
    return client


@dataclass
class TlsCertmgr:
    """certmgr served by gunicorn over HTTPS (``--certfile``/``--keyfile``, as an operator runs it), with a
    server certificate for localhost from the tenant's own CA; ``ca_bundle`` trusts it."""

    url: str
    ca_bundle: str
    http01_port: int  # where the validator (inside gunicorn) fetches HTTP-01 tokens
    tls01_port: int = 0  # where it makes its tls-alpn-01 handshakes


@pytest.fixture
def tls_certmgr_env(request) -> dict[str, str]:
    """More environment for the gunicorn of ``tls_certmgr``: a DNS-01 test (one asking for ``bind``) has the
    validator read TXT records from BIND, where the client's RFC 2136 update or hook wrote them."""
    if "bind" not in request.fixturenames:
        return {}
    bind = request.getfixturevalue("bind")
    return {"CERTMGR_ACME_VALIDATION_RESOLVERS": f"{bind.server}:{bind.port}"}


def verified_leaf(chain_pem: str, root: str, workdir: Path) -> cx509.Certificate:
    """The leaf of a client's saved chain (leaf first, then the intermediates), after ``openssl verify``
    accepted it against the CA's ``root`` (a file)."""
    certs = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", chain_pem, re.S)
    assert len(certs) >= 2, chain_pem
    (workdir / "leaf.pem").write_text(certs[0])
    (workdir / "intermediates.pem").write_text("".join(certs[1:]))
    leaf, intermediates = str(workdir / "leaf.pem"), str(workdir / "intermediates.pem")
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", root, "-untrusted", intermediates, leaf],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return cx509.load_pem_x509_certificate(certs[0].encode())


def assert_only_the_address(cert: cx509.Certificate, address: str) -> None:
    """RFC 8738: the address is the certificate's one SAN, as an IP address (not a DNS name), and the
    subject has no common name (clients read a CN as a DNS name)."""
    names = cert.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
    assert names.get_values_for_type(cx509.IPAddress) == [ipaddress.ip_address(address)]
    assert names.get_values_for_type(cx509.DNSName) == []
    assert cert.subject.get_attributes_for_oid(cx509.NameOID.COMMON_NAME) == []


def sans(cert: cx509.Certificate) -> list[str]:
    """The subjectAltName values, DNS names and IP addresses alike, as text."""
    names = cert.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


@pytest.fixture
def tls_certmgr(
    transactional_db,
    tenant,
    hierarchy,  # noqa: F811
    profile,
    tmp_path,
    monkeypatch,
    powerdns,
    tls_certmgr_env,
) -> Iterator[TlsCertmgr]:
    import sys
    import time

    import requests
    from django.db import connection

    from pki import services as pki_services

    gunicorn = Path(sys.executable).with_name("gunicorn")
    sub = pki_services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="certmgr-tls",
        ca=hierarchy[1],
        common_name="localhost",
        sans=["localhost", "127.0.0.1"],
        validity_days=2,
        extended_key_usages=["server_auth"],
    )
    cert = pki_services.issue(sub, actor=SYSTEM).certificate
    (tmp_path / "tls.pem").write_text(cert.certificate_pem + cert.chain_pem)
    (tmp_path / "tls.key").write_text(cert.private_key)
    (tmp_path / "root.pem").write_text(hierarchy[0].certificate_pem)
    port, http01_port, tls01_port = dnsservers.free_port(), dnsservers.free_port(), dnsservers.free_port()
    db = connection.settings_dict
    monkeypatch.setenv("DATABASE_URL", f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.settings")
    monkeypatch.setenv("CERTMGR_ACME_VALIDATION_RESOLVERS", f"{powerdns.host}:{powerdns.dns_port}")
    monkeypatch.setenv("CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("CERTMGR_ACME_VALIDATION_HTTP_PORT", str(http01_port))
    monkeypatch.setenv("CERTMGR_ACME_VALIDATION_TLS_PORT", str(tls01_port))
    for key, value in tls_certmgr_env.items():
        monkeypatch.setenv(key, value)
    command = [
        str(gunicorn),
        "certmgr.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--certfile",
        str(tmp_path / "tls.pem"),
        "--keyfile",
        str(tmp_path / "tls.key"),
        "--workers",
        "1",
        "--threads",
        "4",
    ]
    log = tmp_path / "gunicorn.log"
    root = Path(__file__).resolve().parents[2]
    with dnsservers.running(command, log, root) as proc:
        url = f"https://localhost:{port}"
        deadline = time.monotonic() + 90  # a loaded machine starts gunicorn (and Django in it) slowly
        while True:
            try:
                health = requests.get(f"{url}/healthz", verify=str(tmp_path / "root.pem"), timeout=10)
                # Django answers with its database: up. (The worker check fails once a transactional test
                # before this one flushed django-q's schedules; no worker runs here, tasks run inline.)
                if health.ok or health.json().get("checks", {}).get("database", {}).get("ok"):
                    break
            except requests.RequestException:  # not listening yet, or still importing Django
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not start:\n{dnsservers.tail(log)}")
            time.sleep(0.2)
        yield TlsCertmgr(
            url=url, ca_bundle=str(tmp_path / "root.pem"), http01_port=http01_port, tls01_port=tls01_port
        )
