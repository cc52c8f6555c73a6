"""``/healthz`` for load balancers and Kubernetes probes: the database answers, the task broker answers, and a
worker is alive (its scheduler keeps the periodic jobs' next run in the future). 200 with a JSON body when all
three hold, 503 naming the failing part otherwise. Unauthenticated and cheap (three small queries, no
locks); it shows states and ages, never a URL, host or error text that could carry a secret."""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Min
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


def check_broker() -> dict:
    from django_q.brokers import get_broker

    broker = get_broker()
    return {"ok": bool(broker.ping()), "kind": "redis" if settings.REDIS_URL else "database"}


def worker_heartbeat_age(now: datetime | None = None) -> float | None:
    """Seconds since a worker's scheduler last ran, read from the periodic jobs (certmgr.schedules): the
    scheduler moves each job's next run forward when it runs it, so the most overdue next run tells how long
    no scheduler has looked. None when there are no schedules."""
    from django_q.models import Schedule

    oldest = Schedule.objects.exclude(repeats=0).aggregate(oldest=Min("next_run"))["oldest"]
    if oldest is None:
        return None
    return max(0.0, ((now or timezone.now()) - oldest).total_seconds())


def check_worker() -> dict:
    age = worker_heartbeat_age()
    limit = settings.CERTMGR_HEALTH_WORKER_MAX_AGE
    if age is None:
        return {"ok": False, "reason": "no periodic jobs: run manage.py setup_schedules"}
    return {"ok": age <= limit, "heartbeat_age_seconds": round(age, 1), "max_age_seconds": limit}


CHECKS = {"database": check_database, "broker": check_broker, "worker": check_worker}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    parts: dict[str, dict] = {}
    for name, check in CHECKS.items():
        try:
            parts[name] = check()
        except Exception as exc:  # a probe answers whatever broke (redis-py raises its own errors)
            logger.warning("health check %s failed: %s", name, type(exc).__name__)
            parts[name] = {"ok": False, "reason": type(exc).__name__}  # the class only: no URL, no host
    failing = [name for name, part in parts.items() if not part["ok"]]
    body = {"status": "ok" if not failing else "failing", "failing": failing, "checks": parts}
    return JsonResponse(body, status=200 if not failing else 503)
