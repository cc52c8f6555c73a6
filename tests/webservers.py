"""Real servers for the tests that deploy certificates: Debian's nginx (TLS with files on disk) and
OpenSSH's sshd (an SSH host on a free loopback port, a throwaway host key, the current user's login).

Both run as this user from a temporary directory; as root, nginx's workers and sshd's logins stay root
(``user`` in nginx.conf, ``PermitRootLogin yes``). Missing servers skip, or fail under CI=true.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.dnsservers import free_port, running, stop, tail, unavailable, wait_for

# --- nginx -----------------------------------------------------------------------------------------------
NGINX_CONF = """
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
{user}
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
{server}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        unavailable("nginx is not installed (Debian package nginx)")
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed")
    return str(found)


@dataclass
class Nginx:
    """nginx serving TLS on 127.0.0.1:``port``; ``server``: the server block's body (ssl_certificate...)."""

    tmp: Path
    server: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def conf(self) -> Path:
        return self.tmp / "nginx.conf"

    @property
    def log(self) -> Path:
        return self.tmp / "error.log"

    @property
    def command(self) -> list[str]:
        return [nginx_binary(), "-p", str(self.tmp), "-c", str(self.conf), "-e", str(self.log)]

    def write_conf(self) -> None:
        # As root, nginx's workers would become nobody, who cannot read the test's files: they stay this user.
        user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
        self.conf.write_text(NGINX_CONF.format(tmp=self.tmp, port=self.port, user=user, server=self.server))

    def start(self) -> Nginx:
        self.write_conf()
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_for(listening, self.proc, self.log, "nginx")
        return self

    def reload(self) -> None:
        subprocess.run([*self.command, "-s", "reload"], check=True, capture_output=True, timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def s_client(port: int, server_name: str, *args: str, cwd: Path | None = None) -> str:
    """``openssl s_client -connect 127.0.0.1:port -servername name``: its output (the handshake's text)."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", server_name, *args],
        cwd=cwd,
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout


def served_serial(port: int, server_name: str, expect: str = "", wait: float = 10.0) -> str:
    """The serial (lowercase hex) of the leaf nginx serves for ``server_name``. With ``expect``, asks again
    for up to ``wait`` seconds until that serial is served: after a reload, an old worker that has not yet
    seen the signal may still accept one connection with the previous certificate."""
    deadline = time.monotonic() + wait
    while True:
        pem = s_client(port, server_name)
        out = subprocess.run(
            ["openssl", "x509", "-noout", "-serial"], input=pem, capture_output=True, text=True, timeout=30
        ).stdout
        serial = out.strip().removeprefix("serial=").lstrip("0").lower()
        if not expect or serial == expect or time.monotonic() > deadline:
            return serial
        time.sleep(0.2)


# --- sshd ------------------------------------------------------------------------------------------------
SSHD = os.environ.get("SSHD_BIN", "/usr/sbin/sshd")
SSHD_CONFIG = """
Port {port}
ListenAddress 127.0.0.1
HostKey {tmp}/host_key
PidFile {tmp}/sshd.pid
AuthorizedKeysFile {tmp}/authorized_keys
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin {root}
AllowUsers {user}
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


@dataclass
class Sshd:
    """A running sshd: log in as ``user`` on 127.0.0.1:``port`` with ``client_key`` (OpenSSH PEM text)."""

    tmp: Path
    port: int
    user: str
    client_key: str
    host_key_line: str  # "ssh-ed25519 AAAA..." as the host shows it
    proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.tmp / "sshd.log"

    def start(self) -> None:
        command = [SSHD, "-D", "-e", "-f", str(self.tmp / "sshd_config")]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

        def ready() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                return sock.recv(64).startswith(b"SSH-")

        wait_for(ready, self.proc, self.log, "sshd")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def new_host_key(self) -> None:
        """The host's key replaced (a rebuilt or an impostor host on the same address): restart with it."""
        self.stop()
        self.host_key_line = _keygen(self.tmp / "host_key", replace=True)
        self.start()


def _keygen(path: Path, *, replace: bool = False) -> str:
    if replace:
        path.unlink(missing_ok=True)
        Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True
    )
    path.chmod(0o600)
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


@contextmanager
def sshd(tmp: Path) -> Iterator[Sshd]:
    if not Path(SSHD).exists():
        unavailable(f"{SSHD} not found: install the Debian package openssh-server")
    if shutil.which("ssh-keygen") is None:
        unavailable("ssh-keygen not found: install the Debian package openssh-client")
    tmp.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    host_key = _keygen(tmp / "host_key")
    _keygen(tmp / "client_key")
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    user = getpass.getuser()
    port = free_port()
    root = "yes" if os.geteuid() == 0 else "no"
    (tmp / "sshd_config").write_text(SSHD_CONFIG.format(port=port, tmp=tmp, user=user, root=root))
    server = Sshd(tmp, port, user, (tmp / "client_key").read_text(), host_key)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_until(check, what: str, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"never: {what}")


__all__ = ["Nginx", "Sshd", "nginx_binary", "running", "s_client", "served_serial", "sshd", "tail"]
