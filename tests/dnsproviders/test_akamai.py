"""Akamai Edge DNS: the provider and the connection test against an HTTP mock of the Edge DNS API v2.

The mock (``EdgeDns``) serves the documented requests (zones, TXT record sets under
``/config-dns/v2/zones/{zone}/names/{name}/types/TXT``) and checks every request's EdgeGrid signature the way
Akamai does, computed here from the EG1-HMAC-SHA256 definition with the client secret it was given: requests
are signed by the real ``edgegrid-python`` signer, and a wrong secret, token or stale timestamp is a 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
import responses

from dnsproviders import credentials as creds
from dnsproviders.connection_checks import CheckResult, check_connection
from dnsproviders.providers import akamai
from dnsproviders.providers.base import ProviderError, RecordRef, provider_for

HOST = "akab-h4xz6k2bqmgl5d3e-w7cjr2n6tyq4o5ps.luna.akamaiapis.net"
CREDS = {
    "host": HOST,
    "client_token": "akab-c113nt70k3n000-ae4ayjqyzgpnpr4w",
    "client_secret": "SOMESECRETc2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw==",
    "access_token": "akab-acc35570k3n000-jy3hn6bcmy3afxzr",
}
NAME = "_acme-challenge.www.example.com"
APEX = "a" * 43
WILDCARD = "w" * 43


def _b64_hmac(key: str, data: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), data.encode(), hashlib.sha256).digest()).decode()


def edgegrid_refusal(request, *, client_token: str, access_token: str, client_secret: str) -> str | None:
    """Why Akamai would refuse ``request``'s EG1-HMAC-SHA256 Authorization header, or None when it is right.

    The signing key is HMAC-SHA256(client secret, timestamp); the signature is HMAC-SHA256(signing key,
    method TAB scheme TAB host TAB path?query TAB signed headers (none) TAB base64 SHA-256 of a POST body TAB
    the header up to ``signature=``), both base64."""
    header = request.headers.get("Authorization", "")
    prefix = "EG1-HMAC-SHA256 "
    if not header.startswith(prefix) or ";signature=" not in header:
        return "no EdgeGrid Authorization header"
    unsigned, signature = header.rsplit("signature=", 1)
    fields = dict(part.split("=", 1) for part in unsigned[len(prefix) :].rstrip(";").split(";"))
    if fields.get("client_token") != client_token or fields.get("access_token") != access_token:
        return "Invalid client token or access token"
    try:
        stamp = datetime.strptime(fields["timestamp"], "%Y%m%dT%H:%M:%S+0000").replace(tzinfo=UTC)
        uuid.UUID(fields["nonce"])
    except (KeyError, ValueError):
        return "Invalid timestamp or nonce"
    if abs(datetime.now(UTC) - stamp) > timedelta(seconds=30):
        return "Invalid timestamp"
    url = urlsplit(request.url)
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    content_hash = (
        base64.b64encode(hashlib.sha256(body[:131072]).digest()).decode()
        if request.method == "POST" and body
        else ""
    )
    path = url.path + (f"?{url.query}" if url.query else "")
    data = "\t".join([request.method, url.scheme, url.netloc, path, "", content_hash, unsigned])
    expected = _b64_hmac(_b64_hmac(client_secret, fields["timestamp"]), data)
    return None if hmac.compare_digest(expected, signature) else "The signature does not match"


def _problem(status: int, title: str, detail: str) -> tuple[int, dict, str]:
    body = {"type": f"https://problems.luna.akamaiapis.net/config-dns/{status}", "title": title}
    body.update({"detail": detail, "status": status, "instance": f"/config-dns/v2/{uuid.uuid4()}"})
    return status, {"Content-Type": "application/problem+json"}, json.dumps(body)


class EdgeDns:
    """Zones and TXT record sets, as the Edge DNS API v2 keeps them, behind EdgeGrid authentication."""

    ZONE = re.compile(r"^/config-dns/v2/zones/([^/]+)$")
    RECORDSET = re.compile(r"^/config-dns/v2/zones/([^/]+)/names/([^/]+)/types/([^/]+)$")

    def __init__(self, mock: responses.RequestsMock, secret: str = CREDS["client_secret"]):
        self.secret = secret
        self.zones: dict[str, str] = {}  # name -> PRIMARY | SECONDARY | ALIAS
        self.sets: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.queries: list[dict] = []
        self.authorizations: list[str] = []
        self.expired = False
        # (method, name) -> how many 409s to answer first; ``meanwhile`` runs at each (the racing writer).
        self.conflicts: dict[tuple[str, str], int] = {}
        self.meanwhile = lambda: None
        mock.add_callback(responses.GET, re.compile(rf"https://{re.escape(HOST)}/.*"), callback=self.handle)
        for method in (responses.POST, responses.PUT, responses.DELETE):
            mock.add_callback(method, re.compile(rf"https://{re.escape(HOST)}/.*"), callback=self.handle)

    def rdata(self, zone: str, name: str) -> list[str] | None:
        found = self.sets.get((zone, name))
        return None if found is None else found["rdata"]

    def handle(self, request):
        url = urlsplit(request.url)
        path = unquote(url.path)
        self.calls.append((request.method, path))
        self.queries.append({k: v[0] for k, v in parse_qs(url.query).items()})
        self.authorizations.append(request.headers.get("Authorization", ""))
        if self.expired:
            return _problem(401, "Not authorized", "The client token is expired")
        refusal = edgegrid_refusal(
            request,
            client_token=CREDS["client_token"],
            access_token=CREDS["access_token"],
            client_secret=self.secret,
        )
        if refusal:
            return _problem(401, "Not authorized", refusal)
        if path == "/config-dns/v2/zones" and request.method == "GET":
            return self.list_zones(url)
        if (match := self.ZONE.match(path)) and request.method == "GET":
            zone = match.group(1)
            if zone not in self.zones:
                return _problem(404, "Not Found", f"Zone {zone} does not exist")
            return 200, {}, json.dumps({"zone": zone, "type": self.zones[zone], "versionId": "v1"})
        if match := self.RECORDSET.match(path):
            return self.recordset(request, *match.groups())
        return _problem(404, "Not Found", "no such resource")

    def list_zones(self, url):
        query = parse_qs(url.query)
        size = int(query.get("pageSize", ["25"])[0])
        zones = [{"zone": z, "type": t} for z, t in sorted(self.zones.items())]
        meta = {"page": 1, "pageSize": size, "showAll": False, "totalElements": len(zones)}
        return 200, {}, json.dumps({"metadata": meta, "zones": zones[:size]})

    def recordset(self, request, zone, name, rtype):
        method = request.method
        if zone not in self.zones:
            return _problem(404, "Not Found", f"Zone {zone} does not exist")
        assert rtype == "TXT" and name.endswith(zone)
        if self.conflicts.get((method, name)):
            self.conflicts[(method, name)] -= 1
            self.meanwhile()
            return _problem(409, "Conflict", "Another change to the zone is being applied; try again")
        key = (zone, name)
        if method == "GET":
            if key not in self.sets:
                return _problem(404, "Not Found", f"Recordset {name} TXT does not exist")
            return 200, {}, json.dumps(self.sets[key])
        if method == "DELETE":
            if self.sets.pop(key, None) is None:
                return _problem(404, "Not Found", f"Recordset {name} TXT does not exist")
            return 204, {}, ""
        body = json.loads(request.body)
        assert body["name"] == name and body["type"] == "TXT" and isinstance(body["ttl"], int), body
        assert body["rdata"] and all(v.startswith('"') and v.endswith('"') for v in body["rdata"]), body
        if method == "POST":
            if key in self.sets:
                return _problem(409, "Conflict", f"Recordset {name} TXT already exists")
            self.sets[key] = body
            return 201, {}, json.dumps(body)
        if key not in self.sets:
            return _problem(404, "Not Found", f"Recordset {name} TXT does not exist")
        self.sets[key] = body
        return 200, {}, json.dumps(body)


@pytest.fixture
def edge(monkeypatch):
    monkeypatch.setattr(akamai, "CONFLICT_PAUSE_SECONDS", 0)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        api = EdgeDns(mock)
        api.zones["example.com"] = "PRIMARY"
        yield api


def _akamai(**extra):
    return provider_for("akamai", {**CREDS, **extra}, connection_name="edge-prod")


# --- the signature check itself ------------------------------------------------------------------


def test_a_wrong_client_secret_is_refused_by_the_mock(edge):
    with pytest.raises(ProviderError, match="The signature does not match") as e:
        _akamai(client_secret="not-" + CREDS["client_secret"]).find_zone(NAME)
    assert not e.value.transient
    assert len(edge.calls) == 1  # a refused signature is not retried


def test_requests_are_signed_with_the_edgegrid_scheme(edge):
    _akamai().present(NAME, APEX, zone="example.com")
    assert edge.calls  # every one passed the signature check (else the present failed)
    header = edge.authorizations[0]
    assert len(set(edge.authorizations)) == len(edge.authorizations)  # a new nonce each time
    assert header.startswith(f"EG1-HMAC-SHA256 client_token={CREDS['client_token']};")
    assert CREDS["client_secret"] not in header


# --- zones ---------------------------------------------------------------------------------------


def test_find_zone_tries_the_parents(edge):
    assert _akamai().find_zone(NAME + ".") == "example.com"
    assert edge.calls == [
        ("GET", "/config-dns/v2/zones/_acme-challenge.www.example.com"),
        ("GET", "/config-dns/v2/zones/www.example.com"),
        ("GET", "/config-dns/v2/zones/example.com"),
    ]


def test_find_zone_prefers_the_deepest(edge):
    edge.zones["www.example.com"] = "PRIMARY"
    assert _akamai().find_zone(NAME) == "www.example.com"
    assert len(edge.calls) == 2


def test_unknown_zone_is_permanent_and_never_asks_for_the_tld(edge):
    with pytest.raises(ProviderError, match=r"no Edge DNS zone visible to this API client holds") as e:
        _akamai().find_zone("_acme-challenge.example.org")
    assert not e.value.transient
    assert "edge-prod" in str(e.value)
    assert [path for _, path in edge.calls] == [
        "/config-dns/v2/zones/_acme-challenge.example.org",
        "/config-dns/v2/zones/example.org",
    ]


def test_secondary_zone_is_refused(edge):
    edge.zones["example.com"] = "SECONDARY"
    with pytest.raises(ProviderError, match="is a SECONDARY zone: only primary zones") as e:
        _akamai().present(NAME, APEX)
    assert not e.value.transient


# --- record sets ---------------------------------------------------------------------------------


def test_values_of_two_orders_merge_into_one_record_set(edge):
    p = _akamai()
    ref1 = p.present(NAME, APEX)
    assert ref1 == RecordRef(NAME + ".", APEX, "example.com")
    assert edge.sets[("example.com", NAME)] == {
        "name": NAME,
        "type": "TXT",
        "ttl": 60,
        "rdata": [f'"{APEX}"'],
    }
    edge.calls.clear()
    ref2 = p.present(NAME.upper(), WILDCARD, zone="example.com")
    assert edge.rdata("example.com", NAME) == [f'"{APEX}"', f'"{WILDCARD}"']
    recordset = f"/config-dns/v2/zones/example.com/names/{NAME}/types/TXT"
    assert edge.calls == [("GET", recordset), ("PUT", recordset)]
    edge.calls.clear()
    p.present(NAME, APEX, zone="example.com")  # again: already there, nothing written
    assert edge.calls == [("GET", recordset)]
    assert ref2.zone == "example.com"


def test_cleanup_removes_only_its_value_then_the_record_set(edge):
    p = _akamai()
    ref1, ref2 = p.present(NAME, APEX), p.present(NAME, WILDCARD)
    p.cleanup(ref1)
    assert edge.rdata("example.com", NAME) == [f'"{WILDCARD}"']
    p.cleanup(ref1)  # idempotent
    assert edge.rdata("example.com", NAME) == [f'"{WILDCARD}"']
    edge.calls.clear()
    p.cleanup(RecordRef.from_dict(ref2.as_dict()))
    assert ("example.com", NAME) not in edge.sets
    recordset = f"/config-dns/v2/zones/example.com/names/{NAME}/types/TXT"
    assert edge.calls == [("GET", recordset), ("DELETE", recordset)]
    p.cleanup(ref2)  # nothing left: success


def test_foreign_values_and_ttl_are_kept(edge):
    edge.sets[("example.com", NAME)] = {"name": NAME, "type": "TXT", "ttl": 300, "rdata": ['"someone-else"']}
    p = _akamai()
    ref = p.present(NAME, APEX)
    assert edge.sets[("example.com", NAME)]["rdata"] == ['"someone-else"', f'"{APEX}"']
    assert edge.sets[("example.com", NAME)]["ttl"] == 300
    p.cleanup(ref)
    assert edge.sets[("example.com", NAME)] == {
        "name": NAME,
        "type": "TXT",
        "ttl": 300,
        "rdata": ['"someone-else"'],
    }


def test_409_on_put_rereads_and_keeps_the_concurrent_value(edge):
    """Another writer changes the record set while our PUT is refused with 409: the provider reads the
    record set again and writes both values."""
    p = _akamai()
    p.present(NAME, APEX)
    edge.conflicts[("PUT", NAME)] = 1
    edge.meanwhile = lambda: edge.sets[("example.com", NAME)]["rdata"].append('"other-order"')
    edge.calls.clear()
    p.present(NAME, WILDCARD, zone="example.com")
    assert edge.rdata("example.com", NAME) == [f'"{APEX}"', '"other-order"', f'"{WILDCARD}"']
    assert [m for m, _ in edge.calls] == ["GET", "PUT", "GET", "PUT"]


def test_409_on_post_because_the_record_set_was_created_meanwhile(edge):
    p = _akamai()
    edge.conflicts[("POST", NAME)] = 1
    edge.meanwhile = lambda: edge.sets.__setitem__(
        ("example.com", NAME), {"name": NAME, "type": "TXT", "ttl": 60, "rdata": [f'"{WILDCARD}"']}
    )
    p.present(NAME, APEX, zone="example.com")
    assert edge.rdata("example.com", NAME) == [f'"{WILDCARD}"', f'"{APEX}"']
    assert [m for m, _ in edge.calls] == ["GET", "POST", "GET", "PUT"]


def test_409_on_cleanup_rereads(edge):
    p = _akamai()
    ref = p.present(NAME, APEX)
    p.present(NAME, WILDCARD)
    edge.conflicts[("PUT", NAME)] = 2
    p.cleanup(ref)
    assert edge.rdata("example.com", NAME) == [f'"{WILDCARD}"']


def test_endless_409_gives_up_after_bounded_attempts_as_transient(edge):
    p = _akamai()
    p.present(NAME, APEX)
    edge.conflicts[("PUT", NAME)] = 1000
    edge.calls.clear()
    with pytest.raises(ProviderError, match=f"kept changing during {akamai.MAX_ATTEMPTS} attempts") as e:
        p.present(NAME, WILDCARD, zone="example.com")
    assert e.value.transient
    assert len(edge.calls) == 2 * akamai.MAX_ATTEMPTS


def test_expired_token_is_one_clear_permanent_error_naming_the_connection(edge):
    edge.expired = True
    with pytest.raises(ProviderError) as e:
        _akamai().present(NAME, APEX, zone="example.com")
    assert not e.value.transient
    message = str(e.value)
    assert message.startswith("Akamai connection 'edge-prod': reading the TXT record set")
    assert "HTTP 401: Not authorized: The client token is expired" in message
    assert "enter the API client's current credentials" in message
    assert len(edge.calls) == 1  # no retry storm


def test_zone_gone_is_a_permanent_error(edge):
    ref = RecordRef(NAME + ".", APEX, "gone.example")
    with pytest.raises(ProviderError, match=r"is the Edge DNS zone gone\.example still there\?") as e:
        _akamai().present(NAME, APEX, zone="gone.example")
    assert not e.value.transient
    _akamai().cleanup(ref)  # nothing to remove where there is no zone


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_5xx_are_transient(status):
    with responses.RequestsMock() as mock:
        mock.get(re.compile(rf"https://{re.escape(HOST)}/.*"), status=status, json={"title": "Busy"})
        with pytest.raises(ProviderError, match=f"HTTP {status}") as e:
            _akamai().present(NAME, APEX, zone="example.com")
    assert e.value.transient


def test_unreachable_is_transient():
    with responses.RequestsMock() as mock:
        mock.get(re.compile(rf"https://{re.escape(HOST)}/.*"), body=requests.ConnectionError("boom"))
        with pytest.raises(ProviderError, match="boom") as e:
            _akamai().find_zone(NAME)
    assert e.value.transient


def test_account_switch_key_is_sent_and_signed(edge):
    _akamai(account_switch_key="1-ABCDE:1-2RBL").present(NAME, APEX)
    assert edge.queries and all(q == {"accountSwitchKey": "1-ABCDE:1-2RBL"} for q in edge.queries)


def test_signing_key_and_secret_stay_out_of_debug_logs(edge, caplog):
    caplog.set_level(logging.DEBUG)
    _akamai().present(NAME, APEX)
    assert not [r for r in caplog.records if r.name.startswith("akamai.edgegrid")]
    assert CREDS["client_secret"] not in caplog.text and "signing key" not in caplog.text


# --- Test connection -----------------------------------------------------------------------------


def test_connection_check_lists_one_zone(edge):
    edge.zones["example.net"] = "SECONDARY"
    result = check_connection("akamai", CREDS)
    assert result == CheckResult(
        True, "Akamai Edge DNS answered: the API client can list zones (2 zone(s), e.g. example.com)."
    )
    assert edge.calls == [("GET", "/config-dns/v2/zones")]
    assert edge.queries == [{"showAll": "false", "page": "1", "pageSize": "1"}]


def test_connection_check_wrong_secret(edge):
    result = check_connection("akamai", {**CREDS, "client_secret": "wrong-secret"})
    assert not result.ok
    assert result.message.startswith(
        "Akamai refused the API client's credentials (HTTP 401: Not authorized: The signature does not match)"
    )


def test_connection_check_expired(edge):
    edge.expired = True
    result = check_connection("akamai", CREDS)
    assert not result.ok and "The client token is expired" in result.message
    assert CREDS["client_secret"] not in result.message


def test_connection_check_incomplete():
    result = check_connection("akamai", {"host": HOST, "client_token": "t"})
    assert result == CheckResult(False, "Incomplete credentials: missing client_secret, access_token.")


# --- credentials ---------------------------------------------------------------------------------


def test_credentials_schema():
    cleaned = creds.validate("akamai", CREDS)
    assert cleaned == CREDS
    assert creds.SCHEMAS[creds.Kind.AKAMAI].secret_names == {"client_secret"}
    assert creds.public_summary("akamai", cleaned) == {
        "host": HOST,
        "client_token": CREDS["client_token"],
        "access_token": CREDS["access_token"],
    }


@pytest.mark.parametrize(
    "host",
    [f"https://{HOST}", f"{HOST}/", "evil.example.com", "akamaiapis.net.evil.example", "127.0.0.1"],
)
def test_host_must_be_an_akamai_api_host(host):
    with pytest.raises(creds.CredentialError) as e:
        creds.validate("akamai", {**CREDS, "host": host})
    assert list(e.value.errors) == ["host"]


def test_moving_the_host_needs_the_secret_again():
    stored = creds.validate("akamai", CREDS)
    public = {k: v for k, v in CREDS.items() if k != "client_secret"}
    other = "akab-0000000000000000-0000000000000000.luna.akamaiapis.net"
    with pytest.raises(creds.CredentialError) as e:
        creds.validate("akamai", {**public, "host": other}, existing=stored)
    assert list(e.value.errors) == ["client_secret"]
    assert creds.validate("akamai", public, existing=stored) == CREDS  # same host: the secret is kept


# --- the doors: API and admin --------------------------------------------------------------------


@pytest.mark.django_db
def test_api_creates_and_tests_an_akamai_connection(tenant, edge):
    client = tenant.operator.client
    created = client.post(
        "/api/v1/app-connections/",
        {"name": "edge-prod", "kind": "akamai", "credentials": CREDS},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["settings"] == {
        "host": HOST,
        "client_token": CREDS["client_token"],
        "access_token": CREDS["access_token"],
    }
    assert CREDS["client_secret"].encode() not in created.content
    tested = client.post(f"/api/v1/app-connections/{body['id']}/test/")
    assert tested.status_code == 200, tested.content
    assert tested.json()["ok"] is True, tested.json()
    assert edge.calls == [("GET", "/config-dns/v2/zones")]
    for response in (tested, client.get(f"/api/v1/app-connections/{body['id']}/")):
        assert CREDS["client_secret"].encode() not in response.content


@pytest.mark.django_db
def test_api_refuses_a_host_outside_akamai(tenant):
    response = tenant.operator.client.post(
        "/api/v1/app-connections/",
        {"name": "x", "kind": "akamai", "credentials": {**CREDS, "host": "collector.example.org"}},
        format="json",
    )
    assert response.status_code == 400
    (message,) = response.json()["error"]["fields"]["credentials"]
    assert message.startswith("host: must be the API client's host name")


@pytest.mark.django_db
def test_admin_form_has_the_akamai_fields_and_never_shows_the_secret(tenant, edge):
    from django.test import Client

    from dnsproviders.models import AppConnection
    from tests.conftest import PASSWORD

    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    page = client.get("/admin/dnsproviders/appconnection/add/")
    assert page.status_code == 200
    html = page.content.decode()
    for field in ("host", "client_token", "access_token", "account_switch_key"):
        assert f'name="cred_akamai_{field}"' in html
    assert re.search(r'<input type="password" name="cred_akamai_client_secret"', html)
    response = client.post(
        "/admin/dnsproviders/appconnection/add/",
        {
            "organization": tenant.organization.pk,
            "name": "edge-prod",
            "kind": "akamai",
            "description": "",
            **{f"cred_akamai_{k}": v for k, v in CREDS.items()},
        },
        follow=True,
    )
    assert response.status_code == 200
    assert b"connection test passed" in response.content  # the save is followed by a test, on the mock
    conn = AppConnection.objects.get(name="edge-prod")
    assert conn.credentials == CREDS
    change = client.get(f"/admin/dnsproviders/appconnection/{conn.pk}/change/")
    assert CREDS["client_secret"].encode() not in change.content
    assert HOST.encode() in change.content
    assert b"Stored; leave empty to keep it." in change.content
