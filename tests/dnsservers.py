"""Real DNS servers for tests: PowerDNS (HTTP API + gsqlite3), BIND (RFC 2136 with TSIG) and certmgr's own
(``manage.py dns_server``, delegated DNS-01, reading the test database).

Session-scoped pytest fixtures start each server once, on free ports of 127.0.0.1, with every file in a
pytest temporary directory, and stop it at the end of the session. Nothing is installed system-wide and
no privileges are needed (named runs as the invoking user, on unprivileged ports).

Use them from a test module (pytest only allows ``pytest_plugins`` in the root conftest)::

    from tests.dnsservers import bind, powerdns  # noqa: F401

Both server objects offer ``credentials()`` (ready for a connection of the matching kind), ``add_zone()``
and ``txt_records()`` (what the server answers over DNS, the way an ACME CA would see it), so ACME
integration tests can point a CA such as Pebble at ``dns_port`` / ``port`` and validate against these
zones.

A missing binary skips the tests, except on CI (``CI=true``), where it fails: CI must never pass by
skipping.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import pytest
import requests

HOST = "127.0.0.1"
START_TIMEOUT = 30.0

PDNS_SERVER = os.environ.get("PDNS_SERVER_BIN", "/usr/sbin/pdns_server")
PDNS_GSQLITE3_MODULE = "/usr/lib/x86_64-linux-gnu/pdns/libgsqlite3backend.so"
PDNS_SQLITE_SCHEMAS = (
    "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql",
    "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql",
)
NAMED = os.environ.get("NAMED_BIN", "/usr/sbin/named")
TSIG_KEYGEN = os.environ.get("TSIG_KEYGEN_BIN", "tsig-keygen")


# --- helpers ---------------------------------------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip, or fail on CI: a CI run must never go green because a server could not run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: refusing to skip)", pytrace=False)
    pytest.skip(reason)


def require_executable(path: str, package: str) -> str:
    found = shutil.which(path)
    if not found:
        unavailable(f"{path} not found: install the Debian package {package}")
    return found


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (DNS servers listen on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free TCP+UDP port on 127.0.0.1")


def fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def soa_query(host: str, port: int, zone: str, *, timeout: float = 1.0, **tsig) -> dns.message.Message:
    q = dns.message.make_query(fqdn(zone), dns.rdatatype.SOA)
    if tsig:
        q.use_tsig(**tsig)
    return dns.query.udp(q, host, port=port, timeout=timeout)


def txt_query(host: str, port: int, name: str, *, timeout: float = 2.0) -> list[str]:
    """TXT strings at ``name``, asked over DNS (TCP: no truncation surprises)."""
    q = dns.message.make_query(fqdn(name), dns.rdatatype.TXT)
    r = dns.query.tcp(q, host, port=port, timeout=timeout)
    return sorted(
        b"".join(rd.strings).decode()
        for rrset in r.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rd in rrset
    )


def wait_for(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, what: str) -> None:
    """Poll ``ready`` until it is true; fail with the server's log if it dies or never gets there."""
    deadline = time.monotonic() + START_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"{what} exited with status {proc.returncode} while starting:\n{tail(log)}", pytrace=False
            )
        try:
            if ready():
                return
        except (OSError, requests.RequestException, dns.exception.DNSException) as exc:
            last_error = exc
        time.sleep(0.1)
    stop(proc)
    pytest.fail(
        f"{what} did not answer within {START_TIMEOUT:.0f}s (last error: {last_error!r}):\n{tail(log)}",
        pytrace=False,
    )


def tail(log: Path, lines: int = 60) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    hint = ""
    if "permission denied" in text.lower() and Path("/sys/kernel/security/apparmor").exists():
        hint = (
            "\nHint: AppArmor is active; Debian's profile for /usr/sbin/named only allows /etc/bind, "
            "/var/cache/bind... Put it in complain mode on the test host (aa-complain /usr/sbin/named)."
        )
    return "\n".join(text.splitlines()[-lines:]) + hint


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def running(cmd: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


# --- PowerDNS --------------------------------------------------------------------------------------


@dataclass
class PowerDNSServer:
    """A running pdns_server (authoritative, gsqlite3 backend) with its HTTP API enabled."""

    api_url: str
    api_key: str
    server_id: str
    dns_port: int
    zone: str
    workdir: Path
    host: str = HOST

    @property
    def log(self) -> Path:
        return self.workdir / "pdns.log"

    def credentials(self, **overrides) -> dict:
        """Credentials of a ``powerdns`` connection to this server."""
        return {"api_url": self.api_url, "api_key": self.api_key, "server_id": self.server_id, **overrides}

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """Call the API; ``path`` is relative to /api/v1/servers/<server_id>. Raises on HTTP errors."""
        url = f"{self.api_url}/api/v1/servers/{self.server_id}{path}"
        r = requests.request(method, url, headers={"X-API-Key": self.api_key}, timeout=10, **kwargs)
        if r.status_code >= 400:
            raise AssertionError(f"PowerDNS API {method} {path} -> {r.status_code}: {r.text}")
        return r

    def add_zone(self, name: str) -> str:
        """Create a Native zone with SOA, NS and the name server's A record; returns its canonical name."""
        name = fqdn(name).lower()
        ns = f"ns1.{name}"
        self.api(
            "POST",
            "/zones",
            json={
                "name": name,
                "kind": "Native",
                "nameservers": [],
                "rrsets": [
                    {
                        "name": name,
                        "type": "SOA",
                        "ttl": 60,
                        "records": [
                            {"content": f"{ns} hostmaster.{name} 1 3600 600 86400 60", "disabled": False}
                        ],
                    },
                    {"name": name, "type": "NS", "ttl": 60, "records": [{"content": ns, "disabled": False}]},
                    {
                        "name": ns,
                        "type": "A",
                        "ttl": 60,
                        "records": [{"content": self.host, "disabled": False}],
                    },
                ],
            },
        )
        return name

    def delete_zone(self, name: str) -> None:
        self.api("DELETE", f"/zones/{fqdn(name)}")

    def set_txt(self, name: str, values: list[str], *, zone: str | None = None) -> None:
        """Replace the TXT rrset at ``name`` (empty ``values`` deletes it)."""
        name = fqdn(name).lower()
        if values:
            rrset = {
                "name": name,
                "type": "TXT",
                "ttl": 60,
                "changetype": "REPLACE",
                "records": [{"content": f'"{v}"', "disabled": False} for v in values],
            }
        else:
            rrset = {"name": name, "type": "TXT", "changetype": "DELETE"}
        self.api("PATCH", f"/zones/{fqdn(zone or self.zone)}", json={"rrsets": [rrset]})

    def set_rrset(self, name: str, rtype: str, contents: list[str], *, zone: str | None = None) -> None:
        """Replace the ``rtype`` rrset at ``name`` with records in zone-file syntax (empty deletes it)."""
        rrset: dict = {"name": fqdn(name).lower(), "type": rtype}
        if contents:
            rrset |= {
                "ttl": 60,
                "changetype": "REPLACE",
                "records": [{"content": c, "disabled": False} for c in contents],
            }
        else:
            rrset["changetype"] = "DELETE"
        self.api("PATCH", f"/zones/{fqdn(zone or self.zone)}", json={"rrsets": [rrset]})

    def txt_records(self, name: str) -> list[str]:
        """The TXT strings PowerDNS serves at ``name`` over DNS."""
        return txt_query(self.host, self.dns_port, name)


@pytest.fixture(scope="session")
def powerdns(tmp_path_factory) -> Iterator[PowerDNSServer]:
    binary = require_executable(PDNS_SERVER, "pdns-server")
    if not Path(PDNS_GSQLITE3_MODULE).exists():
        unavailable(f"{PDNS_GSQLITE3_MODULE} not found: install the Debian package pdns-backend-sqlite3")
    schema = next((Path(p) for p in PDNS_SQLITE_SCHEMAS if Path(p).exists()), None)
    if schema is None:
        unavailable("the PowerDNS sqlite3 schema is missing: install the Debian package pdns-backend-sqlite3")

    workdir = tmp_path_factory.mktemp("powerdns")
    database = workdir / "pdns.sqlite3"
    import sqlite3

    with contextlib.closing(sqlite3.connect(database)) as db:
        db.executescript(schema.read_text())
    api_port, dns_port = free_port(), free_port()
    api_key = secrets.token_urlsafe(24)
    settings = {
        "launch": "gsqlite3",
        "gsqlite3-database": str(database),
        "api": "yes",
        "api-key": api_key,
        "webserver": "yes",
        "webserver-address": HOST,
        "webserver-port": api_port,
        "webserver-allow-from": "127.0.0.0/8",
        "local-address": HOST,
        "local-port": dns_port,
        "guardian": "no",
        "daemon": "no",
        "disable-syslog": "yes",
        "socket-dir": str(workdir),
        "write-pid": "no",
        "security-poll-suffix": "",  # no "is this version secure?" query to the internet
        # Answers follow API changes at once: ACME tests read what they just wrote.
        "cache-ttl": 0,
        "negquery-cache-ttl": 0,
        "query-cache-ttl": 0,
    }
    (workdir / "pdns.conf").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    server = PowerDNSServer(
        api_url=f"http://{HOST}:{api_port}",
        api_key=api_key,
        server_id="localhost",
        dns_port=dns_port,
        zone="pdns.test.",
        workdir=workdir,
    )
    with running([binary, f"--config-dir={workdir}"], server.log, workdir) as proc:

        def api_ready() -> bool:
            r = requests.get(
                f"{server.api_url}/api/v1/servers/localhost", headers={"X-API-Key": api_key}, timeout=1
            )
            return r.status_code == 200

        wait_for(api_ready, proc, server.log, "pdns_server")
        server.add_zone(server.zone)
        wait_for(
            lambda: soa_query(HOST, dns_port, server.zone).rcode() == dns.rcode.NOERROR,
            proc,
            server.log,
            f"pdns_server (SOA of {server.zone})",
        )
        yield server


# --- BIND ------------------------------------------------------------------------------------------


@dataclass
class BindServer:
    """A running named: authoritative only, a TSIG key allowed to update TXT records in its zones."""

    server: str
    port: int
    key_name: str
    algorithm: str
    secret: str
    zone: str
    workdir: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    zones: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list, repr=False)

    @property
    def log(self) -> Path:
        return self.workdir / "named.log"

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """named down for the block (fault tests), then up again on the same port with its zones."""
        assert self.proc is not None, "named is not running"
        self.stop()
        try:
            yield
        finally:
            self.start()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        for zone in [self.zone, *self.zones]:
            self.wait_for_zone(zone)

    @property
    def conf(self) -> Path:
        return self.workdir / "named.conf"

    def credentials(self, **overrides) -> dict:
        """Credentials of an ``rfc2136`` connection to this server."""
        return {
            "server": self.server,
            "port": self.port,
            "tsig_key_name": self.key_name,
            "tsig_algorithm": self.algorithm,
            "tsig_secret": self.secret,
            "zone": self.zone,
            **overrides,
        }

    def keyring(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.key_name, self.secret, self.algorithm)

    def write_config(self) -> None:
        d = self.workdir
        zone_blocks = "".join(
            f'zone "{z}" {{\n  type primary;\n  file "{d / (z + "zone")}";\n'
            f"  update-policy {{ grant {self.key_name} zonesub TXT; }};\n}};\n"
            for z in self.zones
        )
        self.conf.write_text(
            f"""options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  managed-keys-directory "{d}";
  listen-on port {self.port} {{ {self.server}; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
  allow-transfer {{ none; }};
}};
controls {{ }};
include "{d}/tsig.key";
{zone_blocks}"""
        )

    def add_zone(self, name: str) -> str:
        """Serve a new zone (SOA, NS, ns1 A) and wait until named answers for it; returns its name."""
        name = fqdn(name).lower()
        if name in self.zones:
            return name
        (self.workdir / (name + "zone")).write_text(
            f"$TTL 60\n@ IN SOA ns1.{name} hostmaster.{name} 1 3600 600 86400 60\n"
            f"@ IN NS ns1.{name}\nns1 IN A {self.server}\n"
        )
        self.zones.append(name)
        self.write_config()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)  # reload configuration and zones
            self.wait_for_zone(name)
        return name

    def wait_for_zone(self, name: str) -> None:
        assert self.proc is not None, "named is not running"
        wait_for(
            lambda: soa_query(self.server, self.port, name).rcode() == dns.rcode.NOERROR,
            self.proc,
            self.log,
            f"named (SOA of {name})",
        )

    def update_txt(self, name: str, values: list[str], *, zone: str | None = None) -> None:
        """Replace the TXT rrset at ``name`` through a TSIG-signed dynamic update (empty: delete it)."""
        upd = dns.update.UpdateMessage(fqdn(zone or self.zone), keyring=self.keyring())
        upd.delete(fqdn(name), dns.rdatatype.TXT)
        for v in values:
            upd.add(fqdn(name), 60, dns.rdatatype.TXT, f'"{v}"')
        r = dns.query.tcp(upd, self.server, port=self.port, timeout=5)
        if r.rcode() != dns.rcode.NOERROR:
            raise AssertionError(f"dynamic update of {name} refused: {dns.rcode.to_text(r.rcode())}")

    def txt_records(self, name: str) -> list[str]:
        """The TXT strings named serves at ``name`` over DNS."""
        return txt_query(self.server, self.port, name)


_TSIG_SECRET = re.compile(r'secret\s+"([^"]+)"')


@pytest.fixture(scope="session")
def bind(tmp_path_factory) -> Iterator[BindServer]:
    binary = require_executable(NAMED, "bind9")
    keygen = require_executable(TSIG_KEYGEN, "bind9-utils")

    workdir = tmp_path_factory.mktemp("bind")
    key_name, algorithm = "certmgr-test.", "hmac-sha256"
    keyfile = subprocess.run(
        [keygen, "-a", algorithm, key_name], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    (workdir / "tsig.key").write_text(keyfile)
    match = _TSIG_SECRET.search(keyfile)
    assert match, f"cannot read the secret from tsig-keygen's output: {keyfile!r}"

    port = free_port()
    log = workdir / "named.log"
    # -g: foreground, log to stderr; no -u: runs as the invoking user, which needs no privilege here.
    cmd = [binary, "-g", "-n", "2", "-c", str(workdir / "named.conf"), "-p", str(port)]
    server = BindServer(
        server=HOST,
        port=port,
        key_name=key_name,
        algorithm=algorithm,
        secret=match.group(1),
        zone="bind.test.",
        workdir=workdir,
        cmd=cmd,
    )
    server.add_zone(server.zone)  # writes the config; named is not running yet
    checkconf = shutil.which("named-checkconf")
    if checkconf:
        check = subprocess.run(
            [checkconf, "-z", str(server.conf)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            pytest.fail(
                f"named-checkconf rejects the test config:\n{check.stdout}{check.stderr}", pytrace=False
            )
    with running(cmd, log, workdir) as proc:
        server.proc = proc
        server.wait_for_zone(server.zone)
        try:
            yield server
        finally:
            server.stop()  # a fault test may have restarted it as another process


# --- certmgr's own DNS server (manage.py dns_server) -----------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
CERTMGR_DNS_NAME = "acme-ns.certmgr.test."
DIG = os.environ.get("DIG_BIN", "dig")


@dataclass
class CertmgrDnsServer:
    """``manage.py dns_server`` in its own process, on a free port, reading the test database."""

    host: str
    port: int
    server_name: str
    workdir: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "dns_server.log"

    def query(self, name: str, rdtype: str = "TXT", *, tcp: bool = False, **kwargs) -> dns.message.Message:
        q = dns.message.make_query(fqdn(name), rdtype, **kwargs)
        send = dns.query.tcp if tcp else dns.query.udp
        return send(q, self.host, port=self.port, timeout=2.0)

    def dig(self, *args: str) -> str:
        """``dig`` (Debian dnsutils) against this server; its whole output."""
        binary = require_executable(DIG, "dnsutils")
        done = subprocess.run(
            [binary, "@" + self.host, "-p", str(self.port), "+time=2", "+tries=1", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout + done.stderr

    def wait_for_txt(self, name: str, present: bool, value: str, timeout: float = 10.0) -> str:
        """Poll with dig until ``value`` is (or is no longer) in the TXT answer; returns dig's output."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.dig(name, "TXT")
            if (f'"{value}"' in out) == present or time.monotonic() > deadline:
                return out
            time.sleep(0.1)

    def wait_for_status(self, name: str, rdtype: str, status: str, timeout: float = 10.0) -> str:
        """Poll with dig until the answer's status is ``status`` (the server reads the database every
        0.1 s here); returns dig's last output."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.dig(name, rdtype)
            if f"status: {status}," in out or time.monotonic() > deadline:
                return out
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def start_certmgr_dns(workdir: Path, database_url: str, **env: str) -> contextlib.AbstractContextManager:
    """Start ``manage.py dns_server`` with ``env`` (settings) on a free port; a context manager."""
    import sys

    @contextlib.contextmanager
    def run() -> Iterator[CertmgrDnsServer]:
        server = CertmgrDnsServer(host=HOST, port=free_port(), server_name=CERTMGR_DNS_NAME, workdir=workdir)
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url,
            "CERTMGR_DNS_SERVER_NAME": CERTMGR_DNS_NAME,
            "CERTMGR_DNS_LISTEN": server.address,
            "CERTMGR_DNS_CACHE_SECONDS": "0.1",
            "CERTMGR_DNS_RATE_LIMIT": "0",
            **env,
        }
        cmd = [sys.executable, "manage.py", "dns_server"]
        with server.log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        server.proc = proc
        try:
            wait_for(
                lambda: server.query("example.invalid.", "SOA").rcode() == dns.rcode.REFUSED,
                proc,
                server.log,
                "manage.py dns_server",
            )
            yield server
        finally:
            stop(proc)

    return run()


@pytest.fixture(scope="session")
def certmgr_dns(tmp_path_factory, django_db_setup, django_db_blocker) -> Iterator[CertmgrDnsServer]:
    """certmgr's DNS server on the test database (tests that write challenges need ``transaction=True``),
    rate limit off, its snapshot refreshed every 0.1 s."""
    from django.db import connection

    with django_db_blocker.unblock():
        url = "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(**connection.settings_dict)
    if connection.vendor != "postgresql":
        unavailable("certmgr's DNS server runs in another process: needs a server database")
    with start_certmgr_dns(tmp_path_factory.mktemp("certmgr-dns"), url) as server:
        yield server
