"""Schemathesis against the live OpenAPI schema: no request, however malformed, gets a 5xx.

What it covers
--------------
* Every operation of the schema served at ``/api/v1/schema/`` by the live server, found at run time: an
  endpoint added later is fuzzed without touching this file (one pytest subtest per operation).
* Schemathesis' default generation, checked not to be narrowed: positive and negative data, NUL bytes
  (``allow_x00``), unexpected extra parameters, any Unicode (utf-8 codec), fuzzed security parameters;
  the coverage phase (boundary values of every parameter) plus ``MAX_EXAMPLES`` random examples per
  operation.
* One refinement of the served schema: ``credentials`` is a free-form object there, so random keys would
  hardly ever reach the per-kind validators and connection checks. Request bodies get the per-kind
  shapes of :data:`dnsproviders.credentials.SCHEMAS` (an ``anyOf`` with one variant per kind); negative
  cases still send anything.
* Authenticated as the ``tenant`` fixture's administrator with a bearer token (the role that may call
  everything); cases that negate the security scheme go out unauthenticated, as schemathesis makes them.
* Real rows: for about half of the examples, every ``{…id}``-like path parameter is replaced by the id
  of a row the caller sees, listed through the collection URL that precedes it in the path
  (``/api/v1/app-connections/{id}/test/`` -> ``GET /api/v1/app-connections/``), so detail, update,
  delete and action operations reach real rows, for endpoints added later too. The test seeds one app
  connection per kind that needs no outside service (PowerDNS, RFC 2136, acme-dns, manual), a spare
  token, and re-creates them when an example deleted them.
* DELETE/PATCH may revoke the caller's token, or remove or demote its membership: before each example
  the administrator's membership (role admin) and an active token are restored, so the rest of the run
  does not just see 401/403.
* No traffic leaves the machine: while the test runs, Python sockets may only reach loopback and names
  other than ``localhost`` do not resolve, so "test connection" of fuzzed endpoints fails fast and
  deterministically (the product's error handling is exercised, no provider is contacted).
* The check is ``not_a_server_error`` on every response. On a 5xx, the server's traceback (logged by
  ``django.request`` in the live server's thread) is printed with the failing case. ``-rP`` or ``-s``
  shows the statuses seen per operation.

Runtime: about a minute on 2 cores (``MAX_EXAMPLES`` bounds the random phase).
"""

from __future__ import annotations

import copy
import errno
import ipaddress
import logging
import re
import socket
import threading
import traceback
from collections import Counter, defaultdict

import pytest
import requests
import schemathesis
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from certmgr import services
from certmgr.models import ApiToken, Membership
from certmgr.permissions import Role
from dnsproviders import credentials as creds
from dnsproviders import services as connections
from dnsproviders.models import AppConnection
from tests.conftest import SYSTEM

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db(transaction=True)]

MAX_EXAMPLES = 50
SCHEMA_PATH = "/api/v1/schema/"
ID_PARAMETER = re.compile(r"^(id|pk|.+_id|.+_pk)$")

SEED_CONNECTIONS = [
    ("fuzz-powerdns", "powerdns", {"api_url": "http://8.8.8.8:9/", "api_key": "fuzz-pdns-key"}),
    (
        "fuzz-rfc2136",
        "rfc2136",
        {
            "server": "8.8.8.8",
            "port": 9,
            "tsig_key_name": "fuzz-key",
            "tsig_secret": "c2VjcmV0c2VjcmV0c2VjcmV0",
        },
    ),
    (
        "fuzz-acme-dns",
        "acme-dns",
        {
            "api_url": "http://8.8.8.8:9/",
            "username": "fuzz",
            "password": "fuzz-password",
            "subdomain": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        },
    ),
    ("fuzz-manual", "manual", {}),
]


# --- the schema ----------------------------------------------------------------------------------------
def credential_shapes() -> dict[str, dict]:
    """The JSON schema of ``credentials`` per kind, as :mod:`dnsproviders.credentials` validates them."""
    shapes = {}
    for kind, schema in creds.SCHEMAS.items():
        properties = {}
        for f in schema.fields:
            if f.kind == "int":
                properties[f.name] = {"type": "integer"}
            elif f.kind == "choice":
                properties[f.name] = {"type": "string", "enum": list(f.choices)}
            elif f.kind == "url":
                properties[f.name] = {"type": "string", "pattern": "^https?://"}
            else:
                properties[f.name] = {
                    "type": "string",
                    "minLength": int(f.required),
                    "maxLength": f.max_length,
                }
        required = [f.name for f in schema.fields if f.required]
        shapes[kind.value] = {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
    return shapes


def refine(raw: dict) -> dict:
    """The served schema, with the free-form ``credentials`` objects given their per-kind shapes.

    A request body with both ``kind`` and ``credentials`` becomes one variant per kind (``anyOf``), so
    that positive cases pair a kind with its own credentials; one with ``credentials`` alone (updates)
    accepts any kind's.
    """
    raw = copy.deepcopy(raw)
    shapes = credential_shapes()
    components = raw.get("components", {}).get("schemas", {})
    for name, component in list(components.items()):
        properties = component.get("properties", {})
        prop = properties.get("credentials")
        if not (isinstance(prop, dict) and prop.get("type") == "object" and "properties" not in prop):
            continue
        if "kind" in properties:
            variants = []
            for kind, shape in shapes.items():
                variant = copy.deepcopy(component)
                variant["properties"]["kind"] = {"type": "string", "enum": [kind]}
                variant["properties"]["credentials"] = shape
                if shape["required"]:
                    variant["required"] = sorted({*variant.get("required", []), "credentials"})
                variants.append(variant)
            components[name] = {"anyOf": variants}
        else:
            properties["credentials"] = {"anyOf": [shape for shape in shapes.values() if shape["properties"]]}
    return raw


# --- no traffic beyond loopback --------------------------------------------------------------------------
def _is_loopback(host) -> bool:
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def loopback_only(monkeypatch):
    real_getaddrinfo, real_connect, real_connect_ex = (
        socket.getaddrinfo,
        socket.socket.connect,
        socket.socket.connect_ex,
    )
    real_sendto = socket.socket.sendto

    def refuse(address):
        return ConnectionRefusedError(
            errno.ECONNREFUSED, f"fuzz test: no traffic beyond loopback ({address!r})"
        )

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name in (None, "localhost") or _is_loopback(name):
            return real_getaddrinfo(host, *args, **kwargs)
        try:
            ipaddress.ip_address(str(name).split("%", 1)[0])
        except ValueError:
            raise socket.gaierror(
                socket.EAI_NONAME, "Name or service not known (fuzz test: offline)"
            ) from None
        return real_getaddrinfo(host, *args, **kwargs)  # an IP literal: connect() decides

    def allowed(sock, address) -> bool:
        return sock.family not in (socket.AF_INET, socket.AF_INET6) or _is_loopback(address[0])

    def connect(sock, address):
        if not allowed(sock, address):
            raise refuse(address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        return real_connect_ex(sock, address) if allowed(sock, address) else errno.ECONNREFUSED

    def sendto(sock, data, *args):
        address = args[-1]
        if not allowed(sock, address):
            raise refuse(address)
        return real_sendto(sock, data, *args)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)


# --- the caller and the rows ------------------------------------------------------------------------------
class ServerErrors(logging.Handler):
    """Collects the tracebacks the live server logs (``django.request``) for 5xx answers."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self._lock = threading.Lock()
        self.records: list[str] = []

    def emit(self, record):
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        with self._lock:
            self.records.append(text)

    def take(self) -> list[str]:
        with self._lock:
            taken, self.records = self.records, []
        return taken


def seed(tenant) -> None:
    """Rows for the ``{id}`` paths to reach; re-created when an example deleted or revoked them."""
    org = tenant.organization
    existing = set(AppConnection.objects.filter(organization=org).values_list("name", flat=True))
    for name, kind, credentials in SEED_CONNECTIONS:
        if name not in existing:
            connections.create_connection(org, name=name, kind=kind, credentials=credentials, actor=SYSTEM)
    spares = ApiToken.objects.filter(organization=org, user=tenant.admin.user, name="fuzz spare")
    if not [t for t in spares if t.state() == "active"]:
        services.create_api_token(org, tenant.admin.user, name="fuzz spare", role=Role.AUDITOR, actor=SYSTEM)
    for role in (Role.OPERATOR, Role.AUDITOR):
        user = tenant.member(role).user
        if not Membership.objects.filter(organization=org, user=user).exists():
            services.add_member(org, user, role, actor=SYSTEM)
    seed_pki(org)


def seed_pki(org) -> None:
    """A CA hierarchy, a policy, a subscriber with a certificate and a CSR, so PKI ``{id}`` paths hit rows."""
    from pki import services as pki
    from pki.models import CertificateAuthority, CertificateRequest, Policy, Subscriber

    root = CertificateAuthority.objects.filter(organization=org, name="fuzz root").first()
    if root is None:
        root = pki.create_internal_ca(
            org, name="fuzz root", kind="internal-root", subject={"common_name": "Fuzz Root"}, actor=SYSTEM
        )
    if not Policy.objects.filter(organization=org, name="fuzz policy").exists():
        pki.save_policy(org, actor=SYSTEM, name="fuzz policy", san_patterns=["*.fuzz.test"])
    sub = Subscriber.objects.filter(organization=org, name="fuzz subscriber").first()
    if sub is None and root.status == "active":
        sub = pki.save_subscriber(
            org,
            actor=SYSTEM,
            name="fuzz subscriber",
            ca=root,
            common_name="www.fuzz.test",
            sans=["www.fuzz.test"],
            validity_days=30,
        )
    if sub is not None and root.status == "active" and not sub.certificates.filter(status="active").exists():
        pki.issue(sub, actor=SYSTEM)
    if not CertificateRequest.objects.filter(organization=org, name="fuzz csr").exists():
        pki.generate_csr(org, name="fuzz csr", common_name="www.fuzz.test", sans=[], actor=SYSTEM)


class FuzzState:
    """The caller (the tenant's administrator) and its token, repaired before every example."""

    def __init__(self, tenant, base_url: str):
        self.tenant = tenant
        self.org = tenant.organization
        self.user = tenant.admin.user
        self.base_url = base_url
        self.token_id = ApiToken.objects.get(organization=self.org, user=self.user, name="admin token").pk
        self.secret = tenant.admin.token
        self.issued = {self.secret}
        self.http = requests.Session()
        self.http.trust_env = False
        self.stats: dict[str, Counter] = defaultdict(Counter)  # "METHOD /path" -> status -> count
        self.on_real_rows: dict[str, Counter] = defaultdict(Counter)

    def repair(self) -> None:
        """Undo what the previous example may have done to the caller, and re-create deleted seeds."""
        self.user.refresh_from_db()
        if not self.user.is_active or not self.user.is_staff:
            get_user_model().objects.filter(pk=self.user.pk).update(is_active=True, is_staff=True)
        membership = Membership.objects.filter(organization=self.org, user=self.user).first()
        if membership is None:
            services.add_member(self.org, self.user, Role.ADMIN, actor=SYSTEM)
        elif membership.role != Role.ADMIN:
            services.change_role(membership, Role.ADMIN, actor=SYSTEM)
        token = ApiToken.objects.filter(pk=self.token_id).first()
        if token is None or token.state() != "active":
            new = services.create_api_token(
                self.org, self.user, name="fuzz caller", role=Role.ADMIN, actor=SYSTEM
            )
            self.token_id, self.secret = new.token.pk, new.secret
            self.issued.add(new.secret)
        seed(self.tenant)

    def authorize(self, case) -> None:
        """Give the case the current token if it carries one of ours (coverage cases are built up front,
        so theirs may have been revoked since); fuzzed or deliberately missing credentials stay."""
        headers = case.headers or {}
        if headers.get("Authorization") in {f"Bearer {s}" for s in self.issued}:
            case.headers = {**headers, "Authorization": f"Bearer {self.secret}"}

    def visible_ids(self, collection_url: str) -> list:
        """Ids of the rows the caller sees in a collection (first page), or [] if it is not a list."""
        try:
            response = self.http.get(
                self.base_url + collection_url, headers={"Authorization": f"Bearer {self.secret}"}, timeout=30
            )
            body = response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return []
        rows = body.get("results") if isinstance(body, dict) else body
        if not isinstance(rows, list):
            return []
        return [row["id"] for row in rows if isinstance(row, dict) and "id" in row]

    def summary(self) -> str:
        lines = ["fuzzed requests per operation, {status: count} (and on real rows):"]
        for label, counts in sorted(self.stats.items()):
            real = self.on_real_rows.get(label)
            lines.append(
                f"  {label}: {dict(sorted(counts.items()))}"
                + (f" ({dict(sorted(real.items()))})" if real else "")
            )
        return "\n".join(lines)


def use_real_ids(case, state: FuzzState, pick: int) -> bool:
    """Point every id-like path parameter at a row the caller can see; True if any was replaced."""
    template = case.operation.path
    filled = {}
    for match in re.finditer(r"\{([^}]+)\}", template):
        name = match.group(1)
        if not ID_PARAMETER.match(name):
            continue
        collection = template[: match.start()]
        for known, value in filled.items():
            collection = collection.replace(f"{{{known}}}", str(value))
        if "{" in collection:
            continue  # an earlier parameter could not be filled
        ids = state.visible_ids(collection)
        if ids:
            filled[name] = ids[pick % len(ids)]
    case.path_parameters = {**(case.path_parameters or {}), **filled}
    return bool(filled)


# --- fixtures and the test -----------------------------------------------------------------------------
@pytest.fixture
def server_errors():
    handler = ServerErrors()
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def fuzz_state(live_server, tenant, loopback_only):
    state = FuzzState(tenant, live_server.url)
    seed(tenant)
    yield state
    state.http.close()  # a kept-alive connection would keep a server thread, and its database session, alive
    print("\n" + state.summary())


@pytest.fixture
def api_schema(live_server, fuzz_state):
    response = requests.get(
        f"{live_server.url}{SCHEMA_PATH}", headers={"Accept": "application/json"}, timeout=30
    )
    assert response.status_code == 200, response.text[:2000]
    schema = schemathesis.openapi.from_dict(refine(response.json()))
    schema.config.update(base_url=live_server.url, request_timeout=60)
    generation = schema.config.generation
    # Defaults fuzz with NUL bytes, extra parameters and any Unicode: insist, lest a config file narrow them.
    assert generation.allow_x00 and generation.allow_extra_parameters and generation.codec == "utf-8"

    class CurrentToken:
        """The administrator's current token on every generated case (refreshed again before the call)."""

        def get(self, case, context):
            return fuzz_state.secret

        def set(self, case, data, context):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    schema.auth(refresh_interval=None)(CurrentToken)
    return schema


@pytest.fixture(autouse=True)
def _schemathesis_on_pytest_9(request):
    """schemathesis' lazy schemas rename the test item through ``Node._nodeid``, which pytest 9.2 dropped."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    # No shrinking: examples change the database, so replaying a shrunk example is not deterministic and
    # Hypothesis would report "flaky" instead of the first failing request.
    phases=[Phase.explicit, Phase.generate, Phase.target],
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
@schema.given(real_row=st.none() | st.integers(min_value=0, max_value=1000))
def test_no_server_error_anywhere(case, real_row, fuzz_state, server_errors):
    fuzz_state.repair()
    fuzz_state.authorize(case)
    on_real_row = (
        real_row is not None and bool(case.path_parameters) and use_real_ids(case, fuzz_state, real_row)
    )
    server_errors.take()
    response = case.call()
    label = f"{case.method.upper()} {case.operation.path}"
    fuzz_state.stats[label][response.status_code] += 1
    if on_real_row:
        fuzz_state.on_real_rows[label][response.status_code] += 1
    if response.status_code >= 500:
        logged = server_errors.take()
        print(
            f"\n{response.status_code} from {case.method.upper()} {case.formatted_path}\n"
            f"query: {case.query!r}\nheaders: {case.headers!r}\nbody: {case.body!r}\n"
            f"response: {response.text[:1000]}\n" + ("server log:\n" + "\n".join(logged) if logged else "")
        )
    case.validate_response(response, checks=[not_a_server_error])
