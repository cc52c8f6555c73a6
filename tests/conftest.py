"""Shared fixtures: two organizations, a user per role, API clients with bearer tokens, and the tenancy
checker every endpoint's tests reuse (``assert_isolated``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from certmgr import services
from certmgr.actors import Actor
from certmgr.permissions import Role

SYSTEM = Actor.system("tests")
PASSWORD = "correct horse battery staple 42"


def require_server(available: bool, reason: str) -> None:
    """Skip a test whose server is missing; under CI=true fail instead (CI never passes by skipping)."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"required test server missing under CI=true: {reason}")
    pytest.skip(reason)


@dataclass
class Member:
    user: object
    role: str
    organization: object
    token: str
    client: APIClient  # authenticated with the bearer token


@dataclass
class Tenant:
    organization: object
    admin: Member
    operator: Member
    auditor: Member

    def member(self, role: str) -> Member:
        return getattr(self, role)


def make_tenant(name: str) -> Tenant:
    org = services.create_organization(name, actor=SYSTEM)
    members = {}
    for role in Role.values:
        user = get_user_model().objects.create_user(f"{org.slug}-{role}", password=PASSWORD, is_staff=True)
        services.add_member(org, user, role, actor=SYSTEM)
        secret = services.create_api_token(org, user, name=f"{role} token", role=role, actor=SYSTEM).secret
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        members[role] = Member(user=user, role=role, organization=org, token=secret, client=client)
    return Tenant(organization=org, **members)


@pytest.fixture
def tenant(db) -> Tenant:
    return make_tenant("Acme")


@pytest.fixture
def other_tenant(db) -> Tenant:
    return make_tenant("Globex")


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


def assert_isolated(
    tenant: Tenant,
    other: Tenant,
    *,
    list_url: str,
    detail_url: str,
    write_calls: list[tuple[str, str, dict | None]],
) -> None:
    """The tenancy contract of one endpoint.

    ``detail_url`` names a row of ``tenant``. Members of ``other`` (any role) get 404 on it and do not see
    it in ``list_url``; ``tenant``'s auditor gets 403 on every write in ``write_calls``
    ((method, url, body)), and so does a request without credentials (401).
    """
    for role in Role.values:
        client = other.member(role).client
        response = client.get(detail_url)
        assert response.status_code == 404, (role, detail_url, response.status_code, response.content[:300])
        listed = client.get(list_url)
        assert listed.status_code == 200, listed.content[:300]
        assert detail_url.rstrip("/").rsplit("/", 1)[-1] not in {
            str(row.get("id")) for row in listed.json()["results"]
        }
    for method, url, body in write_calls:
        if url.startswith(detail_url):
            response = getattr(other.admin.client, method)(url, body, format="json")
            assert response.status_code == 404, (method, url, response.status_code, response.content[:300])
        response = getattr(tenant.auditor.client, method)(url, body, format="json")
        assert response.status_code == 403, (method, url, response.status_code, response.content[:300])
        assert response.json()["error"]["status"] == 403
        response = getattr(APIClient(), method)(url, body, format="json")
        assert response.status_code == 401, (method, url, response.status_code)
