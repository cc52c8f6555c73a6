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
