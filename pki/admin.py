"""Admin of the PKI: certificate authorities, policies, subscribers, the certificate inventory, CSRs, CRLs.

Every screen derives from ``TenantAdmin``: rows are restricted to the viewer's organizations, writes need
the ``manage`` role and go through ``pki.services`` (which audit them), and an auditor gets read-only pages
with no state-changing action. Private keys are never rendered: CA and CSR keys have no field or widget at
all, a certificate's key only leaves through ``services.export_private_key`` / ``export_pkcs12`` (operator
role, audited) as a download.

The certificate inventory is built for a million rows: list queries load only the listed columns, the
related names come from one join, filters offer choices from small tables only, search uses the names
column and exact serial / fingerprint lookups, and the paginator counts at most ``COUNT_CAP`` rows
(``SELECT COUNT(*) FROM (... LIMIT cap+1)``) instead of the whole filtered table.
"""

from __future__ import annotations

import re
from functools import cached_property

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.admin.widgets import RelatedFieldWidgetWrapper
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import BooleanField, Count, ExpressionWrapper, Q
from django.http import HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from acmeca.models import AcmeOrder
from certmgr import errors
from certmgr.actors import as_actor
from certmgr.admin_base import IdFilter, OrganizationFilter, TenantAdmin, apply_service_errors
from certmgr.models import Organization
from certmgr.permissions import Action
from pki import forms as pki_forms
from pki import services, x509
from pki.models import (
    Certificate,
    CertificateAuthority,
    CertificateRequest,
    Crl,
    Policy,
    RevocationReason,
    Subscriber,
)

COUNT_CAP = 10_000  # the certificate list counts at most this many rows per page view
ACTION_LIMIT = 500  # rows one bulk action (revoke, renew, issue) handles at a time


# --- shared pieces -------------------------------------------------------------------------------------
class CappedCountPaginator(Paginator):
    """A paginator whose count stops at ``cap``: ``COUNT(*)`` over a ``LIMIT cap+1`` subquery.

    Django's changelist asks its paginator for the count of the *filtered* queryset on every page view;
    at a million rows that is a full index scan each time. Capped, the count costs at most ``cap`` index
    entries, the pages up to the cap are reachable, and the page says "more than N" (filters and search
    narrow it down). ``capped`` tells the template.
    """

    cap = COUNT_CAP
    capped = False

    @cached_property
    def count(self) -> int:
        counted = self.object_list.order_by()[: self.cap + 1].count()
        self.capped = counted > self.cap
        return min(counted, self.cap)


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    return str(exc)


def _filename(text: str, fallback: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", (text or "").replace("*", "wildcard")).strip("._")[:60]
    return name or fallback


def _download(body: str | bytes, filename: str, content_type: str = "application/x-pem-file") -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _badge(text: str, color: str, title: str = "") -> str:
    return format_html(
        '<span class="pki-badge" style="background:{};color:#fff;border-radius:8px;padding:1px 7px;'
        'white-space:nowrap" title="{}">{}</span>',
        color,
        title,
        text,
    )


STATUS_COLORS = {
    "active": "#2e7d32",
    "expired": "#757575",
    "revoked": "#c62828",
    "disabled": "#ef6c00",
    "success": "#2e7d32",
    "failed": "#c62828",
    "pending": "#1565c0",
}


def _pem_block(text: str) -> str:
    if not text:
        return "—"
    return format_html('<pre class="pem">{}</pre>', text)


def _colon_hex(data: bytes | str) -> str:
    text = data.hex() if isinstance(data, bytes) else data
    if len(text) % 2:
        text = "0" + text
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2)).upper()


def _oid_name(oid: cx509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", "Unknown OID")
    return oid.dotted_string if name == "Unknown OID" else name


def _extension_text(value) -> str:
    if isinstance(value, cx509.BasicConstraints):
        text = f"CA: {'yes' if value.ca else 'no'}"
        return text + (f", path length ≤ {value.path_length}" if value.path_length is not None else "")
    if isinstance(value, cx509.KeyUsage):
        names = []
        for name in x509.KEY_USAGE_NAMES:
            try:
                if getattr(value, name):
                    names.append(name)
            except ValueError:  # encipher/decipher_only are undefined without key_agreement
                pass
        return ", ".join(names)
    if isinstance(value, cx509.ExtendedKeyUsage):
        return ", ".join(_oid_name(oid) for oid in value)
    if isinstance(value, cx509.SubjectAlternativeName):
        return ", ".join(x509.sans_to_strings(value))
    if isinstance(value, cx509.SubjectKeyIdentifier):
        return _colon_hex(value.digest)
    if isinstance(value, cx509.AuthorityKeyIdentifier):
        return _colon_hex(value.key_identifier) if value.key_identifier else "—"
    if isinstance(value, cx509.CRLDistributionPoints):
        return ", ".join(str(n.value) for point in value for n in (point.full_name or []))
    if isinstance(value, cx509.AuthorityInformationAccess):
        return ", ".join(f"{_oid_name(d.access_method)}: {d.access_location.value}" for d in value)
    return str(value)[:500]


def x509_details(pem: str) -> str:
    """The certificate's signature algorithm and extensions as a small table (parsed, read-only)."""
    try:
        cert = cx509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        return format_html("<em>cannot parse: {}</em>", str(exc))
    rows = [("Signature algorithm", _oid_name(cert.signature_algorithm_oid))]
    for ext in cert.extensions:
        label = _oid_name(ext.oid) + (" (critical)" if ext.critical else "")
        rows.append((label, _extension_text(ext.value)))
    return format_html(
        '<table class="pki-details">{}</table>',
        format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
    )


def _admin_link(obj, text: str | None = None) -> str:
    if obj is None:
        return "—"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text or str(obj))


# --- list filters that only offer the viewer's rows -----------------------------------------------------
class CrlOrganizationFilter(OrganizationFilter):
    field = "ca__organization_id"


class CaFilter(IdFilter):
    title = "certificate authority"
    parameter_name = "ca"
    field = "ca_id"

    def choice_rows(self, request):
        return list(
            CertificateAuthority.objects.restrict(request).order_by("name").values_list("pk", "name")[:200]
        )


class PolicyFilter(IdFilter):
    title = "policy"
    parameter_name = "policy"
    field = "policy_id"

    def choice_rows(self, request):
        return list(Policy.objects.restrict(request).order_by("name").values_list("pk", "name")[:200])


class SubscriberFilter(IdFilter):
    """The first subscribers by name plus the selected one (subscriber pages link here with ?subscriber=)."""

    title = "subscriber"
    parameter_name = "subscriber"
    field = "subscriber_id"
    shown = 30

    def choice_rows(self, request):
        visible = Subscriber.objects.restrict(request).order_by("name")
        rows = list(visible.values_list("pk", "name")[: self.shown])
        value = self.value()
        if value and value.isdigit() and int(value) not in {pk for pk, _ in rows}:
            rows += list(visible.filter(pk=int(value)).values_list("pk", "name"))
        return [(0, "None (imported or ACME)"), *rows]

    def queryset(self, request, queryset):
        if self.value() == "0":
            return queryset.filter(subscriber__isnull=True)
        return super().queryset(request, queryset)


class ExpiringWithinFilter(admin.SimpleListFilter):
    """Active certificates expiring within N days (7 / 30 / 90, or any N in the URL), or already past."""

    title = "expiring within"
    parameter_name = "expiring_within"
    presets = (7, 30, 90)

    def lookups(self, request, model_admin):
        choices = [(str(days), f"{days} days") for days in self.presets]
        value = self.value()
        if value and value.isdigit() and int(value) not in self.presets:
            choices.append((value, f"{int(value)} days"))
        choices.append(("past", "Past expiry"))
        return choices

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value == "past":
            return queryset.filter(not_after__lte=timezone.now())
        if not value.isdigit() or not 0 < int(value) <= 36500:
            raise IncorrectLookupParameters("expiring_within: a number of days")
        return queryset.expiring_within(int(value))


# --- the base of every PKI admin ------------------------------------------------------------------------
class _Rejected(Exception):
    """A service refused a form's save; the form carries the errors and is shown again."""

    def __init__(self, form):
        super().__init__("rejected")
        self.form = form


class PkiAdmin(TenantAdmin):
    # --- roles -------------------------------------------------------------------------------------------
    def has_manage_permission(self, request, obj=None) -> bool:
        return self._allowed(request, Action.MANAGE, obj)

    def can_export_key(self, request, obj) -> bool:
        return self._allowed(request, Action.EXPORT_KEY, obj)

    def is_multi_org(self, request) -> bool:
        org_ids = as_actor(request).organization_ids(Action.VIEW)
        return org_ids is None or len(org_ids) > 1

    def managed_organizations(self, request):
        return Organization.objects.restrict(request, Action.MANAGE).order_by("name")

    # --- custom views' helpers -------------------------------------------------------------------------
    def detail_queryset(self, request):
        """The queryset of one row's pages (change page, downloads, buttons)."""
        return self.get_queryset(request)

    def get_object(self, request, object_id, from_field=None):
        queryset = self.detail_queryset(request)
        field = self.opts.pk if from_field is None else self.opts.get_field(from_field)
        try:
            return queryset.get(**{field.name: field.to_python(object_id)})
        except (queryset.model.DoesNotExist, ValidationError, ValueError):
            return None

    def _object(self, request, pk):
        """The row if the viewer may see it: another organization's row is a 404."""
        obj = get_object_or_404(self.detail_queryset(request), pk=pk)
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        return obj

    def _require_manage(self, request, obj=None) -> None:
        if not self.has_manage_permission(request, obj):
            raise PermissionDenied

    def _url(self, name: str, *args) -> str:
        return reverse(f"admin:pki_{self.opts.model_name}_{name}", args=args)

    def _change_url(self, obj) -> str:
        return self._url("change", obj.pk)

    def _call(self, request, fn, *args, **kwargs):
        """Run a service; its refusal becomes an error message (a role refusal a 403). None on failure."""
        try:
            return fn(*args, actor=request, **kwargs)
        except errors.PermissionDenied as exc:
            raise PermissionDenied(str(exc)) from exc
        except (errors.ServiceError, ValidationError) as exc:
            self.message_user(request, _error_text(exc), messages.ERROR)
            return None

    def form_page(
        self, request, *, title, form, obj=None, submit="Save", description="", template=None, **extra
    ):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": str(obj) if obj is not None else None,
            "opts": self.opts,
            "original": obj,
            "form": form,
            "submit_label": submit,
            "description": description,
            "media": self.media + form.media,
            **extra,
        }
        return TemplateResponse(request, template or "admin/pki/form_page.html", context)

    # --- forms whose save a service refuses are shown again with the errors -----------------------------
    def save_model(self, request, obj, form, change):
        try:
            super().save_model(request, obj, form, change)
        except errors.PermissionDenied:
            raise
        except (errors.ServiceError, ValidationError) as exc:
            apply_service_errors(form, exc)
            raise _Rejected(form) from exc

    def _changeform_view(self, request, object_id, form_url, extra_context):
        try:
            return super()._changeform_view(request, object_id, form_url, extra_context)
        except _Rejected as rejected:
            return self._render_rejected(request, rejected.form, object_id, form_url, extra_context)

    def _render_rejected(self, request, form, object_id, form_url, extra_context):
        add = object_id is None
        obj = None if add else self.get_object(request, unquote(object_id))
        fieldsets = self.get_fieldsets(request, obj)
        admin_form = helpers.AdminForm(
            form, list(fieldsets), {}, self.get_readonly_fields(request, obj), model_admin=self
        )
        verbose = self.opts.verbose_name
        context = {
            **self.admin_site.each_context(request),
            "title": f"Add {verbose}" if add else f"Change {verbose}",
            "subtitle": str(obj) if obj is not None else None,
            "adminform": admin_form,
            "object_id": object_id,
            "original": obj,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            **(extra_context or {}),
        }
        return self.render_change_form(request, context, add=add, change=not add, obj=obj, form_url=form_url)

    # --- deletion: the service decides; the page never walks millions of related rows -------------------
    delete_confirmation_template = "admin/pki/delete_confirmation.html"

    def get_deleted_objects(self, objs, request):
        objs = list(objs)
        to_delete = [format_html("{}: {}", self.opts.verbose_name.capitalize(), _admin_link(o)) for o in objs]
        return to_delete, {self.opts.verbose_name_plural: len(objs)}, set(), []

    def delete_warnings(self, obj) -> list[str]:
        return []

    def delete_view(self, request, object_id, extra_context=None):
        extra_context = dict(extra_context or {})
        if request.method == "GET":
            obj = self.get_object(request, unquote(object_id))
            if obj is not None and self.has_delete_permission(request, obj):
                extra_context["delete_warnings"] = self.delete_warnings(obj)
        return super().delete_view(request, object_id, extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(self.change_form_extra(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def change_form_extra(self, request, obj) -> dict:
        return {"can_manage": self.has_manage_permission(request, obj)}

    def changelist_view(self, request, extra_context=None):
        extra_context = {"can_manage": self.has_manage_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context)

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

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        widget = getattr(field, "widget", None)
        if isinstance(widget, RelatedFieldWidgetWrapper):
            widget.can_delete_related = False  # deleting a CA or policy from a subscriber's form: no
            if db_field.name == "organization":
                widget.can_add_related = widget.can_change_related = False
        return field

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        if self.is_multi_org(request) and "organization" not in columns:
            columns.append("organization")
        return columns


# --- certificate authorities ---------------------------------------------------------------------------
class ReadOnlyPkiAdmin(PkiAdmin):
    """Rows no form edits (certificates, CSRs, CRLs, ACME rows): the detail page shows ``detail_fieldsets``
    (or ``detail_fields``) read-only; changes are the screens' buttons and actions."""

    detail_fields: list[str] = []
    detail_fieldsets: list | None = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_fieldsets(self, request, obj=None):
        return self.detail_fieldsets or [(None, {"fields": self.detail_fields})]

    def get_fields(self, request, obj=None):
        return [name for _, options in self.get_fieldsets(request, obj) for name in options["fields"]]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)


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
    # The CA list's own template plus an "Add ACME CA" button (acmeca.admin has the ACME screens).
    change_list_template = "admin/pki/certificateauthority/change_list_acme.html"

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
        if obj is not None and obj.kind == CertificateAuthority.Kind.ACME:
            from acmeca import admin as acme_admin

            return acme_admin.acme_ca_fieldsets()
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
            ("In use", {"fields": ["usage_display", "crl_display"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [*self.detail_fields, "acme_settings_display", "acme_account_display"]

    # --- ACME CAs: settings and account instead of certificate fields (acmeca.admin renders them) ------
    @admin.display(description="Settings")
    def acme_settings_display(self, obj):
        from acmeca import admin as acme_admin

        return acme_admin.settings_display(obj)

    @admin.display(description="Account")
    def acme_account_display(self, obj):
        from acmeca import admin as acme_admin

        return acme_admin.account_display(obj)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        response = super().render_change_form(request, context, add, change, form_url, obj)
        if obj is not None and obj.kind == CertificateAuthority.Kind.ACME:
            response.template_name = "admin/pki/certificateauthority/change_form_acme.html"
        return response

    def acme_add_view(self, request):
        from acmeca import admin as acme_admin

        return acme_admin.acme_ca_add_view(self, request)

    def acme_edit_view(self, request, pk):
        from acmeca import admin as acme_admin

        return acme_admin.acme_ca_edit_view(self, request, pk)

    # --- columns and details -----------------------------------------------------------------------
    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return _badge(obj.get_status_display(), STATUS_COLORS.get(obj.status, "#555"))

    @admin.display(description="Subject", ordering="subject_dn")
    def subject_display(self, obj):
        return obj.subject_dn

    @admin.display(description="Parent CA")
    def parent_link(self, obj):
        return _admin_link(obj.parent) if obj.parent_id else "— (root)"

    @admin.display(description="Serial")
    def serial_display(self, obj):
        return format_html("<code>{}</code>", _colon_hex(obj.serial)) if obj.serial else "—"

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
        return _pem_block(obj.certificate_pem)

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
            format_html_join(", ", "{}", ((_admin_link(c),) for c in children)) if children else "none",
            subscribers,
        )

    @admin.display(description="CRL")
    def crl_display(self, obj):
        if not obj.is_internal:
            return "—"
        latest = obj.crls.order_by("-number").only("number", "this_update", "next_update").first()
        public = services.crl_url(obj)
        listing = reverse("admin:pki_crl_changelist") + f"?ca={obj.pk}"
        if latest is None:
            return format_html("None yet (built on first request at <code>{}</code>)", public)
        return format_html(
            'Number {}, next update {} · <a href="{}">all CRLs</a> · public URL <code>{}</code>',
            latest.number,
            latest.next_update.strftime("%Y-%m-%d %H:%M UTC"),
            listing,
            public,
        )

    def change_form_extra(self, request, obj):
        return {
            **super().change_form_extra(request, obj),
            "is_active": obj.status == CertificateAuthority.Status.ACTIVE,
        }

    def delete_warnings(self, obj):
        reasons = []
        if obj.certificates.exists():
            reasons.append("it has issued certificates")
        if obj.children.exists():
            reasons.append("it has subordinate CAs")
        if obj.subscribers.exists():
            reasons.append("subscribers issue from it")
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
            parent=data.get("parent")
            if data["kind"] == CertificateAuthority.Kind.INTERNAL_INTERMEDIATE
            else None,
            actor=request,
        )

    def remove(self, request, obj):
        services.delete_ca(obj, actor=request)

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
            path("acme/add/", view(self.acme_add_view), name="pki_certificateauthority_acme_add"),
            path("<int:pk>/acme/", view(self.acme_edit_view), name="pki_certificateauthority_acme_edit"),
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

    def download_view(self, request, pk, part):
        """The CA certificate (PEM or DER) or its chain up to the root. Never the key."""
        ca = self._object(request, pk)
        if not ca.certificate_pem:
            raise PermissionDenied
        base = _filename(ca.name, f"ca-{ca.pk}")
        if part == "pem":
            return _download(ca.certificate_pem, f"{base}.pem")
        if part == "der":
            der = cx509.load_pem_x509_certificate(ca.certificate_pem.encode()).public_bytes(
                serialization.Encoding.DER
            )
            return _download(der, f"{base}.cer", "application/pkix-cert")
        if part == "chain":
            chain = "".join(x509.to_pem(c) for c in services.ca_chain(ca))
            return _download(chain, f"{base}-chain.pem")
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
                    actor=request,
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


# --- policies ------------------------------------------------------------------------------------------
def _short_list(values, limit: int = 3) -> str:
    values = list(values or [])
    if not values:
        return "any"
    shown = ", ".join(values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


@admin.register(Policy)
class PolicyAdmin(PkiAdmin):
    form = pki_forms.PolicyForm
    list_display = [
        "name",
        "cn_patterns",
        "san_pattern_list",
        "key_algorithms",
        "max_validity_days",
        "subscriber_count",
    ]
    list_filter = [OrganizationFilter, "allow_ca"]
    search_fields = ["name", "description"]
    list_select_related = ["organization"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(subscriber_total=Count("subscribers"))

    def get_fieldsets(self, request, obj=None):
        return [
            (None, {"fields": ["organization", "name", "description"]}),
            (
                "Names",
                {"fields": ["common_name_patterns", "san_patterns", "allowed_san_types"]},
            ),
            ("Keys and validity", {"fields": ["allowed_key_algorithms", "max_validity_days"]}),
            (
                "Usages",
                {"fields": ["key_usages", "extended_key_usages", "other_extended_key_usages", "allow_ca"]},
            ),
        ]

    @admin.display(description="Common names")
    def cn_patterns(self, obj):
        return _short_list(obj.common_name_patterns)

    @admin.display(description="SAN names")
    def san_pattern_list(self, obj):
        types = f" [{', '.join(obj.allowed_san_types)}]" if obj.allowed_san_types else ""
        return _short_list(obj.san_patterns) + types

    @admin.display(description="Key algorithms")
    def key_algorithms(self, obj):
        return _short_list(obj.allowed_key_algorithms, limit=6)

    @admin.display(description="Subscribers", ordering="subscriber_total")
    def subscriber_count(self, obj):
        return obj.subscriber_total

    def delete_warnings(self, obj):
        if obj.subscribers.exists():
            return ["Subscribers use this policy: the deletion will be refused until they use another one."]
        return []

    def create(self, request, obj, form):
        return services.save_policy(form.cleaned_data["organization"], actor=request, **form.service_values())

    def update(self, request, obj, form):
        original = Policy.objects.get(pk=obj.pk)
        return services.save_policy(None, actor=request, instance=original, **form.service_values())

    def remove(self, request, obj):
        services.delete_object(obj, actor=request)


# --- subscribers ---------------------------------------------------------------------------------------
@admin.register(Subscriber)
class SubscriberAdmin(PkiAdmin):
    form = pki_forms.SubscriberForm
    list_display = [
        "name",
        "issuer",
        "policy",
        "common_name",
        "san_summary",
        "key_algorithm",
        "validity_days",
        "auto_renew",
        "last_operation",
    ]
    list_filter = [
        "issuer_type",
        CaFilter,
        PolicyFilter,
        "auto_renew",
        "last_operation_status",
        OrganizationFilter,
    ]
    search_fields = ["name", "common_name"]
    actions = ["issue_now", "retry_renewal_now"]
    change_form_template = "admin/pki/subscriber/change_form.html"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("ca", "policy", "organization")
            .defer("ca__private_key", "ca__certificate_pem")
        )

    def get_fieldsets(self, request, obj=None):
        sets = [
            (None, {"fields": ["organization", "name", "issuer_type", "ca", "policy"]}),
            (
                "Names",
                {
                    "fields": [
                        "common_name",
                        "sans",
                        "subject_organization",
                        "subject_organizational_unit",
                        "subject_country",
                        "subject_state",
                        "subject_locality",
                    ]
                },
            ),
            (
                "Key and validity",
                {
                    "fields": [
                        "key_algorithm",
                        "validity_days",
                        "auto_renew",
                        "renew_before_days",
                        "reuse_key",
                    ]
                },
            ),
            ("Usages", {"fields": ["key_usages", "extended_key_usages", "other_extended_key_usages"]}),
        ]
        if obj is not None:
            sets.append(("Last operation", {"fields": ["last_operation", "last_operation_at"]}))
            sets.append(
                ("Renewal", {"fields": ["renewal_failures", "last_error_category", "next_attempt_at"]})
            )
            sets.append(("Certificates", {"fields": ["recent_certificates"]}))
        return sets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "last_operation",
            "last_operation_at",
            "renewal_failures",
            "last_error_category",
            "next_attempt_at",
            "recent_certificates",
        ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:  # the CA and policy of the subscriber's own organization only
            for name in ("ca", "policy"):
                if name in form.base_fields:
                    field = form.base_fields[name]
                    field.queryset = field.queryset.filter(organization_id=obj.organization_id)
        return form

    @admin.display(description="Issuer")
    def issuer(self, obj):
        if obj.issuer_type == Subscriber.IssuerType.SELF_SIGNED:
            return "self-signed"
        return obj.ca.name if obj.ca_id else "—"

    @admin.display(description="SANs")
    def san_summary(self, obj):
        return _short_list(obj.sans) if obj.sans else "—"

    @admin.display(description="Last operation", ordering="last_operation_at")
    def last_operation(self, obj):
        if not obj.last_operation_status:
            return "—"
        return format_html(
            "{} {}",
            _badge(
                obj.get_last_operation_status_display(), STATUS_COLORS.get(obj.last_operation_status, "#555")
            ),
            obj.last_operation_message[:200],
        )

    @admin.display(description="Recent certificates")
    def recent_certificates(self, obj):
        recent = list(
            obj.certificates.order_by("-not_after").only(
                "id", "serial", "common_name", "status", "not_after"
            )[:10]
        )
        all_url = reverse("admin:pki_certificate_changelist") + f"?subscriber={obj.pk}"
        if not recent:
            return "None yet."
        rows = format_html_join(
            "",
            "<li>{} · {} · expires {}</li>",
            (
                (
                    _admin_link(c, c.serial),
                    _badge(c.get_status_display(), STATUS_COLORS.get(c.status, "#555")),
                    c.not_after.strftime("%Y-%m-%d"),
                )
                for c in recent
            ),
        )
        return format_html(
            '<ul class="pki-list">{}</ul><a href="{}">All certificates of {}</a>', rows, all_url, obj.name
        )

    def create(self, request, obj, form):
        return services.save_subscriber(
            form.cleaned_data["organization"], actor=request, **form.service_values()
        )

    def update(self, request, obj, form):
        original = Subscriber.objects.get(pk=obj.pk)
        return services.save_subscriber(None, actor=request, instance=original, **form.service_values())

    def remove(self, request, obj):
        services.delete_object(obj, actor=request)

    # --- issuance -----------------------------------------------------------------------------------
    def _issue(
        self, request, subscriber, *, service=services.issue, **kwargs
    ) -> Certificate | AcmeOrder | None:
        """Issue (or, with ``service=services.retry_now``, renew at once) and say what happened."""
        certificate = self._call(request, service, subscriber, **kwargs)
        if isinstance(certificate, AcmeOrder):
            acme_order_started(self, request, subscriber.name, certificate)
        elif certificate is not None:
            self.message_user(
                request,
                format_html(
                    "{}: issued certificate {} (expires {}).",
                    subscriber.name,
                    _admin_link(certificate, certificate.serial),
                    certificate.not_after.strftime("%Y-%m-%d"),
                ),
                messages.SUCCESS,
            )
        return certificate

    @admin.action(description="Retry renewal now (skip the backoff)", permissions=["manage"])
    def retry_renewal_now(self, request, queryset):
        self._issue_each(request, queryset, services.retry_now)

    @admin.action(description="Issue a certificate now", permissions=["manage"])
    def issue_now(self, request, queryset):
        self._issue_each(request, queryset, services.issue)

    def _issue_each(self, request, queryset, service) -> None:
        subscribers = list(queryset[: ACTION_LIMIT + 1])
        if len(subscribers) > ACTION_LIMIT:
            self.message_user(request, f"Select at most {ACTION_LIMIT} subscribers at once.", messages.ERROR)
            return
        for subscriber in subscribers:
            try:
                self._issue(request, subscriber, service=service)
            except PermissionDenied as exc:
                self.message_user(request, f"{subscriber.name}: {exc}", messages.ERROR)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/issue/", view(self.issue_view), name="pki_subscriber_issue"),
            path("<int:pk>/issue-csr/", view(self.issue_csr_view), name="pki_subscriber_issue_csr"),
            *super().get_urls(),
        ]

    def issue_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        subscriber = self._object(request, pk)
        self._require_manage(request, subscriber)
        certificate = self._issue(request, subscriber)
        if certificate is not None:
            return issued_redirect(certificate)
        return HttpResponseRedirect(self._change_url(subscriber))

    def issue_csr_view(self, request, pk):
        subscriber = self._object(request, pk)
        self._require_manage(request, subscriber)
        form = pki_forms.IssueFromCsrForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                certificate = services.issue(subscriber, csr_pem=form.cleaned_data["csr_data"], actor=request)
            except errors.PermissionDenied as exc:
                raise PermissionDenied(str(exc)) from exc
            except (errors.ServiceError, ValidationError) as exc:
                apply_service_errors(form, exc)
                self.message_user(request, f"Not issued: {_error_text(exc)}", messages.ERROR)
            else:
                if isinstance(certificate, AcmeOrder):
                    acme_order_started(self, request, subscriber.name, certificate)
                else:
                    self.message_user(
                        request,
                        f"Issued certificate {certificate.serial} from the CSR (no private key is stored).",
                        messages.SUCCESS,
                    )
                return issued_redirect(certificate)
        return self.form_page(
            request,
            title="Issue from a CSR",
            form=form,
            obj=subscriber,
            submit="Issue certificate",
            description="The CSR supplies the public key (its signature is checked); the certificate gets "
            "this subscriber's names, validity and usages, checked against its policy. certmgr stores no "
            "private key for it.",
        )


# --- certificates --------------------------------------------------------------------------------------
LIST_COLUMNS = (
    "id",
    "organization",
    "organization__name",
    "ca",
    "ca__name",
    "subscriber",
    "subscriber__name",
    "common_name",
    "serial",
    "status",
    "not_after",
    "next_renewal_at",
    "key_algorithm",
    "source",
)
_HEX = re.compile(r"^[0-9a-f]+$")
# Whether an encrypted key is stored, without loading (and decrypting) it.
_HAS_KEY = ExpressionWrapper(~Q(private_key=""), output_field=BooleanField())


class CertificateChangeList(ChangeList):
    """Loads only the listed columns: no PEM, chain or encrypted key per row."""

    def get_queryset(self, request, exclude_parameters=None):
        return super().get_queryset(request, exclude_parameters).only(*LIST_COLUMNS)


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyPkiAdmin):  # from issuance and import, never edited
    list_display = [
        "common_name_display",
        "serial_short",
        "status_badge",
        "ca",
        "subscriber",
        "not_after_display",
        "next_renewal_at",
        "key_algorithm",
    ]
    list_filter = [
        "status",
        ExpiringWithinFilter,
        CaFilter,
        SubscriberFilter,
        "key_algorithm",
        "source",
        OrganizationFilter,
    ]
    list_select_related = ["ca", "subscriber", "organization"]
    search_fields = ["common_name"]  # shows the box; get_search_results does the searching
    search_help_text = (
        "A name or part of one (CN or SAN, e.g. example.com), a serial in hex, or a SHA-256 / SHA-1 "
        "fingerprint."
    )
    sortable_by = ["common_name_display", "not_after_display"]
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    list_per_page = 50
    actions = ["revoke_certificates", "renew_certificates", "download_pems"]
    change_form_template = "admin/pki/certificate/change_form.html"
    change_list_template = "admin/pki/certificate/change_list.html"

    detail_fieldsets = [
        (
            None,
            {
                "fields": [
                    "common_name",
                    "sans_display",
                    "status_display",
                    "organization",
                    "source",
                    "ca_link",
                    "subscriber_link",
                    "renewal_display",
                    "private_key_display",
                ]
            },
        ),
        (
            "Validity",
            {"fields": ["not_before_display", "not_after_display", "next_renewal_at", "ari_checked_at"]},
        ),
        (
            "Identity",
            {
                "fields": [
                    "serial_display",
                    "subject_display",
                    "issuer_display",
                    "key_algorithm",
                    "fingerprints_display",
                ]
            },
        ),
        ("Extensions", {"fields": ["details"]}),
        ("PEM", {"fields": ["certificate_pem_display", "chain_display"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("private_key")

    def detail_queryset(self, request):
        return (
            self.get_queryset(request)
            .select_related("ca", "subscriber", "organization", "renewed_from")
            .defer(
                "ca__private_key",
                "ca__certificate_pem",
                "renewed_from__private_key",
                "renewed_from__certificate_pem",
                "renewed_from__chain_pem",
            )
            .annotate(has_private_key=_HAS_KEY)
        )

    def get_changelist(self, request, **kwargs):
        return CertificateChangeList

    def get_search_results(self, request, queryset, search_term):
        """Names by ``matching_name`` (the trigram-indexed names column); serials and fingerprints exactly."""
        term = search_term.strip()
        if not term:
            return queryset, False
        compact = re.sub(r"[\s:]", "", term).lower()
        exact = Q()
        if _HEX.match(compact):
            if len(compact) == 64:
                return queryset.filter(fingerprint_sha256=compact), False
            if len(compact) == 40:
                return queryset.filter(
                    Q(fingerprint_sha1=compact) | Q(serial=compact.lstrip("0") or "0")
                ), False
            exact = Q(serial=compact.lstrip("0") or "0")
        names = queryset.matching_name(term)
        return (names | queryset.filter(exact)) if exact else names, False

    def has_delete_permission(self, request, obj=None):
        return False  # the inventory keeps them: revoke instead

    # --- columns ------------------------------------------------------------------------------------
    @admin.display(description="Common name", ordering="common_name")
    def common_name_display(self, obj):
        return obj.common_name or "(no CN)"

    @admin.display(description="Serial")
    def serial_short(self, obj):
        text = obj.serial if len(obj.serial) <= 20 else obj.serial[:18] + "…"
        return format_html('<code title="{}">{}</code>', obj.serial, text)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return _badge(obj.get_status_display(), STATUS_COLORS.get(obj.status, "#555"))

    @admin.display(description="Expires", ordering="not_after")
    def not_after_display(self, obj):
        days = (obj.not_after - timezone.now()).days
        if obj.not_after <= timezone.now():
            note, color = "expired", "#757575"
        elif days < 7:
            note, color = f"in {days} d", "#c62828"
        elif days < 30:
            note, color = f"in {days} d", "#ef6c00"
        else:
            note, color = f"in {days} d", "inherit"
        return format_html(
            '{} <span style="color:{}" class="small">({})</span>',
            obj.not_after.strftime("%Y-%m-%d %H:%M"),
            color,
            note,
        )

    # --- details ------------------------------------------------------------------------------------
    @admin.display(description="Subject alternative names")
    def sans_display(self, obj):
        if not obj.sans:
            return "—"
        return format_html_join(mark_safe("<br>"), "{}", ((name,) for name in obj.sans))

    @admin.display(description="Status")
    def status_display(self, obj):
        badge = self.status_badge(obj)
        if obj.status == Certificate.Status.REVOKED:
            return format_html(
                "{} on {} — reason: {}",
                badge,
                obj.revoked_at.strftime("%Y-%m-%d %H:%M UTC") if obj.revoked_at else "?",
                obj.get_revocation_reason_display() or "unspecified",
            )
        return badge

    @admin.display(description="Issuing CA")
    def ca_link(self, obj):
        return (
            _admin_link(obj.ca)
            if obj.ca_id
            else format_html("— <span class='small'>{}</span>", obj.issuer_dn)
        )

    @admin.display(description="Subscriber")
    def subscriber_link(self, obj):
        return _admin_link(obj.subscriber) if obj.subscriber_id else "—"

    @admin.display(description="Renewals")
    def renewal_display(self, obj):
        renewed_by = Certificate.objects.filter(renewed_from=obj).only("id", "serial").first()
        parts = []
        if obj.renewed_from_id:
            parts.append(
                format_html("renewed from {}", _admin_link(obj.renewed_from, obj.renewed_from.serial))
            )
        if renewed_by is not None:
            parts.append(format_html("renewed by {}", _admin_link(renewed_by, renewed_by.serial)))
        return format_html_join(mark_safe("<br>"), "{}", ((p,) for p in parts)) if parts else "—"

    @admin.display(description="Private key", boolean=False)
    def private_key_display(self, obj):
        if obj.has_private_key:
            return "held by certmgr (encrypted); operators can export it, audited"
        return "not held (issued from a CSR or imported without its key)"

    @admin.display(description="Serial")
    def serial_display(self, obj):
        return format_html(
            "<code>{}</code><br><code class='small'>{}</code>", obj.serial, _colon_hex(obj.serial)
        )

    @admin.display(description="Valid from")
    def not_before_display(self, obj):
        return obj.not_before.strftime("%Y-%m-%d %H:%M")

    @admin.display(description="Subject")
    def subject_display(self, obj):
        return obj.subject_dn or "— (empty)"

    @admin.display(description="Issuer")
    def issuer_display(self, obj):
        return obj.issuer_dn or "—"

    @admin.display(description="Fingerprints")
    def fingerprints_display(self, obj):
        return format_html(
            "SHA-256 <code>{}</code><br>SHA-1 <code>{}</code>", obj.fingerprint_sha256, obj.fingerprint_sha1
        )

    @admin.display(description="Extensions")
    def details(self, obj):
        return x509_details(obj.certificate_pem)

    @admin.display(description="Certificate (PEM)")
    def certificate_pem_display(self, obj):
        return _pem_block(obj.certificate_pem)

    @admin.display(description="Chain (PEM, issuer first)")
    def chain_display(self, obj):
        if not obj.chain_pem:
            return "— (no chain stored)"
        try:
            chain = x509.load_pem_certificates(obj.chain_pem)
        except x509.X509Error:
            return _pem_block(obj.chain_pem)
        summary = format_html_join(
            "",
            "<li>{} <span class='small'>(expires {})</span></li>",
            ((c.subject.rfc4514_string(), c.not_valid_after_utc.strftime("%Y-%m-%d")) for c in chain),
        )
        return format_html('<ol class="pki-list">{}</ol>{}', summary, _pem_block(obj.chain_pem))

    def change_form_extra(self, request, obj):
        # Internal CAs revoke here; ACME CAs are asked first (pki.services.revoke).
        revocable = obj.status != Certificate.Status.REVOKED and obj.ca_id is not None
        return {
            **super().change_form_extra(request, obj),
            "can_export_key": self.can_export_key(request, obj),
            "has_private_key": obj.has_private_key,
            "has_chain": bool(obj.chain_pem),
            "can_renew": obj.subscriber_id is not None,
            "can_revoke": revocable,
        }

    # --- revoke -------------------------------------------------------------------------------------
    def _revoke(self, request, certificates, reason) -> None:
        done = []
        for cert in certificates:
            try:
                if self._call(request, services.revoke, cert, reason=reason) is not None:
                    done.append(cert.serial)
            except PermissionDenied as exc:
                self.message_user(request, f"{cert.serial}: {exc}", messages.ERROR)
        if done:
            label = RevocationReason(reason).label.lower()
            self.message_user(
                request,
                f"Revoked {len(done)} certificate(s) ({label}), CRL republished: "
                + ", ".join(done[:10])
                + (" …" if len(done) > 10 else ""),
                messages.SUCCESS,
            )

    @admin.action(description="Revoke selected certificates…", permissions=["manage"])
    def revoke_certificates(self, request, queryset):
        certificates = list(queryset[: ACTION_LIMIT + 1])
        if len(certificates) > ACTION_LIMIT:
            self.message_user(request, f"Select at most {ACTION_LIMIT} certificates at once.", messages.ERROR)
            return None
        form = pki_forms.RevokeForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            self._revoke(request, certificates, form.cleaned_data["reason"])
            return None
        return self.form_page(
            request,
            title="Revoke certificates",
            form=form,
            submit="Revoke",
            template="admin/pki/certificate/revoke.html",
            submit_danger=True,
            certificates=certificates,
            action_name="revoke_certificates",
            action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
        )

    @admin.action(description="Renew selected certificates now", permissions=["manage"])
    def renew_certificates(self, request, queryset):
        certificates = list(queryset.select_related("subscriber")[: ACTION_LIMIT + 1])
        if len(certificates) > ACTION_LIMIT:
            self.message_user(request, f"Select at most {ACTION_LIMIT} certificates at once.", messages.ERROR)
            return
        for cert in certificates:
            self._renew(request, cert)

    def _renew(self, request, cert) -> Certificate | AcmeOrder | None:
        label = cert.common_name or cert.serial
        if cert.subscriber_id is None:
            self.message_user(
                request,
                f"{label}: no subscriber (imported or ACME), nothing to renew from.",
                messages.WARNING,
            )
            return None
        successor = Certificate.objects.filter(renewed_from=cert).only("id", "serial").first()
        if successor is not None:
            self.message_user(
                request,
                format_html(
                    "{}: already renewed by {}; renew that one.",
                    label,
                    _admin_link(successor, successor.serial),
                ),
                messages.WARNING,
            )
            return None
        try:
            new = self._call(request, services.issue, cert.subscriber, renewal_of=cert)
        except PermissionDenied as exc:
            self.message_user(request, f"{label}: {exc}", messages.ERROR)
            return None
        if isinstance(new, AcmeOrder):
            acme_order_started(self, request, label, new)
        elif new is not None:
            self.message_user(
                request,
                format_html("{}: renewed as {}.", label, _admin_link(new, new.serial)),
                messages.SUCCESS,
            )
        return new

    @admin.action(description="Download selected certificates (PEM)")
    def download_pems(self, request, queryset):
        pems = queryset.select_related(None).values_list("certificate_pem", flat=True)[: ACTION_LIMIT + 1]
        pems = list(pems)
        if len(pems) > ACTION_LIMIT:
            self.message_user(request, f"Select at most {ACTION_LIMIT} certificates at once.", messages.ERROR)
            return None
        return _download("".join(pems), "certificates.pem")

    # --- custom views -------------------------------------------------------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_view), name="pki_certificate_import"),
            path("<int:pk>/download/<str:part>/", view(self.download_view), name="pki_certificate_download"),
            path("<int:pk>/pkcs12/", view(self.pkcs12_view), name="pki_certificate_pkcs12"),
            path("<int:pk>/revoke/", view(self.revoke_view), name="pki_certificate_revoke"),
            path("<int:pk>/renew/", view(self.renew_view), name="pki_certificate_renew"),
            *super().get_urls(),
        ]

    KEY_PARTS = {"key": "private key", "bundle": "certificate, chain and private key"}

    def download_view(self, request, pk, part):
        """cert / der / chain / fullchain for viewers; key / bundle (with the key) for operators, by POST."""
        cert = self._object(request, pk)
        base = _filename(cert.common_name, cert.serial)
        if part in self.KEY_PARTS:
            return self._key_download(request, cert, part, base)
        if part == "cert":
            return _download(cert.certificate_pem, f"{base}.crt.pem")
        if part == "der":
            der = cx509.load_pem_x509_certificate(cert.certificate_pem.encode()).public_bytes(
                serialization.Encoding.DER
            )
            return _download(der, f"{base}.cer", "application/pkix-cert")
        if part == "chain":
            if not cert.chain_pem:
                self.message_user(request, "No chain is stored for this certificate.", messages.WARNING)
                return HttpResponseRedirect(self._change_url(cert))
            return _download(cert.chain_pem, f"{base}.chain.pem")
        if part == "fullchain":
            return _download(services.bundle_pem(cert), f"{base}.fullchain.pem")
        raise PermissionDenied

    def _key_download(self, request, cert, part, base):
        if not self.can_export_key(request, cert):
            if request.method == "POST":  # let the service refuse and audit the attempt
                self._export(request, cert, part)
            raise PermissionDenied
        if request.method != "POST":
            return self.form_page(
                request,
                title=f"Download the {self.KEY_PARTS[part]}",
                form=forms.Form(),
                obj=cert,
                submit="Download",
                description="The private key leaves certmgr unencrypted; the download is recorded in the "
                "audit log.",
            )
        body = self._export(request, cert, part)
        if body is None:
            return HttpResponseRedirect(self._change_url(cert))
        return _download(body, f"{base}.key.pem" if part == "key" else f"{base}.bundle.pem")

    def _export(self, request, cert, part):
        if part == "key":
            return self._call(request, services.export_private_key, cert)
        return self._call(request, services.bundle_pem, cert, with_key=True)

    def pkcs12_view(self, request, pk):
        cert = self._object(request, pk)
        if not self.can_export_key(request, cert):
            if request.method == "POST":
                self._call(request, services.export_pkcs12, cert, password="", alias="")
            raise PermissionDenied
        if not cert.has_private_key:
            self.message_user(request, "certmgr holds no private key for this certificate.", messages.ERROR)
            return HttpResponseRedirect(self._change_url(cert))
        form = pki_forms.Pkcs12Form(request.POST or None, initial={"alias": cert.common_name[:64]})
        if request.method == "POST" and form.is_valid():
            try:
                data = services.export_pkcs12(
                    cert,
                    password=form.cleaned_data["password"],
                    alias=form.cleaned_data["alias"],
                    actor=request,
                )
            except errors.PermissionDenied as exc:
                raise PermissionDenied(str(exc)) from exc
            except (errors.ServiceError, ValidationError) as exc:
                apply_service_errors(form, exc)
            else:
                return _download(
                    data, f"{_filename(cert.common_name, cert.serial)}.p12", "application/x-pkcs12"
                )
        return self.form_page(
            request,
            title="Export as PKCS#12",
            form=form,
            obj=cert,
            submit="Download .p12",
            description="Certificate, chain and private key in one password-protected file (AES-256, "
            "PBKDF2-SHA256). The export is recorded in the audit log.",
        )

    def revoke_view(self, request, pk):
        cert = self._object(request, pk)
        self._require_manage(request, cert)
        form = pki_forms.RevokeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            self._revoke(request, [cert], form.cleaned_data["reason"])
            return HttpResponseRedirect(self._change_url(cert))
        return self.form_page(
            request,
            title="Revoke certificate",
            form=form,
            obj=cert,
            submit="Revoke",
            template="admin/pki/certificate/revoke.html",
            submit_danger=True,
            certificates=[cert],
        )

    def renew_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        cert = self._object(request, pk)
        self._require_manage(request, cert)
        new = self._renew(request, cert)
        return issued_redirect(new) if new is not None else HttpResponseRedirect(self._change_url(cert))

    def import_view(self, request):
        if not self.has_manage_permission(request):
            raise PermissionDenied
        form = pki_forms.CertificateImportForm(
            request.POST or None, request.FILES or None, organizations=self.managed_organizations(request)
        )
        if request.method == "POST" and form.is_valid():
            organization = form.cleaned_data["organization"]
            imported, duplicates, rejected = [], [], []
            for name, text, key in form.cleaned_data["sources"]:
                try:
                    result = services.import_certificates(
                        organization, text, key_pem=key, source_name=name, actor=request
                    )
                except errors.PermissionDenied as exc:
                    raise PermissionDenied(str(exc)) from exc
                except (errors.ServiceError, ValidationError) as exc:
                    rejected.append((name, _error_text(exc)))
                    continue
                imported += [
                    (name, c, bool(c.private_key), c.ca.name if c.ca else "") for c in result.imported
                ]
                duplicates += [(name, fp) for fp in result.duplicates]
                rejected += list(result.rejected)
            existing = dict(
                Certificate.objects.filter(
                    organization=organization, fingerprint_sha256__in=[fp for _, fp in duplicates]
                ).values_list("fingerprint_sha256", "pk")
            )
            return self.form_page(
                request,
                title="Import result",
                form=forms.Form(),
                template="admin/pki/certificate/import_result.html",
                imported=imported,
                duplicates=[(name, fp, existing.get(fp)) for name, fp in duplicates],
                rejected=rejected,
            )
        return self.form_page(
            request,
            title="Import certificates",
            form=form,
            submit="Import",
            description="Add existing certificates to the inventory. Each file holds one certificate, "
            "optionally its chain and its private key (kept encrypted, only if it matches). Certificates "
            "of a CA managed here are linked to it.",
        )


# --- CSRs ----------------------------------------------------------------------------------------------
@admin.register(CertificateRequest)
class CertificateRequestAdmin(ReadOnlyPkiAdmin):  # added by "Generate CSR" and "Upload CSR"
    list_display = ["name", "common_name", "san_summary", "key_algorithm", "source", "key_held", "created_at"]
    list_filter = ["source", "key_algorithm", OrganizationFilter]
    search_fields = ["name", "common_name"]
    list_select_related = ["organization"]
    change_form_template = "admin/pki/certificaterequest/change_form.html"
    change_list_template = "admin/pki/certificaterequest/change_list.html"
    detail_fields = [
        "name",
        "organization",
        "source",
        "common_name",
        "san_summary",
        "subject_dn",
        "key_algorithm",
        "key_held",
        "created_at",
        "csr_pem_display",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("private_key").annotate(has_private_key=_HAS_KEY)

    @admin.display(description="SANs")
    def san_summary(self, obj):
        return _short_list(obj.sans, limit=4) if obj.sans else "—"

    @admin.display(description="Key held by certmgr", boolean=True)
    def key_held(self, obj):
        return obj.has_private_key

    @admin.display(description="CSR (PEM)")
    def csr_pem_display(self, obj):
        return _pem_block(obj.csr_pem)

    def remove(self, request, obj):
        services.delete_object(obj, actor=request)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("generate/", view(self.generate_view), name="pki_certificaterequest_generate"),
            path("upload/", view(self.upload_view), name="pki_certificaterequest_upload"),
            path("<int:pk>/download/", view(self.download_view), name="pki_certificaterequest_download"),
            path("<int:pk>/issue/", view(self.issue_view), name="pki_certificaterequest_issue"),
            *super().get_urls(),
        ]

    def _store(self, request, form, fn, **kwargs):
        try:
            csr = fn(
                form.cleaned_data["organization"], name=form.cleaned_data["name"], actor=request, **kwargs
            )
        except errors.PermissionDenied as exc:
            raise PermissionDenied(str(exc)) from exc
        except (errors.ServiceError, ValidationError) as exc:
            apply_service_errors(form, exc)
            return None
        self.message_user(request, f"CSR {csr.name} stored.", messages.SUCCESS)
        return HttpResponseRedirect(self._change_url(csr))

    def generate_view(self, request):
        if not self.has_manage_permission(request):
            raise PermissionDenied
        form = pki_forms.CsrGenerateForm(
            request.POST or None, organizations=self.managed_organizations(request)
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            response = self._store(
                request,
                form,
                services.generate_csr,
                common_name=(data.get("common_name") or "").strip(),
                sans=data.get("sans") or [],
                subject=form.subject_dict(),
                key_algorithm=data["key_algorithm"],
            )
            if response is not None:
                return response
        return self.form_page(
            request,
            title="Generate a CSR",
            form=form,
            submit="Generate",
            description="certmgr makes the key pair and keeps the key encrypted; a certificate issued from "
            "this CSR here carries the key along. Give the CSR to any CA, or issue from it below.",
        )

    def upload_view(self, request):
        if not self.has_manage_permission(request):
            raise PermissionDenied
        form = pki_forms.CsrUploadForm(
            request.POST or None, request.FILES or None, organizations=self.managed_organizations(request)
        )
        if request.method == "POST" and form.is_valid():
            response = self._store(request, form, services.upload_csr, csr_pem=form.cleaned_data["csr_data"])
            if response is not None:
                return response
        return self.form_page(request, title="Upload a CSR", form=form, submit="Upload")

    def download_view(self, request, pk):
        csr = self._object(request, pk)
        return _download(csr.csr_pem, f"{_filename(csr.name, f'csr-{csr.pk}')}.csr")

    def issue_view(self, request, pk):
        csr = self._object(request, pk)
        self._require_manage(request, csr)
        subscribers = Subscriber.objects.restrict(request, Action.MANAGE).filter(
            organization_id=csr.organization_id
        )
        form = pki_forms.IssueFromStoredCsrForm(
            request.POST or None, subscribers=subscribers.order_by("name")
        )
        if request.method == "POST" and form.is_valid():
            try:
                certificate = services.issue_from_csr(csr, form.cleaned_data["subscriber"], actor=request)
            except errors.PermissionDenied as exc:
                raise PermissionDenied(str(exc)) from exc
            except (errors.ServiceError, ValidationError) as exc:
                apply_service_errors(form, exc)
                self.message_user(request, f"Not issued: {_error_text(exc)}", messages.ERROR)
            else:
                if isinstance(certificate, AcmeOrder):
                    acme_order_started(self, request, f"CSR {csr.name}", certificate)
                else:
                    self.message_user(
                        request,
                        f"Issued certificate {certificate.serial} from CSR {csr.name}.",
                        messages.SUCCESS,
                    )
                return issued_redirect(certificate)
        return self.form_page(
            request, title="Issue from this CSR", form=form, obj=csr, submit="Issue certificate"
        )


def acme_order_started(model_admin, request, label: str, order: AcmeOrder) -> None:
    """An ACME CA answers later: say which order runs (the worker may already have finished it)."""
    from acmeca import admin as acme_admin

    order.refresh_from_db(fields=["step"])
    model_admin.message_user(
        request,
        format_html(
            "{}: {} started (step: {}).", label, acme_admin.order_link(order), order.get_step_display()
        ),
        messages.SUCCESS,
    )


def issued_redirect(result: Certificate | AcmeOrder) -> HttpResponseRedirect:
    """To the certificate issued, or to the ACME order that will issue it."""
    if isinstance(result, AcmeOrder):
        return HttpResponseRedirect(reverse("admin:acmeca_acmeorder_change", args=[result.pk]))
    return HttpResponseRedirect(reverse("admin:pki_certificate_change", args=[result.pk]))


# --- CRLs ----------------------------------------------------------------------------------------------
@admin.register(Crl)
class CrlAdmin(ReadOnlyPkiAdmin):
    list_display = ["ca", "number", "this_update", "next_update", "current"]
    list_filter = [CaFilter, CrlOrganizationFilter]
    list_select_related = ["ca", "ca__organization"]
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    change_form_template = "admin/pki/crl/change_form.html"
    detail_fields = ["ca_link", "number", "this_update", "next_update", "revoked_entries"]

    def get_queryset(self, request):
        org_ids = as_actor(request).organization_ids(self.read_action)
        queryset = (
            Crl.objects.select_related("ca", "ca__organization")
            .defer("der", "ca__private_key", "ca__certificate_pem")
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
        return obj.next_update > timezone.now()

    @admin.display(description="CA")
    def ca_link(self, obj):
        return _admin_link(obj.ca)

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
                    entry.revocation_date_utc.strftime("%Y-%m-%d %H:%M"),
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
        base = f"{_filename(crl.ca.name, f'ca-{crl.ca_id}')}-{crl.number}"
        if fmt == "der":
            return _download(der, f"{base}.crl", "application/pkix-crl")
        if fmt == "pem":
            pem = cx509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
            return _download(pem, f"{base}.pem")
        raise PermissionDenied
