"""PKI API shapes. No serializer here has a field for a CA's private key, and a certificate's or CSR's key
only ever leaves through the export endpoints (``private_key`` of PrivateKeySerializer / bundles)."""

from __future__ import annotations

from cryptography import x509 as cx509
from rest_framework import serializers

from certmgr.api.fields import EnumChoiceField, TenantPrimaryKeyRelatedField, pem_field
from certmgr.api.mixins import OrganizationChoiceField
from pki import issuers, services, x509
from pki.models import (
    KEY_ALGORITHMS,
    Certificate,
    CertificateAuthority,
    CertificateRequest,
    Crl,
    Policy,
    RevocationReason,
    Subscriber,
)

NAME_MAX = 255
LIST_MAX = 100

KEY_USAGES = [(name, name.replace("_", " ").capitalize()) for name in x509.KEY_USAGE_NAMES]
SAN_TYPES = [("dns", "DNS name"), ("ip", "IP address"), ("email", "e-mail address"), ("uri", "URI")]


def key_algorithm_field(**kwargs) -> EnumChoiceField:
    return EnumChoiceField(KEY_ALGORITHMS, enum_name="KeyAlgorithmEnum", **kwargs)


# --- subjects ---------------------------------------------------------------------------------------------
class SubjectSerializer(serializers.Serializer):
    """A distinguished name. Lengths and the country code are checked when the certificate is built."""

    common_name = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    organization = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    organizational_unit = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    country = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    state = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    locality = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)


class SubscriberSubjectSerializer(serializers.Serializer):
    """Subject fields besides the common name (which is the subscriber's ``common_name``)."""

    organization = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    organizational_unit = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    country = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    state = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    locality = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)


# --- certificate authorities ------------------------------------------------------------------------------
class CertificateAuthoritySerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    # A declared field (the serializer metaclass moves it into _declared_fields); django-stubs reads it
    # as overriding Field.parent. The same holds for the fields named parent and source below.
    parent = serializers.IntegerField(source="parent_id", read_only=True, allow_null=True)  # type: ignore[assignment]
    subject = SubjectSerializer(read_only=True)
    kind = EnumChoiceField(CertificateAuthority.Kind.choices, enum_name="CaKindEnum", read_only=True)
    status = EnumChoiceField(CertificateAuthority.Status.choices, enum_name="CaStatusEnum", read_only=True)
    key_algorithm = key_algorithm_field(read_only=True, allow_blank=True)
    certificate = serializers.CharField(source="certificate_pem", read_only=True, help_text="PEM")
    chain = serializers.CharField(
        source="chain_pem", read_only=True, help_text="PEM: the issuers of an imported intermediate, if any"
    )
    crl_url = serializers.SerializerMethodField(
        help_text="CRL distribution point of the certificates it issues."
    )
    aia_url = serializers.SerializerMethodField(help_text="AIA caIssuers URL of the certificates it issues.")
    ocsp_url = serializers.SerializerMethodField(
        help_text="Its OCSP responder, in the AIA of certificates issued while OCSP is on; null when off."
    )
    delta_crl_url = serializers.SerializerMethodField(
        help_text="Its current delta CRL (DER; .pem beside it), the Freshest CRL of certificates issued "
        "while delta CRLs are on; null when off."
    )

    class Meta:
        model = CertificateAuthority
        fields = [
            "id",
            "organization",
            "name",
            "kind",
            "status",
            "parent",
            "subject",
            "subject_dn",
            "key_algorithm",
            "max_path_length",
            "certificate",
            "chain",
            "serial",
            "not_before",
            "not_after",
            "imported",
            "crl_url",
            "aia_url",
            "ocsp_enabled",
            "ocsp_nonce_on_demand",
            "ocsp_url",
            "delta_crl_enabled",
            "delta_crl_url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_fields(self):
        # Each issuer backend's configuration of its CAs, nested under its key (e.g. "acme"; null for others).
        fields = super().get_fields()
        for api in issuer_apis():
            fields[api.key] = api.read_field()
        return fields

    def get_crl_url(self, obj) -> str | None:
        return services.crl_url(obj) if obj.is_internal else None

    def get_aia_url(self, obj) -> str | None:
        return services.aia_url(obj) if obj.is_internal else None

    def get_ocsp_url(self, obj) -> str | None:
        return services.ocsp_url(obj) if obj.is_internal and obj.ocsp_enabled else None

    def get_delta_crl_url(self, obj) -> str | None:
        return services.delta_crl_url(obj) if obj.is_internal and obj.delta_crl_enabled else None


class CertificateAuthorityCreateSerializer(serializers.Serializer):
    organization = OrganizationChoiceField()
    name = serializers.CharField(max_length=100)
    kind = EnumChoiceField(
        [
            (k, v)
            for k, v in CertificateAuthority.Kind.choices
            if k in (CertificateAuthority.Kind.INTERNAL_ROOT, CertificateAuthority.Kind.INTERNAL_INTERMEDIATE)
        ],
        enum_name="InternalCaKindEnum",
    )
    parent = TenantPrimaryKeyRelatedField(  # type: ignore[assignment]  # a declared field, see above
        CertificateAuthority, required=False, allow_null=True, help_text="The issuing CA of an intermediate."
    )
    subject = SubjectSerializer(help_text="common_name is required.")
    key_algorithm = key_algorithm_field(default="ec-p256")
    validity_days = serializers.IntegerField(
        min_value=1,
        max_value=36500,
        required=False,
        help_text="Default: 3650 days for a root; for an intermediate 1825, cut to end before its parent.",
    )
    max_path_length = serializers.IntegerField(min_value=0, max_value=32767, required=False, allow_null=True)


class CertificateAuthorityImportSerializer(serializers.Serializer):
    organization = OrganizationChoiceField()
    name = serializers.CharField(max_length=100)
    certificate = pem_field(help_text="The CA certificate (PEM).")
    private_key = pem_field(
        write_only=True, help_text="Its private key (PEM, unencrypted). Stored encrypted, never returned."
    )


class CertificateAuthorityUpdateSerializer(serializers.Serializer):
    """What changes after creation: the name (every CA) and the configuration its issuer backend keeps
    (e.g. ``acme`` for ACME CAs, partial)."""

    name = serializers.CharField(max_length=100, required=False)
    ocsp_enabled = serializers.BooleanField(
        required=False, help_text="Private CAs: answer OCSP; certificates issued afterwards carry the URL."
    )
    ocsp_nonce_on_demand = serializers.BooleanField(
        required=False, help_text="Private CAs: sign a fresh response echoing a request's nonce."
    )
    delta_crl_enabled = serializers.BooleanField(
        required=False,
        help_text="Private CAs: publish delta CRLs (rebuilt on each revocation; the full CRL on its "
        "schedule); off: each revocation rebuilds the full CRL.",
    )

    def get_fields(self):
        fields = super().get_fields()
        for api in issuer_apis():
            fields[api.key] = api.update_field()
        return fields


def issuer_apis() -> list:
    """The API extensions of the registered issuer backends (``pki.issuers.CaApiExtension``)."""
    return [backend.api for backend in issuers.backends() if backend.api is not None]


class CrlSerializer(serializers.ModelSerializer):
    crl = serializers.SerializerMethodField(help_text="PEM")
    anchor = serializers.BooleanField(
        read_only=True,
        help_text="Full CRLs built by the schedule, Publish CRL or a delta CRL setting change: the base "
        "delta CRLs name. A revocation's full CRLs are not anchors.",
    )
    base_number = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="Delta CRLs: the number of the anchor full CRL it completes (any full CRL numbered at or "
        "above it completes it too).",
    )
    entries = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Revoked certificates listed (null: not counted)."
    )

    class Meta:
        model = Crl
        fields = [
            "id", "number", "delta", "anchor", "base_number", "entries", "this_update", "next_update", "crl",
        ]  # fmt: skip
        read_only_fields = fields

    def get_crl(self, obj) -> str:
        return crl_pem(obj)


class SeedCrlSerializer(serializers.Serializer):
    """The CA's current full CRL or its current delta CRL, with the public URL that serves it."""

    id = serializers.IntegerField()
    number = serializers.IntegerField()
    delta = serializers.BooleanField()
    anchor = serializers.BooleanField(help_text="A full CRL the schedule built, which delta CRLs name.")
    base_number = serializers.IntegerField(
        allow_null=True,
        help_text="Delta CRLs: the number of the anchor full CRL it completes (the full CRL listed beside "
        "it, numbered at or above it, completes it too).",
    )
    this_update = serializers.DateTimeField()
    next_update = serializers.DateTimeField()
    entries = serializers.IntegerField(allow_null=True, help_text="Revoked certificates listed.")
    url = serializers.CharField(help_text="Where relying parties fetch it (DER; .pem beside it).")
    crl = serializers.CharField(help_text="PEM")


def seed_crl(crl: Crl, ca: CertificateAuthority) -> dict:
    return {
        "id": crl.pk,
        "number": crl.number,
        "delta": crl.delta,
        "anchor": crl.anchor,
        "base_number": crl.base_number,
        "this_update": crl.this_update,
        "next_update": crl.next_update,
        "entries": crl.entries,
        "url": services.delta_crl_url(ca) if crl.delta else services.crl_url(ca),
        "crl": crl_pem(crl),
    }


def crl_pem(crl: Crl) -> str:
    return x509.to_pem(cx509.load_der_x509_crl(bytes(crl.der)))


# --- policies ---------------------------------------------------------------------------------------------
def _string_list(max_length: int = NAME_MAX, **kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=max_length), max_length=LIST_MAX, required=False, **kwargs
    )


def _choice_list(choices, enum_name: str, **kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=EnumChoiceField(choices, enum_name=enum_name), max_length=LIST_MAX, required=False, **kwargs
    )


class PolicySerializer(serializers.ModelSerializer):
    organization = OrganizationChoiceField(source="organization_id")
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    common_name_patterns = _string_list(
        500, help_text="'example.com' (exact), '*.example.com' (any name below), '~regex' (full match)."
    )
    san_patterns = _string_list(500, help_text="As common_name_patterns.")
    allowed_san_types = _choice_list(SAN_TYPES, "SanTypeEnum", help_text="Empty: all.")
    allowed_key_algorithms = _choice_list(KEY_ALGORITHMS, "KeyAlgorithmEnum", help_text="Empty: all.")
    max_validity_days = serializers.IntegerField(
        min_value=1, max_value=36500, required=False, allow_null=True
    )
    key_usages = _choice_list(KEY_USAGES, "KeyUsageEnum", help_text="Allowed key usages; empty: any.")
    extended_key_usages = _string_list(
        200, help_text=f"Allowed EKUs ({', '.join(x509.EXTENDED_KEY_USAGES)} or a dotted OID); empty: any."
    )

    class Meta:
        model = Policy
        # What the service lets a caller set, so the API cannot drift from it.
        fields = ["id", "organization", *services.POLICY_FIELDS, "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
        validators: list[object] = []  # uniqueness: the service answers 409


# --- subscribers ------------------------------------------------------------------------------------------
class SubscriberSerializer(serializers.ModelSerializer):
    organization = OrganizationChoiceField(source="organization_id")
    issuer_type = EnumChoiceField(Subscriber.IssuerType.choices, enum_name="IssuerTypeEnum", default="ca")
    ca = TenantPrimaryKeyRelatedField(
        CertificateAuthority, required=False, allow_null=True, help_text="Issuing CA (issuer type 'ca')."
    )
    policy = TenantPrimaryKeyRelatedField(Policy, required=False, allow_null=True)
    common_name = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    sans = _string_list(help_text="DNS names, IP addresses, e-mail addresses, URIs.")
    subject = SubscriberSubjectSerializer(required=False)
    key_algorithm = key_algorithm_field(default="ec-p256")
    validity_days = serializers.IntegerField(min_value=1, max_value=36500, default=90)
    key_usages = _choice_list(KEY_USAGES, "KeyUsageEnum")
    extended_key_usages = _string_list(
        200, help_text=f"{', '.join(x509.EXTENDED_KEY_USAGES)} or a dotted OID."
    )
    renew_before_days = serializers.IntegerField(
        min_value=0, max_value=36500, required=False, allow_null=True
    )

    class Meta:
        model = Subscriber
        fields = [
            "id",
            "organization",
            *services.SUBSCRIBER_FIELDS,
            "last_operation_status",
            "last_operation_message",
            "last_operation_at",
            "renewal_failures",
            "last_error_category",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "last_operation_status",
            "last_operation_message",
            "last_operation_at",
            "renewal_failures",
            "last_error_category",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ]
        validators: list[object] = []


class DirectIssueSerializer(serializers.Serializer):
    names = serializers.ListField(
        child=serializers.CharField(max_length=NAME_MAX),
        min_length=1,
        max_length=LIST_MAX,
        help_text="Names to certify (what the CA accepts: an ACME CA with http-01 also takes IP addresses).",
    )
    key_algorithm = key_algorithm_field(default="ec-p256", help_text="Key made here (ignored with a CSR).")
    csr = pem_field(
        required=False,
        allow_blank=True,
        help_text="A PKCS#10 request (PEM) asking for exactly these names; then no key is stored.",
    )


class SubscriberIssueSerializer(serializers.Serializer):
    csr = pem_field(
        required=False,
        allow_blank=True,
        help_text="A PKCS#10 request (PEM). Without it a key is generated here and kept encrypted.",
    )


class LatestBundleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    serial = serializers.CharField()
    not_after = serializers.DateTimeField()
    certificate = serializers.CharField(help_text="PEM")
    chain = serializers.CharField(help_text="PEM, issuer first")
    private_key = serializers.CharField(
        required=False, help_text="PEM; only for callers who may export keys (operators), audited."
    )


# --- CSRs -------------------------------------------------------------------------------------------------
class CertificateRequestSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    source = EnumChoiceField(CertificateRequest.Source.choices, enum_name="CsrSourceEnum", read_only=True)  # type: ignore[assignment]
    csr = serializers.CharField(source="csr_pem", read_only=True, help_text="PEM")
    key_algorithm = key_algorithm_field(read_only=True)
    has_private_key = serializers.SerializerMethodField()

    class Meta:
        model = CertificateRequest
        fields = [
            "id",
            "organization",
            "name",
            "source",
            "csr",
            "common_name",
            "sans",
            "subject_dn",
            "key_algorithm",
            "has_private_key",
            "created_at",
        ]
        read_only_fields = fields

    def get_has_private_key(self, obj) -> bool:
        return _has_key(obj)


class CertificateRequestCreateSerializer(serializers.Serializer):
    """Either ``csr`` (upload) or ``common_name``/``sans`` (generate a key and a CSR here)."""

    organization = OrganizationChoiceField()
    name = serializers.CharField(max_length=100)
    csr = pem_field(required=False, help_text="Upload this PKCS#10 request (PEM).")
    common_name = serializers.CharField(max_length=NAME_MAX, required=False, allow_blank=True)
    sans = _string_list()
    subject = SubscriberSubjectSerializer(required=False)
    key_algorithm = key_algorithm_field(default="ec-p256")

    def validate_sans(self, value: list[str]) -> list[str]:
        try:  # checked here so that the error names this field (generate_csr reports it under "subject")
            x509.parse_sans(value)
        except x509.X509Error as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value

    def validate(self, attrs):
        if attrs.get("csr"):
            extra = [f for f in ("common_name", "sans", "subject") if attrs.get(f)]
            if extra:
                raise serializers.ValidationError(
                    {f: ["Leave empty when uploading a CSR: the CSR says it."] for f in extra}
                )
        elif not attrs.get("common_name") and not attrs.get("sans"):
            raise serializers.ValidationError(
                {"csr": ["Upload a CSR, or give a common_name or sans to generate one here."]}
            )
        return attrs


class CsrIssueSerializer(serializers.Serializer):
    subscriber = TenantPrimaryKeyRelatedField(
        Subscriber, help_text="The subscriber whose CA, policy and validity apply."
    )


# --- certificates -----------------------------------------------------------------------------------------
def _has_key(obj) -> bool:
    annotated = getattr(obj, "has_private_key", None)
    if annotated is not None:
        return bool(annotated)
    return bool(obj.private_key)


class CertificateSerializer(serializers.ModelSerializer):
    """The inventory row. Never the private key: ``has_private_key`` tells whether certmgr holds one."""

    organization = serializers.IntegerField(source="organization_id", read_only=True)
    status = EnumChoiceField(Certificate.Status.choices, enum_name="CertificateStatusEnum", read_only=True)
    source = EnumChoiceField(Certificate.Source.choices, enum_name="CertificateSourceEnum", read_only=True)  # type: ignore[assignment]
    key_algorithm = key_algorithm_field(read_only=True)
    revocation_reason = EnumChoiceField(
        RevocationReason.choices, enum_name="RevocationReasonEnum", read_only=True, allow_blank=True
    )
    ca = serializers.IntegerField(source="ca_id", read_only=True, allow_null=True)
    ca_name = serializers.SerializerMethodField()
    subscriber = serializers.IntegerField(source="subscriber_id", read_only=True, allow_null=True)
    subscriber_name = serializers.SerializerMethodField()
    renewed_from = serializers.IntegerField(source="renewed_from_id", read_only=True, allow_null=True)
    renewed_by = serializers.SerializerMethodField()
    has_private_key = serializers.SerializerMethodField()
    deployment_state = EnumChoiceField(
        Certificate.DeploymentState.choices,
        enum_name="CertificateDeploymentStateEnum",
        read_only=True,
        help_text="none: no sync destination; deploying: some destination has not confirmed its serial yet; "
        "deployed: every destination did (deployed_at: the last); failed: a destination failed for good.",
    )
    deployment_destinations = serializers.IntegerField(source="deployment_targets", read_only=True)
    deployment_confirmed = serializers.IntegerField(read_only=True)

    class Meta:
        model = Certificate
        fields = [
            "id",
            "organization",
            "serial",
            "common_name",
            "sans",
            "subject_dn",
            "issuer_dn",
            "status",
            "source",
            "not_before",
            "not_after",
            "ca",
            "ca_name",
            "subscriber",
            "subscriber_name",
            "fingerprint_sha256",
            "fingerprint_sha1",
            "key_algorithm",
            "revoked_at",
            "revocation_reason",
            "renewed_from",
            "renewed_by",
            "next_renewal_at",
            "has_private_key",
            "deployment_state",
            "deployment_destinations",
            "deployment_confirmed",
            "deployed_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_ca_name(self, obj) -> str | None:
        return obj.ca.name if obj.ca_id else None

    def get_subscriber_name(self, obj) -> str | None:
        return obj.subscriber.name if obj.subscriber_id else None

    def get_renewed_by(self, obj) -> int | None:
        if hasattr(obj, "renewed_by_pk"):
            return obj.renewed_by_pk
        return Certificate.objects.filter(renewed_from=obj).values_list("pk", flat=True).first()

    def get_has_private_key(self, obj) -> bool:
        return _has_key(obj)


class CertificateDetailSerializer(CertificateSerializer):
    certificate = serializers.CharField(source="certificate_pem", read_only=True, help_text="PEM")
    chain = serializers.CharField(source="chain_pem", read_only=True, help_text="PEM, issuer first")

    class Meta(CertificateSerializer.Meta):
        fields = [*CertificateSerializer.Meta.fields, "certificate", "chain"]
        read_only_fields = fields


class BundleSerializer(serializers.Serializer):
    certificate = serializers.CharField(help_text="PEM")
    chain = serializers.CharField(help_text="PEM, issuer first (may be empty)")
    bundle = serializers.CharField(help_text="certificate followed by the chain, PEM; never the key")
    private_key = serializers.CharField(
        required=False, help_text="PEM; only with ?include_key=true, for operators, audited."
    )


class PrivateKeySerializer(serializers.Serializer):
    private_key = serializers.CharField(help_text="PEM (PKCS#8, unencrypted)")


class Pkcs12Serializer(serializers.Serializer):
    password = serializers.CharField(
        max_length=1024, trim_whitespace=False, write_only=True, help_text="At least 12 characters."
    )
    alias = serializers.CharField(max_length=64, required=False, allow_blank=True)
    reason = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="Why the key is exported; kept in the audit event (also accepted as ?reason=).",
    )


def parse_reason(value) -> str:
    try:
        return x509.parse_revocation_reason(value).value
    except x509.X509Error as exc:
        raise serializers.ValidationError(str(exc)) from None


class RevokeSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=64,
        default=RevocationReason.UNSPECIFIED.value,
        help_text=f"RFC 5280 reason: {', '.join(RevocationReason.values)} "
        "(the seed API's names such as KEY_COMPROMISE are accepted too).",
    )

    def validate_reason(self, value: str) -> str:
        return parse_reason(value)


class ReissueSerializer(serializers.Serializer):
    to_ca = TenantPrimaryKeyRelatedField(
        CertificateAuthority,
        required=False,
        allow_null=True,
        help_text="Move every subscriber to this CA (same organization, active) and issue from it.",
    )
    revoke_reason = serializers.CharField(
        max_length=64,
        required=False,
        allow_null=True,
        default=None,
        help_text="Revoke each replaced certificate once its successor exists, with this RFC 5280 reason.",
    )

    def validate_revoke_reason(self, value: str | None) -> str | None:
        return parse_reason(value) if value else None


class ReissueStartedSerializer(serializers.Serializer):
    status = serializers.CharField(help_text='"started": a worker re-issues the certificates.')
    certificates = serializers.IntegerField(help_text="Current subscriber certificates to replace.")
    result = serializers.CharField(help_text="Where the result is recorded: the audit action.")


class SeedRevokeSerializer(serializers.Serializer):
    revocationReason = serializers.CharField(
        max_length=64, default="UNSPECIFIED", help_text="UNSPECIFIED, KEY_COMPROMISE, CA_COMPROMISE, ..."
    )

    def validate_revocationReason(self, value: str) -> str:
        return parse_reason(value)


class SeedRevokeResultSerializer(serializers.Serializer):
    message = serializers.CharField()
    serialNumber = serializers.CharField()
    revokedAt = serializers.DateTimeField()


class CertificateImportSerializer(serializers.Serializer):
    organization = OrganizationChoiceField()
    certificate = pem_field(help_text="PEM; may hold the chain after the certificate.")
    chain = pem_field(required=False, allow_blank=True, help_text="PEM: intermediates (and root).")
    private_key = pem_field(
        required=False, allow_blank=True, write_only=True, help_text="PEM; kept (encrypted) if it matches."
    )
