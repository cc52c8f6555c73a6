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
    """Rebuild every active internal CA's anchor full CRL whose nextUpdate is less than half a validity away
    (with a delta CRL of it when the CA's delta CRLs are on), and, for the others, a delta CRL less than half
    its validity away from its nextUpdate; then prune each CA's superseded CRL rows (``prune_crls``).

    Scheduled (certmgr.schedules); a CRL is therefore never served near its nextUpdate, and the public views
    rebuild it on the spot if the schedule fell behind. Each run is a JobRun.
    """
    from certmgr.jobs import run_job

    return run_job("crl_refresh", refresh_crls_now).counts


def refresh_crls_now(report, progress=None) -> None:
    for ca in (
        CertificateAuthority.objects.internal().active().exclude(certificate_pem="").defer("private_key")
    ):
        try:
            outcome = _refresh(ca, progress)
            report.add(outcome)
            pruned = services.prune_crls(ca, actor=ACTOR)
            if pruned:
                report.add("pruned", pruned)
        except Exception as exc:  # one broken CA must not stop the others; the failure is audited
            report.error(f"CA {ca.pk} ({ca.name}): {exc}")


def _refresh(ca: CertificateAuthority, progress) -> str:
    now = timezone.now()
    horizon = now + timedelta(hours=settings.CERTMGR_CRL_VALIDITY_HOURS / 2)
    delta_horizon = now + timedelta(hours=settings.CERTMGR_DELTA_CRL_VALIDITY_HOURS / 2)
    # the anchor, not the newest full CRL: a revocation's full CRLs must not keep the base deltas name old
    anchor = (
        ca.crls.filter(delta=False, anchor=True, entries__isnull=False)
        .order_by("-number")
        .values_list("number", "next_update")
        .first()
    )
    if anchor is None or anchor[1] <= horizon:
        crl = services.refresh_crl(ca, actor=ACTOR)
        if progress:
            progress(f"refreshed: {ca.name} (CRL number {crl.number})")
        return "refreshed"
    if ca.delta_crl_enabled:
        delta = ca.crls.filter(delta=True, base_number=anchor[0]).defer("der").order_by("-number").first()
        if delta is None or delta.next_update <= delta_horizon:
            crl = services.refresh_delta_crl(ca, actor=ACTOR)
            if progress:
                progress(f"delta refreshed: {ca.name} (CRL number {crl.number})")
            return "delta refreshed"
    return "fresh"


def refresh_delta_crl(ca_id: int, after_number: int) -> dict[str, int]:
    """Publish a revocation of CA ``ca_id`` on a new full CRL and a new delta CRL of the CA's anchor:
    enqueued by the revocation's transaction, with the CA's CRL number then (skipped when CRLs built since
    list it already). The name stayed from when only the delta was rebuilt: queued tasks keep running."""
    from pki.services import revocation

    ca = CertificateAuthority.objects.internal().exclude(certificate_pem="").filter(pk=ca_id).first()
    if ca is None:
        return {"skipped": 1}
    built = revocation.publish_after_revocation(ca, after_number, Actor.system("task pki.refresh_delta_crl"))
    if not built:
        return {"covered": 1}
    kinds = ["delta" if crl.delta else "full" for crl in built]
    return {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}


def mark_expired() -> dict[str, int]:
    """Flip active certificates past their notAfter to expired (the inventory's status column).

    Reads never depend on it (querysets compare not_after), but filters and counts by status stay true.
    """
    from pki.models import Certificate

    count = Certificate.objects.filter(
        status=Certificate.Status.ACTIVE, not_after__lte=timezone.now()
    ).update(status=Certificate.Status.EXPIRED)
    return {"expired": count}


def run_renewals() -> dict:
    """The renewal sweep (scheduled every CERTMGR_RENEWAL_SWEEP_MINUTES); each run is a JobRun."""
    from certmgr.jobs import run_job
    from pki import lifecycle

    return run_job("renewals", lambda report: lifecycle.run_renewals(report)).counts


def send_expiry_alerts() -> dict:
    """Expiry alerts (scheduled daily by default, CERTMGR_EXPIRY_ALERT_MINUTES): queue each certificate's
    reached threshold once, then send every due delivery, retries included. Each run is a JobRun."""
    from certmgr.jobs import run_job
    from pki import alerts

    return run_job("expiry_alerts", alerts.send_expiry_alerts).counts


def deliver_alerts(delivery_ids: list[int] | None = None) -> dict:
    """Send alert deliveries: the given ones (enqueued by pki.alerts.notify on commit), or every pending one
    that is due (the retry schedule of migration pki/0007; recorded as a JobRun only when there was work)."""
    from certmgr.jobs import JobReport, run_job
    from pki import alerts

    if delivery_ids:
        report = JobReport()
        alerts.deliver_many(delivery_ids, report)
        return report.counts
    if not alerts.due_ids(limit=1):
        return {}
    return run_job("alert_deliveries", alerts.deliver_due).counts


def reissue_ca(
    ca_id: int,
    *,
    user_id: int | None = None,
    token_id: int | None = None,
    to_ca_id: int | None = None,
    revoke_reason: str | None = None,
) -> dict:
    """A re-issue started from the admin or the API, as the person (or token) who started it: their role
    is checked again here, so a role removed meanwhile stops it. The result is audited."""
    from django.contrib.auth import get_user_model

    from certmgr.models import ApiToken

    if token_id is not None:
        actor = Actor.for_token(ApiToken.objects.select_related("user").get(pk=token_id))
    elif user_id is not None:
        actor = Actor.for_user(get_user_model().objects.get(pk=user_id))
    else:
        actor = Actor.system("task pki.reissue_ca")
    ca = CertificateAuthority.objects.get(pk=ca_id)
    to_ca = CertificateAuthority.objects.get(pk=to_ca_id) if to_ca_id is not None else None
    report = services.reissue_ca(ca, actor=actor, to_ca=to_ca, revoke_reason=revoke_reason)
    return {
        "reissued": report.reissued,
        "ordered": report.ordered,
        "revoked": report.revoked,
        "failed": len(report.failed),
    }


def refresh_ocsp() -> dict[str, int]:
    """Pre-sign the OCSP responses of OCSP-enabled CAs that are missing or past half their validity, and
    rotate responder certificates near their end (scheduled every CERTMGR_OCSP_REFRESH_MINUTES; a JobRun)."""
    from certmgr.jobs import run_job
    from pki.services import ocsp

    return run_job("ocsp_refresh", ocsp.refresh_due).counts


def refresh_ocsp_serials(ca_id: int, serials: list[str] | None) -> dict[str, int]:
    """Re-sign the responses of ``serials`` of a CA (all of its certificates with None): enqueued by a
    revocation's transaction and by turning OCSP on."""
    from pki.services import ocsp

    ca = ocsp.ocsp_cas().filter(pk=ca_id).first()
    if ca is None:
        return {"skipped": 1}
    return {"signed": ocsp.presign(ca, serials)}
