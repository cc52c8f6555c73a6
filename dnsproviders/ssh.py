"""SSH connections (kind ``ssh``): authenticate with a key or password, and hold the host to its pinned key.

The host key is pinned on first use: a connection without a pin accepts the key the host shows and hands
it back (``SshSession.host_key``) for the caller to store; with a pin, any other key is refused before
anything is sent, naming both fingerprints. The socket goes through the outbound guard like every other
user-typed endpoint. No Django models here: the caller decrypts the credentials and hands them in.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import paramiko

from certmgr import outbound
from certmgr.errors import OutboundRefused
from dnsproviders.credentials import SSH_HOST_KEY, host_key_fingerprint

TIMEOUT = 10.0


class SshError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class HostKeyMismatch(SshError):
    def __init__(self, message: str):
        super().__init__(message, permanent=True)


def key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


class _Pinned(paramiko.MissingHostKeyPolicy):
    """paramiko asks this only when the key is not in the (empty) known hosts: check it against the pin."""

    def __init__(self, pinned: str, where: str):
        self.pinned = pinned.strip()
        self.where = where
        self.seen = ""

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        self.seen = key_line(key)
        if self.pinned and self.seen.split()[:2] != self.pinned.split()[:2]:
            raise HostKeyMismatch(
                f"the host key of {self.where} changed: it shows {host_key_fingerprint(self.seen)}, but "
                f"{host_key_fingerprint(self.pinned)} is pinned. Nothing was sent. If the host's key was "
                "replaced on purpose, re-pin the connection's host key."
            )


def _private_key(text: str, passphrase: str | None = None) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise SshError(
        "the connection's private key cannot be read (unencrypted Ed25519, ECDSA or RSA)", permanent=True
    )


@dataclass
class SshSession:
    """One authenticated connection; ``host_key`` is what the host showed (to pin when nothing was)."""

    client: paramiko.SSHClient
    where: str
    host_key: str
    newly_seen: bool
    _sftp: paramiko.SFTPClient | None = field(default=None, repr=False)

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
            self._sftp.get_channel().settimeout(60)
        return self._sftp

    def run(self, command: str, *, timeout: float = 120.0) -> tuple[int, str]:
        """Run ``command`` (by the login shell); its exit status and output (stdout then stderr)."""
        try:
            _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            status = stdout.channel.recv_exit_status()
        except (OSError, paramiko.SSHException) as exc:
            raise SshError(f"running {command!r} on {self.where} failed: {exc}") from None
        return status, (out + err).strip()

    def close(self) -> None:
        try:
            if self._sftp is not None:
                self._sftp.close()
        finally:
            self.client.close()


def _socket(host: str, port: int, timeout: float) -> Any:
    try:
        return outbound.create_connection(host, port, timeout=timeout)
    except OutboundRefused as exc:
        raise SshError(f"not connecting to {host}: {exc}", permanent=True) from None
    except OSError as exc:
        raise SshError(f"cannot reach {host}:{port}: {exc}") from None


def shown_host_key(credentials: dict, *, timeout: float = TIMEOUT) -> str:
    """The key the host shows now (an OpenSSH public key line), read in the key exchange: no login is
    attempted. What a re-pin asks the operator to confirm."""
    host, port = credentials["host"], int(credentials.get("port") or 22)
    transport = paramiko.Transport(_socket(host, port, timeout))
    try:
        transport.start_client(timeout=timeout)
        return key_line(transport.get_remote_server_key())
    except (TimeoutError, OSError, EOFError, paramiko.SSHException) as exc:
        raise SshError(f"SSH to {host}:{port} failed: {type(exc).__name__}: {exc}") from None
    finally:
        transport.close()


def connect(credentials: dict, *, timeout: float = TIMEOUT, pinned: str | None = None) -> SshSession:
    """Connect and authenticate; ``pinned`` overrides the credentials' pin ("" accepts any key: re-pin)."""
    host, port, user = credentials["host"], int(credentials.get("port") or 22), credentials["username"]
    where = f"{user}@{host}:{port}"
    pin = credentials.get(SSH_HOST_KEY, "") if pinned is None else pinned
    sock = _socket(host, port, timeout)
    policy = _Pinned(pin, where)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(policy)
    key = _private_key(credentials["private_key"]) if credentials.get("private_key") else None
    try:
        client.connect(
            host,
            port=port,
            username=user,
            pkey=key,
            password=credentials.get("password") or None,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except SshError:
        client.close()
        raise
    except paramiko.AuthenticationException as exc:
        client.close()
        raise SshError(f"{where} refused the login: {exc}", permanent=True) from None
    except (TimeoutError, OSError, EOFError, paramiko.SSHException) as exc:
        client.close()
        raise SshError(f"SSH to {where} failed: {type(exc).__name__}: {exc}") from None
    return SshSession(client, where, policy.seen, newly_seen=not pin)


def check(credentials: dict, timeout: float = TIMEOUT) -> tuple[str, str]:
    """'Test connection': log in and run ``true``; (message, the host key seen)."""
    session = connect(credentials, timeout=timeout)
    try:
        status, output = session.run("true", timeout=timeout)
    finally:
        session.close()
    pinned = "pinned" if not session.newly_seen else "seen for the first time, now pinned"
    if status != 0:
        raise SshError(f"{session.where} accepted the login but `true` exited {status}: {output[:500]}")
    return (
        f"Logged in to {session.where}; host key {host_key_fingerprint(session.host_key)} ({pinned}).",
        session.host_key,
    )
