"""The admin's forms (issue 11): choices that follow the organization, refusals in the operator's words,
labels and help texts, the subscriber form of an ACME CA, connection tests on save, key export reasons."""

from __future__ import annotations

import pytest

from certmgr import services as core
from dnsproviders import services as dns_services
from pki import services
from pki.models import CertificateAuthority, Subscriber
from tests.conftest import SYSTEM
from tests.pki.test_admin import login, texts

pytestmark = pytest.mark.django_db

CA_URL = "/admin/pki/certificateauthority/"
ACME_ADD = f"{CA_URL}acme/add/"
SUB_URL = "/admin/pki/subscriber/"


def root_ca(tenant, name: str) -> CertificateAuthority:
    return services.create_internal_ca(
        tenant.organization,
        name=name,
        kind="internal-root",
        subject={"common_name": f"{name} Root"},
        key_algorithm="ec-p256",
        validity_days=365,
        actor=SYSTEM,
    )


def manual_connection(tenant, name: str):
    return dns_services.create_connection(
        tenant.organization, name=name, kind="manual", credentials={}, actor=SYSTEM
    )


@pytest.fixture
def two_orgs(tenant, other_tenant):
    """Acme's operator is an operator of Globex too; each organization has a CA and a DNS connection."""
    core.add_member(other_tenant.organization, tenant.operator.user, "operator", actor=SYSTEM)
    return {
        "acme_ca": root_ca(tenant, "Acme CA"),
        "globex_ca": root_ca(other_tenant, "Globex CA"),
        "acme_dns": manual_connection(tenant, "acme-dns"),
        "globex_dns": manual_connection(other_tenant, "globex-dns"),
    }


def choice_labels(field) -> list[str]:
    return [str(label) for value, label in field.choices if value != ""]


def acme_form_data(org, **overrides) -> dict:
    data = {
        "organization": org.pk,
        "name": "Pebble",
        "vendor": "custom",
        "directory_url": "https://pebble.invalid/dir",
        "email": "",
        "challenge_type": "dns-01",
        "propagation_timeout": "60",
        "propagation_interval": "0.5",
        "account_key_kind": "ec-p256",
    }
    return {**data, **overrides}


# --- 4: choices follow the organization -----------------------------------------------------------------
def test_acme_ca_form_with_two_organizations_lists_only_the_chosen_organizations_connections(
    tenant, other_tenant, two_orgs
):
    client = login(tenant.operator)
    page = client.get(ACME_ADD)
    form = page.context["form"]
    assert form.fields["organization"].initial is None  # two to choose from: nothing preselected
    assert b"choose the organization" in page.content
    assert b'data-dependent-choices-url="/admin/pki/certificateauthority/acme/choices/"' in page.content
    assert b"certmgr/organization_choices.js" in page.content

    chosen = client.get(ACME_ADD, {"organization": other_tenant.organization.pk})
    assert chosen.status_code == 200

    # The JSON the script reloads the select from: Globex's connections only.
    answer = client.get(f"{CA_URL}acme/choices/", {"organization": other_tenant.organization.pk}).json()
    labels = [label for _, label in answer["fields"]["dns_connection"]]
    assert any("globex-dns" in label for label in labels) and not any("acme-dns" in x for x in labels)

    # The trap: Acme chosen, Globex's connection posted. A field error naming the problem, before any
    # registration at a CA; what was typed is kept and the list shows Acme's connections only.
    refused = client.post(
        ACME_ADD, acme_form_data(tenant.organization, dns_connection=two_orgs["globex_dns"].pk)
    )
    assert refused.status_code == 200
    errors = refused.context["form"].errors
    assert errors["dns_connection"] == [
        "globex-dns belongs to another organization: choose a DNS connection of this one."
    ]
    assert "Unknown DNS connection" not in refused.content.decode()
    assert refused.context["form"]["name"].value() == "Pebble"
    offered = choice_labels(refused.context["form"].fields["dns_connection"])
    assert len(offered) == 1 and offered[0].startswith("acme-dns ")
    assert not CertificateAuthority.objects.filter(name="Pebble").exists()


def test_choices_endpoint_is_tenant_scoped(tenant, other_tenant, two_orgs):
    client = login(other_tenant.operator)  # Globex only
    assert client.get(f"{CA_URL}acme/choices/", {"organization": tenant.organization.pk}).status_code == 404
    assert client.get(f"{SUB_URL}choices/", {"organization": tenant.organization.pk}).status_code == 404
    assert (
        login(tenant.auditor).get(f"{SUB_URL}choices/", {"organization": tenant.organization.pk}).status_code
        == 403
    )


def test_single_organization_is_preselected_and_its_choices_only(tenant, other_tenant, two_orgs):
    client = login(other_tenant.operator)
    for url in (ACME_ADD, f"{SUB_URL}add/", f"{CA_URL}add/"):
        page = client.get(url)
        assert page.status_code == 200, url
        form = page.context.get("form") or page.context["adminform"].form
        assert str(form["organization"].value()) == str(other_tenant.organization.pk), url
    page = client.get(f"{SUB_URL}add/")
    labels = choice_labels(page.context["adminform"].form.fields["ca"])
    assert labels == ["Globex CA"]


def test_subscriber_form_with_two_organizations(tenant, other_tenant, two_orgs):
    client = login(tenant.operator)
    answer = client.get(f"{SUB_URL}choices/", {"organization": other_tenant.organization.pk}).json()
    assert [label for _, label in answer["fields"]["ca"] if _] == ["Globex CA (Globex)"]
    # Preselected by ?organization= (the admin's initial data), the form lists that organization's CAs.
    page = client.get(f"{SUB_URL}add/", {"organization": tenant.organization.pk})
    assert b"certmgr/organization_choices.js" in page.content
    assert choice_labels(page.context["adminform"].form.fields["ca"]) == ["Acme CA (Acme)"]
    refused = client.post(
        f"{SUB_URL}add/",
        {
            "organization": tenant.organization.pk,
            "name": "cross",
            "issuer_type": "ca",
            "ca": two_orgs["globex_ca"].pk,
            "common_name": "www.acme.test",
            "sans": "www.acme.test",
            "key_algorithm": "ec-p256",
            "validity_days": "30",
            "ca_path_length": "0",
        },
    )
    assert refused.status_code == 200
    errors = refused.context["adminform"].form.errors
    assert errors["ca"] == ["Globex CA belongs to another organization: choose a CA of this one."]
    assert not Subscriber.objects.filter(name="cross").exists()
    assert texts(refused) == []  # the error shows once: on its field, not also as a message


# --- 18: a key export asks for confirmation and a reason ----------------------------------------------
CERT_URL = "/admin/pki/certificate/"


def test_key_download_needs_confirmation_and_a_reason_which_the_audit_event_keeps(tenant, issued):
    from certmgr.models import AuditEvent

    client = login(tenant.operator)
    url = f"{CERT_URL}{issued.pk}/download/key/"
    page = client.get(url)
    assert page.status_code == 200 and b'name="reason"' in page.content and b'name="confirm"' in page.content
    refused = client.post(url, {"reason": "  ", "confirm": ""})
    assert refused.status_code == 200 and refused["Content-Type"].startswith("text/html")
    errors = refused.context["form"].errors
    assert errors["reason"] == ["Say why the key is exported."] and "confirm" in errors
    assert not AuditEvent.objects.filter(action="certificate.export_key").exists()

    key = client.post(url, {"reason": "INC-42: restore web01", "confirm": "on"})
    assert key.status_code == 200 and b"PRIVATE KEY" in key.content
    event = AuditEvent.objects.get(action="certificate.export_key", outcome="success")
    assert event.details["reason"] == "INC-42: restore web01" and event.details["format"] == "pem"

    p12 = client.post(
        f"{CERT_URL}{issued.pk}/pkcs12/",
        {"password": "x" * 16, "password_again": "x" * 16, "alias": "", "reason": "", "confirm": "on"},
    )
    assert p12.status_code == 200 and "reason" in p12.context["form"].errors
    p12 = client.post(
        f"{CERT_URL}{issued.pk}/pkcs12/",
        {
            "password": "x" * 16,
            "password_again": "x" * 16,
            "alias": "",
            "reason": "for the LB",
            "confirm": "on",
        },
    )
    assert p12["Content-Type"] == "application/x-pkcs12"
    event = AuditEvent.objects.filter(action="certificate.export_key").latest("id")
    assert event.details["reason"] == "for the LB" and event.details["format"] == "pkcs12"


def test_api_key_export_takes_an_optional_reason(tenant, issued):
    from certmgr.models import AuditEvent

    client = tenant.operator.client
    answer = client.get(f"/api/v1/certificates/{issued.pk}/private-key/", {"reason": "CI deploy"})
    assert answer.status_code == 200
    assert AuditEvent.objects.filter(action="certificate.export_key").latest("id").details["reason"] == (
        "CI deploy"
    )
    blob = client.post(
        f"/api/v1/certificates/{issued.pk}/pkcs12/",
        {"password": "y" * 16, "reason": "k8s secret"},
        format="json",
    )
    assert blob.status_code == 200
    assert AuditEvent.objects.filter(action="certificate.export_key").latest("id").details["reason"] == (
        "k8s secret"
    )
    assert client.get(f"/api/v1/certificates/{issued.pk}/private-key/").status_code == 200  # reason optional


# --- 9: errors in the operator's language --------------------------------------------------------------
def test_refusals_name_the_role_needed_not_the_action_code(tenant):
    from certmgr import errors
    from certmgr.actors import as_actor
    from certmgr.services import require

    with pytest.raises(errors.PermissionDenied) as refused:
        require(as_actor(tenant.auditor.user), "manage", tenant.organization.pk)
    assert str(refused.value) == "This needs the Operator role in this organization."
    with pytest.raises(errors.PermissionDenied) as refused:
        require(as_actor(tenant.operator.user), "members.manage", tenant.organization.pk)
    assert str(refused.value) == "This needs the Administrator role in this organization."
    assert "members.manage" not in str(refused.value)


def test_error_text_keeps_names_as_typed():
    from certmgr.admin_base import error_text
    from certmgr.errors import ServiceError

    assert error_text(ServiceError("pdns-lab: the API key was refused")) == (
        "pdns-lab: the API key was refused."
    )
    assert error_text(ServiceError("the zone is unknown")) == "The zone is unknown."


def test_a_refused_subscriber_save_keeps_what_was_typed_and_shows_the_error_once(tenant, hierarchy):
    client = login(tenant.operator)
    response = client.post(
        f"{SUB_URL}add/",
        {
            "organization": tenant.organization.pk,
            "name": "typed-name",
            "issuer_type": "ca",
            "ca": hierarchy[1].pk,
            "common_name": "www.acme.test",
            "sans": "www.acme.test",
            "key_algorithm": "ec-p256",
            "validity_days": "100000",  # longer than the issuing CA lives: the service refuses
            "ca_path_length": "0",
        },
    )
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors and form["name"].value() == "typed-name"
    assert texts(response) == []


# --- 14: human labels and help texts -------------------------------------------------------------------
def _forms_of_the_screens():
    from acmeca.forms import AcmeCaForm
    from certmgr.models import Organization
    from dnsproviders.admin import AppConnectionForm
    from dnsproviders.models import AppConnection
    from pki import forms as pki_forms

    yield from (pki_forms.CaCreateForm(), pki_forms.PolicyForm(), pki_forms.SubscriberForm())
    yield AppConnectionForm()
    yield AcmeCaForm(connections=AppConnection.objects.none(), organizations=Organization.objects.all())


def test_every_field_of_the_ca_subscriber_policy_and_connection_forms_has_a_help_text():
    missing = {
        type(form).__name__: [name for name, field in form.fields.items() if not field.help_text]
        for form in _forms_of_the_screens()
    }
    missing = {name: fields for name, fields in missing.items() if fields}
    assert not missing, repr(missing)


def test_labels_are_human():
    from django.apps import apps

    raw = []
    for model in apps.get_models():
        if model._meta.app_label not in ("certmgr", "pki", "acmeca", "acmeserver", "dnsproviders"):
            continue
        for field in model._meta.concrete_fields:
            label = str(field.verbose_name)
            words = label.split()
            if any(
                w in ("url", "ip", "ca", "ari", "dn", "pem", "csr", "crl", "dns", "ttl", "ok") for w in words
            ):
                raw.append(f"{model._meta.label}.{field.name}: {label}")
    assert raw == []
    labels = {label for form in _forms_of_the_screens() for label in (f.label for f in form.fields.values())}
    for code in ("ec-p256", "internal-intermediate", "acme"):
        assert code not in labels


def test_policy_refusal_names_key_algorithms_by_their_labels(tenant, hierarchy):
    from django.core.exceptions import ValidationError

    from certmgr.errors import ServiceError

    policy = services.save_policy(
        tenant.organization, actor=SYSTEM, name="rsa only", allowed_key_algorithms=["rsa-2048"]
    )
    with pytest.raises((ServiceError, ValidationError)) as refused:
        services.save_subscriber(
            tenant.organization,
            actor=SYSTEM,
            name="ec",
            ca=hierarchy[1],
            policy=policy,
            common_name="ec.acme.test",
            sans=["ec.acme.test"],
            key_algorithm="ec-p256",
            validity_days=30,
        )
    text = str(refused.value)
    assert "key algorithm ECDSA P-256 is not allowed" in text and "(allowed: RSA 2048)" in text, text
    assert "ec-p256" not in text
