"""``manage.py dns_server``: certmgr's authoritative DNS server for delegated ``_acme-challenge`` names."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection

from dnsproviders import delegation
from dnsproviders.dns_answers import Identity, RateLimiter, Snapshot, answer
from dnsproviders.dns_listener import DnsListener, parse_listen

log = logging.getLogger(__name__)


class SnapshotCache:
    """The database's view, read again every ``every`` seconds by one thread; answers use the latest.

    A snapshot older than ``stale_after`` seconds (the database cannot be read) is not used: in-zone
    questions then get SERVFAIL rather than an answer that may be wrong."""

    def __init__(self, every: float, stale_after: float) -> None:
        self.every, self.stale_after = max(every, 0.05), stale_after
        self._snapshot: Snapshot | None = None
        self._taken = 0.0

    def refresh(self) -> None:
        try:
            close_old_connections()
            snapshot = delegation.load_snapshot()
        except Exception as exc:
            log.warning("DNS: cannot read the challenges from the database: %s", exc)
            connection.close()
            return
        self._snapshot, self._taken = snapshot, time.monotonic()

    def get(self) -> Snapshot | None:
        if self._snapshot is None or time.monotonic() - self._taken > self.stale_after:
            return None
        return self._snapshot

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            self.refresh()
        connection.close()


class Command(BaseCommand):
    help = (
        "Run certmgr's authoritative DNS server (UDP and TCP) for delegated _acme-challenge names: TXT "
        "with the live challenges of every organization, SOA/NS for the delegated names, REFUSED for "
        "anything else. Listens on CERTMGR_DNS_LISTEN (or --listen); stateless, run as many as needed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--listen", help="host:port or [v6]:port (default: CERTMGR_DNS_LISTEN).")
        parser.add_argument("--udp-threads", type=int, default=2, help="Threads answering UDP (default 2).")

    def handle(self, *args, listen=None, udp_threads=2, **options):
        name = delegation.server_name()
        if not name:
            raise CommandError(
                "CERTMGR_DNS_SERVER_NAME is not set: the host name of this server, the target of the "
                "_acme-challenge NS records (e.g. acme-ns.example.com.)"
            )
        try:
            address, port = parse_listen(listen or settings.CERTMGR_DNS_LISTEN)
        except ValueError as exc:
            raise CommandError(f"CERTMGR_DNS_LISTEN: {exc}") from exc
        every = settings.CERTMGR_DNS_CACHE_SECONDS
        cache = SnapshotCache(every, stale_after=max(30.0, 10 * every))
        cache.refresh()
        identity = Identity.of(name)
        limiter = RateLimiter(
            settings.CERTMGR_DNS_RATE_LIMIT,
            settings.CERTMGR_DNS_RATE_BURST,
            slip=settings.CERTMGR_DNS_RATE_SLIP,
        )

        def respond(wire: bytes, *, tcp: bool, truncate: bool) -> bytes | None:
            return answer(wire, cache.get(), identity, tcp=tcp, truncate=truncate)

        try:
            listener = DnsListener(address, port, respond, limiter, udp_threads=udp_threads)
        except OSError as exc:
            raise CommandError(f"cannot listen on {address}:{port} (UDP and TCP): {exc}") from exc
        # Hand the GIL over within 1 ms (Python's default is 5 ms): a query that arrives while the snapshot
        # thread builds a new one waits that long at most.
        sys.setswitchinterval(0.001)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # An ignored SIGINT stays ignored (make run's background processes: the script decides).
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, lambda *_: stop.set())
        refresher = threading.Thread(target=cache.run, args=(stop,), name="dns-snapshot", daemon=True)
        refresher.start()
        shown = f"[{address}]:{listener.port}" if ":" in address else f"{address}:{listener.port}"
        self.stdout.write(f"certmgr DNS server {name} listening on {shown} (UDP and TCP)")
        self.stdout.flush()
        listener.serve(stop)
        refresher.join(timeout=2.0)
        self.stdout.write(f"certmgr DNS server stopped ({limiter.limited} queries over the rate limit)")
