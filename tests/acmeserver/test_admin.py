"""The ACME server's admin lists: a query count that does not grow with the rows shown."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from acmeserver.models import (
    AcmeEabKey,
    AcmeEarlyRenewal,
    AcmeOrderProfile,
    AcmeProfile,
    AcmeServerAccount,
    AcmeServerAuthorization,
    AcmeServerOrder,
)
from pki import services as pki_services
from pki.models import Certificate
from tests.acmeserver.conftest import make_profile
from tests.admin_queries import assert_queries_do_not_grow
from tests.certmgr.test_admin import login
from tests.conftest import SYSTEM
from tests.pki.conftest import hierarchy, issued, subscriber  # noqa: F401  (fixtures)

LISTS = [
    f"/admin/acmeserver/{model._meta.model_name}/"
    for model in (
        AcmeProfile,
        AcmeOrderProfile,
        AcmeServerAccount,
        AcmeServerOrder,
        AcmeServerAuthorization,
        AcmeEabKey,
        AcmeEarlyRenewal,
    )
]


def test_changelists_take_as_many_queries_for_ten_rows_as_for_one(tenant, hierarchy, issued):  # noqa: F811
    ca = hierarchy[1]
    policy = pki_services.save_policy(tenant.organization, actor=SYSTEM, name="short-lived")
    later = timezone.now() + timedelta(days=1)

    def add(first: int, count: int) -> None:
        for i in range(first, first + count):
            profile = make_profile(tenant, ca, name=f"Directory {i}", slug=f"dir-{i}", policy=policy)
            AcmeOrderProfile.objects.create(profile=profile, name=f"tls-{i}", policy=policy)
            account = AcmeServerAccount.objects.create(profile=profile, thumbprint=f"t{i}", jwk={"kty": "EC"})
            AcmeServerOrder.objects.create(account=account, expires_at=later, certificate=issued)
            AcmeServerAuthorization.objects.create(
                account=account, identifier_type="dns", identifier_value=f"h{i}.acme.test", expires_at=later
            )
            AcmeEabKey.objects.create(profile=profile, name=f"team {i}", hmac_key="k", account=account)
            certificate = Certificate.objects.get(pk=issued.pk)
            certificate.pk, certificate.serial = None, f"{i:04x}{issued.serial[4:]}"
            certificate.fingerprint_sha256 = f"{i:04x}{issued.fingerprint_sha256[4:]}"
            certificate.save()
            AcmeEarlyRenewal.objects.create(certificate=certificate, reason=f"re-key {i}")

    add(0, 1)
    assert_queries_do_not_grow(login(tenant.admin), LISTS, lambda: add(1, 9))
