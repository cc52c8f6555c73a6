"""The public CRL endpoint as relying parties and caches see it: served from storage with an ETag, cacheable
no longer than CERTMGR_CRL_MAX_AGE_SECONDS nor past nextUpdate, and a revoked certificate stays listed
until it expires, whatever the periodic jobs do. Delta CRLs: tests/pki/test_delta_crl.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509 as cx509
from django.test import Client
from django.utils import timezone

from pki import services, tasks
from pki.models import Crl
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db


def crl_url(ca) -> str:
    return f"/pki/ca/{ca.pk}.crl"


def test_the_crl_is_served_with_an_etag_and_revalidates_to_304(tenant, hierarchy):
    inter = hierarchy[1]
    # delta CRLs off: each revocation publishes a full CRL (with them on, tests/pki/test_delta_crl.py)
    inter = services.set_delta_crl(inter, enabled=False, actor=SYSTEM)
    client = Client()
    first = client.get(crl_url(inter))
    assert first.status_code == 200 and first["Content-Type"] == "application/pkix-crl"
    etag = first["ETag"]
    again = client.get(crl_url(inter), HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    assert first["Last-Modified"] and first["Expires"]
    # a revocation publishes a new CRL: the old ETag no longer matches
    cert = services.issue(services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="w", ca=inter, common_name="w.acme.test",
        sans=["w.acme.test"], validity_days=30,
    ), actor=SYSTEM).certificate  # fmt: skip
    services.revoke(cert, reason="key_compromise", actor=SYSTEM)
    fresh = client.get(crl_url(inter), HTTP_IF_NONE_MATCH=etag)
    assert fresh.status_code == 200 and fresh["ETag"] != etag
    serials = {entry.serial_number for entry in cx509.load_der_x509_crl(fresh.content)}
    assert int(cert.serial, 16) in serials
    pem = client.get(f"/pki/ca/{inter.pk}.pem")
    assert pem.status_code == 200 and pem["ETag"] != fresh["ETag"]  # the format is part of the tag


def test_max_age_is_the_setting_and_never_past_next_update(tenant, hierarchy, settings):
    inter = hierarchy[1]
    settings.CERTMGR_CRL_MAX_AGE_SECONDS = 120
    response = Client().get(crl_url(inter))
    assert response["Cache-Control"] == "public, max-age=120"
    # a CRL 7 minutes from its nextUpdate may be cached for those minutes at most
    current = Crl.objects.filter(ca=inter).order_by("-number").first()
    Crl.objects.filter(pk=current.pk).update(next_update=timezone.now() + timedelta(minutes=7))
    settings.CERTMGR_CRL_MAX_AGE_SECONDS = 3600
    max_age = int(Client().get(crl_url(inter))["Cache-Control"].split("max-age=")[1])
    assert 6 * 60 <= max_age <= 7 * 60


def test_revoked_unexpired_certificates_stay_listed_through_the_periodic_jobs(tenant, hierarchy):
    inter = hierarchy[1]
    subscriber = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="keep", ca=inter, common_name="keep.acme.test",
        sans=["keep.acme.test"], validity_days=30,
    )  # fmt: skip
    revoked = [services.issue(subscriber, actor=SYSTEM).certificate for _ in range(3)]
    for cert in revoked:
        services.revoke(cert, reason="superseded", actor=SYSTEM)
    tasks.mark_expired()
    tasks.refresh_crls()
    from acmeca import tasks as acme_tasks

    acme_tasks.janitor()
    services.refresh_crl(inter, actor=SYSTEM)
    listed = {e.serial_number for e in cx509.load_der_x509_crl(Client().get(crl_url(inter)).content)}
    assert {int(c.serial, 16) for c in revoked} <= listed
