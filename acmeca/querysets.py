"""Reads of ACME rows, tenant-scoped through ``restrict`` like every other queryset."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from django.db import models

from acmeca.choices import FINISHED_STEPS, OrderStep
from certmgr.querysets import TenantQuerySet


class AcmeAccountQuerySet(TenantQuerySet):
    pass


class AcmeSettingsQuerySet(TenantQuerySet):
    organization_path = "ca__organization"


class AcmeOrderQuerySet(TenantQuerySet):
    def unfinished(self) -> Self:
        return self.exclude(step__in=FINISHED_STEPS)

    def stalled(self, *, now: datetime) -> Self:
        """Unfinished orders no worker holds: their lease ran out (a dead worker) or they were never taken."""
        return (
            self.unfinished()
            .exclude(step=OrderStep.WAITING_MANUAL)
            .filter(models.Q(lease_until__lt=now) | models.Q(lease_until__isnull=True))
            .filter(models.Q(next_attempt_at__isnull=True) | models.Q(next_attempt_at__lte=now))
        )


class AcmeChallengeQuerySet(TenantQuerySet):
    pass
