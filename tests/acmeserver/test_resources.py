"""The ``acme`` library against the live server, for what the clients' own tests do not reach: every
state of an authorization, its challenges and its order reads back (RFC 8555 §7.1), inconsistent ones too
(a state set by hand, a challenge validated while its authorization was deactivated), which once answered
a 500; ``Retry-After`` and ``Link: rel="up"``; deactivating an authorization; revocation by the ordering
account and ARI's window after it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from acme import messages
from django.utils import timezone

from acmeserver.models import AcmeServerAuthorization, AcmeServerChallenge, AcmeServerOrder
from tests.acmeserver.conftest import acme_client_for, directory_url, unique_name
from tests.acmeserver.test_flow import csr_for

INCORRECT = {
    "type": "urn:ietf:params:acme:error:incorrectResponse",
    "detail": "the token's body was not the key authorization",
    "status": 403,
    "identifier": {"type": "dns", "value": "x.acme.test"},
}

# (authorization status, {challenge type: status}, the challenge types the authorization lists)
STATES = [
    ("valid", {"http-01": "pending", "dns-01": "pending"}, ["dns-01", "http-01"]),  # valid by hand
    ("valid", {"http-01": "valid", "dns-01": "processing"}, ["http-01"]),
    ("pending", {"http-01": "valid", "dns-01": "pending"}, ["dns-01", "http-01"]),
    ("pending", {"http-01": "processing", "dns-01": "pending"}, ["dns-01", "http-01"]),
    ("invalid", {"http-01": "invalid", "dns-01": "pending"}, ["http-01"]),
    ("invalid", {"http-01": "pending", "dns-01": "pending"}, ["dns-01", "http-01"]),
    ("deactivated", {"http-01": "valid", "dns-01": "pending"}, ["http-01"]),  # validated meanwhile
    ("deactivated", {"http-01": "pending", "dns-01": "pending"}, ["dns-01", "http-01"]),
    ("revoked", {"http-01": "valid", "dns-01": "pending"}, ["http-01"]),
]


def test_every_authorization_and_challenge_state_reads_back_with_the_acme_library(
    live_server, profile, settings
):
    settings.CERTMGR_ACME_AUTHZ_HOLD_SECONDS = 0  # a processing challenge's poll is not held here
    client = acme_client_for(directory_url(live_server, profile))
    for authz_status, challenge_statuses, shown in STATES:
        order = client.new_order(csr_for([unique_name("acme.test")])[0])
        authzr = order.authorizations[0]
        row = AcmeServerAuthorization.objects.get(public_id=authzr.uri.rsplit("/", 1)[-1])
        AcmeServerAuthorization.objects.filter(pk=row.pk).update(status=authz_status)
        for kind, status in challenge_statuses.items():
            AcmeServerChallenge.objects.filter(authorization=row, type=kind).update(
                status=status,
                validated_at=timezone.now() if status == "valid" else None,
                error=INCORRECT if status == "invalid" else None,
            )
        if authz_status == "revoked":
            AcmeServerOrder.objects.filter(public_id=order.uri.rsplit("/", 1)[-1]).update(status="invalid")
        read, response = client.poll(authzr)
        assert response.status_code == 200, (authz_status, challenge_statuses, response.content)
        assert read.body.status.name == authz_status
        assert sorted(c.chall.typ for c in read.body.challenges) == shown, (authz_status, challenge_statuses)
        assert ("Retry-After" in response.headers) == (authz_status == "pending")
        for challb in read.body.challenges:
            answer = client._post_as_get(challb.uri)
            got = messages.ChallengeBody.from_json(answer.json())
            assert got.status.name == challenge_statuses[challb.chall.typ]
            assert ("Retry-After" in answer.headers) == (got.status.name == "processing")
            assert f'<{authzr.uri}>;rel="up"' in answer.headers["Link"]
            if got.status.name == "invalid":
                assert got.error.typ == INCORRECT["type"] and got.error.identifier.value == "x.acme.test"
            if got.status.name == "valid":
                assert got.validated is not None
        body = messages.Order.from_json(client._post_as_get(order.uri).json())
        assert body.authorizations == (authzr.uri,)


def test_a_pending_authorization_past_its_expiry_reads_expired_without_retry_after(live_server, profile):
    client = acme_client_for(directory_url(live_server, profile))
    order = client.new_order(csr_for([unique_name("acme.test")])[0])
    authzr = order.authorizations[0]
    AcmeServerAuthorization.objects.filter(public_id=authzr.uri.rsplit("/", 1)[-1]).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    read, response = client.poll(authzr)
    assert read.body.status.name == "expired" and "Retry-After" not in response.headers
    challb = read.body.challenges[0]
    with pytest.raises(messages.Error) as refused:
        client.answer_challenge(challb, challb.response(client.net.key))
    assert refused.value.code == "unauthorized"


def test_deactivating_an_authorization_makes_its_pending_order_invalid(live_server, profile):
    client = acme_client_for(directory_url(live_server, profile))
    order = client.new_order(csr_for([unique_name("acme.test"), unique_name("acme.test")])[0])
    first, second = order.authorizations
    deactivated = client.deactivate_authorization(first)
    assert deactivated.body.status == messages.STATUS_DEACTIVATED
    assert client.poll(first)[0].body.status == messages.STATUS_DEACTIVATED
    assert messages.Order.from_json(client._post_as_get(order.uri).json()).status == messages.STATUS_INVALID
    with pytest.raises(messages.Error) as refused:  # §7.5.2: only pending or valid ones
        client.deactivate_authorization(first)
    assert refused.value.code == "unauthorized"
    challb = client.poll(first)[0].body.challenges[0]
    with pytest.raises(messages.Error) as refused:
        client.answer_challenge(challb, challb.response(client.net.key))
    assert refused.value.code == "unauthorized"
    assert client.poll(second)[0].body.status == messages.STATUS_PENDING  # the other one is left alone
    # a valid authorization may be deactivated too (the client gives the name up)
    AcmeServerAuthorization.objects.filter(public_id=second.uri.rsplit("/", 1)[-1]).update(status="valid")
    assert client.deactivate_authorization(second).body.status == messages.STATUS_DEACTIVATED


def test_the_acme_library_revokes_its_own_certificate_once_and_ari_then_says_renew_now(live_server, profile):
    """RFC 8555 §7.6 by the account that ordered it (certbot's and lego's way), RFC 9773 from the library's
    own ``renewal_time``: a revoked certificate's window lies in the past."""
    from datetime import UTC, datetime

    from cryptography import x509 as cx509

    from pki.models import Certificate

    client = acme_client_for(directory_url(live_server, profile))
    order = client.new_order(csr_for([unique_name("acme.test")])[0])
    row = AcmeServerOrder.objects.get(public_id=order.uri.rsplit("/", 1)[-1])
    AcmeServerAuthorization.objects.filter(orders=row).update(status="valid")  # proved (test_flow proves)
    AcmeServerOrder.objects.filter(pk=row.pk).update(status="ready")
    order = client.finalize_order(order, datetime.now() + timedelta(seconds=20))
    pem = order.fullchain_pem.encode()
    renew_at, _ = client.renewal_time(pem)
    assert renew_at is not None and renew_at > datetime.now(UTC)
    client.revoke(cx509.load_pem_x509_certificate(pem), 1)
    assert Certificate.objects.get().revocation_reason == "key_compromise"
    renew_at, _ = client.renewal_time(pem)
    assert renew_at is not None and renew_at <= datetime.now(UTC)
    with pytest.raises(messages.Error) as refused:
        client.revoke(cx509.load_pem_x509_certificate(pem), 1)
    assert refused.value.code == "alreadyRevoked"
