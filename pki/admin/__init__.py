"""Admin of the PKI: certificate authorities, policies, subscribers, the certificate inventory, CSRs, CRLs,
alerts. One module per screen family; ``base`` and ``rendering`` hold what they share.

Every screen derives from ``PkiAdmin`` (``certmgr.admin_base.ServiceAdmin``): rows are restricted to the
viewer's organizations, writes need the ``manage`` role and go through ``pki.services`` (which audit them),
and an auditor gets read-only pages with no state-changing action. Private keys are never rendered: CA and
CSR keys have no field or widget at all, a certificate's key only leaves through
``services.export_private_key`` / ``export_pkcs12`` (operator role, audited) as a download.

The certificate inventory is built for a million rows: list queries load only the listed columns, the
related names come from one join, filters offer choices from small tables only, search uses the names
column and exact serial / fingerprint lookups, and the paginator counts at most ``COUNT_CAP`` rows.
"""

from pki.admin import alerts, cas, certificates, crls, csrs, profiles  # noqa: F401  (registers the screens)
from pki.admin.base import (
    ACTION_LIMIT,
    COUNT_CAP,
    CappedCountPaginator,
    PkiAdmin,
    ReadOnlyPkiAdmin,
)
from pki.admin.rendering import x509_details

__all__ = [
    "ACTION_LIMIT",
    "COUNT_CAP",
    "CappedCountPaginator",
    "PkiAdmin",
    "ReadOnlyPkiAdmin",
    "x509_details",
]
