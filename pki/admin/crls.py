"""The CRLs each CA published."""

from __future__ import annotations

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from certmgr.actors import as_actor
from certmgr.admin_base import (
    CappedCountPaginator,
    admin_link,
    datetime_text,
    download,
    filename,
)
from pki import x509
from pki.admin.base import ReadOnlyPkiAdmin, bulk_columns
from pki.admin.filters import (
    CaFilter,
    CrlOrganizationFilter,
)
from pki.models import (
    CertificateAuthority,
    Crl,
)


# --- CRLs ----------------------------------------------------------------------------------------------
@admin.register(Crl)
class CrlAdmin(ReadOnlyPkiAdmin):
    list_display = [
        "ca",
        "number",
        "delta",
        "anchor",
        "base_number",
        "entries",
        "this_update",
        "next_update",
        "current",
    ]
    list_filter = [CaFilter, CrlOrganizationFilter]
    list_select_related = ["ca", "ca__organization"]
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    change_form_template = "admin/pki/crl/change_form.html"
    detail_fields = [
        "ca_link",
        "number",
        "delta",
        "anchor",
        "base_number",
        "this_update",
        "next_update",
        "revoked_entries",
    ]

    def get_queryset(self, request):
        org_ids = as_actor(request).organization_ids(self.read_action)
        queryset = (
            Crl.objects.select_related("ca", "ca__organization")
            .defer("der", *bulk_columns(CertificateAuthority, "ca"))
            .order_by("-this_update", "-id")
        )
        return queryset if org_ids is None else queryset.filter(ca__organization_id__in=org_ids)

    def get_list_display(self, request):
        columns = list(self.list_display)
        if self.is_multi_org(request):
            columns.append("organization")
        return columns

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Organization")
    def organization(self, obj):
        return obj.ca.organization.name

    @admin.display(description="Current", boolean=True)
    def current(self, obj):
        """Before its nextUpdate: a relying party may still use it (what ``prune_crls`` keeps, besides
        anchors and what is served)."""
        return obj.next_update > timezone.now()

    @admin.display(description="CA")
    def ca_link(self, obj):
        return admin_link(obj.ca)

    @admin.display(description="Revoked certificates")
    def revoked_entries(self, obj):
        crl = cx509.load_der_x509_crl(bytes(obj.der))
        entries = list(crl)
        if not entries:
            return "none"
        rows = []
        for entry in entries[:500]:
            try:
                reason = entry.extensions.get_extension_for_class(cx509.CRLReason).value.reason.value
            except cx509.ExtensionNotFound:
                reason = "unspecified"
            rows.append(
                (
                    x509.serial_hex(entry.serial_number),
                    datetime_text(entry.revocation_date_utc),
                    reason,
                )
            )
        more = f" (first 500 of {len(entries)})" if len(entries) > 500 else ""
        return format_html(
            '<table class="pki-details"><tr><th>Serial</th><th>Revoked</th><th>Reason</th></tr>{}</table>{}',
            format_html_join("", "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>", rows),
            more,
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/download/<str:fmt>/", view(self.download_view), name="pki_crl_download"),
            *super().get_urls(),
        ]

    def download_view(self, request, pk, fmt):
        crl = self._object(request, pk)
        der = bytes(Crl.objects.values_list("der", flat=True).get(pk=crl.pk))
        base = f"{filename(crl.ca.name, f'ca-{crl.ca_id}')}-{crl.number}"
        if fmt == "der":
            return download(der, f"{base}.crl", "application/pkix-crl")
        if fmt == "pem":
            pem = cx509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
            return download(pem, f"{base}.pem")
        raise PermissionDenied
