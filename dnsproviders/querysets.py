from __future__ import annotations

from datetime import datetime

from certmgr.querysets import TenantQuerySet


class AppConnectionQuerySet(TenantQuerySet):
    pass


class DelegatedChallengeQuerySet(TenantQuerySet):
    def live(self, now: datetime) -> DelegatedChallengeQuerySet:
        return self.filter(expires__gt=now)
