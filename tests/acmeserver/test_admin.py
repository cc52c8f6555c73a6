"""The ACME server's admin lists: a query count that does not grow with the rows shown."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.utils import timezone

from acmeserver import models
from pki import services as pki_services
from pki.models import Certificate
from tests.acmeserver.conftest import make_profile
from tests.admin_queries import assert_queries_do_not_grow
from tests.certmgr.test_admin import login
from tests.conftest import SYSTEM
from tests.pki.conftest import hierarchy, issued, subscriber  # noqa: F401  (fixtures)

# Every list of the app, so that a new one is checked too.
LISTS = [
    f"/admin/acmeserver/{model._meta.model_name}/"
    for model in admin.site._registry
    if model._meta.app_label == "acmeserver"
]


def test_changelists_take_as_many_queries_for_ten_rows_as_for_one(tenant, hierarchy, issued):  # noqa: F811
    ca = hierarchy[1]
    policy = pki_services.save_policy(tenant.organization, actor=SYSTEM, name="short-lived")
    later = timezone.now() + timedelta(days=1)

    def add(first: int, count: int) -> None:
        for i in range(first, first + count):
            profile = make_profile(tenant, ca, name=f"Directory {i}", slug=f"dir-{i}", policy=policy)
            models.AcmeOrderProfile.objects.create(profile=profile, name=f"tls-{i}", policy=policy)
            account = models.AcmeServerAccount.objects.create(
                profile=profile, thumbprint=f"t{i}", jwk={"kty": "EC"}
            )
            models.AcmeServerOrder.objects.create(account=account, expires_at=later, certificate=issued)
            models.AcmeServerAuthorization.objects.create(
                account=account, identifier_type="dns", identifier_value=f"h{i}.acme.test", expires_at=later
            )
            models.AcmeEabKey.objects.create(profile=profile, name=f"team {i}", hmac_key="k", account=account)
            certificate = Certificate.objects.get(pk=issued.pk)
            certificate.pk, certificate.serial = None, f"{i:04x}{issued.serial[4:]}"
            certificate.fingerprint_sha256 = f"{i:04x}{issued.fingerprint_sha256[4:]}"
            certificate.save()
            models.AcmeEarlyRenewal.objects.create(certificate=certificate, reason=f"re-key {i}")

    add(0, 1)
    assert_queries_do_not_grow(login(tenant.admin), LISTS, lambda: add(1, 9))
