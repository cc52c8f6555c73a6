"""The API framework: bearer tokens, roles, tenancy, the error shape, pagination, the schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from certmgr import services
from certmgr.models import ApiToken, AuditEvent, Membership
from tests.conftest import SYSTEM, assert_isolated

pytestmark = pytest.mark.django_db


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


# --- authentication ------------------------------------------------------------------------------------
def test_token_authenticates_and_lists_only_its_organization(tenant, other_tenant):
    response = tenant.auditor.client.get("/api/v1/organizations/")
    assert response.status_code == 200
    assert [o["name"] for o in response.json()["results"]] == ["Acme"]


def test_missing_token_is_401_in_the_error_shape(anon_client, db):
    response = anon_client.get("/api/v1/organizations/")
    assert response.status_code == 401
    body = response.json()
    assert body["error"]["status"] == 401
    assert body["error"]["code"] == "not_authenticated"
    assert body["request_id"]
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer cm_nothex_x", "Bearer cm_12345678_wrong"])
def test_malformed_or_unknown_tokens_are_401(header, db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/organizations/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_expired_token_is_refused_and_the_attempt_audited(tenant):
    new = services.create_api_token(
        tenant.organization,
        tenant.operator.user,
        name="short",
        role="operator",
        expires_at=timezone.now() + timedelta(hours=1),
        actor=SYSTEM,
    )
    ApiToken.objects.filter(pk=new.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = bearer(new.secret).get("/api/v1/organizations/")
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]
    event = AuditEvent.objects.filter(action="auth.token_rejected").latest("id")
    assert event.organization_id == tenant.organization.pk
    assert event.outcome == "failure" and "expired" in event.error
    assert new.secret not in str(event.details)


def test_revoked_token_is_refused(tenant):
    token = ApiToken.objects.get(user=tenant.operator.user)
    assert tenant.operator.client.delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    response = tenant.operator.client.get("/api/v1/organizations/")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_token_dies_with_its_owners_membership(tenant):
    membership = Membership.objects.get(user=tenant.operator.user)
    services.remove_member(membership, actor=SYSTEM)
    assert tenant.operator.client.get("/api/v1/organizations/").status_code == 401


def test_token_is_capped_by_the_owners_current_role(tenant):
    membership = Membership.objects.get(user=tenant.operator.user)
    services.change_role(membership, "auditor", actor=SYSTEM)
    response = tenant.operator.client.post(
        "/api/v1/app-connections/", {"name": "m", "kind": "manual", "credentials": {}}, format="json"
    )
    assert response.status_code == 403


def test_token_secret_is_stored_hashed_and_last_use_recorded(tenant):
    token = ApiToken.objects.get(user=tenant.auditor.user)
    assert tenant.auditor.token not in (token.digest, token.prefix)
    assert token.last_used_at is None
    tenant.auditor.client.get("/api/v1/organizations/")
    token.refresh_from_db()
    assert token.last_used_at is not None


# --- tokens endpoint -------------------------------------------------------------------------------------
def test_create_token_shows_secret_once(tenant):
    response = tenant.operator.client.post(
        "/api/v1/tokens/", {"name": "ci", "role": "auditor"}, format="json"
    )
    assert response.status_code == 201, response.content
    secret = response.json()["token"]
    assert secret.startswith("cm_")
    assert bearer(secret).get("/api/v1/organizations/").status_code == 200
    detail = tenant.operator.client.get(f"/api/v1/tokens/{response.json()['id']}/").json()
    assert "token" not in detail and secret not in str(detail)


def test_token_cannot_exceed_its_owners_role(tenant):
    response = tenant.auditor.client.post("/api/v1/tokens/", {"name": "x", "role": "admin"}, format="json")
    assert response.status_code == 400
    assert "role" in response.json()["error"]["fields"]


def test_a_token_makes_no_token_that_outlives_or_outranks_it(tenant):
    expiry = timezone.now() + timedelta(days=7)
    parent = services.create_api_token(
        tenant.organization,
        tenant.operator.user,
        name="short-lived",
        role="operator",
        expires_at=expiry,
        actor=SYSTEM,
    )
    client = bearer(parent.secret)
    later = (expiry + timedelta(days=1)).isoformat()
    refused = client.post(
        "/api/v1/tokens/", {"name": "longer", "role": "auditor", "expires_at": later}, format="json"
    )
    assert refused.status_code == 400 and "expires_at" in refused.json()["error"]["fields"]
    outranks = client.post("/api/v1/tokens/", {"name": "admin", "role": "admin"}, format="json")
    assert outranks.status_code == 400 and "role" in outranks.json()["error"]["fields"]
    child = client.post("/api/v1/tokens/", {"name": "child", "role": "auditor"}, format="json")
    assert child.status_code == 201, child.content
    made = ApiToken.objects.get(pk=child.json()["id"])
    assert made.expires_at == parent.token.expires_at  # no expiry asked: the parent's
    assert made.created_by_token_id == parent.token.pk


def test_tokens_made_with_a_token_are_revoked_with_it(tenant):
    parent = services.create_api_token(
        tenant.organization, tenant.operator.user, name="ci", role="operator", actor=SYSTEM
    )
    child = bearer(parent.secret).post(
        "/api/v1/tokens/", {"name": "child", "role": "operator"}, format="json"
    )
    grandchild = bearer(child.json()["token"]).post(
        "/api/v1/tokens/", {"name": "grandchild", "role": "auditor"}, format="json"
    )
    assert grandchild.status_code == 201, grandchild.content
    unrelated = services.create_api_token(
        tenant.organization, tenant.operator.user, name="other", role="auditor", actor=SYSTEM
    )
    assert tenant.operator.client.post(f"/api/v1/tokens/{parent.token.pk}/revoke/").status_code == 200
    for secret in (parent.secret, child.json()["token"], grandchild.json()["token"]):
        assert bearer(secret).get("/api/v1/organizations/").status_code == 401
    assert bearer(unrelated.secret).get("/api/v1/organizations/").status_code == 200
    revoked = AuditEvent.objects.filter(action="api_token.revoke", details__because_of=parent.token.pk)
    assert set(revoked.values_list("target_id", flat=True)) == {
        str(child.json()["id"]),
        str(grandchild.json()["id"]),
    }


def test_only_admins_create_tokens_for_others(tenant):
    body = {"name": "for bob", "role": "auditor", "username": tenant.auditor.user.username}
    assert tenant.operator.client.post("/api/v1/tokens/", body, format="json").status_code == 403
    assert tenant.admin.client.post("/api/v1/tokens/", body, format="json").status_code == 201


def test_non_admin_sees_only_own_tokens(tenant):
    rows = tenant.operator.client.get("/api/v1/tokens/").json()["results"]
    assert {r["username"] for r in rows} == {tenant.operator.user.username}
    rows = tenant.admin.client.get("/api/v1/tokens/").json()["results"]
    assert len(rows) == 3


# --- memberships ------------------------------------------------------------------------------------------
def superuser_client(django_user_model) -> APIClient:
    root = django_user_model.objects.create_superuser("root", password="pw-long-enough-123")
    client = APIClient()
    client.force_authenticate(root)
    return client


def test_only_a_superuser_attaches_an_account_by_user_name(tenant, other_tenant, django_user_model):
    """An administrator cannot pull in another organization's user by typing the name, and the refusal is the
    same whether the name exists or not; a superuser can (creating the user when the name is free)."""
    answers = []
    for username in (other_tenant.admin.user.username, "nobody-by-this-name"):
        response = tenant.admin.client.post(
            "/api/v1/memberships/", {"username": username, "role": "auditor"}, format="json"
        )
        assert response.status_code == 403, response.content
        answers.append(response.json()["error"]["message"])
    assert answers[0] == answers[1] and "invitations" in answers[0]
    assert not Membership.objects.filter(
        organization=tenant.organization, user=other_tenant.admin.user
    ).exists()
    assert not django_user_model.objects.filter(username="nobody-by-this-name").exists()

    root = superuser_client(django_user_model)
    response = root.post(
        "/api/v1/memberships/",
        {"organization": tenant.organization.pk, "username": "newbie", "role": "auditor"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["username"] == "newbie"
    event = AuditEvent.objects.filter(action="membership.create").latest("id")
    assert event.actor_type == "user" and event.details["role"] == "auditor"


def test_duplicate_membership_is_409_with_field(tenant, django_user_model):
    response = superuser_client(django_user_model).post(
        "/api/v1/memberships/",
        {"organization": tenant.organization.pk, "username": tenant.auditor.user.username, "role": "auditor"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["error"]["fields"] == {"user": [response.json()["error"]["message"]]}


def test_last_admin_cannot_be_demoted(tenant):
    membership = Membership.objects.get(user=tenant.admin.user)
    response = tenant.admin.client.patch(
        f"/api/v1/memberships/{membership.pk}/", {"role": "operator"}, format="json"
    )
    assert response.status_code == 409


def test_membership_isolation(tenant, other_tenant):
    membership = Membership.objects.get(user=tenant.auditor.user)
    url = f"/api/v1/memberships/{membership.pk}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/memberships/",
        detail_url=url,
        write_calls=[
            ("post", "/api/v1/memberships/", {"username": "x", "role": "auditor"}),
            ("patch", url, {"role": "operator"}),
            ("delete", url, None),
        ],
    )


def test_organization_isolation(tenant, other_tenant):
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/organizations/",
        detail_url=f"/api/v1/organizations/{tenant.organization.pk}/",
        write_calls=[],
    )


# --- audit events endpoint ----------------------------------------------------------------------------------
def test_audit_events_filter_and_isolation(tenant, other_tenant):
    response = tenant.auditor.client.get(
        "/api/v1/audit-events/", {"action": "membership.", "outcome": "success"}
    )
    assert response.status_code == 200
    rows = response.json()["results"]
    assert rows and all(r["action"].startswith("membership.") for r in rows)
    assert {r["organization"] for r in rows} == {tenant.organization.pk}
    event = AuditEvent.objects.filter(organization=tenant.organization).first()
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/audit-events/",
        detail_url=f"/api/v1/audit-events/{event.pk}/",
        write_calls=[],
    )
    assert tenant.admin.client.delete(f"/api/v1/audit-events/{event.pk}/").status_code == 405


def test_cursor_pagination(tenant):
    first = tenant.auditor.client.get("/api/v1/audit-events/", {"page_size": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    second = tenant.auditor.client.get(first["next"]).json()
    assert {r["id"] for r in first["results"]}.isdisjoint({r["id"] for r in second["results"]})


# --- error shape and limits ---------------------------------------------------------------------
def test_validation_error_shape(tenant):
    response = tenant.admin.client.post("/api/v1/invitations/", {"role": "emperor"}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["fields"]) == {"email", "role"}


def test_unknown_api_path_is_json_404(tenant):
    response = tenant.admin.client.get("/api/v1/nope/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_oversized_body_is_413(tenant, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = tenant.admin.client.post(
        "/api/v1/invitations/", {"email": "x" * 5000, "role": "auditor"}, format="json"
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_schema_and_docs(tenant, client):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for p in (
        "/api/v1/organizations/",
        "/api/v1/memberships/",
        "/api/v1/tokens/",
        "/api/v1/app-connections/",
        "/api/v1/app-connections/{id}/test/",
        "/api/v1/audit-events/",
    ):
        assert p in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()


def test_refused_writes_are_audited_as_access_attempts(tenant):
    response = tenant.auditor.client.post(
        "/api/v1/memberships/", {"username": "x", "role": "admin"}, format="json"
    )
    assert response.status_code == 403
    event = AuditEvent.objects.filter(action="auth.permission_denied").latest("id")
    assert event.organization_id == tenant.organization.pk and event.outcome == "failure"
    assert event.details["method"] == "POST" and event.details["path"] == "/api/v1/memberships/"


def test_a_signed_in_non_member_gets_403(db, django_user_model):
    user = django_user_model.objects.create_user("stranger", password="pw-long-enough-123")
    client = APIClient()
    client.force_authenticate(user)
    response = client.get("/api/v1/app-connections/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize("param", ["since=2020-01-01T00:00:00-19:42", "until=3054-10-30T04:23:21%2B18:34"])
def test_audit_time_filters_accept_any_offset(tenant, param):
    """Offsets Python accepts but PostgreSQL does not (found by the fuzzer) are compared in UTC."""
    response = tenant.auditor.client.get(f"/api/v1/audit-events/?{param}")
    assert response.status_code == 200, response.content


def test_writes_to_unknown_api_paths_are_json_404(tenant):
    response = tenant.admin.client.post("/api/v1/nothing/", {}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_body_nested_too_deeply_is_a_400(tenant):
    body = "[" * 100_000 + "]" * 100_000
    for url in ("/api/v1/policies/", "/api/v1/invitations/", "/api/v1/app-connections/"):
        response = tenant.admin.client.post(url, body, content_type="application/json")
        assert response.status_code == 400, (url, response.status_code)
        assert response.json()["error"]["code"] == "parse_error"


def test_a_flood_of_bad_tokens_is_one_audit_event_per_address_and_minute(tenant, settings):
    from certmgr import auth_failures
    from certmgr.jobs import JobReport
    from certmgr.models import AnonymousAuthFailure

    settings.CERTMGR_ANONYMOUS_AUTH_FAILURES_PER_MINUTE = 5
    before = AuditEvent.objects.count()
    answers = []
    for n in range(8):
        client = bearer(f"cm_deadbeef_guess{n}" if n % 2 else "garbage")
        answers.append(client.get("/api/v1/organizations/", REMOTE_ADDR="203.0.113.7").status_code)
    assert answers == [401] * 5 + [429] * 3  # throttled past the limit
    other = bearer("cm_deadbeef_x").get("/api/v1/organizations/", REMOTE_ADDR="198.51.100.1")
    assert other.status_code == 401  # another address has its own count
    assert AuditEvent.objects.count() == before  # nothing permanent per request
    assert sorted(AnonymousAuthFailure.objects.values_list("address", "count")) == [
        ("198.51.100.1", 1),
        ("203.0.113.7", 8),
    ]
    report = JobReport()
    auth_failures.flush_now(report, now=timezone.now() + timedelta(minutes=1))
    events = AuditEvent.objects.filter(action="auth.token_rejected").order_by("id")[:]
    assert sorted((e.details["address"], e.details["count"]) for e in events) == [
        ("198.51.100.1", 1),
        ("203.0.113.7", 8),
    ]
    assert all(e.outcome == "failure" and e.actor_label == "anonymous" for e in events)
    assert not AnonymousAuthFailure.objects.exists() and report.counts == {"addresses": 2}
    # a valid token from a throttled address still works: only the guesses are counted
    assert tenant.operator.client.get("/api/v1/organizations/", REMOTE_ADDR="203.0.113.7").status_code == 200
