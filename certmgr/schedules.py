"""The periodic jobs and their intervals, created idempotently (migrations certmgr/0004, 0009 and
``manage.py setup_schedules``). Intervals come from settings, read when the schedules are written."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Job:
    name: str
    func: str
    minutes: int
    help: str


def jobs() -> list[Job]:
    return [
        Job(
            "pki.run_renewals",
            "pki.tasks.run_renewals",
            settings.CERTMGR_RENEWAL_SWEEP_MINUTES,
            "renew certificates that are due",
        ),
        Job(
            "pki.refresh_crls", "pki.tasks.refresh_crls", settings.CERTMGR_CRL_REFRESH_MINUTES, "rebuild CRLs"
        ),
        Job(
            "pki.refresh_ocsp",
            "pki.tasks.refresh_ocsp",
            settings.CERTMGR_OCSP_REFRESH_MINUTES,
            "pre-sign OCSP responses near their nextUpdate, rotate responder certificates",
        ),
        Job("pki.mark_expired", "pki.tasks.mark_expired", 60, "flip expired certificates' status"),
        Job(
            "pki.send_expiry_alerts",
            "pki.tasks.send_expiry_alerts",
            settings.CERTMGR_EXPIRY_ALERT_MINUTES,
            "expiry alerts",
        ),
        Job(
            "pki.deliver_alerts",
            "pki.tasks.deliver_alerts",
            settings.CERTMGR_ALERT_DELIVERY_MINUTES,
            "send and retry alert deliveries",
        ),
        Job(
            "acmeca.janitor",
            "acmeca.tasks.janitor",
            settings.CERTMGR_JANITOR_MINUTES,
            "resume stalled ACME orders, remove left-over challenge records",
        ),
        Job(
            "syncs.run_due",
            "syncs.tasks.run_due",
            1,
            "certificate syncs: retry failed runs whose time came, resume stalled ones",
        ),
        Job(
            "syncs.check_drift",
            "syncs.tasks.check_drift",
            settings.CERTMGR_SYNC_DRIFT_MINUTES,
            "certificate syncs: re-read each destination, push what differs or is missing",
        ),
        Job(
            "certmgr.auth_failures",
            "certmgr.auth_failures.flush",
            1,
            "audit bad API tokens, one event per address and minute",
        ),
        Job(
            "certmgr.audit_checkpoints",
            "certmgr.audit_checkpoints.run",
            settings.CERTMGR_AUDIT_CHECKPOINT_MINUTES,
            "sign each audit chain's head outside the database",
        ),
    ]


def ensure_schedules(schedule_model=None) -> list[tuple[str, bool]]:
    """Create or update every schedule; returns (name, created) pairs. Safe to run any number of times."""
    if schedule_model is None:
        from django_q.models import Schedule

        schedule_model = Schedule
    result = []
    for job in jobs():
        _, created = schedule_model.objects.update_or_create(
            name=job.name,
            defaults={"func": job.func, "schedule_type": "I", "minutes": job.minutes, "repeats": -1},
        )
        result.append((job.name, created))
    return result
