"""The SSH host destination: certificate, chain, full chain and key files written atomically over SFTP, one
reload command per batch, then a read-back of what the host serves over TLS.

Each file goes to a temporary file in the target's directory, gets its mode (the key 0600 by default) and
owner before any content is written, and is renamed over the target (POSIX rename: a reader sees the old
file or the new one, never half of one). The services run every due run of one SSH destination in one
batch (``open``, a ``push`` per certificate, ``finish``): the reload runs once however many certificates
were written, and a failing reload fails every run of the batch with the command's output, to be retried.
The host key is pinned on first use (``dnsproviders.ssh``). No key material in any message.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
import secrets
import shlex
import ssl
import stat
import time
from collections.abc import Sequence
from typing import Any

import paramiko

from certmgr import outbound
from certmgr.errors import OutboundRefused
from dnsproviders import ssh
from dnsproviders.credentials import host_key_fingerprint
from pki import x509
from pki.policy import name_matches
from syncs.choices import DestinationKind
from syncs.destinations import DestinationError, KindModule, Material, Pushed, register, scrub

FILES = ("certificate_file", "chain_file", "fullchain_file", "key_file")
DEFAULTS: dict[str, str] = {
    "certificate_file": "{name}.crt",
    "chain_file": "",
    "fullchain_file": "{name}.fullchain.crt",
    "key_file": "{name}.key",
    "mode": "0644",
    "key_mode": "0600",
}
OPTIONS = (
    "directory",
    *FILES,
    "owner",
    "group",
    "mode",
    "key_mode",
    "reload_command",
    "verify_address",
    "verify_server_name",
)
_FILE = re.compile(r"^[A-Za-z0-9._+@{}/-]+$")
_OWNER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$|^\d{1,10}$")
_MODE = re.compile(r"^0?[0-7]{3}$")
READ_BACK_SECONDS = 15.0  # how long the TLS read-back waits for the reloaded server's new workers


def clean_options(value: Any) -> dict[str, Any]:
    """The destination's options, checked; ValueError names what is wrong."""
    value = value or {}
    if not isinstance(value, dict):
        raise ValueError("Enter an object.")
    unknown = set(value) - set(OPTIONS)
    if unknown:
        raise ValueError(f"Unknown option {', '.join(sorted(unknown))}; known: {', '.join(OPTIONS)}.")
    cleaned: dict[str, Any] = {}
    for key in OPTIONS:
        raw = value.get(key, DEFAULTS.get(key, ""))
        cleaned[key] = str(raw if raw is not None else "").strip()
    directory = cleaned["directory"]
    if not directory.startswith("/") or not _FILE.match(directory) or ".." in directory.split("/"):
        raise ValueError("directory: enter an absolute path on the host, e.g. /etc/nginx/certs.")
    for key in FILES:
        f = cleaned[key]
        if f and (not _FILE.match(f) or ".." in f.split("/") or f.startswith("/")):
            raise ValueError(
                f"{key}: a file name under the directory ({{name}} is the name at the destination)."
            )
    if not cleaned["certificate_file"]:
        raise ValueError("certificate_file: the certificate needs a file (the drift check reads it back).")
    for key in ("owner", "group"):
        if cleaned[key] and not _OWNER.match(cleaned[key]):
            raise ValueError(f"{key}: a user or group name, or a number.")
    for key in ("mode", "key_mode"):
        if not _MODE.match(cleaned[key]):
            raise ValueError(f"{key}: an octal mode such as 0644.")
    if int(cleaned["key_mode"], 8) & 0o077 and int(cleaned["key_mode"], 8) & 0o007:
        raise ValueError("key_mode: the key must not be readable by others (e.g. 0600 or 0640).")
    if len(cleaned["reload_command"]) > 1000 or "\n" in cleaned["reload_command"]:
        raise ValueError("reload_command: one line, at most 1,000 characters.")
    address = cleaned["verify_address"]
    if address:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("verify_address: host:port of the TLS endpoint to read back, e.g. web1:443.")
    return {k: v for k, v in cleaned.items() if v}


def _file_name(name: str) -> str:
    return name.replace("/", "_").lstrip(".") or "certificate"


class SshBackend:
    """One SSH host. ``open``/``close`` bracket a batch; ``fingerprint`` and ``test`` open on demand."""

    def __init__(self, credentials: dict, *, region: str = "", options: dict):
        self.credentials = credentials
        self.options = {**DEFAULTS, **(options or {})}
        self._session: ssh.SshSession | None = None
        self._ids: dict[str, int] = {}
        self.pushed: list[Material] = []
        self.changed = False
        self.host_key, self.first_sight = "", False
        self._served: dict[str, str] = {}  # the drift check's read-backs, by SNI name

    # --- the session ---
    def open(self) -> ssh.SshSession:
        if self._session is None:
            try:
                self._session = ssh.connect(self.credentials)
            except ssh.SshError as exc:
                raise DestinationError(self._scrub(exc.message), permanent=exc.permanent) from None
            # what the host showed: the services pin it when the connection had no pin yet
            self.host_key, self.first_sight = self._session.host_key, self._session.newly_seen
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _scrub(self, message: str) -> str:
        return scrub(message, self.credentials.get("password", ""), self.credentials.get("private_key", ""))

    def _sftp(self, step: str) -> Any:
        try:
            return self.open().sftp
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DestinationError(self._scrub(f"opening SFTP for {step} failed: {exc}")) from None

    # --- files ---
    def paths(self, name: str) -> dict[str, str]:
        base = _file_name(name)
        return {
            key: posixpath.join(self.options["directory"], self.options[key].replace("{name}", base))
            for key in FILES
            if self.options.get(key)
        }

    def _owner_ids(self) -> tuple[int, int] | None:
        owner, group = self.options.get("owner", ""), self.options.get("group", "")
        if not owner and not group:
            return None
        if "ids" not in self._ids:
            uid = self._lookup("id -u", owner) if owner else -1
            gid = self._lookup("getent group", group) if group else -1
            self._ids.update(ids=1, uid=uid, gid=gid)
        return self._ids["uid"], self._ids["gid"]

    def _lookup(self, command: str, name: str) -> int:
        if name.isdigit():
            return int(name)
        status, out = self.open().run(f"{command} {shlex.quote(name)}", timeout=30)
        value = out.split(":")[2] if command.startswith("getent") and out.count(":") >= 2 else out
        if status != 0 or not value.strip().isdigit():
            raise DestinationError(f"{name!r} is not a user or group on {self.open().where}", permanent=True)
        return int(value.strip())

    def _write(self, sftp: Any, path: str, content: str, mode: int) -> None:
        directory, base = posixpath.split(path)
        tmp = posixpath.join(directory, f".{base}.certmgr-{secrets.token_hex(6)}.tmp")
        try:
            with sftp.open(tmp, "wx") as handle:
                sftp.chmod(tmp, mode)  # before the content: a key is never readable by others
                ids = self._owner_ids()
                if ids is not None:
                    uid, gid = ids
                    if uid < 0 or gid < 0:
                        st = sftp.stat(tmp)
                        uid, gid = (st.st_uid if uid < 0 else uid), (st.st_gid if gid < 0 else gid)
                    sftp.chown(tmp, uid, gid)
                handle.write(content.encode())
            sftp.posix_rename(tmp, path)
        except DestinationError:
            self._discard(sftp, tmp)
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._discard(sftp, tmp)
            raise DestinationError(
                self._scrub(f"writing {path} on {self.open().where} failed: {exc}")
            ) from None

    @staticmethod
    def _discard(sftp: Any, tmp: str) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            sftp.remove(tmp)

    def push(self, material: Material, previous: str) -> Pushed:
        paths = self.paths(material.name)
        chain = material.chain_pem.strip()
        contents = {
            "certificate_file": material.certificate_pem.strip() + "\n",
            "chain_file": chain + "\n" if chain else "",
            "fullchain_file": material.certificate_pem.strip() + "\n" + (chain + "\n" if chain else ""),
            "key_file": material.private_key_pem.strip() + "\n" if material.private_key_pem else "",
        }
        sftp = self._sftp(f"writing {material.name}")
        mode, key_mode = int(self.options["mode"], 8), int(self.options["key_mode"], 8)
        written = []
        for key, path in paths.items():
            if key == "key_file" and not material.private_key_pem:
                continue  # the rule does not include the key: the host never gets it
            if key == "chain_file" and not chain:
                continue
            self._write(sftp, path, contents[key], key_mode if key == "key_file" else mode)
            written.append(path)
        self.pushed.append(material)
        self.changed = True
        return Pushed(" ".join(written))

    def fingerprint(self, identifier: str) -> str | None:
        path = identifier.split()[0]
        sftp = self._sftp(f"reading {path}")
        try:
            with sftp.open(path, "r") as handle:
                text = handle.read(1 << 20).decode("latin-1")
        except FileNotFoundError:
            return None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DestinationError(
                self._scrub(f"reading {path} on {self.open().where} failed: {exc}")
            ) from None
        try:
            return x509.fingerprints(x509.load_pem_certificates(text)[0]).sha256
        except x509.X509Error:
            return ""

    def remove(self, identifier: str) -> None:
        sftp = self._sftp("removing files")
        for path in identifier.split():
            try:
                sftp.remove(path)
            except FileNotFoundError:
                pass
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise DestinationError(self._scrub(f"removing {path} failed: {exc}")) from None
        self.changed = True

    def test(self) -> str:
        try:
            sftp = self._sftp("the test")
            directory = self.options["directory"]
            try:
                st = sftp.stat(directory)
            except FileNotFoundError:
                raise DestinationError(f"{directory} does not exist on {self.open().where}") from None
            if not stat.S_ISDIR(st.st_mode or 0):
                raise DestinationError(f"{directory} on {self.open().where} is not a directory")
            return (
                f"Logged in to {self.open().where} (host key "
                f"{host_key_fingerprint(self.host_key)}); {directory} is there."
            )
        finally:
            self.close()

    # --- after the batch ---
    def finish(self) -> str:
        """Reload once, then read back what the TLS endpoint serves; DestinationError fails the batch."""
        said = ""
        command = self.options.get("reload_command", "")
        if command and self.changed:
            status, output = self.open().run(command)
            output = self._scrub(output)[-2000:]
            if status != 0:
                raise DestinationError(
                    f"the reload command `{command}` exited {status} on {self.open().where}: "
                    f"{output or '(no output)'}"
                )
            said = f"reloaded with `{command}`" + (f": {output[-300:]}" if output else "")
        if self.options.get("verify_address") and self.pushed:
            said += ("; " if said else "") + self.read_back()
        return said

    def server_name(self, names: Sequence[str]) -> str:
        """The SNI name the TLS endpoint is asked for a certificate of ``names``: the configured one, else
        its first name without a wildcard."""
        return self.options.get("verify_server_name", "") or next(
            (n for n in names if "*" not in n), names[0] if names else ""
        )

    def serves(self, names: Sequence[str]) -> bool:
        """Whether the configured TLS endpoint is where a certificate of ``names`` is read back: one is
        configured, and its fixed SNI name (if any) is one of them."""
        if not self.options.get("verify_address"):
            return False
        fixed = self.options.get("verify_server_name", "")
        return not fixed or any(name_matches(fixed, n) for n in names)

    def read_back(self) -> str:
        fixed = self.options.get("verify_server_name", "")
        checks: dict[str, set[str]] = {}
        if fixed:
            matching = [m for m in self.pushed if self.serves(m.names)]
            checks[fixed] = {m.fingerprint_sha256 for m in (matching or self.pushed[-1:])}
        else:
            for m in self.pushed:
                checks.setdefault(self.server_name(m.names), set()).add(m.fingerprint_sha256)
        deadline = time.monotonic() + READ_BACK_SECONDS
        for server_name, wanted in checks.items():
            while True:
                served = self.served(server_name)
                if served in wanted:
                    break
                if time.monotonic() > deadline:
                    serials = ", ".join(
                        sorted(m.serial for m in self.pushed if m.fingerprint_sha256 in wanted)
                    )
                    raise DestinationError(
                        f"{self.options['verify_address']} (SNI {server_name or 'none'}) serves the "
                        f"certificate with SHA-256 {served}, not the one pushed "
                        f"({', '.join(sorted(wanted))}, serial {serials}): "
                        "the server did not pick up the new files"
                    )
                time.sleep(0.2)
        return f"{self.options['verify_address']} serves the pushed certificate"

    def drift_fingerprint(self, identifier: str, names: Sequence[str]) -> tuple[str | None, str]:
        """(fingerprint, where) for the drift check: what the TLS endpoint serves for the certificate's
        SNI name when it is read back there (``serves``), else its certificate file (None: gone). A
        certificate whose file is right but which the server does not serve (no reload, another vhost) is
        drift too."""
        if not self.serves(names):
            return self.fingerprint(identifier), identifier.split()[0]
        server_name = self.server_name(names)
        where = f"{self.options['verify_address']} (SNI {server_name or 'none'})"
        if server_name not in self._served:  # one handshake per name and check
            self._served[server_name] = self.served(server_name)
        return self._served[server_name], where

    def served(self, server_name: str) -> str:
        """The SHA-256 fingerprint of the leaf the TLS endpoint presents for ``server_name``."""
        host, _, port = self.options["verify_address"].rpartition(":")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # fingerprints are compared, not trust
        try:
            raw = outbound.create_connection(host.strip("[]"), int(port), timeout=10)
        except OutboundRefused as exc:
            raise DestinationError(f"not reading back {host}: {exc}", permanent=True) from None
        except OSError as exc:
            raise DestinationError(f"cannot reach the TLS endpoint {host}:{port}: {exc}") from None
        try:
            with context.wrap_socket(raw, server_hostname=server_name or None) as tls:
                der = tls.getpeercert(binary_form=True)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise DestinationError(f"TLS handshake with {host}:{port} failed: {exc}") from None
        if not der:
            raise DestinationError(f"{host}:{port} presented no certificate")
        return hashlib.sha256(der).hexdigest()


register(DestinationKind.SSH, KindModule(make=SshBackend, clean_options=clean_options))
