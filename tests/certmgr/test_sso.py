"""Single sign-on: the role map (claims -> organization roles), the sign-in service that creates users and
syncs their memberships from it, the configuration checks and the doors when SSO is off or the provider is
unreachable. The whole flow against a real provider is in tests/browser/test_sso_browser.py."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.core.checks import Error, Warning
from django.test import Client

from certmgr import services, sso
from certmgr.checks import single_sign_on_configured
from certmgr.errors import OutboundRefused
from certmgr.models import AuditEvent, Membership, SingleSignOnIdentity
from certmgr.sso_mapping import RoleMapError, claim_values, granted_roles, parse_role_map
from tests.conftest import SYSTEM
from tests.dnsservers import free_port

ISSUER = "https://idp.example.test/realms/corp"


# --- the map ---------------------------------------------------------------------------------------------
def test_role_map_reads_single_grants_and_lists():
    assert parse_role_map('{"ops": "acme:operator", "sec": ["acme:auditor", "globex:admin"]}') == {
        "ops": [("acme", "operator")],
        "sec": [("acme", "auditor"), ("globex", "admin")],
    }
    assert parse_role_map("") == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["acme:admin"]', "must be a JSON object"),
        ('{"ops": "acme"}', "group 'ops' maps to 'acme'"),
        ('{"ops": "acme:root"}', "choose one of auditor, operator, admin"),
        ('{"ops": ":admin"}', "names no organization slug"),
        ('{"ops": ["acme:admin", 7]}', "maps to 7"),
    ],
)
def test_a_bad_role_map_is_refused_with_the_entry_at_fault(raw, message):
    with pytest.raises(RoleMapError, match=message):
        parse_role_map(raw)


def test_groups_claim_values():
    claims = {"groups": ["a", "b"], "single": "c", "realm_access": {"roles": ["r1", 2]}, "odd": {"x": 1}}
    assert claim_values(claims, "groups") == ["a", "b"]
    assert claim_values(claims, "single") == ["c"]
    assert claim_values(claims, "realm_access.roles") == ["r1", "2"]
    assert claim_values(claims, "odd") == [] and claim_values(claims, "missing.path") == []


def test_the_highest_role_a_users_groups_grant_wins():
    role_map = parse_role_map(
        {"ops": "acme:operator", "admins": "acme:admin", "viewers": ["acme:auditor", "globex:auditor"]}
    )
    assert granted_roles(["viewers", "admins", "ops"], role_map) == {"acme": "admin", "globex": "auditor"}
    assert granted_roles(["viewers"], role_map) == {"acme": "auditor", "globex": "auditor"}
    assert granted_roles(["unmapped"], role_map) == {}


# --- the sign-in service ---------------------------------------------------------------------------------
@pytest.fixture
def role_map(settings, tenant, other_tenant):
    acme, globex = tenant.organization.slug, other_tenant.organization.slug
    settings.CERTMGR_OIDC_ROLE_MAP = json.dumps(
        {"pki-admins": f"{acme}:admin", "pki-ops": [f"{acme}:operator", f"{globex}:auditor"]}
    )
    return acme, globex


def claims(groups, sub="subject-1", username="carol", **extra):
    email = f"{username}@corp.test"
    return {"sub": sub, "preferred_username": username, "email": email, "groups": groups} | extra


def roles(user) -> dict[str, str]:
    return dict(Membership.objects.filter(user=user).values_list("organization__slug", "role"))


def test_first_sign_in_creates_the_user_with_the_mapped_roles(db, role_map):
    acme, globex = role_map
    user = sso.sign_in(claims(["pki-ops", "other"], given_name="Carol"), issuer=ISSUER)
    assert user.username == "carol" and user.email == "carol@corp.test" and user.first_name == "Carol"
    assert user.is_staff and not user.has_usable_password() and not user.is_superuser
    assert roles(user) == {acme: "operator", globex: "auditor"}
    assert SingleSignOnIdentity.objects.get(user=user).subject == "subject-1"
    events = AuditEvent.objects.filter(actor_label="single sign-on of carol").order_by("id")
    assert [e.action for e in events] == ["user.create", "membership.create", "membership.create"]


def test_the_next_sign_in_follows_the_groups_and_finds_the_user_by_subject(db, role_map):
    acme, _ = role_map
    first = sso.sign_in(claims(["pki-ops"]), issuer=ISSUER)
    # Same subject, new name and e-mail at the provider: the same account (the user name stays).
    again = sso.sign_in(claims(["pki-admins"], username="carol2", email="new@corp.test"), issuer=ISSUER)
    assert again.pk == first.pk and again.username == "carol" and again.email == "new@corp.test"
    assert roles(again) == {acme: "admin"}
    actions = list(
        AuditEvent.objects.filter(actor_label="single sign-on of carol")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions[-3:] == ["user.update", "membership.update", "membership.delete"]


def test_memberships_outside_the_mapped_organizations_are_left_alone(db, role_map):
    user = sso.sign_in(claims(["pki-ops"]), issuer=ISSUER)
    unmapped = services.create_organization("Initech", actor=SYSTEM)
    services.add_member(unmapped, user, "operator", actor=SYSTEM)
    sso.sign_in(claims(["pki-admins"]), issuer=ISSUER)
    assert roles(user)[unmapped.slug] == "operator"


def test_the_provider_may_demote_an_organizations_last_administrator(db, settings):
    solo = services.create_organization("Solo", actor=SYSTEM)
    settings.CERTMGR_OIDC_ROLE_MAP = json.dumps({"solo-admins": "solo:admin", "solo-ops": "solo:operator"})
    user = sso.sign_in(claims(["solo-admins"]), issuer=ISSUER)
    assert roles(user) == {"solo": "admin"}
    sso.sign_in(claims(["solo-ops"]), issuer=ISSUER)  # an administrator's form would refuse this
    assert roles(user) == {"solo": "operator"}
    assert solo.memberships.filter(role="admin").count() == 0


def test_no_mapped_group_is_refused_and_audited_and_creates_no_user(db, role_map):
    with pytest.raises(sso.SignInRefused, match="no group that certmgr maps to an organization"):
        sso.sign_in(claims(["marketing"]), issuer=ISSUER)
    assert not get_user_model().objects.filter(username="carol").exists()
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.outcome == "failure" and event.organization_id is None
    assert event.details == {
        "issuer": ISSUER,
        "subject": "subject-1",
        "username": "carol",
        "groups": ["marketing"],
        "method": "sso",
    }


def test_losing_every_mapped_group_removes_the_memberships_then_refuses(db, role_map):
    user = sso.sign_in(claims(["pki-ops"]), issuer=ISSUER)
    with pytest.raises(sso.SignInRefused, match="no group"):
        sso.sign_in(claims([]), issuer=ISSUER)
    assert roles(user) == {}  # committed although the sign-in was refused
    removed = AuditEvent.objects.filter(action="membership.delete", actor_label="single sign-on of carol")
    assert removed.count() == 2


@pytest.mark.parametrize(
    ("claim_set", "message"),
    [
        (claims(["pki-ops"], sub=""), "no subject"),
        (claims(["pki-ops"], username=""), "no 'preferred_username' claim"),
        (claims(["pki-ops"], username="bad name!"), "is not valid here"),
    ],
)
def test_unusable_claims_are_refused_with_the_reason(db, role_map, claim_set, message):
    with pytest.raises(sso.SignInRefused, match=message):
        sso.sign_in(claim_set, issuer=ISSUER)
    assert AuditEvent.objects.filter(action="auth.login_failed", error__contains=message).count() == 1


def test_a_local_account_of_the_same_name_is_not_taken_over(db, role_map, tenant):
    name = tenant.admin.user.username
    with pytest.raises(sso.SignInRefused, match="already exists"):
        sso.sign_in(claims(["pki-admins"], username=name.upper()), issuer=ISSUER)
    assert not SingleSignOnIdentity.objects.exists()


def test_the_same_subject_at_another_issuer_is_another_account(db, role_map):
    sso.sign_in(claims(["pki-ops"]), issuer=ISSUER)
    with pytest.raises(sso.SignInRefused, match="already exists"):
        sso.sign_in(claims(["pki-ops"]), issuer="https://evil.example.test")


def test_a_deactivated_user_is_refused(db, role_map):
    user = sso.sign_in(claims(["pki-ops"]), issuer=ISSUER)
    user.is_active = False
    user.save()
    with pytest.raises(sso.SignInRefused, match="deactivated"):
        sso.sign_in(claims(["pki-admins"]), issuer=ISSUER)
    assert roles(user)[role_map[0]] == "operator"  # nothing changed


def test_a_map_naming_no_existing_organization_says_so(db, settings):
    settings.CERTMGR_OIDC_ROLE_MAP = json.dumps({"pki-ops": "no-such-org:operator"})
    with pytest.raises(sso.SignInRefused, match=r"do not exist in certmgr \(no-such-org\)"):
        sso.sign_in(claims(["pki-ops"]), issuer=ISSUER)


# --- configuration and the doors -------------------------------------------------------------------------
def configure(settings, **values):
    base = {
        "CERTMGR_OIDC_ISSUER": ISSUER,
        "CERTMGR_OIDC_CLIENT_ID": "certmgr",
        "CERTMGR_OIDC_CLIENT_SECRET": "s3cret",
        "CERTMGR_OIDC_ROLE_MAP": '{"ops": "acme:operator"}',
    }
    for name, value in (base | values).items():
        setattr(settings, name, value)


def test_checks_report_half_a_configuration_and_a_bad_map(settings):
    assert single_sign_on_configured(None) == []  # off
    configure(settings, CERTMGR_OIDC_CLIENT_SECRET="")
    [problem] = single_sign_on_configured(None)
    assert isinstance(problem, Error) and "CERTMGR_OIDC_CLIENT_SECRET missing" in problem.msg
    configure(settings, CERTMGR_OIDC_ROLE_MAP='{"ops": "acme:boss"}')
    [problem] = single_sign_on_configured(None)
    assert problem.id == "certmgr.E006" and "'boss'" in problem.msg
    configure(settings, CERTMGR_OIDC_ROLE_MAP="")
    [problem] = single_sign_on_configured(None)
    assert isinstance(problem, Warning) and "lets no one in" in problem.msg


def test_sso_is_off_unless_configured(db):
    page = Client().get("/admin/login/")
    assert page.status_code == 200 and b"Sign in with SSO" not in page.content
    assert Client().get("/sso/login/").status_code == 404
    assert Client().get("/sso/callback/?code=x&state=y").status_code == 404


def test_the_login_page_offers_sso_when_configured(db, settings):
    configure(settings)
    page = Client().get("/admin/login/?next=/admin/pki/")
    assert page.status_code == 200
    assert b'href="/sso/login/?next=/admin/pki/"' in page.content and b"Sign in with SSO" in page.content
    assert b'name="password"' in page.content  # the password form stays


def test_an_unreachable_provider_is_a_message_on_the_login_page_and_an_event(db, settings):
    configure(
        settings,
        CERTMGR_OIDC_ISSUER=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        CERTMGR_OIDC_ALLOWED_NETWORKS=["127.0.0.0/8"],
    )
    client = Client()
    answer = client.get("/sso/login/", follow=True)
    assert answer.redirect_chain[-1][0] == "/admin/login/"
    assert b"discovery document" in answer.content and b"could not be read" in answer.content
    assert AuditEvent.objects.get(action="auth.login_failed").details["method"] == "sso"


def test_the_provider_refusing_is_a_message_and_an_event(db, settings):
    configure(settings)
    answer = Client().get("/sso/callback/?error=access_denied&state=abc", follow=True)
    assert b"the identity provider refused the sign-in: access_denied" in answer.content
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.outcome == "failure" and "access_denied" in event.error


def test_a_callback_no_sign_in_started_is_refused(db, settings):
    configure(settings)
    answer = Client().get("/sso/callback/?code=stolen&state=guessed", follow=True)
    assert b"sign in again" in answer.content
    assert "_auth_user_id" not in answer.wsgi_request.session


def test_a_deactivated_sso_users_session_ends(db, role_map):
    from certmgr.sso_login import SingleSignOnBackend

    user = sso.sign_in(claims(["pki-ops"]), issuer=ISSUER)
    assert SingleSignOnBackend().get_user(user.pk) == user
    user.is_active = False
    user.save()
    assert SingleSignOnBackend().get_user(user.pk) is None


# --- the outbound guard ----------------------------------------------------------------------------------
@dataclass
class Endpoint:
    """A plain HTTP server on loopback that answers the discovery document (its endpoints on itself) and
    JSON elsewhere, and records every request it gets."""

    url: str
    requests: list[str] = field(default_factory=list)  # "METHOD path"


@pytest.fixture
def idp_endpoint() -> Iterator[Endpoint]:
    endpoint = Endpoint(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            endpoint.requests.append(f"{self.command} {self.path}")
            base = endpoint.url
            body: dict = {"keys": []}
            if self.path.endswith("/.well-known/openid-configuration"):
                body = {"issuer": base} | {
                    f"{name}_endpoint": f"{base}/{name}" for name in ("authorization", "token", "userinfo")
                }
                body["jwks_uri"] = f"{base}/jwks"
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield endpoint
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("where", "reason"),
    [("loopback", "a loopback address"), ("metadata", "a link-local address (cloud metadata services")],
)
def test_a_provider_at_a_forbidden_address_is_refused_before_any_request(
    db, settings, idp_endpoint, where, reason
):
    issuer = idp_endpoint.url if where == "loopback" else "http://169.254.169.254/realms/corp"
    configure(settings, CERTMGR_OIDC_ISSUER=issuer, CERTMGR_OIDC_ALLOWED_NETWORKS=[])
    answer = Client().get("/sso/login/", follow=True)
    assert answer.redirect_chain[-1][0] == "/admin/login/"
    page = answer.content.decode()
    assert "discovery document" in page and reason in page
    assert "Add the network to CERTMGR_OIDC_ALLOWED_NETWORKS to allow it" in page
    assert idp_endpoint.requests == []  # refused before connecting
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert reason in event.error and event.details["method"] == "sso"
    # The networks user-typed endpoints may reach are not the identity provider's.
    settings.CERTMGR_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8", "169.254.0.0/16"]
    with pytest.raises(sso.ProviderUnavailable, match="CERTMGR_OIDC_ALLOWED_NETWORKS"):
        sso.provider()
    assert idp_endpoint.requests == []


def test_a_provider_on_an_allowed_internal_network_signs_in_through_the_guard(db, settings, idp_endpoint):
    configure(settings, CERTMGR_OIDC_ISSUER=idp_endpoint.url, CERTMGR_OIDC_ALLOWED_NETWORKS=["127.0.0.0/8"])
    answer = Client().get("/sso/login/")
    assert answer.status_code == 302 and answer["Location"].startswith(f"{idp_endpoint.url}/authorization?")
    assert idp_endpoint.requests == ["GET /.well-known/openid-configuration"]


def test_the_token_userinfo_and_jwks_requests_go_through_the_guard(settings, idp_endpoint):
    from certmgr.sso_login import SingleSignOnBackend

    backend = SingleSignOnBackend()
    backend.OIDC_OP_TOKEN_ENDPOINT = f"{idp_endpoint.url}/token"
    backend.OIDC_OP_USER_ENDPOINT = f"{idp_endpoint.url}/userinfo"
    backend.OIDC_OP_JWKS_ENDPOINT = f"{idp_endpoint.url}/jwks"
    calls = {
        "POST /token": lambda: backend.get_token({"code": "c", "client_id": "certmgr"}),
        "GET /userinfo": lambda: backend.get_userinfo("access", "id", {}),
        "GET /jwks": lambda: backend.retrieve_matching_jwk("header.payload.signature"),
    }
    settings.CERTMGR_OIDC_ALLOWED_NETWORKS = []
    for call in calls.values():
        with pytest.raises(OutboundRefused, match=r"loopback address.*CERTMGR_OIDC_ALLOWED_NETWORKS"):
            call()
    assert idp_endpoint.requests == []
    settings.CERTMGR_OIDC_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert backend.get_token({"code": "c", "client_id": "certmgr"}) == {"keys": []}
    assert backend.get_userinfo("access", "id", {}) == {"keys": []}
    with pytest.raises(jwt.DecodeError):  # reached: the JWKS came back, then the (made-up) token is read
        backend.retrieve_matching_jwk("header.payload.signature")
    assert idp_endpoint.requests == list(calls)
