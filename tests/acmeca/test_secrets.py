"""The ACME secrets (EAB HMAC key, account keys, order keys) appear on no admin page, API answer or audit
event, for any role."""

from __future__ import annotations

import pytest
from django.test import Client

from acmeca.models import AcmeAccount, AcmeOrder
from certmgr.models import AuditEvent
from pki import services as pki_services
from tests.acmeca.conftest import acme_subscriber, make_acme_ca, unique_name
from tests.conftest import PASSWORD
from tests.outcomes import ordered

pytestmark = pytest.mark.django_db(transaction=True)


def _key_lines(pem: str) -> list[bytes]:
    """Base64 lines from the middle of a PEM key: any of them showing up means the key leaked."""
    body = [line for line in pem.strip().splitlines() if not line.startswith("-----")]
    return [line.encode() for line in body[1:-1] or body]


def one_row_with_every_secret(tenant, pebble_eab, powerdns, pdns_connection) -> None:
    """A row of every model that holds a secret: an EAB ACME CA with an order, a private root, a CSR made by
    certmgr, a webhook channel, an authenticator app's TOTP key, an ACME server profile's EAB key (and the
    DNS connection the fixture made)."""
    from certmgr import two_factor
    from pki import alerts
    from tests.conftest import SYSTEM

    ca = make_acme_ca(
        tenant,
        pebble_eab,
        name="EAB CA",
        connection=pdns_connection,
        eab_kid=pebble_eab.eab_kid,
        eab_hmac_key=pebble_eab.eab_hmac_key,
    )
    ordered(
        pki_services.issue(
            acme_subscriber(tenant, ca, [unique_name(powerdns.zone, "dump")]), actor=tenant.operator.user
        )
    )
    root = pki_services.create_internal_ca(
        tenant.organization, name="Root", kind="internal-root", subject={"common_name": "R"}, actor=SYSTEM
    )
    pki_services.generate_csr(
        tenant.organization, name="csr", common_name="c.acme.test", sans=["c.acme.test"], actor=SYSTEM
    )
    alerts.create_channel(
        tenant.organization, name="hook", kind="webhook", url="https://hooks.example.com/x", actor=SYSTEM
    )
    two_factor.start_enrollment(tenant.admin.user)
    from pki.services import ocsp

    ocsp.responder(root)  # the CA's delegated OCSP signer (its key is a secret)
    from acmeserver import services as acme_server

    profile = acme_server.save_profile(tenant.organization, actor=SYSTEM, name="ACME server", ca=root)
    acme_server.create_eab_key(profile, actor=SYSTEM)  # an EAB key's HMAC key is a secret
    assert root.pk


def test_acme_secrets_are_never_shown(tenant, pebble_eab, powerdns, pdns_connection):
    ca = make_acme_ca(
        tenant,
        pebble_eab,
        name="EAB CA",
        connection=pdns_connection,
        eab_kid=pebble_eab.eab_kid,
        eab_hmac_key=pebble_eab.eab_hmac_key,
    )
    order = ordered(
        pki_services.issue(
            acme_subscriber(tenant, ca, [unique_name(powerdns.zone, "secret")]), actor=tenant.operator.user
        )
    )
    order = AcmeOrder.objects.get(pk=order.pk)
    assert order.step == AcmeOrder.Step.DONE, order.last_error
    account = AcmeAccount.objects.get()
    secrets = [
        pebble_eab.eab_hmac_key.encode(),
        *_key_lines(account.private_key),
        *_key_lines(order.private_key),
    ]

    pages = [
        "/admin/",
        "/admin/dashboard/",
        "/admin/pki/certificateauthority/",
        f"/admin/pki/certificateauthority/{ca.pk}/change/",
        f"/admin/pki/certificateauthority/{ca.pk}/acme/",
        "/admin/acmeca/acmeaccount/",
        f"/admin/acmeca/acmeaccount/{account.pk}/change/",
        "/admin/acmeca/acmeorder/",
        f"/admin/acmeca/acmeorder/{order.pk}/change/",
        "/admin/acmeca/acmechallenge/",
        "/admin/certmgr/auditevent/",
        "/admin/certmgr/auditevent/export.csv",
        *(
            f"/admin/certmgr/auditevent/{pk}/change/"
            for pk in AuditEvent.objects.values_list("pk", flat=True)
        ),
    ]
    api = [
        "/api/v1/cas/",
        f"/api/v1/cas/{ca.pk}/",
        "/api/v1/acme-accounts/",
        f"/api/v1/acme-accounts/{account.pk}/",
        "/api/v1/acme-orders/",
        f"/api/v1/acme-orders/{order.pk}/",
        "/api/v1/acme-challenges/",
        "/api/v1/audit-events/",
        f"/api/v1/certificates/{order.certificate_id}/",
    ]
    for member in (tenant.admin, tenant.operator, tenant.auditor):
        client = Client()
        assert client.login(username=member.user.username, password=PASSWORD)
        for url in pages:
            response = client.get(url)
            body = b"".join(response.streaming_content) if response.streaming else response.content
            assert response.status_code in (200, 403), (url, response.status_code)
            for secret in secrets:
                assert secret not in body, (member.role, url)
        for url in api:
            response = member.client.get(url)
            assert response.status_code in (200, 403), (url, response.status_code)
            for secret in secrets:
                assert secret not in response.content, (member.role, url)
    for event in AuditEvent.objects.all():
        text = repr(event.details).encode() + event.error.encode()
        for secret in secrets:
            assert secret not in text, event.action


def test_no_dump_carries_a_secret_in_plaintext(tenant, pebble_eab, powerdns, pdns_connection, tmp_path):
    """Every encrypted field of every model (found by field class, so a field added later is covered) holds
    a unique marker; dumpdata, the serializers and pg_dump show none of them, and a dump loads back."""
    import json
    import os
    import subprocess

    from django.core import serializers
    from django.core.management import call_command
    from django.db import connection

    from certmgr.encryption import DUMP_PREFIX, EncryptedJSONField, RawToken, decrypt, encrypted_fields

    one_row_with_every_secret(tenant, pebble_eab, powerdns, pdns_connection)
    markers: dict[tuple[str, str], str] = {}
    for model, field in encrypted_fields():
        row = model.objects.order_by("pk").first()
        assert row is not None, f"no {model._meta.label} row: extend this test to create one"
        marker = f"planted-{model._meta.model_name}-{field.name}-7f3a9c"
        value = {"planted": marker} if isinstance(field, EncryptedJSONField) else marker
        model.objects.filter(pk=row.pk).update(**{field.name: value})
        markers[(model._meta.label, field.name)] = marker

    def leaks(text: str) -> list[str]:
        return [m for m in markers.values() if m in text]

    out = tmp_path / "dump.json"
    call_command(
        "dumpdata", *{m._meta.app_label for m, _ in encrypted_fields()}, output=str(out), verbosity=0
    )
    dumped = out.read_text()
    assert leaks(dumped) == []
    for fmt in ("json", "xml", "python"):
        for model, _ in encrypted_fields():
            text = str(serializers.serialize(fmt, model.objects.all()))
            assert leaks(text) == [], (fmt, model._meta.label)
    # the dump holds the ciphertext, marked, and loads back to the same secrets
    rows = {(r["model"], r["pk"]): r["fields"] for r in json.loads(dumped)}
    for model, field in encrypted_fields():
        label = model._meta.label_lower
        pk = model.objects.order_by("pk").values_list("pk", flat=True).first()
        stored = rows[(label, pk)][field.name]
        assert stored.startswith(DUMP_PREFIX), (label, field.name)
        assert markers[(model._meta.label, field.name)] in decrypt(stored[len(DUMP_PREFIX) :])
    for loaded in serializers.deserialize("json", dumped):
        for model, field in encrypted_fields():
            if isinstance(loaded.object, model) and getattr(loaded.object, field.name):
                assert isinstance(getattr(loaded.object, field.name), RawToken)
    # the database itself holds ciphertext only
    db = connection.settings_dict
    dump = subprocess.run(
        [
            "pg_dump",
            "--data-only",
            "-h",
            db["HOST"] or "127.0.0.1",
            "-U",
            db["USER"] or "postgres",
            db["NAME"],
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PGPASSWORD": db.get("PASSWORD") or ""},
    )
    assert dump.returncode == 0, dump.stderr
    assert leaks(dump.stdout) == []
    # nor do the audit rows
    for event in AuditEvent.objects.all():
        assert leaks(repr(event.details) + event.error) == [], event.action


API_LISTS = {
    "acmeca.AcmeAccount": "acme-accounts",
    "acmeca.AcmeSettings": "cas",
    "acmeca.AcmeOrder": "acme-orders",
    "pki.CertificateAuthority": "cas",
    "pki.Certificate": "certificates",
    "pki.CertificateRequest": "csrs",
    "pki.AlertChannel": "alert-channels",
    "dnsproviders.AppConnection": "app-connections",
    "certmgr.TOTPDevice": None,  # a user's own second factor: no list in the API or the admin
    "pki.OcspResponder": None,  # a CA's OCSP signer: shown on the CA, no list of its own
    "acmeserver.AcmeEabKey": "acme-eab-keys",
}
NO_ADMIN_LIST = ("acmeca.AcmeSettings", "certmgr.TOTPDevice", "pki.OcspResponder")


def test_a_secret_no_key_decrypts_refuses_its_own_object_only(tenant, pebble_eab, powerdns, pdns_connection):
    """Every secret-bearing row (found by field class) gets a token made under a key that is not configured:
    every list still renders, each object's pages and API answers are 200 or a 409 naming that object, and
    the operations that need the secret answer 409 with the object named, never 500."""
    from cryptography.fernet import Fernet

    from certmgr.encryption import EncryptedJSONField, RawToken, encrypted_fields
    from pki.models import Certificate, CertificateAuthority
    from pki.services import cas
    from tests.pki.conftest import make_subscriber

    one_row_with_every_secret(tenant, pebble_eab, powerdns, pdns_connection)
    foreign = Fernet(Fernet.generate_key())
    tampered: dict[str, list[tuple[str, int]]] = {}
    for model, field in encrypted_fields():
        rows = model._base_manager.exclude(**{field.attname: ""}).order_by("pk")
        row = rows.first() or model._base_manager.order_by("pk").first()
        assert row is not None, model._meta.label
        token = foreign.encrypt(b'{"a": 1}' if isinstance(field, EncryptedJSONField) else b"secret").decode()
        model._base_manager.filter(pk=row.pk).update(**{field.attname: RawToken(token)})
        tampered.setdefault(model._meta.label, []).append((str(field.verbose_name), row.pk))
    assert set(tampered) == set(API_LISTS), "a new secret-bearing model: add its API list here"

    def named(body: bytes, label: str, pk: int) -> bool:
        return b"cannot be decrypted with the configured keys" in body and f" {pk} ".encode() in body

    admin = Client()
    assert admin.login(username=tenant.admin.user.username, password=PASSWORD)
    for label, fields in tampered.items():
        model_name = label.split(".")[1].lower()
        app = label.split(".")[0]
        if label not in NO_ADMIN_LIST:
            response = admin.get(f"/admin/{app}/{model_name}/")
            assert response.status_code == 200, (label, response.status_code)
            for _, pk in fields:
                response = admin.get(f"/admin/{app}/{model_name}/{pk}/change/")
                assert response.status_code in (200, 409), (label, response.status_code)
                if response.status_code == 409:
                    assert named(response.content, label, pk), response.content[:500]
        if API_LISTS[label]:
            response = tenant.admin.client.get(f"/api/v1/{API_LISTS[label]}/")
            assert response.status_code == 200, (label, response.status_code, response.content[:300])
    for url in (
        "/admin/",
        "/admin/dashboard/",
        "/admin/pki/certificateauthority/",
        "/admin/certmgr/membership/",
    ):
        assert admin.get(url).status_code == 200, url

    # the operations that need a secret name the object whose secret is unreadable
    cert = Certificate.objects.exclude(private_key="").order_by("pk").first()
    assert cert is not None
    response = tenant.operator.client.get(f"/api/v1/certificates/{cert.pk}/private-key/")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["message"].startswith(
        f"the private key of certificate {cert.pk} cannot be decrypted"
    )
    root = CertificateAuthority.objects.get(name="Root")
    subscriber = make_subscriber(tenant, root, "unreadable")
    cas._MATERIAL.clear()  # a worker started after the key was removed
    response = tenant.operator.client.post(f"/api/v1/subscribers/{subscriber.pk}/issue/")
    assert response.status_code == 409, response.content
    assert f"certificate authority {root.pk} cannot be" in response.json()["error"]["message"]
    connection = pdns_connection
    response = tenant.admin.client.post(f"/api/v1/app-connections/{connection.pk}/test/")
    assert response.status_code == 409, response.content
    assert f"app connection {connection.pk} cannot be decrypted" in response.json()["error"]["message"]
    # an authenticator app whose key is unreadable: its owner's code step names it, never a 500
    from certmgr.models import TOTPDevice

    device = TOTPDevice.objects.get()
    TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
    owner = Client(REMOTE_ADDR="203.0.113.9")
    owner.post("/admin/login/", {"username": device.user.username, "password": PASSWORD})
    response = owner.post("/admin/two-factor/verify/", {"code": "123456"})
    assert response.status_code == 409, response.content[:500]
    assert named(response.content, "certmgr.TOTPDevice", device.pk), response.content[:1000]
