"""External Account Binding (RFC 8555 §7.3.4): keys made per profile (API, command, admin), shown once,
bound to the first account that uses them, revocable; certbot's --eab-kid/--eab-hmac-key."""

from __future__ import annotations

import io

import josepy as jose
import pytest
from acme import messages
from django.core.management import call_command

from acmeserver import services
from acmeserver.models import AcmeEabKey, AcmeServerAccount
from certmgr.models import AuditEvent
from tests.acmeserver.conftest import acme_client_for, directory_url, loopback_name, make_profile
from tests.acmeserver.test_certbot import certbot
from tests.conftest import SYSTEM, assert_isolated
from tests.dnsservers import free_port


def register(url: str, kid: str | None = None, hmac_key: str | None = None, key=None):
    client = acme_client_for(url, register=False)
    if key is not None:
        client.net.key = key
    eab = None
    if kid is not None:
        eab = messages.ExternalAccountBinding.from_data(
            client.net.key.public_key(), kid, hmac_key, client.directory
        )
    return client.new_account(
        messages.NewRegistration.from_data(terms_of_service_agreed=True, external_account_binding=eab)
    )


@pytest.fixture
def eab_profile(transactional_db, tenant, hierarchy):
    return make_profile(tenant, hierarchy[1], eab_required=True)


def test_the_directory_says_eab_is_required_and_an_account_without_it_is_refused(live_server, eab_profile):
    url = directory_url(live_server, eab_profile)
    client = acme_client_for(url, register=False)
    assert client.directory.meta.external_account_required is True
    with pytest.raises(messages.Error) as refused:
        register(url)
    assert refused.value.typ == "urn:ietf:params:acme:error:externalAccountRequired"
    assert not AcmeServerAccount.objects.exists()


def test_an_eab_key_binds_one_account_and_a_revoked_or_wrong_key_binds_none(live_server, eab_profile):
    url = directory_url(live_server, eab_profile)
    key, hmac_key = services.create_eab_key(eab_profile, actor=SYSTEM, name="web01")
    wrong = jose.b64.b64encode(b"x" * 32).decode()
    with pytest.raises(messages.Error) as refused:
        register(url, key.kid, wrong)
    assert refused.value.typ == "urn:ietf:params:acme:error:unauthorized" and "MAC" in refused.value.detail
    regr = register(url, key.kid, hmac_key)
    assert regr.body.status == "valid"
    key.refresh_from_db()
    assert key.account is not None and key.bound_at is not None
    event = AuditEvent.objects.get(action="acme_server.account.create")
    assert event.details["eab_kid"] == key.kid and hmac_key not in repr(event.details)
    # the same key again, for another account key: bound already
    with pytest.raises(messages.Error) as refused:
        register(url, key.kid, hmac_key)
    assert "bound to an account" in refused.value.detail
    second, second_hmac = services.create_eab_key(eab_profile, actor=SYSTEM)
    services.revoke_eab_key(second, actor=SYSTEM)
    with pytest.raises(messages.Error) as refused:
        register(url, second.kid, second_hmac)
    assert "revoked" in refused.value.detail
    assert AcmeServerAccount.objects.count() == 1


def test_certbot_enrolls_with_an_eab_key_from_the_api(
    live_server, tenant, eab_profile, validation_env, settings, tmp_path
):
    response = tenant.operator.client.post(
        f"/api/v1/acme-profiles/{eab_profile.pk}/eab-keys/", {"name": "web01"}, format="json"
    )
    assert response.status_code == 201, response.content
    kid, hmac_key = response.json()["kid"], response.json()["hmac_key"]
    port = free_port()
    settings.CERTMGR_ACME_VALIDATION_HTTP_PORT = port
    name = loopback_name(validation_env, "eab")
    common = [
        "--server",
        directory_url(live_server, eab_profile),
        "--agree-tos",
        "--register-unsafely-without-email",
    ]
    standalone = [
        "certonly",
        "--standalone",
        "--http-01-port",
        str(port),
        "--http-01-address",
        "127.0.0.1",
        "-d",
        name,
    ]
    refused = certbot(tmp_path / "without", *standalone, *common)
    assert refused.returncode != 0
    assert "external account" in (refused.stdout + refused.stderr).lower()
    run = certbot(tmp_path / "with", *standalone, *common, "--eab-kid", kid, "--eab-hmac-key", hmac_key)
    assert run.returncode == 0, run.stdout + run.stderr
    assert AcmeEabKey.objects.get(kid=kid).account.orders.get().certificate is not None


def test_eab_keys_in_the_api_are_listed_without_their_key_and_deleted_by_revoking(
    tenant, other_tenant, eab_profile
):
    client = tenant.operator.client
    created = client.post(f"/api/v1/acme-profiles/{eab_profile.pk}/eab-keys/", {}, format="json")
    assert created.status_code == 201, created.content
    made = created.json()
    assert set(made) == {"id", "kid", "hmac_key"}
    assert "=" not in made["hmac_key"] and len(jose.decode_b64jose(made["hmac_key"])) == 32  # base64url
    listed = client.get("/api/v1/acme-eab-keys/")
    assert listed.status_code == 200
    assert made["hmac_key"] not in listed.content.decode()
    assert [k["kid"] for k in listed.json()["results"]] == [made["kid"]]
    detail = f"/api/v1/acme-eab-keys/{made['id']}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/acme-eab-keys/",
        detail_url=detail,
        write_calls=[
            ("delete", detail, None),
            ("post", f"/api/v1/acme-profiles/{eab_profile.pk}/eab-keys/", {}),
        ],
    )
    assert client.delete(detail).status_code == 204
    assert client.get(detail).json()["revoked_at"]
    assert client.delete(detail).status_code == 409


def test_create_acme_profile_with_eab_prints_a_key(tenant, hierarchy, transactional_db):
    out = io.StringIO()
    call_command(
        "create_acme_profile", tenant.organization.slug, "Partners", "--ca", "Issuing", "--eab", stdout=out
    )
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("/acme/acme/partners/directory")
    kid = lines[1].removeprefix("eab-kid: ")
    assert AcmeEabKey.objects.get(kid=kid).profile.eab_required
    assert lines[2].startswith("eab-hmac-key: ")


def test_the_admin_action_shows_a_new_key_once(tenant, eab_profile):
    from django.test import Client

    from tests.conftest import PASSWORD

    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    response = client.post(
        "/admin/acmeserver/acmeprofile/",
        {"action": "create_eab_key", "_selected_action": [eab_profile.pk]},
        follow=True,
    )
    key = AcmeEabKey.objects.get()
    assert f"--eab-kid {key.kid} --eab-hmac-key {key.hmac_key}" in response.content.decode()
    page = client.get(f"/admin/acmeserver/acmeeabkey/{key.pk}/change/").content.decode()
    assert key.kid in page and key.hmac_key not in page
