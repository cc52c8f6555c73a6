"""ACME CAs against the real Pebble test bed: a PowerDNS and a BIND connection, a CA per test."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from django.core.wsgi import get_wsgi_application
from django.db import connections

from acmeca import services as acme_services
from dnsproviders import services as dns_services
from pki import services as pki_services
from tests import acme_testbed, dnsservers

pebble = acme_testbed.pebble
pebble_eab = acme_testbed.pebble_eab
own_pebble = acme_testbed.own_pebble
dnsdist = acme_testbed.dnsdist
powerdns = dnsservers.powerdns
bind = dnsservers.bind

_counter = itertools.count()


def unique_name(zone: str, label: str = "host") -> str:
    """A name never ordered before in this run (Pebble reuses valid authorizations)."""
    import uuid

    return f"{label}-{next(_counter)}-{uuid.uuid4().hex[:8]}.{zone.rstrip('.')}"


@pytest.fixture
def no_worker():
    """Orders started now are driven by the test itself (``flow.run_order``), not by the on-commit worker:
    as if the broker had lost the task."""
    from acmeca import orders

    with orders.foreground():
        yield


@pytest.fixture
def acme_env(settings, monkeypatch, dnsdist):
    """Loopback allowed for the outbound guard; propagation asks dnsdist (Pebble's own resolver)."""
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.CERTMGR_ACME_RETRY_BASE_SECONDS = 0.2
    monkeypatch.setenv("CERTMGR_DNS_RESOLVERS", dnsdist.address)
    return dnsdist


@pytest.fixture
def pdns_connection(tenant, powerdns, acme_env):
    return dns_services.create_connection(
        tenant.organization,
        name="pdns",
        kind="powerdns",
        credentials=powerdns.credentials(),
        actor=tenant.admin.user,
    )


@pytest.fixture
def bind_connection(tenant, bind, acme_env):
    acme_env.route(bind.zone, "bind")
    return dns_services.create_connection(
        tenant.organization,
        name="bind",
        kind="rfc2136",
        credentials=bind.credentials(),
        actor=tenant.admin.user,
    )


def make_acme_ca(tenant, pebble, *, name="Pebble", connection=None, challenge_type="dns-01", **extra):
    return acme_services.create_acme_ca(
        tenant.organization,
        name=name,
        vendor="custom",
        directory_url=pebble.directory_url,
        tls_ca_bundle=pebble.tls_ca_bundle,
        email="pki@acme.test",
        dns_connection=connection,
        challenge_type=challenge_type,
        actor=tenant.admin.user,
        **extra,
    )


@pytest.fixture
def pebble_ca(tenant, pebble, pdns_connection):
    return make_acme_ca(tenant, pebble, connection=pdns_connection)


def acme_subscriber(tenant, ca, names: list[str], name: str | None = None):
    return pki_services.save_subscriber(
        tenant.organization,
        actor=tenant.admin.user,
        name=name or names[0][:100],
        ca=ca,
        common_name=names[0] if not names[0].startswith("*.") else "",
        sans=names,
        validity_days=90,
    )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http01_responder(pebble) -> Iterator[str]:
    """certmgr itself (its WSGI app) on the port where Pebble's VA fetches http-01 tokens."""
    server = make_server(
        acme_testbed.HOST, pebble.http_port, get_wsgi_application(), WSGIServer, _QuietHandler
    )

    def serve() -> None:
        try:
            server.serve_forever()
        finally:
            connections.close_all()  # this thread's database connection, or the test database stays busy

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://{acme_testbed.HOST}:{pebble.http_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
