"""Which address is the client's behind proxies (the audit log's IP and the /metrics allow-list use it)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from certmgr.middleware import client_ip, trusted_proxies


def ip(settings, trust, forwarded=None, remote="10.0.0.2"):
    settings.CERTMGR_TRUST_X_FORWARDED_FOR = trust
    headers = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_ip(RequestFactory().get("/", **headers))


def test_off_by_default_the_header_is_ignored(settings):
    assert ip(settings, "", "203.0.113.9") == "10.0.0.2"
    assert ip(settings, "false", "203.0.113.9") == "10.0.0.2"


def test_a_number_of_proxies_takes_the_address_the_outermost_one_saw(settings):
    # The client forged "1.2.3.4"; the one proxy appended the address it really saw.
    assert ip(settings, "1", "1.2.3.4, 203.0.113.9") == "203.0.113.9"
    assert ip(settings, "true", "1.2.3.4, 203.0.113.9") == "203.0.113.9"  # the old boolean: one proxy
    assert ip(settings, "2", "1.2.3.4, 203.0.113.9, 10.0.0.7") == "203.0.113.9"
    assert ip(settings, "3", "203.0.113.9, 10.0.0.7") is None  # fewer hops than proxies: unknown
    assert ip(settings, "1") == "10.0.0.2"  # no header: the peer itself


def test_cidrs_take_the_right_most_untrusted_address(settings):
    trust = "10.0.0.0/8, fd00::/8"
    assert ip(settings, trust, "1.2.3.4, 203.0.113.9, 10.0.0.7") == "203.0.113.9"
    assert ip(settings, trust, "2001:db8::1, fd00::5") == "2001:db8::1"
    # a peer that is not one of our proxies: its header means nothing
    assert ip(settings, trust, "1.2.3.4", remote="198.51.100.3") == "198.51.100.3"


@pytest.mark.parametrize("forwarded", ["not-an-ip", "1.2.3.4, <script>", ",", "1.2.3.4 5.6.7.8"])
def test_a_malformed_header_gives_no_address(settings, forwarded):
    assert ip(settings, "1", forwarded) is None
    assert ip(settings, "10.0.0.0/8", forwarded) is None


def test_a_bad_setting_is_a_clear_configuration_error():
    trusted_proxies.cache_clear()
    with pytest.raises(ImproperlyConfigured, match="CERTMGR_TRUST_X_FORWARDED_FOR"):
        trusted_proxies("10.0.0.0/33")


@pytest.mark.django_db
def test_a_malformed_header_never_passes_the_metrics_allow_list(settings, client):
    settings.CERTMGR_TRUST_X_FORWARDED_FOR = "1"
    settings.CERTMGR_METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 200
    refused = client.get("/metrics", HTTP_X_FORWARDED_FOR="bogus, 127.0.0.1")
    assert refused.status_code in (401, 403), refused.status_code
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code in (401, 403)
