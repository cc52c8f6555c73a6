"""PKI API shapes. No serializer here has a field for a CA's private key, and a certificate's or CSR's key
only ever leaves through the export endpoints (``private_key`` of PrivateKeySerializer / bundles)."""

from __future__ import annotations

from cryptography import x509 as cx509
from django.db import models
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent, build_choice_description_list
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from acmeca import services as acme_services
from acmeca.models import ACCOUNT_KEY_KINDS, AcmeAccount, AcmeSettings, ChallengeType
from acmeca.vendors import Vendor
from certmgr.api.mixins import OrganizationChoiceField
from certmgr.permissions import Action
from dnsproviders.models import AppConnection
from pki import services, x509
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

PEM_MAX = 200_000  # characters: a certificate with a long chain fits easily
NAME_MAX = 255
LIST_MAX = 100

KEY_USAGES = [(name, name.replace("_", " ").capitalize()) for name in x509.KEY_USAGE_NAMES]
SAN_TYPES = [("dns", "DNS name"), ("ip", "IP address"), ("email", "e-mail address"), ("uri", "URI")]


class EnumChoiceField(serializers.ChoiceField):
    """A choice field whose choice set is one named schema component (``enum_name``) wherever it is used.

    drf-spectacular otherwise names enums after the property, and fields such as ``status`` or ``source``
    mean different choice sets on different resources (a CA's status is not a certificate's)."""

    def __init__(self, choices, *, enum_name: str, **kwargs):
        self.enum_name = enum_name
        super().__init__(choices, **kwargs)


class EnumChoiceFieldExtension(OpenApiSerializerFieldExtension):
    target_class = EnumChoiceField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        choices = [(k, v) for k, v in field.choices.items() if k not in ("", None)]
        component = ResolvedComponent(
            name=field.enum_name,
            type=ResolvedComponent.SCHEMA,
            schema={
                "type": "string",
                "enum": [k for k, _ in choices],
                "description": build_choice_description_list(choices),
            },
            object=EnumChoiceField,
        )
        auto_schema.registry.register_on_missing(component)
        if field.allow_blank:
            return {"oneOf": [component.ref, {"type": "string", "enum": [""]}]}
        return component.ref


def key_algorithm_field(**kwargs) -> EnumChoiceField:
    return EnumChoiceField(KEY_ALGORITHMS, enum_name="KeyAlgorithmEnum", **kwargs)


class TenantPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A row id the caller may see (restrict VIEW); any other id is "does not exist", like a missing one.

    Same-organization checks are the services'."""

    def __init__(self, model: type[models.Model], **kwargs):
        self.model = model
        kwargs.setdefault("queryset", model.objects.none())
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        if request is None:
            return self.model.objects.none()
        return self.model.objects.restrict(request, Action.VIEW)

    def to_internal_value(self, data):
        if isinstance(data, int) and not isinstance(data, bool) and not 1 <= data < 2**63:
            self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(data)


def _pem_field(**kwargs) -> serializers.CharField:
    kwargs.setdefault("max_length", PEM_MAX)
    kwargs.setdefault("trim_whitespace", False)
    return serializers.CharField(**kwargs)


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
VENDOR_CHOICES = [(v.value, v.value) for v in Vendor]


def vendor_field(**kwargs) -> EnumChoiceField:
    return EnumChoiceField(VENDOR_CHOICES, enum_name="AcmeVendorEnum", **kwargs)


def challenge_type_field(**kwargs) -> EnumChoiceField:
    return EnumChoiceField(ChallengeType.choices, enum_name="AcmeChallengeTypeEnum", **kwargs)


def account_key_kind_field(**kwargs) -> EnumChoiceField:
    return EnumChoiceField(ACCOUNT_KEY_KINDS, enum_name="AcmeAccountKeyKindEnum", **kwargs)


class AcmeAccountRefSerializer(serializers.ModelSerializer):
    status = EnumChoiceField(AcmeAccount.Status.choices, enum_name="AcmeAccountStatusEnum", read_only=True)

    class Meta:
        model = AcmeAccount
        fields = ["id", "account_url", "status"]
        read_only_fields = fields


class AcmeCaSettingsSerializer(serializers.ModelSerializer):
    """An ACME CA's configuration as read back: the EAB HMAC key is never returned, only whether it is set."""

    vendor = vendor_field(read_only=True)
    challenge_type = challenge_type_field(read_only=True)
    dns_connection = serializers.IntegerField(source="dns_connection_id", read_only=True, allow_null=True)
    eab_hmac_key_set = serializers.SerializerMethodField()
    account = AcmeAccountRefSerializer(read_only=True, allow_null=True)

    class Meta:
        model = AcmeSettings
        # Every setting the service takes, except the HMAC key: it is never shown back.
        fields = [
            *(f for f in acme_services.SETTINGS_FIELDS if f != "eab_hmac_key"),
            "eab_hmac_key_set",
            "account",
        ]
        read_only_fields = fields

    def get_eab_hmac_key_set(self, obj) -> bool:
        # Lists annotate this (the key column stays deferred, nothing is decrypted); a lone row reads it.
        known = self.context.get("eab_hmac_key_set")
        return bool(obj.eab_hmac_key) if known is None else bool(known)


class CertificateAuthoritySerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    parent = serializers.IntegerField(source="parent_id", read_only=True, allow_null=True)
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
    acme = serializers.SerializerMethodField(help_text="The configuration of an ACME CA; null otherwise.")

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
            "acme",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_crl_url(self, obj) -> str | None:
        return services.crl_url(obj) if obj.is_internal else None

    def get_aia_url(self, obj) -> str | None:
        return services.aia_url(obj) if obj.is_internal else None

    @extend_schema_field(AcmeCaSettingsSerializer(allow_null=True))
    def get_acme(self, obj) -> dict | None:
        if obj.kind != CertificateAuthority.Kind.ACME:
            return None
        try:
            row = obj.acme
        except AcmeSettings.DoesNotExist:
            return None
        context = {"eab_hmac_key_set": getattr(obj, "acme_eab_hmac_key_set", None)}
        return AcmeCaSettingsSerializer(row, context=context).data


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
    parent = TenantPrimaryKeyRelatedField(
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
    certificate = _pem_field(help_text="The CA certificate (PEM).")
    private_key = _pem_field(
        write_only=True, help_text="Its private key (PEM, unencrypted). Stored encrypted, never returned."
    )


class AcmeCaSettingsWriteSerializer(serializers.Serializer):
    """An ACME CA's configuration as given on create and update. Shapes only: ``acmeca.services`` checks
    the combinations (preset URL, EAB pairs, dns-01 needs a connection) and registers the account."""

    vendor = vendor_field(help_text="A preset fills the directory URL; 'custom' needs directory_url.")
    directory_url = serializers.CharField(
        max_length=500, required=False, allow_blank=True, help_text="Required for 'custom'."
    )
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True)
    eab_kid = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="External account binding key id."
    )
    eab_hmac_key = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="External account binding HMAC key (base64url). Stored encrypted, never returned.",
    )
    dns_connection = TenantPrimaryKeyRelatedField(
        AppConnection, required=False, allow_null=True, help_text="App connection writing dns-01 records."
    )
    hosted_zone_id = serializers.CharField(
        max_length=255, required=False, allow_blank=True, help_text="Empty: found from the domain."
    )
    challenge_type = challenge_type_field(required=False)
    profile = serializers.CharField(max_length=64, required=False, allow_blank=True)
    preferred_chain = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="Issuer CN of the chain to prefer.",
    )
    tls_ca_bundle = _pem_field(
        required=False, allow_blank=True, help_text="PEM: the CA of the ACME server's HTTPS certificate."
    )
    direct_issuance = serializers.BooleanField(
        required=False, help_text="Allow certificates by names alone (POST /cas/{id}/issue/)."
    )
    propagation_timeout = serializers.IntegerField(min_value=5, max_value=3600, required=False)
    propagation_interval = serializers.FloatField(min_value=0.1, max_value=60, required=False)


class AcmeCaSettingsCreateSerializer(AcmeCaSettingsWriteSerializer):
    account_key_kind = account_key_kind_field(default="ec-p256", help_text="Kind of the account key.")


class AcmeCertificateAuthorityCreateSerializer(serializers.Serializer):
    """An external ACME CA: creating it registers the ACME account at the CA."""

    organization = OrganizationChoiceField()
    name = serializers.CharField(max_length=100)
    kind = EnumChoiceField([(CertificateAuthority.Kind.ACME, "External (ACME)")], enum_name="AcmeCaKindEnum")
    acme = AcmeCaSettingsCreateSerializer()


class CertificateAuthorityUpdateSerializer(serializers.Serializer):
    """What changes after creation: the name (every CA) and the ACME configuration (ACME CAs, partial)."""

    name = serializers.CharField(max_length=100, required=False)
    acme = AcmeCaSettingsWriteSerializer(
        required=False,
        help_text="ACME CAs only: the settings to change; omitted ones (and an omitted eab_hmac_key) "
        "keep their value. A new directory, EAB or TLS trust registers a new account.",
    )


class CrlSerializer(serializers.ModelSerializer):
    crl = serializers.SerializerMethodField(help_text="PEM")

    class Meta:
        model = Crl
        fields = ["id", "number", "this_update", "next_update", "crl"]
        read_only_fields = fields

    def get_crl(self, obj) -> str:
        return crl_pem(obj)


class SeedCrlSerializer(serializers.Serializer):
    """One CRL as the seed API returned it."""

    id = serializers.IntegerField()
    crl = serializers.CharField(help_text="PEM")


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
        validators = []  # uniqueness: the service answers 409


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
        validators = []


class SubscriberIssueSerializer(serializers.Serializer):
    csr = _pem_field(
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
    source = EnumChoiceField(CertificateRequest.Source.choices, enum_name="CsrSourceEnum", read_only=True)
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
    csr = _pem_field(required=False, help_text="Upload this PKCS#10 request (PEM).")
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
    source = EnumChoiceField(Certificate.Source.choices, enum_name="CertificateSourceEnum", read_only=True)
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


def parse_reason(value) -> str:
    try:
        return x509.RevocationReason.parse(value).value
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
    certificate = _pem_field(help_text="PEM; may hold the chain after the certificate.")
    chain = _pem_field(required=False, allow_blank=True, help_text="PEM: intermediates (and root).")
    private_key = _pem_field(
        required=False, allow_blank=True, write_only=True, help_text="PEM; kept (encrypted) if it matches."
    )
