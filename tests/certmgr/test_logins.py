"""Admin logins: every login, logout, failure and lockout is audited; failures lock out per user name and
per client address (django-axes), through the real login form."""

from __future__ import annotations

import pytest
from django.test import Client

from certmgr.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"


def attempt(username: str, password: str, address: str = "203.0.113.5", client: Client | None = None):
    client = client or Client(REMOTE_ADDR=address)
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def actions() -> list[tuple[str, str]]:
    return list(
        AuditEvent.objects.filter(action__startswith="auth.").order_by("id").values_list("action", "outcome")
    )


def test_login_and_logout_are_audited_in_the_users_organization(tenant):
    client = Client()
    answer = attempt(tenant.operator.user.username, PASSWORD, client=client)
    assert answer.status_code == 302, answer.content[:500]
    client.post("/admin/logout/")
    events = AuditEvent.objects.filter(action__in=["auth.login", "auth.logout"]).order_by("id")
    assert [(e.action, e.organization_id, e.actor_label) for e in events] == [
        ("auth.login", tenant.organization.pk, tenant.operator.user.username),
        ("auth.logout", tenant.organization.pk, tenant.operator.user.username),
    ]


def test_failures_lock_the_user_out_even_with_the_right_password(tenant, settings):
    settings.AXES_FAILURE_LIMIT = 3
    name = tenant.auditor.user.username
    for _ in range(3):
        assert attempt(name, "wrong password!").status_code in (200, 429)
    assert actions() == [("auth.login_failed", "failure")] * 2 + [("auth.locked_out", "failure")]
    failed = AuditEvent.objects.filter(action="auth.login_failed").first()
    assert failed.organization_id == tenant.organization.pk and failed.details["username"] == name
    assert PASSWORD not in str(failed.details) and "wrong password!" not in str(failed.details)
    # from another address, with the right password: the user name is locked
    locked = attempt(name, PASSWORD, address="198.51.100.9")
    assert locked.status_code == 429 and b"Too many failed logins" in locked.content
    assert "_auth_user_id" not in locked.wsgi_request.session
    assert AuditEvent.objects.filter(action="auth.login").count() == 0


def test_failures_lock_the_address_out_for_every_user(tenant, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for name in ("nobody-1", "nobody-2", "nobody-3"):  # unknown names: the events go to chain 0
        attempt(name, "guess", address="192.0.2.77")
    assert AuditEvent.objects.filter(action="auth.locked_out", organization__isnull=True).count() == 1
    assert attempt(tenant.admin.user.username, PASSWORD, address="192.0.2.77").status_code == 429
    # another address is not affected
    assert attempt(tenant.admin.user.username, PASSWORD, address="198.51.100.10").status_code == 302
