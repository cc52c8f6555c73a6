"""DNS-01 providers for the cloud kinds: Route53 on moto, Cloudflare and acme-dns on HTTP mocks."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
import responses
from moto import mock_aws
from moto.core.authorization import enable_iam_authentication
from responses import matchers

from certmgr.errors import OutboundRefused
from dnsproviders.providers import acmedns, cloudflare, route53
from dnsproviders.providers.base import ProviderError, RecordRef, provider_for
from tests.dnsproviders.test_connection_checks import (  # noqa: F401  (a fixture)
    ACCOUNT,
    _trust,
    moto_signs_get_requests_right,
)

NAME = "_acme-challenge.www.example.com."
APEX = "a" * 43
WILDCARD = "w" * 43

# --- AWS Route53 (moto) ----------------------------------------------------------------------------


@pytest.fixture
def r53():
    with mock_aws():
        client = boto3.client("route53", region_name="us-east-1")
        zones = {}
        for name in ("example.com", "sub.example.com"):
            zone = client.create_hosted_zone(Name=name, CallerReference=name)["HostedZone"]
            zones[name] = zone["Id"].rsplit("/", 1)[-1]
        yield client, zones


def _txt(client, zone, name=NAME):
    sets = client.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return [s for s in sets if s["Type"] == "TXT" and s["Name"] == name]


def _aws(**extra):
    return provider_for(
        "aws", {"access_key_id": "AKIAEXAMPLEEXAMPLE", "secret_access_key": "s" * 40, **extra}
    )


def test_route53_kind_and_module():
    assert isinstance(_aws(), route53.Provider)
    assert route53.Provider.kind == "aws"


def test_route53_apex_and_wildcard_share_one_record_set(r53):
    client, zones = r53
    p = _aws()
    ref1 = p.present(NAME, APEX)
    ref2 = p.present("_acme-challenge.WWW.example.com", WILDCARD)
    assert ref1 == RecordRef(NAME, APEX, zones["example.com"])
    assert ref2.zone == zones["example.com"]
    [rrset] = _txt(client, zones["example.com"])
    assert sorted(r["Value"] for r in rrset["ResourceRecords"]) == [f'"{APEX}"', f'"{WILDCARD}"']
    assert rrset["TTL"] == 60

    p.present(NAME, APEX)  # again: no duplicate
    [rrset] = _txt(client, zones["example.com"])
    assert len(rrset["ResourceRecords"]) == 2

    p.cleanup(ref1)
    [rrset] = _txt(client, zones["example.com"])
    assert [r["Value"] for r in rrset["ResourceRecords"]] == [f'"{WILDCARD}"']
    p.cleanup(ref1)  # idempotent
    assert len(_txt(client, zones["example.com"])) == 1

    p.cleanup(RecordRef.from_dict(ref2.as_dict()))
    assert _txt(client, zones["example.com"]) == []
    p.cleanup(ref2)  # nothing left: still success


def test_route53_keeps_foreign_values(r53):
    client, zones = r53
    client.change_resource_record_sets(
        HostedZoneId=zones["example.com"],
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": NAME,
                        "Type": "TXT",
                        "TTL": 300,
                        "ResourceRecords": [{"Value": '"someone-else"'}],
                    },
                }
            ]
        },
    )
    p = _aws()
    ref = p.present(NAME, APEX)
    [rrset] = _txt(client, zones["example.com"])
    assert [r["Value"] for r in rrset["ResourceRecords"]] == ['"someone-else"', f'"{APEX}"']
    p.cleanup(ref)
    [rrset] = _txt(client, zones["example.com"])
    assert [r["Value"] for r in rrset["ResourceRecords"]] == ['"someone-else"']


def test_route53_cleanup_rereads_when_the_set_changed_meanwhile(r53, monkeypatch):
    """Route53 refuses a DELETE whose values are not the current ones (InvalidChangeBatch): another order
    added a value between our read and our write. Cleanup reads again and keeps that value."""
    import botocore.exceptions

    client, zones = r53
    zone = zones["example.com"]
    p = _aws()
    ref = p.present(NAME, APEX)
    original = route53.Provider._change
    actions = []

    def racing_change(self, zone_id, name, action, values, ttl, step):
        actions.append((action, values))
        if len(actions) == 1:
            original(self, zone_id, name, "UPSERT", [*values, f'"{WILDCARD}"'], ttl, step)  # the other order
            exc = botocore.exceptions.ClientError(
                {"Error": {"Code": "InvalidChangeBatch", "Message": "values do not match"}},
                "ChangeResourceRecordSets",
            )
            raise route53._provider_error(step, exc) from exc
        return original(self, zone_id, name, action, values, ttl, step)

    monkeypatch.setattr(route53.Provider, "_change", racing_change)
    p.cleanup(ref)
    assert actions == [("DELETE", [f'"{APEX}"']), ("UPSERT", [f'"{WILDCARD}"'])]
    [rrset] = _txt(client, zone)
    assert [r["Value"] for r in rrset["ResourceRecords"]] == [f'"{WILDCARD}"']


def test_route53_find_zone_picks_the_deepest(r53):
    _, zones = r53
    p = _aws()
    assert p.find_zone("_acme-challenge.a.sub.example.com") == zones["sub.example.com"]
    assert p.find_zone("_acme-challenge.sub.example.com.") == zones["sub.example.com"]
    assert p.find_zone("_acme-challenge.other.example.com") == zones["example.com"]
    assert p.find_zone("example.com") == zones["example.com"]


def test_route53_present_in_the_sub_zone(r53):
    client, zones = r53
    name = "_acme-challenge.sub.example.com."
    _aws().present(name, APEX)
    assert len(_txt(client, zones["sub.example.com"], name)) == 1
    assert _txt(client, zones["example.com"], name) == []


def test_route53_public_zone_preferred_over_private(r53):
    client, zones = r53
    vpc = boto3.client("ec2", region_name="us-east-1").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    private = client.create_hosted_zone(
        Name="internal.example.com",
        CallerReference="private-1",
        HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": "us-east-1", "VPCId": vpc},
    )["HostedZone"]["Id"].rsplit("/", 1)[-1]
    private_sub = client.create_hosted_zone(
        Name="sub.example.com",
        CallerReference="private-2",
        HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": "us-east-1", "VPCId": vpc},
    )["HostedZone"]["Id"].rsplit("/", 1)[-1]
    p = _aws()
    # A deeper private zone does not shadow the public parent; a public twin beats a private one.
    assert p.find_zone("_acme-challenge.internal.example.com") == zones["example.com"]
    assert p.find_zone("_acme-challenge.sub.example.com") == zones["sub.example.com"]
    assert private_sub != zones["sub.example.com"]
    assert private


def test_route53_private_zone_used_when_no_public_one_matches():
    with mock_aws():
        client = boto3.client("route53", region_name="us-east-1")
        vpc = boto3.client("ec2", region_name="us-east-1").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        private = client.create_hosted_zone(
            Name="corp.internal",
            CallerReference="p",
            HostedZoneConfig={"PrivateZone": True},
            VPC={"VPCRegion": "us-east-1", "VPCId": vpc},
        )["HostedZone"]["Id"].rsplit("/", 1)[-1]
        assert _aws().find_zone("_acme-challenge.host.corp.internal") == private


def test_route53_unknown_zone(r53):
    with pytest.raises(
        ProviderError, match=r"no Route53 hosted zone holds _acme-challenge\.example\.org\."
    ) as e:
        _aws().present("_acme-challenge.example.org", APEX)
    assert not e.value.transient


def test_route53_waits_for_insync(r53, monkeypatch):
    _, zones = r53
    statuses = iter(["PENDING", "PENDING", "INSYNC"])
    polled = []
    original = route53.Provider._call

    def fake_call(self, step, method, **kwargs):
        if method == "get_change":
            polled.append(kwargs["Id"])
            return {"ChangeInfo": {"Id": kwargs["Id"], "Status": next(statuses)}}
        return original(self, step, method, **kwargs)

    monkeypatch.setattr(route53.Provider, "_call", fake_call)
    monkeypatch.setattr(route53.time, "sleep", lambda s: None)
    _aws().present(NAME, APEX, zone=zones["example.com"])
    assert len(polled) == 3


def test_route53_insync_timeout_is_transient(r53, monkeypatch):
    original = route53.Provider._call

    def fake_call(self, step, method, **kwargs):
        if method == "get_change":
            return {"ChangeInfo": {"Id": kwargs["Id"], "Status": "PENDING"}}
        return original(self, step, method, **kwargs)

    monkeypatch.setattr(route53.Provider, "_call", fake_call)
    p = route53.Provider(
        {"access_key_id": "AKIAEXAMPLEEXAMPLE", "secret_access_key": "s" * 40}, sync_timeout=0
    )
    with pytest.raises(ProviderError, match="is still PENDING after 0s") as e:
        p.present(NAME, APEX)
    assert e.value.transient


@pytest.fixture
def aws_role(moto_signs_get_requests_right):  # noqa: F811
    """User 'certmgr' may only assume role 'dns', which may do what DNS-01 needs in Route53."""
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_user(UserName="certmgr")
        key = iam.create_access_key(UserName="certmgr")["AccessKey"]
        allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": None, "Resource": "*"}]}
        iam.put_user_policy(
            UserName="certmgr",
            PolicyName="assume",
            PolicyDocument=json.dumps(
                {**allow, "Statement": [{**allow["Statement"][0], "Action": "sts:AssumeRole"}]}
            ),
        )
        role = iam.create_role(
            RoleName="dns", AssumeRolePolicyDocument=_trust(f"arn:aws:iam::{ACCOUNT}:user/certmgr")
        )
        iam.put_role_policy(
            RoleName="dns",
            PolicyName="r53",
            PolicyDocument=json.dumps(
                {**allow, "Statement": [{**allow["Statement"][0], "Action": "route53:*"}]}
            ),
        )
        client = boto3.client("route53", region_name="us-east-1")
        zone = client.create_hosted_zone(Name="example.com", CallerReference="t")["HostedZone"]["Id"]
        yield {
            "creds": {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]},
            "role": role["Role"]["Arn"],
            "client": client,
            "zone": zone.rsplit("/", 1)[-1],
        }


def test_route53_assume_role(aws_role):
    with enable_iam_authentication():
        p = provider_for("aws", {**aws_role["creds"], "role_arn": aws_role["role"]})
        ref = p.present(NAME, APEX)
        assert ref.zone == aws_role["zone"]
        p.cleanup(ref)
    assert _txt(aws_role["client"], aws_role["zone"]) == []


def test_route53_access_denied_is_permanent_with_aws_message(aws_role):
    with enable_iam_authentication(), pytest.raises(ProviderError) as e:
        provider_for("aws", aws_role["creds"]).find_zone(NAME)
    assert not e.value.transient
    assert str(e.value) == (
        f"AWS refused listing hosted zones named {NAME}: AccessDenied: User: "
        f"arn:aws:iam::{ACCOUNT}:user/certmgr is not authorized to perform: route53:ListHostedZonesByName."
    )


def test_route53_unknown_key_is_permanent(aws_role):
    with enable_iam_authentication(), pytest.raises(ProviderError, match="InvalidClientTokenId") as e:
        provider_for("aws", {**aws_role["creds"], "access_key_id": "AKIAIOSFODNN7EXAMPLE"}).find_zone(NAME)
    assert not e.value.transient


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("Throttling", 400, True),
        ("PriorRequestNotComplete", 400, True),
        ("ServiceUnavailable", 503, True),
        ("SomethingNew", 500, True),
        ("AccessDenied", 403, False),
        ("InvalidClientTokenId", 403, False),
        ("InvalidChangeBatch", 400, False),
    ],
)
def test_route53_error_classification(code, status, transient):
    import botocore.exceptions

    exc = botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": "words from AWS"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "ChangeResourceRecordSets",
    )
    error = route53._provider_error("doing it", exc)
    assert error.transient is transient
    assert str(error) == f"AWS refused doing it: {code}: words from AWS."


# --- Cloudflare ------------------------------------------------------------------------------------

CF = "https://api.cloudflare.com/client/v4"
TOKEN = "cf-token-123"
ZONE_ID = "023e105f4ecef8ad9ca31a8372d0c353"


def _ok(result):
    return {"success": True, "errors": [], "messages": [], "result": result}


def _fail(code, message):
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


def _cf():
    return provider_for("cloudflare", {"api_token": TOKEN})


def _zones(name_to_id):
    for name in ("_acme-challenge.www.example.com", "www.example.com", "example.com"):
        zid = name_to_id.get(name)
        responses.get(
            f"{CF}/zones",
            match=[matchers.query_param_matcher({"name": name})],
            json=_ok([{"id": zid, "name": name}] if zid else []),
        )


@responses.activate
def test_cloudflare_find_zone_walks_up():
    _zones({"example.com": ZONE_ID})
    assert _cf().find_zone(NAME) == ZONE_ID
    assert [c.request.url for c in responses.calls] == [
        f"{CF}/zones?name=_acme-challenge.www.example.com",
        f"{CF}/zones?name=www.example.com",
        f"{CF}/zones?name=example.com",
    ]
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in responses.calls)
    assert all(c.request.method == "GET" for c in responses.calls)


@responses.activate
def test_cloudflare_find_zone_prefers_the_deepest():
    _zones({"www.example.com": "deep", "example.com": ZONE_ID})
    assert _cf().find_zone(NAME) == "deep"
    assert len(responses.calls) == 2


@responses.activate
def test_cloudflare_unknown_zone():
    _zones({})
    with pytest.raises(ProviderError, match="no Cloudflare zone visible to this API token holds") as e:
        _cf().find_zone(NAME)
    assert not e.value.transient
    assert len(responses.calls) == 3  # not the bare TLD


@responses.activate
def test_cloudflare_present():
    responses.post(f"{CF}/zones/{ZONE_ID}/dns_records", json=_ok({"id": "rec1", "content": APEX}))
    ref = _cf().present(NAME, APEX, zone=ZONE_ID)
    assert ref == RecordRef(NAME, APEX, ZONE_ID, {"record_id": "rec1"})
    request = responses.calls[0].request
    assert request.method == "POST"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.body) == {
        "type": "TXT",
        "name": "_acme-challenge.www.example.com",
        "content": APEX,
        "ttl": 60,
    }


@responses.activate
def test_cloudflare_present_finds_the_zone_first():
    _zones({"example.com": ZONE_ID})
    responses.post(f"{CF}/zones/{ZONE_ID}/dns_records", json=_ok({"id": "rec1"}))
    assert _cf().present(NAME, APEX).zone == ZONE_ID


@responses.activate
def test_cloudflare_present_identical_record_is_success():
    responses.post(
        f"{CF}/zones/{ZONE_ID}/dns_records",
        status=400,
        json=_fail(81058, "An identical record already exists."),
    )
    assert _cf().present(NAME, APEX, zone=ZONE_ID) == RecordRef(NAME, APEX, ZONE_ID)


@responses.activate
def test_cloudflare_error_surfaced():
    responses.post(f"{CF}/zones/{ZONE_ID}/dns_records", status=403, json=_fail(10000, "Authentication error"))
    with pytest.raises(ProviderError) as e:
        _cf().present(NAME, APEX, zone=ZONE_ID)
    assert str(e.value) == (
        f"Cloudflare refused creating the TXT record {NAME} (HTTP 403): Authentication error (code 10000)"
    )
    assert not e.value.transient


@pytest.mark.parametrize("status", [429, 500, 503])
@responses.activate
def test_cloudflare_throttling_and_5xx_are_transient(status):
    responses.post(f"{CF}/zones/{ZONE_ID}/dns_records", status=status, json=_fail(971, "Please wait"))
    with pytest.raises(ProviderError, match="Please wait") as e:
        _cf().present(NAME, APEX, zone=ZONE_ID)
    assert e.value.transient


@responses.activate
def test_cloudflare_unreachable_is_transient():
    responses.post(f"{CF}/zones/{ZONE_ID}/dns_records", body=requests.ConnectionError("boom"))
    with pytest.raises(ProviderError, match="boom") as e:
        _cf().present(NAME, APEX, zone=ZONE_ID)
    assert e.value.transient


@responses.activate
def test_cloudflare_cleanup_deletes_only_its_record():
    query = {"type": "TXT", "name": "_acme-challenge.www.example.com", "content": APEX}
    responses.get(
        f"{CF}/zones/{ZONE_ID}/dns_records",
        match=[matchers.query_param_matcher(query)],
        json=_ok([{"id": "rec1", "type": "TXT", "name": NAME.rstrip("."), "content": APEX}]),
    )
    responses.delete(f"{CF}/zones/{ZONE_ID}/dns_records/rec1", json=_ok({"id": "rec1"}))
    _cf().cleanup(RecordRef(NAME, APEX, ZONE_ID, {"record_id": "rec1"}))
    assert [(c.request.method, urlsplit(c.request.url).path) for c in responses.calls] == [
        ("GET", f"/client/v4/zones/{ZONE_ID}/dns_records"),
        ("DELETE", f"/client/v4/zones/{ZONE_ID}/dns_records/rec1"),
    ]
    assert parse_qs(urlsplit(responses.calls[0].request.url).query) == {k: [v] for k, v in query.items()}
    assert responses.calls[1].request.headers["Authorization"] == f"Bearer {TOKEN}"


@responses.activate
def test_cloudflare_cleanup_is_idempotent():
    responses.get(f"{CF}/zones/{ZONE_ID}/dns_records", json=_ok([]))
    _cf().cleanup(RecordRef(NAME, APEX, ZONE_ID))
    assert len(responses.calls) == 1


@responses.activate
def test_cloudflare_cleanup_record_gone_meanwhile():
    responses.get(
        f"{CF}/zones/{ZONE_ID}/dns_records", json=_ok([{"id": "rec1", "type": "TXT", "content": APEX}])
    )
    responses.delete(
        f"{CF}/zones/{ZONE_ID}/dns_records/rec1", status=404, json=_fail(81044, "Record does not exist.")
    )
    _cf().cleanup(RecordRef(NAME, APEX, ZONE_ID))


@responses.activate
def test_cloudflare_cleanup_ignores_other_contents():
    # A server that ignored the content filter must not make us delete someone else's value.
    responses.get(
        f"{CF}/zones/{ZONE_ID}/dns_records",
        json=_ok([{"id": "other", "type": "TXT", "content": WILDCARD}]),
    )
    _cf().cleanup(RecordRef(NAME, APEX, ZONE_ID))
    assert len(responses.calls) == 1


# --- acme-dns --------------------------------------------------------------------------------------

ACME_DNS = {
    "api_url": "https://auth.acme-dns.example/",
    "username": "eabcdb41-d89f-4580-826f-3e62e9755ef2",
    "password": "pbAXVjlIOE01xbut7YnAbkhMQIkcwoHO0ek2j4Q0",
    "subdomain": "d420c923-bbd7-4056-ab64-c3ca54c9b3cf",
}
TARGET = f"{ACME_DNS['subdomain']}.auth.acme-dns.example."


def _acme():
    return provider_for("acme-dns", ACME_DNS)


@responses.activate
def test_acme_dns_present_apex_and_wildcard():
    responses.post("https://auth.acme-dns.example/update", json={"txt": APEX})
    p = _acme()
    assert p.find_zone(NAME) == ""
    ref1 = p.present(NAME, APEX)
    ref2 = p.present(NAME, WILDCARD)
    assert ref1 == RecordRef(NAME, APEX, "", {"cname_target": TARGET})
    assert ref2.value == WILDCARD
    bodies = []
    for call in responses.calls:
        assert call.request.method == "POST"
        assert call.request.url == "https://auth.acme-dns.example/update"
        assert call.request.headers["X-Api-User"] == ACME_DNS["username"]
        assert call.request.headers["X-Api-Key"] == ACME_DNS["password"]
        bodies.append(json.loads(call.request.body))
    assert bodies == [
        {"subdomain": ACME_DNS["subdomain"], "txt": APEX},
        {"subdomain": ACME_DNS["subdomain"], "txt": WILDCARD},
    ]


@responses.activate
def test_acme_dns_cleanup_is_a_no_op():
    _acme().cleanup(RecordRef(NAME, APEX, "", {"cname_target": TARGET}))
    _acme().cleanup(RecordRef(NAME, APEX))
    assert len(responses.calls) == 0


@responses.activate
def test_acme_dns_credentials_refused():
    responses.post("https://auth.acme-dns.example/update", status=401, json={"error": "forbidden"})
    with pytest.raises(ProviderError, match=r"acme-dns refused the credentials \(HTTP 401: forbidden\)") as e:
        _acme().present(NAME, APEX)
    assert not e.value.transient


@responses.activate
def test_acme_dns_bad_value_surfaced():
    responses.post("https://auth.acme-dns.example/update", status=400, json={"error": "bad_txt"})
    with pytest.raises(ProviderError, match=r"^acme-dns answered HTTP 400: bad_txt$") as e:
        _acme().present(NAME, "short")
    assert not e.value.transient


@responses.activate
def test_acme_dns_5xx_and_network_errors_are_transient():
    responses.post("https://auth.acme-dns.example/update", status=502, body="bad gateway")
    with pytest.raises(ProviderError, match="HTTP 502") as e:
        _acme().present(NAME, APEX)
    assert e.value.transient
    responses.replace(
        responses.POST, "https://auth.acme-dns.example/update", body=requests.ConnectTimeout("slow")
    )
    with pytest.raises(ProviderError, match="slow") as e:
        _acme().present(NAME, APEX)
    assert e.value.transient


@responses.activate
def test_acme_dns_redirect_not_followed():
    responses.post(
        "https://auth.acme-dns.example/update",
        status=307,
        headers={"Location": "https://elsewhere.example/update"},
    )
    with pytest.raises(ProviderError, match="redirect"):
        _acme().present(NAME, APEX)
    assert len(responses.calls) == 1


def test_acme_dns_loopback_refused(settings):
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = []
    p = provider_for("acme-dns", {**ACME_DNS, "api_url": "http://127.0.0.1:1"})
    with pytest.raises(OutboundRefused, match="CERTMGR_OUTBOUND_ALLOWED_NETWORKS"):
        p.present(NAME, APEX)


def test_acme_dns_required_cname():
    assert acmedns.required_cname("_acme-challenge.www.example.com", ACME_DNS) == (NAME, TARGET)
    full = f"{ACME_DNS['subdomain']}.acme.example.net"
    assert acmedns.required_cname(NAME, ACME_DNS, fulldomain=full) == (NAME, full + ".")
    assert acmedns.required_cname(NAME, {**ACME_DNS, "fulldomain": full + "."}) == (NAME, full + ".")


def test_kinds():
    assert cloudflare.Provider.kind == "cloudflare"
    assert acmedns.Provider.kind == "acme-dns"


@pytest.mark.django_db(transaction=True)
def test_route53_concurrent_presents_keep_every_value_under_the_record_lock(r53):
    """Route53 has no atomic append: UPSERT rewrites the whole set. Eight workers presenting at one name at
    once keep all eight values because certmgr's per-record advisory lock serialises the read-modify-write."""
    import threading

    from django.db import connection, connections

    from dnsproviders.locks import record_lock

    if connection.vendor != "postgresql":
        pytest.skip("advisory locks need PostgreSQL")
    client, zones = r53
    values = [c * 43 for c in "abcdefgh"]
    barrier = threading.Barrier(len(values))

    def present(value: str) -> None:
        try:
            provider = _aws()
            barrier.wait()
            with record_lock(1, NAME):
                provider.present(NAME, value, zone=zones["example.com"])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=present, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    (rrset,) = _txt(client, zones["example.com"])
    assert sorted(r["Value"].strip('"') for r in rrset["ResourceRecords"]) == sorted(values)
