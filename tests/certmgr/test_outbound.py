"""The outbound guard: user-typed endpoints never reach loopback, private or metadata addresses."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading

import pytest

from certmgr import outbound
from certmgr.errors import OutboundRefused


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "224.0.0.1",
        "192.0.0.8",  # IETF protocol assignments (Python calls some of them global)
        "192.88.99.1",  # the deprecated 6to4 relay anycast
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo of 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    ],
)
def test_non_public_addresses_are_refused(address):
    assert outbound.refusal_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address", ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "2002:808:808::1", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address):
    assert outbound.refusal_reason(ipaddress.ip_address(address)) is None


def test_allow_list_opens_a_network():
    nets = [ipaddress.ip_network("127.0.0.0/8")]
    assert outbound.refusal_reason(ipaddress.ip_address("127.0.0.1"), nets) is None
    assert outbound.refusal_reason(ipaddress.ip_address("10.0.0.1"), nets) is not None


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"reached")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_http_to_loopback_is_refused_with_the_setting_named(http_server, settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(OutboundRefused, match="CERTMGR_OUTBOUND_ALLOWED_NETWORKS") as refused:
        outbound.session().get(http_server.replace("127.0.0.1", "localhost"), timeout=5)
    # the kind of address, never the address a name resolved to
    assert "resolves to a loopback address" in str(refused.value) and "127.0.0.1" not in str(refused.value)


def test_http_to_loopback_passes_when_allowed(http_server, settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert outbound.session().get(http_server, timeout=5).text == "reached"


def test_names_are_judged_on_the_address_connected_to(http_server, settings, monkeypatch):
    """A public-looking name that resolves to loopback (DNS rebinding) is refused at connect time."""
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []
    port = int(http_server.rsplit(":", 1)[1].strip("/"))
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "innocent.example.com":
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(OutboundRefused, match="loopback"):
        outbound.session().get(f"http://innocent.example.com:{port}/", timeout=5)


def test_redirects_to_private_addresses_are_refused(settings):
    """A public endpoint cannot bounce certmgr into the private network: every hop is guarded."""

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
        with pytest.raises(OutboundRefused, match="link-local"):
            outbound.session().get(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5)
    finally:
        server.shutdown()


def test_check_host_for_dns_servers(settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(OutboundRefused):
        outbound.check_host("127.0.0.1", 53)
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert outbound.check_host("127.0.0.1", 53) == ["127.0.0.1"]
