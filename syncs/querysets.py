from __future__ import annotations

from certmgr.querysets import TenantQuerySet


class SyncDestinationQuerySet(TenantQuerySet):
    def enabled(self):
        return self.filter(enabled=True)


class SyncRuleQuerySet(TenantQuerySet):
    pass


class SyncRunQuerySet(TenantQuerySet):
    pass


class DeploymentQuerySet(TenantQuerySet):
    def present(self):
        """What is at its destination now (not removed)."""
        return self.filter(removed_at__isnull=True)
