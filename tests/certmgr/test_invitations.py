"""Members join by invitation: a one-time link e-mailed to them, accepted by signing in or by creating an
account under a free user name. No administrator attaches an existing account, and nothing tells them which
user names exist."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from certmgr.models import AuditEvent, Invitation, Membership
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a sufficiently long passphrase 9"


def invite(member, email="kim@example.com", role="operator") -> tuple[dict, str]:
    response = member.client.post("/api/v1/invitations/", {"email": email, "role": role}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    path = re.search(r"/invite/[^/\s]+/", mail.outbox[-1].body).group(0)
    assert body["link"].endswith(path)
    return body, path


def login(user) -> Client:
    client = Client()
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client


def test_an_invitation_is_mailed_and_stored_as_a_digest_only(tenant):
    body, path = invite(tenant.admin)
    assert body["state"] == "pending" and body["emailed"] is True
    message = mail.outbox[-1]
    assert message.to == ["kim@example.com"] and tenant.organization.name in message.subject
    token = path.split("/")[2]
    invitation = Invitation.objects.get(pk=body["id"])
    assert token not in invitation.digest and len(invitation.digest) == 64
    # the link is shown by the create call only
    again = tenant.admin.client.get(f"/api/v1/invitations/{invitation.pk}/").json()
    assert "link" not in again and token not in str(again)
    event = AuditEvent.objects.get(action="invitation.create")
    assert event.details == {"email": "kim@example.com", "role": "operator"}
    assert token not in str(event.details)


def test_a_new_account_accepts_under_a_free_user_name(tenant, other_tenant, django_user_model):
    _, path = invite(tenant.admin)
    page = Client().get(path)
    assert page.status_code == 200 and b"Create an account" in page.content
    # a taken name (another organization's user) is refused on the form; nothing is attached
    taken = Client().post(
        path,
        {
            "action": "create",
            "username": other_tenant.admin.user.username,
            "password": NEW_PASSWORD,
            "password_again": NEW_PASSWORD,
        },
    )
    assert taken.status_code == 200 and b"this user name is taken" in taken.content
    assert not Membership.objects.filter(
        organization=tenant.organization, user=other_tenant.admin.user
    ).exists()
    weak = Client().post(
        path, {"action": "create", "username": "kim", "password": "kim", "password_again": "kim"}
    )
    assert weak.status_code == 200 and not django_user_model.objects.filter(username="kim").exists()

    done = Client().post(
        path,
        {"action": "create", "username": "kim", "password": NEW_PASSWORD, "password_again": NEW_PASSWORD},
    )
    assert done.status_code == 302, done.content.decode()[:2000]
    kim = django_user_model.objects.get(username="kim")
    assert kim.email == "kim@example.com" and kim.is_staff
    assert Membership.objects.get(user=kim).role == "operator"
    assert Client().login(username="kim", password=NEW_PASSWORD)
    actions = list(
        AuditEvent.objects.filter(organization=tenant.organization)
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions[actions.index("user.create") :][:3] == [
        "user.create",
        "invitation.accept",
        "membership.create",
    ]
    # the link works once
    used = Client().get(path)
    assert used.status_code == 404 and b"not valid" in used.content


def test_an_existing_user_joins_only_by_accepting(tenant, other_tenant):
    _, path = invite(tenant.admin, email="globex-admin@example.com", role="auditor")
    stranger = other_tenant.admin.user
    assert not Membership.objects.filter(organization=tenant.organization, user=stranger).exists()
    client = login(stranger)
    page = client.get(path)
    assert page.status_code == 200 and b"Accept and join" in page.content
    assert not Membership.objects.filter(organization=tenant.organization, user=stranger).exists()
    accepted = client.post(path, {"action": "accept"})
    assert accepted.status_code == 302 and accepted["Location"] == "/admin/"
    assert Membership.objects.get(organization=tenant.organization, user=stranger).role == "auditor"
    invitation = Invitation.objects.get()
    assert invitation.state() == "accepted" and invitation.accepted_by == stranger


def test_expired_withdrawn_and_guessed_links_say_the_same(tenant):
    body, path = invite(tenant.admin)
    _, second = invite(tenant.admin, email="lee@example.com")
    Invitation.objects.filter(pk=body["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    second_id = Invitation.objects.get(email="lee@example.com").pk
    assert tenant.admin.client.delete(f"/api/v1/invitations/{second_id}/").status_code == 204
    assert Invitation.objects.get(pk=second_id).state() == "revoked"
    texts = set()
    for url in (path, second, "/invite/guessed-token-value/"):
        response = Client().get(url)
        assert response.status_code == 404
        texts.add(re.search(rb'<p class="errornote">(.*?)</p>', response.content).group(1))
        refused = Client().post(
            url,
            {"action": "create", "username": "x1", "password": NEW_PASSWORD, "password_again": NEW_PASSWORD},
        )
        assert refused.status_code == 404
    assert len(texts) == 1
    assert not Membership.objects.filter(user__username="x1").exists()


def test_only_member_managers_invite_and_see_invitations(tenant, other_tenant):
    invite(tenant.admin)
    for member in (tenant.operator, tenant.auditor):
        response = member.client.post(
            "/api/v1/invitations/", {"email": "a@example.com", "role": "admin"}, format="json"
        )
        assert response.status_code in (400, 403), response.content
        listing = member.client.get("/api/v1/invitations/")
        assert listing.status_code == 403 or listing.json()["results"] == []
    assert other_tenant.admin.client.get("/api/v1/invitations/").json()["results"] == []
    foreign = Invitation.objects.get().pk
    assert other_tenant.admin.client.delete(f"/api/v1/invitations/{foreign}/").status_code == 404
    assert Invitation.objects.count() == 1


def test_the_admin_invites_and_withdraws(tenant):
    client = login(tenant.admin.user)
    response = client.post(
        "/admin/certmgr/invitation/add/",
        {"organization": tenant.organization.pk, "email": "pat@example.com", "role": "auditor"},
        follow=True,
    )
    assert response.status_code == 200
    assert "Invitation sent to pat@example.com." in [str(m) for m in response.context["messages"]]
    invitation = Invitation.objects.get(email="pat@example.com")
    listing = client.get("/admin/certmgr/invitation/")
    assert listing.status_code == 200 and b"pat@example.com" in listing.content
    client.post(
        "/admin/certmgr/invitation/",
        {"action": "revoke_selected", "_selected_action": [invitation.pk]},
    )
    invitation.refresh_from_db()
    assert invitation.state() == "revoked"
    assert login(tenant.operator.user).get("/admin/certmgr/invitation/add/").status_code == 403


def test_a_failed_mail_still_gives_the_link_once(tenant, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens on discard
    response = tenant.admin.client.post(
        "/api/v1/invitations/", {"email": "kim@example.com", "role": "auditor"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["emailed"] is False and "EMAIL_" in body["email_error"] and "/invite/" in body["link"]
    assert Client().get(body["link"].split("8000", 1)[-1]).status_code == 200
