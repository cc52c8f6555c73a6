"""The certificate authority screens: list, create, import, detail, downloads, CRL refresh."""

from __future__ import annotations

from urllib.parse import urlencode

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from certmgr import errors
from certmgr.actors import as_actor
from certmgr.admin_base import (
    OrganizationFilter,
    admin_link,
    apply_service_errors,
    badge,
    datetime_text,
    download,
    filename,
)
from pki import forms as pki_forms
from pki import issuers, services, x509
from pki.admin.base import PkiAdmin
from pki.admin.rendering import STATUS_COLORS, colon_hex, pem_block, x509_details
from pki.ca_counts import EXPIRING_DAYS, RECENT_DAYS, CaCounts, counts_by_ca
from pki.issuers import CaAdminExtension
from pki.models import (
    Certificate,
    CertificateAuthority,
)


def _certificate_links(ca_id: int) -> dict[str, str]:
    """The certificate list filtered to what each count counts."""
    base = reverse("admin:pki_certificate_changelist")
    return {
        "all": f"{base}?{urlencode({'ca': ca_id})}",
        "active": f"{base}?{urlencode({'ca': ca_id, 'status__exact': 'active'})}",
        "expiring": f"{base}?{urlencode({'ca': ca_id, 'expiring_within': EXPIRING_DAYS})}",
        "revoked": f"{base}?{urlencode({'ca': ca_id, 'status__exact': 'revoked'})}",
    }


@admin.register(CertificateAuthority)
class CertificateAuthorityAdmin(PkiAdmin):
    form = pki_forms.CaCreateForm
    list_display = [
        "name",
        "kind",
        "status_badge",
        "subject_display",
        "not_after",
        "key_algorithm",
        "organization",
    ]
    list_filter = ["kind", "status", OrganizationFilter]
    search_fields = ["name", "subject_dn", "serial"]
    list_select_related = ["organization"]
    actions = ["disable_cas", "enable_cas", "refresh_crls"]
    change_form_template = "admin/pki/certificateauthority/change_form.html"

    detail_fields = [
        "name",
        "organization",
        "kind",
        "status_badge",
        "parent_link",
        "imported",
        "subject_display",
        "serial_display",
        "key_algorithm",
        "path_length_display",
        "not_before",
        "not_after",
        "fingerprint_display",
        "details",
        "certificate_pem_display",
        "usage_display",
        "crl_display",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("private_key")

    def detail_queryset(self, request):
        return (
            self.get_queryset(request)
            .select_related("organization", "parent")
            .defer("parent__private_key", "parent__certificate_pem")
        )

    def has_change_permission(self, request, obj=None):
        return False  # a CA's certificate and key do not change; disable / enable / delete are actions

    def get_fieldsets(self, request, obj=None):
        extension = _issuer_admin(obj)
        if extension is not None:
            return extension.fieldsets(obj)
        if obj is None:
            return [
                (None, {"fields": ["organization", "name", "kind", "parent"]}),
                (
                    "Subject",
                    {
                        "fields": [
                            "subject_common_name",
                            "subject_organization",
                            "subject_organizational_unit",
                            "subject_country",
                            "subject_state",
                            "subject_locality",
                        ]
                    },
                ),
                ("Key and validity", {"fields": ["key_algorithm", "validity_days", "max_path_length"]}),
                ("Revocation status", {"fields": ["ocsp_enabled", "delta_crl_enabled"]}),
            ]
        return [
            (None, {"fields": ["name", "organization", "kind", "status_badge", "parent_link", "imported"]}),
            (
                "Certificate",
                {
                    "fields": [
                        "subject_display",
                        "serial_display",
                        "key_algorithm",
                        "path_length_display",
                        "not_before",
                        "not_after",
                        "fingerprint_display",
                        "details",
                    ]
                },
            ),
            ("PEM", {"fields": ["certificate_pem_display"]}),
            ("In use", {"fields": ["usage_display", "crl_display", "ocsp_display"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        extension = _issuer_admin(obj)
        return [*self.detail_fields, *(extension.readonly_fields() if extension is not None else [])]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        response = super().render_change_form(request, context, add, change, form_url, obj)
        extension = _issuer_admin(obj)
        if extension is not None and extension.change_form_template:
            response.template_name = extension.change_form_template
        return response

    def changelist_view(self, request, extra_context=None):
        # Each issuer that registers CAs its own way offers its button next to "Import CA".
        links = [
            (label, reverse(name), css) for ext in _issuer_admins() for label, name, css in ext.add_links()
        ]
        return super().changelist_view(request, {"issuer_add_links": links, **(extra_context or {})})

    # --- columns and details -----------------------------------------------------------------------
    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.get_status_display(), STATUS_COLORS.get(obj.status, "#555"))

    @admin.display(description="Subject", ordering="subject_dn")
    def subject_display(self, obj):
        return obj.subject_dn

    @admin.display(description="Parent CA")
    def parent_link(self, obj):
        return admin_link(obj.parent) if obj.parent_id else "— (root)"

    @admin.display(description="Serial")
    def serial_display(self, obj):
        return format_html("<code>{}</code>", colon_hex(obj.serial)) if obj.serial else "—"

    @admin.display(description="Max path length")
    def path_length_display(self, obj):
        return "no limit" if obj.max_path_length is None else obj.max_path_length

    @admin.display(description="SHA-256 fingerprint")
    def fingerprint_display(self, obj):
        if not obj.certificate_pem:
            return "—"
        cert = cx509.load_pem_x509_certificate(obj.certificate_pem.encode())
        return format_html("<code>{}</code>", x509.fingerprints(cert).sha256)

    @admin.display(description="Extensions")
    def details(self, obj):
        return x509_details(obj.certificate_pem) if obj.certificate_pem else "—"

    @admin.display(description="Certificate (PEM)")
    def certificate_pem_display(self, obj):
        return pem_block(obj.certificate_pem)

    @admin.display(description="Issued from it")
    def usage_display(self, obj):
        certs_url = reverse("admin:pki_certificate_changelist") + f"?ca={obj.pk}"
        has_certs = obj.certificates.exists()
        children = list(obj.children.order_by("name").only("id", "name")[:20])
        subscribers = obj.subscribers.count()
        return format_html(
            '<a href="{}">{}</a><br>Subordinate CAs: {}<br>Subscribers: {}',
            certs_url,
            "Certificates of this CA" if has_certs else "No certificates yet",
            format_html_join(", ", "{}", ((admin_link(c),) for c in children)) if children else "none",
            subscribers,
        )

    @admin.display(description="CRL")
    def crl_display(self, obj):
        if not obj.is_internal:
            return "—"
        fields = ("number", "this_update", "next_update", "base_number", "anchor")
        latest = obj.crls.filter(delta=False).order_by("-number").only(*fields).first()
        public = services.crl_url(obj)
        listing = reverse("admin:pki_crl_changelist") + f"?ca={obj.pk}"
        if obj.delta_crl_enabled:
            delta = obj.crls.filter(delta=True).order_by("-number").only(*fields).first()
            deltas = format_html(
                "<br>Delta CRLs on (each revocation publishes a full CRL and a delta CRL of the anchor, the "
                "full CRL the schedule builds): {} · public URL <code>{}</code>",
                f"number {delta.number} of anchor {delta.base_number}, next update "
                f"{datetime_text(delta.next_update)}"
                if delta is not None
                else "none yet (built on first request)",
                services.delta_crl_url(obj),
            )
        else:
            deltas = mark_safe("<br>Delta CRLs off: each revocation publishes a full CRL")
        if latest is None:
            return format_html("None yet (built on first request at <code>{}</code>){}", public, deltas)
        return format_html(
            'Number {}{}, next update {} · <a href="{}">all CRLs</a> · public URL <code>{}</code>{}',
            latest.number,
            " (anchor)" if latest.anchor else " (a revocation's)",
            datetime_text(latest.next_update),
            listing,
            public,
            deltas,
        )

    @admin.display(description="OCSP")
    def ocsp_display(self, obj):
        if not obj.is_internal:
            return "—"
        if not obj.ocsp_enabled:
            return "Off: certificates carry no OCSP URL and the responder answers unauthorized"
        nonce = "nonces signed on demand" if obj.ocsp_nonce_on_demand else "nonces ignored (pre-signed)"
        return format_html(
            "On at <code>{}</code> · {} pre-signed responses · {}",
            services.ocsp_url(obj),
            obj.ocsp_responses.count(),
            nonce,
        )

    def change_form_extra(self, request, obj):
        certificates = Certificate.objects.restrict(request).filter(ca=obj)
        return {
            **super().change_form_extra(request, obj),
            "is_active": obj.status == CertificateAuthority.Status.ACTIVE,
            "ca_counts": counts_by_ca(certificates, now=timezone.now()).get(obj.pk, CaCounts()),
            "ca_count_links": _certificate_links(obj.pk),
            "expiring_days": EXPIRING_DAYS,
            "recent_days": RECENT_DAYS,
        }

    def hierarchy_view(self, request):
        """Roots, their intermediates below them, and each CA's certificate counts (one query for all)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        cas = list(
            self.get_queryset(request)
            .select_related("organization")
            .defer("certificate_pem", "chain_pem")
            .order_by("organization__name", "name")
        )
        counts = counts_by_ca(Certificate.objects.restrict(request), now=timezone.now())
        visible = {ca.pk for ca in cas}
        children: dict[int | None, list[CertificateAuthority]] = {}
        for ca in cas:  # a CA whose parent the viewer cannot see is shown as a root
            children.setdefault(ca.parent_id if ca.parent_id in visible else None, []).append(ca)

        def nodes(parent_id: int | None, depth: int) -> list[dict]:
            return [
                {
                    "ca": ca,
                    "depth": depth,
                    "counts": counts.get(ca.pk, CaCounts()),
                    "links": _certificate_links(ca.pk),
                    "status": self.status_badge(ca),
                    "children": nodes(ca.pk, depth + 1) if depth < 10 else [],
                }
                for ca in children.get(parent_id, [])
            ]

        context = {
            **self.admin_site.each_context(request),
            "title": "CA hierarchy",
            "opts": self.opts,
            "tree": nodes(None, 0),
            "expiring_days": EXPIRING_DAYS,
            "recent_days": RECENT_DAYS,
        }
        return TemplateResponse(request, "admin/pki/certificateauthority/hierarchy.html", context)

    def delete_warnings(self, obj):
        reasons = []
        if obj.certificates.exists():
            reasons.append("it has issued certificates")
        if obj.children.exists():
            reasons.append("it has subordinate CAs")
        if obj.subscribers.exists():
            reasons.append("subscribers issue from it")
        reasons += issuers.backend_for(obj).delete_blockers(obj)
        if not reasons:
            return []
        return [
            f"This CA cannot be deleted: {', '.join(reasons)}. Disable it instead (a disabled CA issues "
            "nothing; its CRL keeps being served)."
        ]

    # --- saving through the services ----------------------------------------------------------------
    def create(self, request, obj, form):
        data = form.cleaned_data
        return services.create_internal_ca(
            data["organization"],
            name=data["name"],
            kind=data["kind"],
            subject=form.subject_dict(),
            key_algorithm=data["key_algorithm"],
            validity_days=data.get("validity_days"),
            max_path_length=data.get("max_path_length"),
            ocsp_enabled=bool(data.get("ocsp_enabled")),
            delta_crl_enabled=bool(data.get("delta_crl_enabled")),
            parent=data.get("parent")
            if data["kind"] == CertificateAuthority.Kind.INTERNAL_INTERMEDIATE
            else None,
            actor=as_actor(request),
        )

    def remove(self, request, obj):
        services.delete_ca(obj, actor=as_actor(request))

    # --- actions -------------------------------------------------------------------------------------
    def _set_status(self, request, cas, status):
        done = [ca.name for ca in cas if self._call(request, services.set_ca_status, ca, status) is not None]
        if done:
            verb = "Enabled" if status == CertificateAuthority.Status.ACTIVE else "Disabled"
            self.message_user(request, f"{verb}: {', '.join(done)}.", messages.SUCCESS)

    @admin.action(description="Disable selected CAs (they issue nothing)", permissions=["manage"])
    def disable_cas(self, request, queryset):
        self._set_status(request, queryset, CertificateAuthority.Status.DISABLED)

    @admin.action(description="Enable selected CAs", permissions=["manage"])
    def enable_cas(self, request, queryset):
        self._set_status(request, queryset, CertificateAuthority.Status.ACTIVE)

    @admin.action(description="Publish a fresh CRL for the selected CAs", permissions=["manage"])
    def refresh_crls(self, request, queryset):
        for ca in queryset:
            if not ca.is_internal:
                self.message_user(request, f"{ca.name}: not an internal CA, no CRL.", messages.WARNING)
                continue
            crl = self._call(request, services.refresh_crl, ca)
            if crl is not None:
                self.message_user(request, f"{ca.name}: CRL number {crl.number} published.", messages.SUCCESS)

    # --- custom views --------------------------------------------------------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_view), name="pki_certificateauthority_import"),
            path("hierarchy/", view(self.hierarchy_view), name="pki_certificateauthority_hierarchy"),
            *(
                url
                for backend in issuers.backends()
                if backend.admin is not None
                for url in backend.admin.urls(self)
            ),
            path(
                "<int:pk>/status/<str:status>/",
                view(self.status_view),
                name="pki_certificateauthority_status",
            ),
            path(
                "<int:pk>/refresh-crl/",
                view(self.refresh_crl_view),
                name="pki_certificateauthority_refresh_crl",
            ),
            path("<int:pk>/reissue/", view(self.reissue_view), name="pki_certificateauthority_reissue"),
            path(
                "<int:pk>/ocsp/<str:state>/",
                view(self.ocsp_view),
                name="pki_certificateauthority_ocsp",
            ),
            path(
                "<int:pk>/delta-crl/<str:state>/",
                view(self.delta_crl_view),
                name="pki_certificateauthority_delta_crl",
            ),
            path(
                "<int:pk>/download/<str:part>/",
                view(self.download_view),
                name="pki_certificateauthority_download",
            ),
            *super().get_urls(),
        ]

    def status_view(self, request, pk, status):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        ca = self._object(request, pk)
        self._require_manage(request, ca)
        if status not in CertificateAuthority.Status.values:
            raise PermissionDenied
        self._set_status(request, [ca], status)
        return HttpResponseRedirect(self._change_url(ca))

    def refresh_crl_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        ca = self._object(request, pk)
        self._require_manage(request, ca)
        self.refresh_crls(request, [ca])
        return HttpResponseRedirect(self._change_url(ca))

    def ocsp_view(self, request, pk, state):
        """Turn the CA's OCSP responder on or off (the toolbar button)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        ca = self._object(request, pk)
        self._require_manage(request, ca)
        if state not in ("on", "off"):
            raise PermissionDenied
        if self._call(request, services.set_ocsp, ca, enabled=state == "on") is not None:
            after = (
                "Certificates issued from now on carry its URL."
                if state == "on"
                else "The responder answers unauthorized; issued certificates keep their URL."
            )
            self.message_user(request, f"{ca.name}: OCSP {state}. {after}", messages.SUCCESS)
        return HttpResponseRedirect(self._change_url(ca))

    def delta_crl_view(self, request, pk, state):
        """Turn the CA's delta CRLs on or off (the toolbar button)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        ca = self._object(request, pk)
        self._require_manage(request, ca)
        if state not in ("on", "off"):
            raise PermissionDenied
        if self._call(request, services.set_delta_crl, ca, enabled=state == "on") is not None:
            after = (
                "Certificates issued from now on and its full CRLs point at them; each revocation "
                "rebuilds the delta CRL, the full CRL follows its schedule."
                if state == "on"
                else "Each revocation publishes a full CRL at once; the delta URL keeps answering."
            )
            self.message_user(request, f"{ca.name}: delta CRLs {state}. {after}", messages.SUCCESS)
        return HttpResponseRedirect(self._change_url(ca))

    def reissue_view(self, request, pk):
        """Confirm, then hand the re-issue of every current certificate of this CA to a worker."""
        ca = self._object(request, pk)
        self._require_manage(request, ca)
        form = pki_forms.ReissueForm(request.POST or None, ca=ca)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                services.start_reissue(
                    ca,
                    actor=as_actor(request),
                    to_ca=data["to_ca"],
                    revoke_reason=data["revoke_reason"] or None,
                )
            except errors.PermissionDenied as exc:
                raise PermissionDenied(str(exc)) from exc
            except (errors.ServiceError, ValidationError) as exc:
                apply_service_errors(form, exc)
            else:
                audit_url = (
                    reverse("admin:certmgr_auditevent_changelist")
                    + "?"
                    + urlencode({"action": "ca.reissue.finished"})
                )
                self.message_user(
                    request,
                    format_html(
                        "Re-issue of every certificate of {} started in a worker. Its result will be in the "
                        '<a href="{}">audit log</a> (ca.reissue.finished).',
                        ca.name,
                        audit_url,
                    ),
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(self._change_url(ca))
        current = services.reissue_candidates(ca).count()
        return self.form_page(
            request,
            title=f"Re-issue every certificate of {ca.name}",
            form=form,
            obj=ca,
            submit="Re-issue",
            description=f"{current} current subscriber certificates will be replaced by new ones (new keys "
            "where certmgr holds the key). Use this after a CA key compromise or a misissuance.",
        )

    def download_view(self, request, pk, part):
        """The CA certificate (PEM or DER) or its chain up to the root. Never the key."""
        ca = self._object(request, pk)
        if not ca.certificate_pem:
            raise PermissionDenied
        base = filename(ca.name, f"ca-{ca.pk}")
        if part == "pem":
            return download(ca.certificate_pem, f"{base}.pem")
        if part == "der":
            der = cx509.load_pem_x509_certificate(ca.certificate_pem.encode()).public_bytes(
                serialization.Encoding.DER
            )
            return download(der, f"{base}.cer", "application/pkix-cert")
        if part == "chain":
            chain = "".join(x509.to_pem(c) for c in services.ca_chain(ca))
            return download(chain, f"{base}-chain.pem")
        raise PermissionDenied

    def import_view(self, request):
        if not self.has_manage_permission(request):
            raise PermissionDenied
        organizations = self.managed_organizations(request)
        form = pki_forms.CaImportForm(
            request.POST or None, request.FILES or None, organizations=organizations
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                ca = services.import_ca(
                    data["organization"],
                    name=data["name"],
                    certificate_pem=data["certificate_pem"],
                    private_key_pem=data["private_key_pem"],
                    actor=as_actor(request),
                )
            except errors.PermissionDenied as exc:
                raise PermissionDenied(str(exc)) from exc
            except (errors.ServiceError, ValidationError) as exc:
                apply_service_errors(form, exc)
            else:
                self.message_user(
                    request, f"CA {ca.name} imported ({ca.get_kind_display()}).", messages.SUCCESS
                )
                return HttpResponseRedirect(self._change_url(ca))
        return self.form_page(
            request,
            title="Import a CA",
            form=form,
            submit="Import",
            description="Bring an existing CA certificate and its private key under certmgr. The key is "
            "stored encrypted and never shown or exported again.",
        )


def _issuer_admin(ca: CertificateAuthority | None) -> CaAdminExtension | None:
    """What the CA's issuer backend adds to its page (None for internal CAs and the add form)."""
    if ca is None:
        return None
    try:
        return issuers.backend_for(ca).admin
    except LookupError:
        return None


def _issuer_admins() -> list[CaAdminExtension]:
    return [backend.admin for backend in issuers.backends() if backend.admin is not None]
