"""``/api/v1/acme-profiles/`` and the read-only account and order lists; ``manage.py create_acme_profile``;
the admin's profile page."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from acmeserver import services
from acmeserver.models import AcmeProfile, AcmeServerAccount, AcmeServerOrder
from certmgr.models import AuditEvent
from pki import services as pki_services
from tests.acmeserver.conftest import make_profile
from tests.conftest import PASSWORD, SYSTEM, assert_isolated
from tests.pki.conftest import hierarchy  # noqa: F401

pytestmark = pytest.mark.django_db
URL = "/api/v1/acme-profiles/"


def body(ca, **extra):
    return {"name": "Web servers", "ca": ca.pk, "validity_days": 30, **extra}


def test_a_profile_is_created_with_its_absolute_directory_url(tenant, hierarchy):  # noqa: F811
    response = tenant.operator.client.post(
        URL, body(hierarchy[1], challenge_types=["http-01"]), format="json"
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["slug"] == "web-servers"
    assert (
        data["directory_url"]
        == f"http://certs.acme.test/acme/{tenant.organization.slug}/web-servers/directory"
    )
    assert data["challenge_types"] == ["http-01"] and data["enabled"] is True
    detail = f"{URL}{data['id']}/"
    changed = tenant.operator.client.patch(detail, {"enabled": False, "validity_days": 10}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["enabled"] is False and changed.json()["validity_days"] == 10
    assert tenant.auditor.client.get(detail).json()["name"] == "Web servers"


def test_a_profile_may_offer_tls_alpn01(tenant, hierarchy):  # noqa: F811
    tls = tenant.operator.client.post(
        URL, body(hierarchy[1], challenge_types=["tls-alpn-01", "http-01"]), format="json"
    )
    assert tls.status_code == 201 and tls.json()["challenge_types"] == ["http-01", "tls-alpn-01"]


def test_profile_refusals_name_their_field(tenant, other_tenant, hierarchy):  # noqa: F811
    client = tenant.operator.client
    response = client.post(URL, body(hierarchy[1], challenge_types=["tls-sni-01"]), format="json")
    assert response.status_code == 400 and "challenge_types" in str(response.json())
    response = client.post(
        URL, body(hierarchy[1], allow_wildcards=True, challenge_types=["http-01"]), format="json"
    )
    assert response.status_code == 400 and "allow_wildcards" in str(response.json())
    policy = pki_services.save_policy(tenant.organization, actor=SYSTEM, name="Short", max_validity_days=7)
    response = client.post(URL, body(hierarchy[1], policy=policy.pk), format="json")
    assert response.status_code == 400 and "validity_days" in str(response.json())
    assert client.post(URL, body(hierarchy[1]), format="json").status_code == 201
    assert client.post(URL, body(hierarchy[1]), format="json").status_code == 409
    # Another organization's CA is not even visible.
    theirs = pki_services.create_internal_ca(
        other_tenant.organization,
        name="Theirs",
        kind="internal-root",
        subject={"common_name": "Theirs"},
        key_algorithm="ec-p256",
        validity_days=365,
        actor=SYSTEM,
    )
    response = client.post(URL, body(theirs, name="Stolen"), format="json")
    assert response.status_code == 400 and "ca" in str(response.json())
    assert AcmeProfile.objects.count() == 1


def test_profiles_accounts_and_orders_are_tenant_isolated(tenant, other_tenant, hierarchy):  # noqa: F811
    profile = make_profile(tenant, hierarchy[1])
    account = AcmeServerAccount.objects.create(profile=profile, thumbprint="t", jwk={"kty": "EC"})
    order = AcmeServerOrder.objects.create(account=account, identifiers=[], expires_at="2030-01-01T00:00:00Z")
    detail = f"{URL}{profile.pk}/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url=URL,
        detail_url=detail,
        write_calls=[
            ("post", URL, body(hierarchy[1], name="Another")),
            ("patch", detail, {"enabled": False}),
        ],
    )
    for list_url, row in (("/api/v1/acme-server-accounts/", account), ("/api/v1/acme-server-orders/", order)):
        assert_isolated(
            tenant, other_tenant, list_url=list_url, detail_url=f"{list_url}{row.pk}/", write_calls=[]
        )
    listed = tenant.auditor.client.get("/api/v1/acme-server-accounts/").json()["results"]
    assert [a["public_id"] for a in listed] == [account.public_id]
    assert "jwk" not in listed[0]


def test_create_acme_profile_prints_the_directory_url(tenant, hierarchy):  # noqa: F811
    out = io.StringIO()
    call_command(
        "create_acme_profile", tenant.organization.slug, "Internal web", "--ca", "Issuing", stdout=out
    )
    assert (
        out.getvalue().strip()
        == f"http://certs.acme.test/acme/{tenant.organization.slug}/internal-web/directory"
    )
    profile = AcmeProfile.objects.get()
    assert profile.ca == hierarchy[1] and profile.challenge_types == ["http-01", "dns-01"]
    with pytest.raises(CommandError, match="validity_days"):
        call_command(
            "create_acme_profile", tenant.organization.slug, "x", "--ca", "Issuing", "--validity-days", "0"
        )
    with pytest.raises(CommandError, match="no CA named 'Nope'"):
        call_command("create_acme_profile", tenant.organization.slug, "y", "--ca", "Nope")
    assert AcmeProfile.objects.count() == 1


def test_the_admin_shows_the_directory_url_and_the_certbot_command(tenant, hierarchy):  # noqa: F811
    profile = make_profile(tenant, hierarchy[1])
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    page = client.get(f"/admin/acmeserver/acmeprofile/{profile.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    url = f"http://certs.acme.test/acme/{tenant.organization.slug}/web/directory"
    assert url in text and f"certbot certonly --standalone --server {url}" in text
    lego = f"lego --server {url} --email &lt;e-mail&gt; --accept-tos --domains &lt;name&gt; --http run"
    assert f'<strong>lego</strong><pre class="pem">{lego}</pre>' in text
    assert "--eab" not in services.certbot_command(profile)
    dns = make_profile(
        tenant, hierarchy[1], name="DNS", slug="dns", challenge_types=["dns-01"], eab_required=True
    )
    assert services.lego_command(dns).endswith(
        "--accept-tos --eab --kid <kid> --hmac <hmac_key> --domains <name> --dns <provider> run"
    )
    dns_url = services.directory_url(dns)
    assert services.uacme_command(dns) == (
        f"uacme -a {dns_url} -e <kid>:<hmac_key> -y new <e-mail> && "
        f"uacme -a {dns_url} -h /usr/share/uacme/nsupdate.sh issue <name>"
    )
    assert services.dehydrated_command(dns) == (
        f"EAB_KID=<kid> EAB_HMAC_KEY=<hmac_key> dehydrated --ca {dns_url} --register --accept-terms && "
        f"dehydrated --ca {dns_url} --cron --challenge dns-01 --hook <hook> --domain <name>"
    )
    uacme = f"uacme -a {url} -y new &lt;e-mail&gt; &amp;&amp; uacme -a {url} -h "
    assert f'<strong>uacme</strong><pre class="pem">{uacme}' in text
    dehydrated = f"dehydrated --ca {url} --register --accept-terms"
    assert f'<strong>dehydrated</strong><pre class="pem">{dehydrated}' in text
    assert services.certbot_command(dns).endswith("--eab-kid <kid> --eab-hmac-key <hmac_key>")
    assert client.get("/admin/acmeserver/acmeserverorder/").status_code == 200
    assert client.get("/admin/acmeserver/acmeserveraccount/").status_code == 200


@pytest.mark.parametrize("eab", [False, True])
def test_the_admin_shows_a_cert_manager_cluster_issuer_that_parses(tenant, hierarchy, eab):  # noqa: F811
    import base64
    import html
    import re

    import yaml

    profile = make_profile(tenant, hierarchy[1], eab_required=eab)
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    page = client.get(f"/admin/acmeserver/acmeprofile/{profile.pk}/change/").content.decode()
    shown = re.search(r'<pre class="pem">(apiVersion: cert-manager.io/v1.*?)</pre>', page, re.S)
    assert shown, page
    issuer = yaml.safe_load(html.unescape(shown.group(1)))
    assert issuer["kind"] == "ClusterIssuer"
    acme = issuer["spec"]["acme"]
    assert acme["server"] == f"http://certs.acme.test/acme/{tenant.organization.slug}/web/directory"
    bundle = base64.b64decode(acme["caBundle"]).decode()
    assert hierarchy[1].certificate_pem.strip() in bundle and hierarchy[0].certificate_pem.strip() in bundle
    assert acme["privateKeySecretRef"]["name"]
    assert acme["solvers"][0]["http01"]["ingress"]
    assert ("externalAccountBinding" in acme) is eab
    if eab:
        assert acme["externalAccountBinding"]["keySecretRef"]["key"] == "secret"


def test_metrics_count_the_servers_orders_by_profile_and_status(tenant, other_tenant, hierarchy):  # noqa: F811
    from tests.reports.test_metrics import bearer, samples, scrape

    profile = make_profile(tenant, hierarchy[1])
    account = AcmeServerAccount.objects.create(profile=profile, thumbprint="t", jwk={"kty": "EC"})
    for status in ("valid", "valid", "invalid"):
        AcmeServerOrder.objects.create(
            account=account, identifiers=[], status=status, expires_at="2030-01-01T00:00:00Z"
        )
    text = scrape(Client(), **bearer(tenant.auditor.token))
    assert "# TYPE certmgr_acme_server_orders gauge\n" in text
    assert samples(text, "certmgr_acme_server_orders") == {
        '{order_profile="",organization="acme",profile="web",status="invalid"}': 1,
        '{order_profile="",organization="acme",profile="web",status="valid"}': 2,
    }
    assert samples(scrape(Client(), **bearer(other_tenant.auditor.token)), "certmgr_acme_server_orders") == {}


def test_an_operator_adds_a_profile_in_the_admin_and_a_refusal_stays_on_the_form(tenant, hierarchy):  # noqa: F811
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    assert client.get("/admin/acmeserver/acmeprofile/add/").status_code == 200
    form = {
        "organization": tenant.organization.pk,
        "name": "Admin made",
        "slug": "admin-made",
        "ca": hierarchy[1].pk,
        "validity_days": 20,
        "challenge_types": ["dns-01"],  # check boxes
        "allow_wildcards": "on",
        "caa_identities": "CA.internal.\n\nacme.internal\n",  # one per line
    }
    response = client.post("/admin/acmeserver/acmeprofile/add/", {**form, "challenge_types": ["tls-sni-01"]})
    assert response.status_code == 200 and "tls-sni-01 is not one of" in response.content.decode()
    # The service's refusal stays on the form too, on its field.
    response = client.post("/admin/acmeserver/acmeprofile/add/", {**form, "challenge_types": ["http-01"]})
    assert response.status_code == 200 and "Wildcards are proved by dns-01" in response.content.decode()
    assert not AcmeProfile.objects.exists()
    response = client.post("/admin/acmeserver/acmeprofile/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    profile = AcmeProfile.objects.get()
    assert profile.challenge_types == ["dns-01"] and profile.allow_wildcards and profile.validity_days == 20
    assert profile.caa_identities == ["ca.internal", "acme.internal"]
    page = client.get(f"/admin/acmeserver/acmeprofile/{profile.pk}/change/").content.decode()
    assert "ca.internal\nacme.internal</textarea>" in page
    assert AuditEvent.objects.filter(action="acme_profile.create").exists()


def test_the_profile_contract_takes_every_field_the_issue_names(tenant, hierarchy):  # noqa: F811
    policy = pki_services.save_policy(
        tenant.organization, actor=SYSTEM, name="Internal", max_validity_days=60
    )
    contract = {
        "organization": tenant.organization.pk,
        "name": "Partners",
        "slug": "partners",
        "ca": hierarchy[1].pk,
        "policy": policy.pk,
        "validity_days": 45,
        "eab_required": True,
        "challenge_types": ["http-01", "dns-01", "tls-alpn-01"],
        "allow_wildcards": True,
        "allow_ip_identifiers": True,
        "enabled": False,
    }
    response = tenant.operator.client.post(URL, contract, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert {k: data[k] for k in contract} == contract
    assert data["id"] and data["directory_url"] == (
        f"http://certs.acme.test/acme/{tenant.organization.slug}/partners/directory"
    )
    null_policy = tenant.operator.client.patch(f"{URL}{data['id']}/", {"policy": None}, format="json")
    assert null_policy.status_code == 200 and null_policy.json()["policy"] is None
    assert tenant.auditor.client.get(f"{URL}{data['id']}/").json() == null_policy.json()


def test_orders_read_with_the_certificate_of_a_finalized_one(tenant, other_tenant, hierarchy):  # noqa: F811
    from tests.acmeserver.test_protocol import Acme, csr_b64, ready_order

    profile = make_profile(tenant, hierarchy[1])
    acme = Acme(profile)
    acme.register()
    order = ready_order(acme, "www.acme.test")
    finalized = acme.post(acme.url(f"order/{order.public_id}/finalize"), {"csr": csr_b64(["www.acme.test"])})
    assert finalized.status_code == 200, finalized.content
    pending = acme.order("api.acme.test").json()
    order.refresh_from_db()
    listed = tenant.auditor.client.get("/api/v1/acme-server-orders/").json()["results"]
    by_id = {row["public_id"]: row for row in listed}
    assert by_id[order.public_id]["status"] == "valid"
    assert by_id[order.public_id]["certificate"] == order.certificate_id is not None
    assert by_id[order.public_id]["account"] == order.account_id
    assert by_id[order.public_id]["identifiers"] == [{"type": "dns", "value": "www.acme.test"}]
    other = next(row for row in listed if row["public_id"] != order.public_id)
    assert other["status"] == pending["status"] == "pending" and other["certificate"] is None
    certificate = tenant.auditor.client.get(f"/api/v1/certificates/{order.certificate_id}/")
    assert certificate.status_code == 200 and certificate.json()["common_name"] == "www.acme.test"


def test_an_operator_deactivates_an_account_in_the_api_and_its_client_can_do_nothing(
    tenant,
    other_tenant,
    hierarchy,  # noqa: F811
):
    from tests.acmeserver.test_protocol import Acme, problem

    profile = make_profile(tenant, hierarchy[1])
    acme = Acme(profile)
    acme.register()
    pending = acme.order("www.acme.test").json()
    account = AcmeServerAccount.objects.get()
    url = f"/api/v1/acme-server-accounts/{account.pk}/deactivate/"
    assert_isolated(
        tenant,
        other_tenant,
        list_url="/api/v1/acme-server-accounts/",
        detail_url=f"/api/v1/acme-server-accounts/{account.pk}/",
        write_calls=[("post", url, None)],
    )
    response = tenant.operator.client.post(url, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "deactivated"
    assert tenant.operator.client.post(url, format="json").status_code == 409
    problem(acme.order("www.acme.test"), "unauthorized", 403)
    assert acme.post(pending["authorizations"][0], None).status_code == 403
    assert AcmeServerOrder.objects.get().status == "invalid"
    events = AuditEvent.objects.filter(action="acme_server.account.deactivate").values_list(
        "outcome", flat=True
    )
    assert sorted(events) == ["failure", "success"]


def test_the_admin_deactivates_accounts_and_shows_each_orders_challenge_outcomes(tenant, hierarchy):  # noqa: F811
    from acmeserver.models import AcmeServerChallenge
    from tests.acmeserver.test_protocol import Acme

    profile = make_profile(tenant, hierarchy[1])
    acme = Acme(profile)
    acme.register()
    acme.order("www.acme.test")
    AcmeServerChallenge.objects.filter(type="http-01").update(
        status="invalid",
        error={"type": "urn:ietf:params:acme:error:incorrectResponse", "detail": "the body was 'nope'"},
        validation_record=[
            {"url": "http://www.acme.test/.well-known/acme-challenge/t", "address": "10.1.2.3"}
        ],
    )
    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    order = AcmeServerOrder.objects.get()
    page = client.get(f"/admin/acmeserver/acmeserverorder/{order.pk}/change/").content.decode()
    assert "dns:www.acme.test" in page and "HTTP-01" not in page  # the type as the protocol names it
    assert "http-01 Invalid: the body was &#x27;nope&#x27;" in page
    assert "10.1.2.3" in page and "/.well-known/acme-challenge/t" in page and "dns-01 Pending" in page
    account = AcmeServerAccount.objects.get()
    response = client.post(
        "/admin/acmeserver/acmeserveraccount/",
        {"action": "deactivate_accounts", "_selected_action": [account.pk]},
        follow=True,
    )
    assert f"{account}: deactivated." in response.content.decode()
    account.refresh_from_db()
    assert account.status == "deactivated"
    event = AuditEvent.objects.get(action="acme_server.account.deactivate")
    assert event.outcome == "success" and event.actor_type == "user"
    auditor = Client()
    assert auditor.login(username=tenant.auditor.user.username, password=PASSWORD)
    listing = auditor.get("/admin/acmeserver/acmeserveraccount/").content.decode()
    assert "deactivate_accounts" not in listing
