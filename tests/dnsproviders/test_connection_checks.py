"""'Test connection': real PowerDNS and BIND servers, moto for AWS, HTTP mocks for Cloudflare and acme-dns."""

from __future__ import annotations

import json
import re

import boto3
import pytest
import requests
import responses
from moto import mock_aws
from moto.core.authorization import enable_iam_authentication
from moto.sts.models import sts_backends

from certmgr.errors import OutboundRefused
from dnsproviders.connection_checks import (
    ACME_DNS_PLACEHOLDER_TXT,
    CLOUDFLARE_VERIFY_URL,
    CheckResult,
    check_connection,
)
from tests import dnsservers
from tests.dnsservers import free_port

# The real-server fixtures (pytest reads pytest_plugins only in the root conftest).
bind = dnsservers.bind
powerdns = dnsservers.powerdns


@pytest.fixture
def loopback_allowed(settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]


@pytest.fixture
def loopback_refused(settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []


# --- PowerDNS (real pdns_server) -------------------------------------------------------------------


@pytest.mark.servers
def test_powerdns_right_key(powerdns, loopback_allowed):
    result = check_connection("powerdns", powerdns.credentials())
    assert result.ok, result.message
    assert re.fullmatch(
        r"PowerDNS answered: server 'localhost' \(authoritative, version [\w.-]+\)", result.message
    )


@pytest.mark.servers
@pytest.mark.parametrize("suffix", ["/", "/api/v1", "/api/v1/"])
def test_powerdns_url_may_carry_the_api_path(powerdns, loopback_allowed, suffix):
    result = check_connection("powerdns", powerdns.credentials(api_url=powerdns.api_url + suffix))
    assert result.ok, result.message


@pytest.mark.servers
def test_powerdns_wrong_key(powerdns, loopback_allowed):
    wrong = "wrong-" + powerdns.api_key
    result = check_connection("powerdns", powerdns.credentials(api_key=wrong))
    assert result == CheckResult(False, "PowerDNS refused the API key (HTTP 401).")


@pytest.mark.servers
def test_powerdns_unknown_server_id(powerdns, loopback_allowed):
    result = check_connection("powerdns", powerdns.credentials(server_id="no-such-server"))
    assert not result.ok
    assert "PowerDNS has no server with id 'no-such-server' (HTTP 404" in result.message
    assert powerdns.api_key not in result.message


@pytest.mark.servers
def test_powerdns_loopback_refused_without_the_setting(powerdns, loopback_refused):
    with pytest.raises(OutboundRefused, match="CERTMGR_OUTBOUND_ALLOWED_NETWORKS") as exc:
        check_connection("powerdns", powerdns.credentials())
    assert "resolves to a loopback address" in exc.value.message


def test_powerdns_dead_port(loopback_allowed):
    port = free_port()
    result = check_connection(
        "powerdns", {"api_url": f"http://127.0.0.1:{port}", "api_key": "k" * 20}, timeout=2
    )
    url = f"http://127.0.0.1:{port}/api/v1/servers/localhost"
    assert result == CheckResult(False, f"Cannot connect to PowerDNS at {url}: Connection refused.")


@responses.activate
def test_powerdns_redirect_is_not_followed():
    responses.get(
        "https://pdns.example.com/api/v1/servers/localhost",
        status=302,
        headers={"Location": "https://elsewhere.example.net/api/v1/servers/localhost"},
    )
    result = check_connection(
        "powerdns", {"api_url": "https://pdns.example.com", "api_key": "pdns-secret-key"}
    )
    assert not result.ok
    assert "redirect (HTTP 302) to https://elsewhere.example.net/" in result.message
    assert len(responses.calls) == 1  # the key never went to the other host


@responses.activate
def test_powerdns_error_body_is_surfaced_without_the_key():
    responses.get(
        "https://pdns.example.com/api/v1/servers/localhost",
        status=500,
        json={"error": "backend failed; request had key pdns-secret-key"},
    )
    result = check_connection(
        "powerdns", {"api_url": "https://pdns.example.com", "api_key": "pdns-secret-key"}
    )
    assert result == CheckResult(
        False, "PowerDNS answered HTTP 500: backend failed; request had key [redacted]"
    )
    assert responses.calls[0].request.headers["X-API-Key"] == "pdns-secret-key"


# --- RFC 2136 (real named) -------------------------------------------------------------------------


@pytest.mark.servers
def test_rfc2136_right_key(bind, loopback_allowed):
    result = check_connection("rfc2136", bind.credentials())
    assert result.ok, result.message
    assert result.message == (
        f"127.0.0.1:{bind.port} accepted the TSIG key 'certmgr-test.', SOA serial 1 for bind.test.."
    )


@pytest.mark.servers
def test_rfc2136_without_zone_checks_the_key_only(bind, loopback_allowed):
    result = check_connection("rfc2136", bind.credentials(zone=""))
    assert result.ok, result.message
    assert "accepted the TSIG key 'certmgr-test.' (signed answer)" in result.message
    assert "set the zone" in result.message


@pytest.mark.servers
def test_rfc2136_zone_not_served(bind, loopback_allowed):
    result = check_connection("rfc2136", bind.credentials(zone="not-served.test"))
    assert not result.ok
    assert "answered REFUSED to the SOA query for not-served.test.: the key was accepted" in result.message


@pytest.mark.servers
def test_rfc2136_wrong_secret(bind, loopback_allowed):
    wrong = "c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1zZXJ2ZXJzLWtleQ=="
    result = check_connection("rfc2136", bind.credentials(tsig_secret=wrong))
    assert not result.ok
    assert (
        "rejected the TSIG signature of key 'certmgr-test.' (BADSIG): the secret does not match"
        in result.message
    )
    assert wrong not in result.message


@pytest.mark.servers
def test_rfc2136_unknown_key_name(bind, loopback_allowed):
    result = check_connection("rfc2136", bind.credentials(tsig_key_name="nobody-knows-me"))
    assert not result.ok
    assert result.message.startswith(f"127.0.0.1:{bind.port} does not know the TSIG key 'nobody-knows-me'")
    assert "(BADKEY)" in result.message


@pytest.mark.servers
def test_rfc2136_wrong_algorithm(bind, loopback_allowed):
    result = check_connection("rfc2136", bind.credentials(tsig_algorithm="hmac-sha512"))
    assert not result.ok
    assert "with algorithm hmac-sha512 (BADKEY)" in result.message


@pytest.mark.servers
def test_rfc2136_loopback_refused_without_the_setting(bind, loopback_refused):
    with pytest.raises(OutboundRefused, match="CERTMGR_OUTBOUND_ALLOWED_NETWORKS"):
        check_connection("rfc2136", bind.credentials())


def test_rfc2136_dead_port_times_out(loopback_allowed):
    port = free_port()
    creds = {
        "server": "127.0.0.1",
        "port": port,
        "tsig_key_name": "k.",
        "tsig_secret": "c2VjcmV0c2VjcmV0",
        "zone": "example.test",
    }
    result = check_connection("rfc2136", creds, timeout=0.5)
    assert result == CheckResult(False, f"No answer from 127.0.0.1:{port} within 0.5s.")


def test_rfc2136_secret_not_base64():
    creds = {"server": "192.0.2.1", "tsig_key_name": "k.", "tsig_secret": "not base64 at all!"}
    result = check_connection("rfc2136", creds)
    assert result == CheckResult(
        False, "The TSIG secret is not valid base64 (paste it as tsig-keygen prints it)."
    )


# --- the server fixtures' helpers, which ACME tests rely on ----------------------------------------


@pytest.mark.servers
def test_bind_fixture_updates_and_serves_txt(bind):
    name = "_acme-challenge.www.bind.test."
    bind.update_txt(name, ["token-one", "token-two"])
    assert bind.txt_records(name) == ["token-one", "token-two"]
    bind.update_txt(name, [])
    assert bind.txt_records(name) == []
    zone = bind.add_zone("extra.test")
    bind.update_txt(f"_acme-challenge.{zone}", ["in-extra"], zone=zone)
    assert bind.txt_records(f"_acme-challenge.{zone}") == ["in-extra"]


@pytest.mark.servers
def test_powerdns_fixture_sets_and_serves_txt(powerdns):
    name = "_acme-challenge.www.pdns.test."
    powerdns.set_txt(name, ["token-one", "token-two"])
    assert powerdns.txt_records(name) == ["token-one", "token-two"]
    powerdns.set_txt(name, [])
    assert powerdns.txt_records(name) == []
    zone = powerdns.add_zone("extra.test")
    powerdns.set_txt(f"_acme-challenge.{zone}", ["in-extra"], zone=zone)
    assert powerdns.txt_records(f"_acme-challenge.{zone}") == ["in-extra"]


# --- AWS Route53 (moto) ----------------------------------------------------------------------------


@pytest.fixture
def moto_signs_get_requests_right(monkeypatch):
    """moto's IAM simulation signs GET requests with the query parameters as payload, so every REST GET
    (Route53's ListHostedZones included) fails with SignatureDoesNotMatch; correct that (payload of a GET
    is empty) so the simulation can tell right keys from wrong ones."""
    from moto.iam import access_control

    original = access_control.IAMRequestBase._create_aws_request

    def create_aws_request(self):
        request = original(self)
        if self._method in ("GET", "HEAD", "DELETE") and not self._body:
            request.data = b""
        return request

    monkeypatch.setattr(access_control.IAMRequestBase, "_create_aws_request", create_aws_request)


ACCOUNT = "123456789012"
ALLOW = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": None, "Resource": "*"}]}


def _policy(action: str) -> str:
    return json.dumps({**ALLOW, "Statement": [{**ALLOW["Statement"][0], "Action": action}]})


def _trust(principal: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}],
        }
    )


@pytest.fixture
def aws(moto_signs_get_requests_right):
    """A moto account: user 'certmgr' may only assume roles; role 'dns' may list hosted zones and trusts
    the user; role 'untrusting' trusts someone else. One hosted zone exists."""
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_user(UserName="certmgr")
        key = iam.create_access_key(UserName="certmgr")["AccessKey"]
        iam.put_user_policy(UserName="certmgr", PolicyName="assume", PolicyDocument=_policy("sts:AssumeRole"))
        dns_role = iam.create_role(
            RoleName="dns", AssumeRolePolicyDocument=_trust(f"arn:aws:iam::{ACCOUNT}:user/certmgr")
        )
        iam.put_role_policy(
            RoleName="dns", PolicyName="r53", PolicyDocument=_policy("route53:ListHostedZones")
        )
        untrusting = iam.create_role(
            RoleName="untrusting",
            AssumeRolePolicyDocument=_trust(f"arn:aws:iam::{ACCOUNT}:user/someone-else"),
        )
        boto3.client("route53", region_name="us-east-1").create_hosted_zone(
            Name="example.com", CallerReference="t"
        )
        yield {
            "creds": {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]},
            "dns_role": dns_role["Role"]["Arn"],
            "untrusting_role": untrusting["Role"]["Arn"],
        }


def test_aws_good_keys(aws):
    result = check_connection("aws", {**aws["creds"], "region": "eu-west-1"})
    assert result == CheckResult(
        True, "AWS Route53 answered: the credentials can list hosted zones (first hosted zone: example.com.)."
    )


def test_aws_unknown_access_key_is_refused(aws):
    with enable_iam_authentication():
        result = check_connection("aws", {**aws["creds"], "access_key_id": "AKIAIOSFODNN7EXAMPLE"})
    assert result == CheckResult(
        False,
        "AWS refused listing Route53 hosted zones: InvalidClientTokenId: "
        "The security token included in the request is invalid.",
    )


def test_aws_wrong_secret_is_refused(aws):
    wrong = "W" * 40
    with enable_iam_authentication():
        result = check_connection("aws", {**aws["creds"], "secret_access_key": wrong})
    assert not result.ok
    assert result.message.startswith("AWS refused listing Route53 hosted zones: SignatureDoesNotMatch:")
    assert wrong not in result.message


def test_aws_user_without_route53_permission(aws):
    with enable_iam_authentication():
        result = check_connection("aws", aws["creds"])
    assert result == CheckResult(
        False,
        f"AWS refused listing Route53 hosted zones: AccessDenied: User: arn:aws:iam::{ACCOUNT}:user/certmgr "
        "is not authorized to perform: route53:ListHostedZones.",
    )


def test_aws_assume_role_grants_what_the_keys_alone_lack(aws):
    with enable_iam_authentication():
        result = check_connection("aws", {**aws["creds"], "role_arn": aws["dns_role"]})
    assert result == CheckResult(
        True,
        f"AWS Route53 answered as arn:aws:sts::{ACCOUNT}:assumed-role/dns/certmgr-connection-test: "
        "the credentials can list hosted zones (first hosted zone: example.com.).",
    )
    assumed = sts_backends[ACCOUNT]["aws"].assumed_roles
    assert [(r.role_arn, r.session_name) for r in assumed] == [(aws["dns_role"], "certmgr-connection-test")]


def test_aws_role_that_does_not_trust_the_keys(aws):
    with enable_iam_authentication():
        result = check_connection("aws", {**aws["creds"], "role_arn": aws["untrusting_role"]})
    assert result == CheckResult(
        False,
        f"AWS refused assuming role {aws['untrusting_role']}: AccessDenied: User: "
        f"arn:aws:iam::{ACCOUNT}:user/certmgr is not authorized to perform: sts:AssumeRole.",
    )


def test_aws_assume_role_with_unknown_keys(aws):
    with enable_iam_authentication():
        result = check_connection(
            "aws", {**aws["creds"], "access_key_id": "AKIAIOSFODNN7EXAMPLE", "role_arn": aws["dns_role"]}
        )
    assert not result.ok
    assert result.message.startswith(f"AWS refused assuming role {aws['dns_role']}: InvalidClientTokenId:")


# --- Cloudflare (HTTP mock of the token-verify call) -----------------------------------------------


@responses.activate
def test_cloudflare_active_token():
    responses.get(
        CLOUDFLARE_VERIFY_URL,
        json={
            "success": True,
            "errors": [],
            "messages": [{"code": 10000, "message": "This API Token is valid and active", "type": None}],
            "result": {"id": "f267e341f3dd4697bd3b9f71dd96247f", "status": "active"},
        },
    )
    result = check_connection("cloudflare", {"api_token": "cf-token-123"})
    assert result == CheckResult(True, "Cloudflare answered: the API token is valid and active.")
    assert CLOUDFLARE_VERIFY_URL == "https://api.cloudflare.com/client/v4/user/tokens/verify"
    request = responses.calls[0].request
    assert request.method == "GET"
    assert request.headers["Authorization"] == "Bearer cf-token-123"


@responses.activate
def test_cloudflare_invalid_token():
    responses.get(
        CLOUDFLARE_VERIFY_URL,
        status=401,
        json={
            "success": False,
            "errors": [{"code": 1000, "message": "Invalid API Token"}],
            "messages": [],
            "result": None,
        },
    )
    result = check_connection("cloudflare", {"api_token": "cf-token-123"})
    assert result == CheckResult(
        False, "Cloudflare refused the API token (HTTP 401): Invalid API Token (code 1000)"
    )


@responses.activate
def test_cloudflare_disabled_token():
    responses.get(
        CLOUDFLARE_VERIFY_URL,
        json={"success": True, "errors": [], "messages": [], "result": {"id": "x", "status": "disabled"}},
    )
    result = check_connection("cloudflare", {"api_token": "cf-token-123"})
    assert result == CheckResult(False, "Cloudflare answered: the API token is disabled.")


@responses.activate
def test_cloudflare_unreachable():
    responses.get(CLOUDFLARE_VERIFY_URL, body=requests.ConnectionError("boom"))
    result = check_connection("cloudflare", {"api_token": "cf-token-123"})
    assert result == CheckResult(False, "Cannot connect to Cloudflare at api.cloudflare.com: boom.")


# --- acme-dns (HTTP mock of the update call) -------------------------------------------------------

ACME_DNS = {
    "api_url": "https://auth.acme-dns.example/",
    "username": "eabcdb41-d89f-4580-826f-3e62e9755ef2",
    "password": "pbAXVjlIOE01xbut7YnAbkhMQIkcwoHO0ek2j4Q0",
    "subdomain": "d420c923-bbd7-4056-ab64-c3ca54c9b3cf",
}


def test_acme_dns_placeholder_is_a_value_acme_dns_accepts():
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", ACME_DNS_PLACEHOLDER_TXT)


@responses.activate
def test_acme_dns_update_accepted():
    responses.post("https://auth.acme-dns.example/update", json={"txt": ACME_DNS_PLACEHOLDER_TXT})
    result = check_connection("acme-dns", ACME_DNS)
    assert result == CheckResult(
        True, f"acme-dns accepted an update of subdomain {ACME_DNS['subdomain']} (a placeholder TXT value)."
    )
    request = responses.calls[0].request
    assert request.headers["X-Api-User"] == ACME_DNS["username"]
    assert request.headers["X-Api-Key"] == ACME_DNS["password"]
    assert json.loads(request.body) == {"subdomain": ACME_DNS["subdomain"], "txt": ACME_DNS_PLACEHOLDER_TXT}


@responses.activate
def test_acme_dns_credentials_refused():
    responses.post("https://auth.acme-dns.example/update", status=401, json={"error": "forbidden"})
    result = check_connection("acme-dns", ACME_DNS)
    assert not result.ok
    assert result.message.startswith("acme-dns refused the credentials (HTTP 401: forbidden)")
    assert ACME_DNS["password"] not in result.message


@responses.activate
def test_acme_dns_other_error_surfaced():
    responses.post("https://auth.acme-dns.example/update", status=400, json={"error": "bad_subdomain"})
    result = check_connection("acme-dns", ACME_DNS)
    assert result == CheckResult(False, "acme-dns answered HTTP 400: bad_subdomain")


def test_acme_dns_loopback_refused(loopback_refused):
    with pytest.raises(OutboundRefused, match="CERTMGR_OUTBOUND_ALLOWED_NETWORKS"):
        check_connection("acme-dns", {**ACME_DNS, "api_url": "http://127.0.0.1:1"})


# --- manual, and what every kind shares ------------------------------------------------------------


def test_manual():
    assert check_connection("manual", {}) == CheckResult(
        True, "Manual connections have nothing to test: an operator creates the records."
    )


def test_unknown_kind():
    assert check_connection("carrier-pigeon", {}) == CheckResult(
        False, "Unknown connection kind 'carrier-pigeon'."
    )


def test_missing_credentials():
    result = check_connection("powerdns", {"api_url": "https://pdns.example.com"})
    assert result == CheckResult(False, "Incomplete credentials: missing api_key.")
