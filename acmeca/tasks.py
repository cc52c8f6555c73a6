"""django-q2 entry points of the ACME worker and its janitor."""

from __future__ import annotations

from collections.abc import Callable

from django.utils import timezone

from acmeca import flow
from acmeca.models import AcmeOrder
from certmgr.jobs import JobReport, run_job
from dnsproviders.models import DelegatedChallenge
from pki.issuers import Pending


def run_order(order_id: int) -> str:
    order = flow.run_order(order_id)
    return f"order {order.pk}: {order.step}"


def recover_lost_account(order_id: int) -> str:
    """After the CA forgot the account of a failed order (accountDoesNotExist): register a new account with
    the same key for its CA, then retry the order on it (the CA's setting allows this)."""
    from acmeca import orders, services
    from acmeca.models import AcmeAccount, AcmeSettings

    order = AcmeOrder.objects.select_related("account").get(pk=order_id)
    row = AcmeSettings.objects.select_related("account").get(ca_id=order.ca_id)
    if not row.reregister_automatically:
        return f"order {order_id}: re-registration is off for this CA"
    account = row.account
    if account is not None and account.status == AcmeAccount.Status.INVALID:
        account = services.reregister_account(account, actor=flow.WORKER)
    if account is None or account.status != AcmeAccount.Status.VALID:
        return f"order {order_id}: the CA has no valid account"
    outcome = orders.retry_order(order, actor=flow.WORKER)
    if isinstance(outcome, Pending):
        return f"order {order_id} retried as {outcome.label} on account {account.pk}"
    return f"order {order_id} retried: certificate {outcome.certificate.pk}"


def janitor() -> dict:
    """Scheduled every CERTMGR_JANITOR_MINUTES; each run is a JobRun."""
    return run_job("janitor", janitor_now).counts


def janitor_now(report: JobReport, progress: Callable[[str], None] | None = None) -> None:
    """Resume orders whose worker died or whose retry time came; remove challenge records left behind."""
    from acmeca import orders

    say = progress or (lambda message: None)
    for order_id in flow.stalled_orders(timezone.now()):
        orders.resume(order_id)
        report.add("resumed")
        say(f"resumed: order {order_id}")
    for order in AcmeOrder.objects.filter(cleanup_pending=True, cleanup_stopped_at__isnull=True)[:200]:
        if flow.cleanup_records(order):
            report.add("cleaned")
            say(f"cleaned: order {order.pk}")
        elif order.cleanup_stopped_at is not None:
            # Reported once, on the run that gives up; later runs skip the order until an operator clears it.
            report.error(f"order {order.pk}: challenge records left for an operator: {order.cleanup_error}")
        else:
            report.add("cleanup_retrying")
            say(f"cleanup retried later: order {order.pk}: {order.cleanup_error}")
    # Delegated DNS values past their expiry (no order removed them: it crashed for good) are no longer
    # served; their rows go too.
    expired, _ = DelegatedChallenge.objects.filter(expires__lte=timezone.now()).delete()
    if expired:
        report.add("delegated_expired", expired)
        say(f"removed {expired} expired delegated DNS value(s)")
