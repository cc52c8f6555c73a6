"""State changes of the PKI, one function per change: CAs, policies, subscribers, issuance, revocation,
CRLs, CSRs and the inventory. Nothing signs, issues or revokes anywhere else.

Each function checks the actor's role, changes rows in one transaction with its audit event, and raises
ServiceError / ValidationError on refusal. The modules, by subject:

- ``cas``           create, import, enable/disable, rename, delete CAs; their signing material
- ``issuance``      issue, retry, the authorize and record steps, external completion
- ``batch``         many certificates in one transaction; re-issue every certificate of a CA
- ``revocation``    revoke (through the issuer backend), CRLs
- ``profiles``      policies and subscribers
- ``csrs``          generated and uploaded CSRs
- ``inventory``     import and export (keys audited)
- ``operation_state``  a subscriber's last operation and renewal backoff (their one writer)
"""

from pki.services.batch import (
    BATCH_MAX,
    BatchRequest,
    check_reissue,
    issue_batch,
    reissue_ca,
    reissue_candidates,
    start_reissue,
)
from pki.services.cas import (
    DEFAULT_INTERMEDIATE_DAYS,
    DEFAULT_ROOT_DAYS,
    CaMaterial,
    aia_url,
    ca_chain,
    ca_material,
    create_internal_ca,
    crl_url,
    delete_ca,
    delta_crl_url,
    import_ca,
    ocsp_url,
    rename_ca,
    set_ca_status,
    set_name,
)
from pki.services.common import (
    AlreadyRevoked,
    CaUnavailable,
    PolicyRefused,
    check_unique_ca_name,
    clean_name,
)
from pki.services.csrs import generate_csr, issue_from_csr, upload_csr
from pki.services.inventory import (
    EXPORT_REASON_MAX,
    PKCS12_MIN_PASSWORD,
    ImportResult,
    bundle_pem,
    export_pkcs12,
    export_private_key,
    import_certificates,
)
from pki.services.issuance import (
    Enrollment,
    NewCsrNeeded,
    authorize,
    complete_external,
    current_certificate,
    enroll,
    issue,
    policy_of,
    record,
    renewal_plan,
    retry_now,
)
from pki.services.ocsp import set_ocsp
from pki.services.operation_state import failed as note_issue_failure
from pki.services.profiles import (
    POLICY_FIELDS,
    SUBSCRIBER_FIELDS,
    delete_object,
    save_policy,
    save_subscriber,
)
from pki.services.revocation import (
    build_crl,
    build_delta_crl,
    current_crl,
    current_delta_crl,
    prune_crls,
    refresh_crl,
    refresh_delta_crl,
    revoke,
    set_delta_crl,
)

__all__ = [
    "BATCH_MAX",
    "DEFAULT_INTERMEDIATE_DAYS",
    "DEFAULT_ROOT_DAYS",
    "EXPORT_REASON_MAX",
    "PKCS12_MIN_PASSWORD",
    "POLICY_FIELDS",
    "SUBSCRIBER_FIELDS",
    "AlreadyRevoked",
    "BatchRequest",
    "CaMaterial",
    "CaUnavailable",
    "Enrollment",
    "ImportResult",
    "NewCsrNeeded",
    "PolicyRefused",
    "aia_url",
    "authorize",
    "build_crl",
    "build_delta_crl",
    "bundle_pem",
    "ca_chain",
    "ca_material",
    "check_reissue",
    "check_unique_ca_name",
    "clean_name",
    "complete_external",
    "create_internal_ca",
    "crl_url",
    "current_certificate",
    "current_crl",
    "current_delta_crl",
    "delete_ca",
    "delete_object",
    "delta_crl_url",
    "enroll",
    "export_pkcs12",
    "export_private_key",
    "generate_csr",
    "import_ca",
    "import_certificates",
    "issue",
    "issue_batch",
    "issue_from_csr",
    "note_issue_failure",
    "ocsp_url",
    "policy_of",
    "prune_crls",
    "record",
    "refresh_crl",
    "refresh_delta_crl",
    "reissue_ca",
    "reissue_candidates",
    "rename_ca",
    "renewal_plan",
    "retry_now",
    "revoke",
    "save_policy",
    "save_subscriber",
    "set_ca_status",
    "set_delta_crl",
    "set_name",
    "set_ocsp",
    "start_reissue",
    "upload_csr",
]
