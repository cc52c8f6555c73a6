"""Worker tasks of the PKI. Each takes ids, not objects, and is safe to run twice."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from certmgr.actors import Actor
from pki import services
from pki.models import CertificateAuthority

ACTOR = Actor.system("task pki.refresh_crls")


def refresh_crls() -> dict[str, int]:
    """Rebuild every active internal CA's CRL whose nextUpdate is less than half a validity away.

    Scheduled (migration pki/0002); a CRL is therefore never served near its nextUpdate, and the public view
    rebuilds it on the spot if the schedule fell behind.
    """
    horizon = timezone.now() + timedelta(hours=settings.CERTMGR_CRL_VALIDITY_HOURS / 2)
    refreshed = failed = 0
    for ca in CertificateAuthority.objects.internal().active().exclude(certificate_pem=""):
        latest = ca.crls.order_by("-number").values_list("next_update", flat=True).first()
        if latest is not None and latest > horizon:
            continue
        try:
            services.refresh_crl(ca, actor=ACTOR)
            refreshed += 1
        except Exception:  # one broken CA must not stop the others; the failure is audited
            failed += 1
    return {"refreshed": refreshed, "failed": failed}


def mark_expired() -> dict[str, int]:
    """Flip active certificates past their notAfter to expired (the inventory's status column).

    Reads never depend on it (querysets compare not_after), but filters and counts by status stay true.
    """
    from pki.models import Certificate

    count = Certificate.objects.filter(
        status=Certificate.Status.ACTIVE, not_after__lte=timezone.now()
    ).update(status=Certificate.Status.EXPIRED)
    return {"expired": count}
