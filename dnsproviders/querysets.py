from __future__ import annotations

from certmgr.querysets import TenantQuerySet


class AppConnectionQuerySet(TenantQuerySet):
    pass
