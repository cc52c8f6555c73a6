"""The sockets of certmgr's DNS server: UDP and TCP on one address, a few threads, no Django.

``DnsListener(address, port, answer_fn, limiter)`` binds both sockets at once (a port taken fails there and
then), then ``serve(stop)`` runs until the ``stop`` event is set:

- UDP: ``udp_threads`` threads share one socket, each receiving a packet, asking the rate limiter and
  answering with ``answer_fn(wire, tcp=False, truncate=...)``;
- TCP: one accepting thread and a thread per connection (at most ``max_tcp`` at once; more are closed at
  once), each reading length-prefixed queries (RFC 7766) until the client closes, stays idle for
  ``tcp_idle`` seconds, or sends something that is no DNS message. TCP is not rate limited per query: a
  handshake proves the address, and the connection cap bounds the work.

Every error of one packet or connection is logged and forgotten: the server never stops on input.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from dnsproviders.dns_answers import RateLimiter, Verdict

log = logging.getLogger(__name__)
AnswerFn = Callable[..., bytes | None]  # (wire, *, tcp: bool, truncate: bool) -> response or None


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare address (port 53) into ``(ip, port)``; ValueError if bad."""
    text = value.strip()
    port_text = "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{value!r}: expected [address]:port")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{value!r}: {port_text!r} is not a port")
    return ip, int(port_text)


@dataclass
class DnsListener:
    address: str
    port: int
    answer_fn: AnswerFn
    limiter: RateLimiter
    udp_threads: int = 2
    max_tcp: int = 64
    tcp_idle: float = 10.0
    udp: socket.socket = field(init=False, repr=False)
    tcp: socket.socket = field(init=False, repr=False)

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.udp.bind((self.address, self.port))
            port = self.udp.getsockname()[1]  # port 0: the one the system chose, for TCP as well
            self.tcp.bind((self.address, port))
            self.tcp.listen(128)
        except OSError:
            self.close()
            raise
        self.port = port
        self.udp.settimeout(0.5)
        self.tcp.settimeout(0.5)
        self._slots = threading.BoundedSemaphore(self.max_tcp)

    def close(self) -> None:
        for s in (self.udp, self.tcp):
            with contextlib.suppress(OSError):
                s.close()

    def serve(self, stop: threading.Event) -> None:
        """Answer until ``stop`` is set; the sockets are closed on return."""
        threads = [
            threading.Thread(target=self._udp_loop, args=(stop,), name=f"dns-udp-{i}", daemon=True)
            for i in range(max(1, self.udp_threads))
        ]
        threads.append(threading.Thread(target=self._tcp_loop, args=(stop,), name="dns-tcp", daemon=True))
        for t in threads:
            t.start()
        try:
            stop.wait()
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=2.0)
            self.close()

    # -- UDP -----------------------------------------------------------------------------------------
    def _udp_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                wire, client = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    return
                continue  # e.g. ICMP port unreachable reported on the socket
            try:
                verdict = self.limiter.check(client[0])
                if verdict is Verdict.DROP:
                    continue
                response = self.answer_fn(wire, tcp=False, truncate=verdict is Verdict.SLIP)
                if response is not None:
                    self.udp.sendto(response, client)
            except Exception:
                log.exception("DNS: UDP query from %s not answered", client[0])

    # -- TCP -----------------------------------------------------------------------------------------
    def _tcp_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn, client = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many connections at once
                continue
            threading.Thread(
                target=self._tcp_connection, args=(conn, client[0], stop), name="dns-tcp-conn", daemon=True
            ).start()

    def _tcp_connection(self, conn: socket.socket, client: str, stop: threading.Event) -> None:
        try:
            conn.settimeout(self.tcp_idle)
            while not stop.is_set():
                head = _read(conn, 2)
                if head is None:
                    return
                length = int.from_bytes(head, "big")
                wire = _read(conn, length) if length else None
                if wire is None:
                    return
                response = self.answer_fn(wire, tcp=True, truncate=False)
                if response is None:
                    return  # no DNS query: close (RFC 7766 §6.2.4 lets the server do that)
                conn.sendall(len(response).to_bytes(2, "big") + response)
        except (OSError, TimeoutError):
            return
        except Exception:
            log.exception("DNS: TCP connection from %s ended by an error", client)
        finally:
            try:
                conn.close()
            finally:
                self._slots.release()


def _read(conn: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = conn.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


__all__ = ["DnsListener", "parse_listen"]
