"""What the ACME issuer adds to ``/api/v1/cas/``: an ``acme`` object on reads, creating an ACME CA
(``kind: "acme"``: the account is registered at the CA first) and changing its configuration (``PATCH``
with a partial ``acme`` object, in one transaction with a rename)."""

from __future__ import annotations

from django.db.models import BooleanField, ExpressionWrapper, Q
from rest_framework import serializers

from acmeca import services
from acmeca.api import serializers as s
from acmeca.api.errors import acme_ca_errors
from certmgr.actors import as_actor
from certmgr.api.mixins import resolve_organization
from pki.models import CertificateAuthority
from pki.querysets import CertificateAuthorityQuerySet

# The ACME configuration shown with an ACME CA (one join; the EAB HMAC key stays deferred).
READ_COLUMNS = tuple(
    f"acme__{field}"
    for field in (
        "id",
        "ca_id",
        # every setting the service takes; the EAB HMAC key stays deferred, foreign keys as ids
        *(f"{f}_id" if f == "dns_connection" else f for f in services.SETTINGS_FIELDS if f != "eab_hmac_key"),
        "account_id",
        "account__id",
        "account__account_url",
        "account__status",
    )
)


class AcmeCaApi:
    key = "acme"

    def create_serializer(self) -> type[serializers.Serializer]:
        return s.AcmeCertificateAuthorityCreateSerializer

    def create(self, request, data: dict) -> CertificateAuthority:
        org = resolve_organization(request, data.get("organization"))
        values = dict(data["acme"])
        key_kind = values.pop("account_key_kind", "ec-p256")
        with acme_ca_errors():
            return services.create_acme_ca(
                org, name=data["name"], actor=as_actor(request), account_key_kind=key_kind, **values
            )

    def update(
        self, ca: CertificateAuthority, request, values: dict | None, name: str | None
    ) -> CertificateAuthority:
        with acme_ca_errors():
            return services.update_acme_ca(ca, actor=as_actor(request), name=name, **dict(values or {}))

    def read_field(self) -> serializers.Field:
        return s.AcmeCaSettingsField()

    def update_field(self) -> serializers.Field:
        return s.AcmeCaSettingsWriteSerializer(
            required=False,
            help_text="ACME CAs only: the settings to change; omitted ones (and an omitted eab_hmac_key) "
            "keep their value. A new directory, EAB or TLS trust registers a new account.",
        )

    read_columns = READ_COLUMNS

    def prepare(self, queryset: CertificateAuthorityQuerySet) -> CertificateAuthorityQuerySet:
        return queryset.select_related("acme__account").annotate(
            acme_eab_hmac_key_set=ExpressionWrapper(Q(acme__eab_hmac_key__gt=""), BooleanField())
        )


CA_API = AcmeCaApi()
