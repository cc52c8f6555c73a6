"""An ACME test bed on loopback: Debian's Pebble (Let's Encrypt's test CA) validating against our own DNS.

Wiring (every port is a free port of 127.0.0.1, every file lives in a pytest temporary directory)::

    ACME client --HTTPS--> pebble (listenAddress)           management API (roots, intermediates): HTTPS
                             | -dnsserver 127.0.0.1:<dnsdist.port>  (TXT for dns-01, A/AAAA for http-01)
                             v
                           dnsdist (no packet cache; routes by zone suffix)
                             |-- bind.test. and zones added by ``dnsdist.route(zone, "bind")`` -> named
                             |-- delegated ``_acme-challenge`` names (``add_backend`` + ``route(...,
                             |   except_ns=True)``)                          -> certmgr's manage.py dns_server
                             '-- everything else (the default pool)                         -> pdns_server

Why dnsdist: Pebble takes exactly one ``-dnsserver`` and follows no CNAME, so names in a PowerDNS zone and
in a BIND zone can only be validated in one run if something routes its queries by zone. Zones created
later with ``powerdns.add_zone()`` need no route (PowerDNS is the default pool); zones created with
``bind.add_zone()`` need ``dnsdist.route(zone, "bind")`` (applied at runtime through dnsdist's console).

Fixtures (session scoped; import them into a test module, ``pytest_plugins`` only works at the root)::

    from tests import acme_testbed, dnsservers

    bind, powerdns = dnsservers.bind, dnsservers.powerdns
    dnsdist, pebble, pebble_eab = acme_testbed.dnsdist, acme_testbed.pebble, acme_testbed.pebble_eab

- ``pebble``: EAB not required. ``pebble_eab``: a second Pebble with ``externalAccountBindingRequired``
  and one known key (``eab_kid`` / ``eab_hmac_key``). Both use the same dnsdist.
- For an ACME CA in certmgr: ``directory_url``, ``tls_ca_bundle`` (PEM of the CA that signed Pebble's
  HTTPS certificate, for both the ACME and the management port), ``eab_kid`` / ``eab_hmac_key``; set
  ``CERTMGR_OUTBOUND_ALLOWED_NETWORKS=127.0.0.0/8`` and ``CERTMGR_DNS_RESOLVERS`` to
  ``f"127.0.0.1:{dnsdist.port}"`` (or the authoritative server's own port) for the propagation check.
- To verify an issued chain: ``pebble.roots_pem()`` / ``pebble.intermediates_pem()`` (``/roots/0`` and
  ``/intermediates/0`` of the management API; they change with every Pebble start) and ``verify_chain()``.

HTTP-01: Pebble's VA fetches ``http://<name>:<pebble.http_port>/.well-known/acme-challenge/<token>``
(config key ``httpPort``; a free port here, not the default 5002) from the address ``<name>`` resolves to
through dnsdist. Point a name at loopback with ``set_a_record(powerdns, "www.pdns.test", "127.0.0.1")`` and
serve certmgr's responder on ``127.0.0.1:<pebble.http_port>`` (e.g. Django's live server bound to that port).
Each Pebble instance has its own ``http_port``.

Pebble 2.4.0 facts to design around: nonce rejection stays ON (``PEBBLE_WFE_NONCEREJECT`` unset, so 5% of
POSTs fail with ``badNonce``; ``acme.client.ClientNetwork`` retries only once, see ``RetryingNetwork``);
``PEBBLE_AUTHZREUSE`` defaults to 50%, so a second order for a name may come back with an authorization
that is already valid (use fresh names per test when a challenge must really be answered); no ARI, no
profiles, no Retry-After on authorizations; ``PEBBLE_VA_NOSLEEP=1`` removes the random validation sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.rcode
import josepy as jose
import pytest
import requests
from acme import client as acme_client
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.dnsservers import (
    HOST,
    BindServer,
    PowerDNSServer,
    fqdn,
    free_port,
    require_executable,
    running,
    soa_query,
    stop,
    tail,
    txt_query,
    wait_for,
)

PEBBLE = os.environ.get("PEBBLE_BIN", "pebble")
DNSDIST = os.environ.get("DNSDIST_BIN", "dnsdist")
OPENSSL = os.environ.get("OPENSSL_BIN", "openssl")


# --- dnsdist ---------------------------------------------------------------------------------------


@dataclass
class DnsdistRouter:
    """A running dnsdist forwarding by zone suffix: ``bind`` pool -> named, default pool -> PowerDNS."""

    port: int
    console_port: int
    console_key: str
    workdir: Path
    binary: str
    routes: dict[str, str] = field(default_factory=dict)  # suffix -> "bind" | "pdns" (the default pool)
    rules: int = 0  # how many rules dnsdist has (one per route)
    pools: set[str] = field(default_factory=set)  # pools added at runtime (add_backend)
    host: str = HOST

    @property
    def address(self) -> str:
        """What Pebble's ``-dnsserver`` and ``CERTMGR_DNS_RESOLVERS`` take."""
        return f"{self.host}:{self.port}"

    @property
    def conf(self) -> Path:
        return self.workdir / "dnsdist.conf"

    @property
    def log(self) -> Path:
        return self.workdir / "dnsdist.log"

    def console(self, command: str) -> str:
        """Run a Lua command in the running dnsdist (its console reads the key from the config)."""
        done = subprocess.run(
            [self.binary, "-C", str(self.conf), "-c", "-e", command],
            capture_output=True,
            text=True,
            timeout=10,
        )
        # The console exits 0 even when the Lua command fails: look for its "Error:" line as well.
        if done.returncode != 0 or done.stdout.startswith("Error:") or done.stderr.strip():
            raise AssertionError(f"dnsdist console {command!r}: {done.stdout}{done.stderr}")
        return done.stdout

    def add_backend(self, name: str, address: str, pool: str) -> None:
        """A server of its own ``pool`` (e.g. certmgr's DNS server), always up: dnsdist's health check asks
        for a name the server may REFUSE, so it is forced up instead (``setUp()``)."""
        if pool in self.pools:
            return
        self.console(f'newServer({{address="{address}", name="{name}", pool="{pool}"}}):setUp()')
        self.pools.add(pool)

    def route(self, zone: str, pool: str, *, except_ns: bool = False) -> None:
        """Send queries at and below ``zone`` to ``pool`` ("bind" or "pdns"); "pdns" is the default.

        ``except_ns``: NS queries keep going to the default pool, the parent zone: as a resolver that follows
        a delegation sends TXT queries to the child's servers while the parent holds the NS record."""
        zone = fqdn(zone).lower()
        if self.routes.get(zone) == pool:
            return
        pool_name = "" if pool == "pdns" else pool
        rule = f'makeRule("{zone}")'
        if except_ns:
            rule = f"AndRule({{{rule}, NotRule(QTypeRule(DNSQType.NS))}})"
        # Rules are evaluated in order and the first PoolAction wins: move the new (last) rule to the top,
        # so a route for a subzone beats the route of its parent. dnsdist 1.7 has no topRule().
        self.console(f'addAction({rule}, PoolAction("{pool_name}"))')
        self.console(f"mvRule({self.rules}, 0)")
        self.rules += 1
        self.routes[zone] = pool

    def txt_records(self, name: str) -> list[str]:
        """The TXT strings at ``name`` as Pebble sees them (through dnsdist)."""
        return txt_query(self.host, self.port, name)


def _dnsdist_config(
    port: int, console_port: int, key: str, powerdns: PowerDNSServer, bind: BindServer, zones: list[str]
) -> str:
    # checkName/checkType: the default health check asks for a.root-servers.net, which authoritative-only
    # servers refuse; ask each backend for the SOA of a zone it serves instead.
    lines = [
        f'setLocal("{HOST}:{port}")',
        f'controlSocket("{HOST}:{console_port}")',
        f'setKey("{key}")',
        f'setConsoleACL("{HOST}/32")',
        'setACL({"127.0.0.0/8"})',
        "setSecurityPollSuffix('')",  # no "is this version secure?" query to the internet
        f'newServer({{address="{HOST}:{powerdns.dns_port}", name="pdns", checkName="{powerdns.zone}", '
        'checkType="SOA", mustResolve=true})',
        f'newServer({{address="{HOST}:{bind.port}", name="bind", pool="bind", checkName="{bind.zone}", '
        'checkType="SOA", mustResolve=true})',
    ]
    # makeRule("zone.") is a SuffixMatchNodeRule (1.7's SuffixMatchNodeRule() takes no plain string).
    lines += [f'addAction(makeRule("{z}"), PoolAction("bind"))' for z in zones]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def dnsdist(tmp_path_factory, powerdns: PowerDNSServer, bind: BindServer) -> Iterator[DnsdistRouter]:
    binary = require_executable(DNSDIST, "dnsdist")
    workdir = tmp_path_factory.mktemp("dnsdist")
    router = DnsdistRouter(
        port=free_port(),
        console_port=free_port(),
        console_key=base64.b64encode(secrets.token_bytes(32)).decode(),  # what makeKey() prints
        workdir=workdir,
        binary=binary,
    )
    bind_zones = list(dict.fromkeys([bind.zone, *bind.zones]))
    router.conf.write_text(
        _dnsdist_config(router.port, router.console_port, router.console_key, powerdns, bind, bind_zones)
    )
    router.routes.update(dict.fromkeys(bind_zones, "bind"))
    router.rules = len(bind_zones)
    check = subprocess.run(
        [binary, "-C", str(router.conf), "--check-config"], capture_output=True, text=True, timeout=30
    )
    if check.returncode != 0:
        pytest.fail(f"dnsdist --check-config rejects the test config:\n{check.stdout}{check.stderr}")
    # --supervised: no interactive console on stdin; --disable-syslog: log to stdout only.
    cmd = [binary, "-C", str(router.conf), "--supervised", "--disable-syslog"]
    with running(cmd, router.log, workdir) as proc:
        for zone in (powerdns.zone, bind.zone):
            wait_for(
                lambda zone=zone: soa_query(HOST, router.port, zone).rcode() == dns.rcode.NOERROR,
                proc,
                router.log,
                f"dnsdist (SOA of {zone})",
            )
        yield router


# --- Pebble ----------------------------------------------------------------------------------------


@dataclass
class PebbleServer:
    """A running Pebble with its own HTTPS certificate (trusted through ``tls_ca_bundle``)."""

    directory_url: str
    management_url: str
    tls_ca_bundle: str  # PEM: the CA that signed Pebble's HTTPS certificate (not Pebble's issuing root)
    tls_ca_bundle_path: Path
    http_port: int  # where Pebble's VA fetches http-01 tokens (on the address the name resolves to)
    tls_port: int  # tls-alpn-01 (unused by certmgr)
    dns_server: str  # Pebble's -dnsserver (dnsdist)
    eab_required: bool
    eab_kid: str
    eab_hmac_key: str  # base64url without padding, as ACME clients take it
    workdir: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    command: list[str] = field(default_factory=list, repr=False)
    environment: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def log(self) -> Path:
        return self.workdir / "pebble.log"

    def management(self, path: str) -> str:
        r = requests.get(f"{self.management_url}{path}", verify=str(self.tls_ca_bundle_path), timeout=10)
        r.raise_for_status()
        return r.text

    def roots_pem(self) -> str:
        """Pebble's issuing root (``/roots/0``): the trust anchor of every certificate it issues."""
        return self.management("/roots/0")

    def intermediates_pem(self) -> str:
        """Pebble's intermediate (``/intermediates/0``)."""
        return self.management("/intermediates/0")

    def tail_log(self, lines: int = 80) -> str:
        return tail(self.log, lines)

    def restart(self) -> None:
        """Stop Pebble and start it again on the same ports: it forgets every account, order and its own
        roots (Pebble keeps nothing on disk), as a CA reset or a staging wipe does. Only for a Pebble of one
        test (``own_pebble``): the session's Pebble serves every other test's accounts."""
        assert self.proc is not None
        stop(self.proc)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._directory_ready, self.proc, self.log, "pebble (restarted)")

    def _directory_ready(self) -> bool:
        r = requests.get(self.directory_url, verify=str(self.tls_ca_bundle_path), timeout=1)
        return r.status_code == 200 and "newOrder" in r.json()


def _tls_material(workdir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certmgr tests: Pebble HTTPS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = workdir / "tls-ca.pem", workdir / "tls-cert.pem", workdir / "tls-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


@contextlib.contextmanager
def _start_pebble(
    workdir: Path, dns_server: str, *, eab_required: bool, nonce_reject: int | None = None
) -> Iterator[PebbleServer]:
    """Pebble on free ports; ``nonce_reject`` (percent, ``PEBBLE_WFE_NONCEREJECT``) overrides its 5%."""
    binary = require_executable(PEBBLE, "pebble")
    ca_path, cert_path, key_path = _tls_material(workdir)
    listen, management = free_port(), free_port()
    http_port, tls_port = free_port(), free_port()
    eab_kid, eab_hmac_key = "kid-certmgr", secrets.token_urlsafe(32)  # base64url, no padding
    config = {
        "pebble": {
            "listenAddress": f"{HOST}:{listen}",
            "managementListenAddress": f"{HOST}:{management}",
            "certificate": str(cert_path),
            "privateKey": str(key_path),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": eab_required,
            "externalAccountMACKeys": {eab_kid: eab_hmac_key},
        }
    }
    config_path = workdir / "pebble-config.json"
    config_path.write_text(json.dumps(config, indent=2))
    server = PebbleServer(
        directory_url=f"https://{HOST}:{listen}/dir",
        management_url=f"https://{HOST}:{management}",
        tls_ca_bundle=ca_path.read_text(),
        tls_ca_bundle_path=ca_path,
        http_port=http_port,
        tls_port=tls_port,
        dns_server=dns_server,
        eab_required=eab_required,
        eab_kid=eab_kid,
        eab_hmac_key=eab_hmac_key,
        workdir=workdir,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
    env["PEBBLE_VA_NOSLEEP"] = "1"  # nonce rejection (PEBBLE_WFE_NONCEREJECT) stays at its default, 5%
    if nonce_reject is not None:
        env["PEBBLE_WFE_NONCEREJECT"] = str(nonce_reject)  # the soak's 50%
    env["PEBBLE_ALTERNATE_ROOTS"] = "1"  # a second chain behind Link rel="alternate" (preferred chain)
    cmd = [binary, "-config", str(config_path), "-dnsserver", dns_server]
    server.command, server.environment = cmd, env
    with _running_env(cmd, server.log, workdir, env) as proc:
        server.proc = proc
        wait_for(server._directory_ready, proc, server.log, "pebble")
        try:
            yield server
        finally:
            if server.proc is not proc:  # restarted: stop the running one
                stop(server.proc)


@contextlib.contextmanager
def _running_env(cmd: list[str], log: Path, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    # tests.dnsservers.running() passes no environment; Pebble needs PEBBLE_VA_NOSLEEP.
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def pebble(tmp_path_factory, dnsdist: DnsdistRouter) -> Iterator[PebbleServer]:
    """Pebble without EAB, validating through dnsdist (PowerDNS + BIND zones)."""
    with _start_pebble(tmp_path_factory.mktemp("pebble"), dnsdist.address, eab_required=False) as server:
        yield server


@pytest.fixture
def own_pebble(tmp_path, dnsdist: DnsdistRouter) -> Iterator[PebbleServer]:
    """A Pebble for one test, free to ``restart()`` (the session's Pebble is shared by every test)."""
    with _start_pebble(tmp_path, dnsdist.address, eab_required=False) as server:
        yield server


@pytest.fixture(scope="session")
def pebble_eab(tmp_path_factory, dnsdist: DnsdistRouter) -> Iterator[PebbleServer]:
    """Pebble with ``externalAccountBindingRequired``; the known key is ``eab_kid`` / ``eab_hmac_key``."""
    with _start_pebble(tmp_path_factory.mktemp("pebble-eab"), dnsdist.address, eab_required=True) as server:
        yield server


# --- helpers for tests -----------------------------------------------------------------------------


def set_a_record(
    powerdns: PowerDNSServer, name: str, address: str = HOST, *, zone: str | None = None
) -> None:
    """Point ``name`` at ``address`` in a PowerDNS zone (for http-01: Pebble's VA connects there)."""
    powerdns.api(
        "PATCH",
        f"/zones/{fqdn(zone or powerdns.zone)}",
        json={
            "rrsets": [
                {
                    "name": fqdn(name).lower(),
                    "type": "A",
                    "ttl": 60,
                    "changetype": "REPLACE",
                    "records": [{"content": address, "disabled": False}],
                }
            ]
        },
    )


class RetryingNetwork(acme_client.ClientNetwork):
    """``ClientNetwork`` that retries ``badNonce`` up to ``attempts`` times and counts them.

    The acme library retries a ``badNonce`` once; with Pebble rejecting 5% of nonces, two in a row hit
    about 1 order in 40, which would make tests flaky. ``bad_nonces`` proves the rejection is on.
    """

    def __init__(self, *args: Any, attempts: int = 6, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attempts = attempts
        self.bad_nonces = 0
        self.posts = 0

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(self.attempts):
            self.posts += 1
            try:
                return self._post_once(*args, **dict(kwargs))
            except messages.Error as error:
                if error.code != "badNonce" or attempt == self.attempts - 1:
                    raise
                self.bad_nonces += 1
        raise AssertionError("unreachable")


def acme_client_for(
    pebble: PebbleServer, key: jose.JWK | None = None, *, attempts: int = 6
) -> acme_client.ClientV2:
    """An ``acme`` ClientV2 for ``pebble`` (TLS verified with its bundle); ``client.net`` is a
    ``RetryingNetwork``. The account is not registered yet."""
    if key is None:
        key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    alg = jose.ES256 if isinstance(key, jose.JWKEC) else jose.RS256
    net = RetryingNetwork(
        key, alg=alg, verify_ssl=str(pebble.tls_ca_bundle_path), user_agent="certmgr-tests", attempts=attempts
    )
    directory = messages.Directory.from_json(net.get(pebble.directory_url).json())
    return acme_client.ClientV2(directory, net)


def verify_chain(leaf_pem: str, roots_pem: str, intermediates_pem: str) -> subprocess.CompletedProcess:
    """``openssl verify`` of ``leaf_pem`` against the roots and intermediates; returns the result."""
    openssl = shutil.which(OPENSSL)
    if openssl is None:
        pytest.skip("openssl not found: install the Debian package openssl")
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, pem in (("leaf", leaf_pem), ("roots", roots_pem), ("intermediates", intermediates_pem)):
            paths[name] = Path(d) / f"{name}.pem"
            paths[name].write_text(pem)
        return subprocess.run(
            [
                openssl,
                "verify",
                "-CAfile",
                str(paths["roots"]),
                "-untrusted",
                str(paths["intermediates"]),
                str(paths["leaf"]),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
