"""The base of every PKI screen: ``ServiceAdmin`` (certmgr) plus the PKI's own choices (CAs, policies)."""

from __future__ import annotations

from certmgr.admin_base import (  # noqa: F401  (re-exported for the PKI screens and other apps)
    ACTION_LIMIT,
    COUNT_CAP,
    CappedCountPaginator,
    ReadOnlyAdmin,
    ServiceAdmin,
)
from certmgr.permissions import Action
from pki.models import Certificate, CertificateAuthority, Policy

# The columns a list naming CAs or certificates never needs: PEM and keys (large, and keys are decrypted).
_BULK = {
    CertificateAuthority: ("private_key", "certificate_pem", "chain_pem"),
    Certificate: ("private_key", "certificate_pem", "chain_pem", "csr_pem"),
}


def bulk_columns(model: type[CertificateAuthority | Certificate], via: str) -> tuple[str, ...]:
    """``defer()``'s arguments that leave out ``model``'s PEM and key columns, reached through ``via``."""
    return tuple(f"{via}__{column}" for column in _BULK[model])


class PkiAdmin(ServiceAdmin):
    """Choices of CAs and policies offer only the rows the viewer may manage."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        restricted = {
            "ca": CertificateAuthority.objects.restrict(request, Action.MANAGE),
            "parent": CertificateAuthority.objects.restrict(request, Action.MANAGE).internal(),
            "policy": Policy.objects.restrict(request, Action.MANAGE),
        }
        if db_field.name in restricted:
            queryset = restricted[db_field.name].select_related("organization").order_by("name")
            kwargs["queryset"] = (
                queryset.defer("private_key", "certificate_pem") if db_field.name != "policy" else queryset
            )
            field = super().formfield_for_foreignkey(db_field, request, **kwargs)
            if self.is_multi_org(request):
                field.label_from_instance = lambda o: f"{o.name} ({o.organization.name})"
            return field
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ReadOnlyPkiAdmin(ReadOnlyAdmin, PkiAdmin):
    """Rows no form edits: the detail page shows ``detail_fieldsets`` (or ``detail_fields``) read-only."""
