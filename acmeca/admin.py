"""Admin of external ACME CAs: their registration screens (hooked into the CA admin of ``pki.admin``), the
ACME accounts, the orders with their challenges, and the challenge records.

Everything derives from ``PkiAdmin``: rows go through ``restrict`` (another organization's row is a 404 on
every custom URL), auditors get read-only pages with no buttons and no actions, and every change is a call
of ``acmeca.services`` / ``acmeca.orders``. Orders and challenges come from issuance: there is no add or
change form for them. No page renders a key: account keys, order keys and the EAB HMAC key have no field.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from acmeca import orders, progress, services, vendors
from acmeca.client import HINTS
from acmeca.forms import (
    AcmeCaForm,
    DirectOrderForm,
    RolloverForm,
    connection_label,
    failed_test_warning,
    preset_rows,
)
from acmeca.models import AcmeAccount, AcmeChallenge, AcmeOrder, AcmeSettings
from certmgr import errors
from certmgr.actors import as_actor
from certmgr.admin_base import (
    ACTION_LIMIT,
    CappedCountPaginator,
    IdFilter,
    OrganizationFilter,
    admin_link,
    apply_service_errors,
    badge,
    datetime_text,
)
from certmgr.org_choices import URL_ATTRIBUTE, choices_response
from certmgr.permissions import Action
from dnsproviders.models import AppConnection
from pki.admin.base import ReadOnlyPkiAdmin
from pki.models import CertificateAuthority, CertificateRequest

ORDER_STEP_COLORS = {
    "queued": "#607d8b",
    "authorizing": "#1565c0",
    "waiting_manual": "#ef6c00",
    "finalizing": "#1565c0",
    "done": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#757575",
}
ORDER_STATUS_COLORS = {
    "": "#9e9e9e",
    "pending": "#1565c0",
    "ready": "#00838f",
    "processing": "#1565c0",
    "valid": "#2e7d32",
    "invalid": "#c62828",
}
_VENDORS = {v.value for v in vendors.Vendor}
CHALLENGE_COLORS = {"not_ready": "#9e9e9e", "ready": "#1565c0", "valid": "#2e7d32", "invalid": "#c62828"}
ACCOUNT_COLORS = {"valid": "#2e7d32", "deactivated": "#757575", "revoked": "#c62828", "invalid": "#c62828"}


def _short(text: str, limit: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _vendor_label(vendor: str) -> str:
    try:
        return vendors.preset(vendor).display_label
    except ValueError:
        return vendor


def _rows_table(rows: list[tuple[str, object]]) -> str:
    return format_html(
        '<table class="pki-details">{}</table>', format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
    )


# --- ACME CAs: what the ACME issuer adds to the CA admin (``pki.issuers.CaAdminExtension``) --------------
class AcmeCaAdmin:
    """The ACME CA's page shows its settings and account instead of certificate and key fields; its own
    add and edit screens register or change the ACME account."""

    change_form_template: str | None = "admin/acmeca/ca_change_form.html"

    def fieldsets(self, ca: CertificateAuthority) -> list:
        return [
            (None, {"fields": ["name", "organization", "kind", "status_badge"]}),
            ("ACME settings", {"fields": [settings_display]}),
            ("ACME account", {"fields": [account_display]}),
            ("In use", {"fields": ["usage_display"]}),
        ]

    def readonly_fields(self) -> list:
        return [settings_display, account_display]

    def urls(self, ca_admin) -> list:
        view = ca_admin.admin_site.admin_view
        return [
            path(
                "acme/add/",
                view(lambda request: acme_ca_add_view(ca_admin, request)),
                name="pki_certificateauthority_acme_add",
            ),
            path(
                "acme/choices/",
                view(lambda request: acme_ca_choices_view(ca_admin, request)),
                name="pki_certificateauthority_acme_choices",
            ),
            path(
                "<int:pk>/acme/",
                view(lambda request, pk: acme_ca_edit_view(ca_admin, request, pk)),
                name="pki_certificateauthority_acme_edit",
            ),
        ]

    def add_links(self) -> list[tuple[str, str, str]]:
        return [("Add ACME CA", "admin:pki_certificateauthority_acme_add", "pki-add-acme-ca")]


def _settings_of(ca: CertificateAuthority) -> AcmeSettings | None:
    return (
        AcmeSettings.objects.filter(ca_id=ca.pk)
        .select_related("account", "dns_connection")
        .defer("eab_hmac_key", "account__private_key", "dns_connection__credentials")
        .first()
    )


@admin.display(description="Settings")
def settings_display(ca: CertificateAuthority) -> str:
    row = _settings_of(ca)
    if row is None:
        return "— (no ACME settings)"
    preset = vendors.PRESETS.get(vendors.Vendor(row.vendor)) if row.vendor in _VENDORS else None
    eab = "not used"
    if row.eab_kid:
        eab = format_html("key id <code>{}</code>, HMAC key stored (hidden)", row.eab_kid)
    elif preset is not None and preset.eab_required:
        eab = "required by this CA but not set"
    bundle = "system trust store"
    if row.tls_ca_bundle.strip():
        count = row.tls_ca_bundle.count("BEGIN CERTIFICATE")
        bundle = format_html(
            "{} certificate(s)<details><summary>PEM</summary><pre class='pem'>{}</pre></details>",
            count,
            row.tls_ca_bundle,
        )
    connection = (
        format_html(
            '<a href="{}">{}</a> ({})',
            reverse("admin:dnsproviders_appconnection_change", args=[row.dns_connection_id]),
            row.dns_connection.name,
            row.dns_connection.get_kind_display(),
        )
        if row.dns_connection is not None
        else "—"
    )
    return _rows_table(
        [
            ("Vendor", _vendor_label(row.vendor)),
            ("Directory URL", format_html("<code>{}</code>", row.directory_url)),
            ("Account email", row.email or "—"),
            ("External account binding", eab),
            ("Challenge type", row.get_challenge_type_display()),
            ("DNS app connection", connection),
            ("Hosted zone id", row.hosted_zone_id or "— (found from the domain)"),
            ("ACME profile", row.profile or "—"),
            ("CAA identifiers", row.caa_identifiers or "— (no CAA preflight)"),
            ("Preferred chain", row.preferred_chain or "— (the CA's default)"),
            ("TLS trust", bundle),
            ("Direct issuance", "enabled" if row.direct_issuance else "off (subscribers only)"),
            (
                "Account lost at the CA",
                "registered again automatically" if row.reregister_automatically else "left to you",
            ),
            (
                "Propagation",
                f"timeout {row.propagation_timeout} s, checked every {row.propagation_interval:g} s",
            ),
        ]
    )


@admin.display(description="Account")
def account_display(ca: CertificateAuthority) -> str:
    row = _settings_of(ca)
    account = row.account if row is not None else None
    if account is None:
        return "No account: edit the CA to register one."
    return _rows_table(
        [
            ("Account", admin_link(account, f"account {account.pk}")),
            ("Account URL", format_html("<code>{}</code>", account.account_url)),
            ("Status", badge(account.get_status_display(), ACCOUNT_COLORS.get(account.status, "#555"))),
            ("Key type", account.get_key_kind_display()),
            ("Registered", datetime_text(account.created_at)),
        ]
    )


def _connections(request, organization_id: int | None = None):
    queryset = (
        AppConnection.objects.restrict(request, Action.MANAGE)
        .select_related("organization")
        .defer("credentials")
        .order_by("organization__name", "name")
    )
    return queryset if organization_id is None else queryset.filter(organization_id=organization_id)


def _ca_form_page(ca_admin, request, form, *, title: str, submit: str, obj=None):
    multi = ca_admin.is_multi_org(request) and obj is None
    form.fields["dns_connection"].label_from_instance = lambda c: connection_label(c, with_organization=multi)
    if "organization" in form.fields:
        form.fields["organization"].widget.attrs[URL_ATTRIBUTE] = reverse(
            "admin:pki_certificateauthority_acme_choices"
        )
    chosen = _chosen_connection(form)
    if chosen is not None and chosen.last_test_ok is False:
        messages.warning(request, failed_test_warning(chosen))
    return ca_admin.form_page(
        request,
        title=title,
        form=form,
        obj=obj,
        submit=submit,
        template="admin/acmeca/acme_ca_form.html",
        description="Saving registers an ACME account at the CA (its terms of service are agreed) "
        "with a key made here and stored encrypted.",
        presets=preset_rows(),
    )


def _chosen_connection(form) -> AppConnection | None:
    """The connection the form shows as chosen (posted, or the CA's), among those it offers."""
    field = form.fields["dns_connection"]
    raw = form.data.get("dns_connection") if form.is_bound else form.initial.get("dns_connection")
    if not raw or not str(raw).isdigit():
        return None
    return field.queryset.filter(pk=int(raw)).first()


def acme_ca_choices_view(ca_admin, request):
    """JSON: the DNS connections of ``?organization=<id>`` for the ACME CA form's select."""
    if not ca_admin.has_manage_permission(request):
        raise PermissionDenied
    organizations = ca_admin.managed_organizations(request)

    def make_form(organization):
        form = AcmeCaForm(
            initial={"organization": organization.pk},
            organizations=organizations,
            connections=_connections(request),
        )
        field: Any = form.fields["dns_connection"]
        field.label_from_instance = lambda c: connection_label(c, with_organization=False)
        return form

    return choices_response(request, organizations, make_form)


def _service_failed(form, exc: errors.ServiceError | ValidationError) -> None:
    if isinstance(exc, errors.PermissionDenied):
        raise PermissionDenied(str(exc)) from exc
    apply_service_errors(form, exc)


def acme_ca_add_view(ca_admin, request):
    """Register an external ACME CA: ``services.create_acme_ca`` (which registers the account)."""
    if not ca_admin.has_manage_permission(request):
        raise PermissionDenied
    form = AcmeCaForm(
        request.POST or None,
        organizations=ca_admin.managed_organizations(request),
        connections=_connections(request),
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            ca = services.create_acme_ca(
                data["organization"],
                name=data["name"],
                actor=as_actor(request),
                account_key_kind=data["account_key_kind"],
                **form.settings_values(),
            )
        except (errors.ServiceError, ValidationError) as exc:
            _service_failed(form, exc)
        else:
            ca_admin.message_user(
                request, f"ACME CA {ca.name} registered; its account is ready.", messages.SUCCESS
            )
            return HttpResponseRedirect(reverse("admin:pki_certificateauthority_change", args=[ca.pk]))
    return _ca_form_page(ca_admin, request, form, title="Add ACME CA", submit="Register")


def acme_ca_edit_view(ca_admin, request, pk: int):
    """Edit an ACME CA's settings and name in one transaction (``update_acme_ca``)."""
    ca = ca_admin._object(request, pk)
    if ca.kind != CertificateAuthority.Kind.ACME:
        raise Http404("not an ACME CA")
    ca_admin._require_manage(request, ca)
    row = AcmeSettings.objects.select_related("ca", "dns_connection").get(ca=ca)
    form = AcmeCaForm(
        request.POST or None, instance=row, connections=_connections(request, ca.organization_id)
    )
    if request.method == "POST" and form.is_valid():
        name = form.cleaned_data["name"].strip()
        try:
            services.update_acme_ca(ca, actor=as_actor(request), name=name, **form.settings_values())
        except (errors.ServiceError, ValidationError) as exc:
            _service_failed(form, exc)
        else:
            ca_admin.message_user(request, f"ACME CA {name} saved.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:pki_certificateauthority_change", args=[ca.pk]))
    return _ca_form_page(ca_admin, request, form, title="Edit ACME CA", submit="Save", obj=ca)


# --- shared base of the ACME screens ------------------------------------------------------------------------
class AcmeAdmin(ReadOnlyPkiAdmin):
    """Accounts come from CA registration, orders and challenges from issuance: read-only detail pages."""

    def _url(self, name: str, *args) -> str:
        return reverse(f"admin:acmeca_{self.opts.model_name}_{name}", args=args)

    def _post_only(self, request, pk):
        """The row for a state-changing button: POST, visible (else 404) and manageable (else 403)."""
        if request.method != "POST":
            raise _NotAllowed
        obj = self._object(request, pk)
        self._require_manage(request, obj)
        return obj

    def _button_urls(self, names: list[str]):
        return [
            path(
                f"<int:pk>/{name}/",
                self.admin_site.admin_view(self._button_view(name)),
                name=f"acmeca_{self.opts.model_name}_{name}",
            )
            for name in names
        ]

    def _button_view(self, name: str):
        def view(request, pk):
            try:
                obj = self._post_only(request, pk)
            except _NotAllowed:
                return HttpResponseNotAllowed(["POST"])
            target = getattr(self, f"do_{name}")(request, obj)  # a row or URL to go to next, or None
            return HttpResponseRedirect(
                target if isinstance(target, str) else self._change_url(target or obj)
            )

        return view


class _NotAllowed(Exception):
    pass


# --- accounts ------------------------------------------------------------------------------------------
@admin.register(AcmeAccount)
class AcmeAccountAdmin(AcmeAdmin):
    list_display = ["email_display", "vendor_display", "status_badge", "directory_url", "created_at"]
    list_filter = ["status", "vendor", OrganizationFilter]
    search_fields = ["email", "account_url", "directory_url"]
    list_select_related = ["organization"]
    actions = ["deactivate_accounts", "rollover_keys", "reregister_accounts"]
    change_form_template = "admin/acmeca/acmeaccount/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).defer("private_key")

    def detail_queryset(self, request):
        return self.get_queryset(request).select_related("organization")

    def get_fieldsets(self, request, obj=None):
        return [
            (
                None,
                {
                    "fields": [
                        "email_display",
                        "organization",
                        "vendor_display",
                        "directory_url",
                        "account_url",
                        "status_badge",
                    ]
                },
            ),
            ("Key", {"fields": ["key_kind", "key_rolled_at", "eab_kid"]}),
            ("Terms", {"fields": ["terms_of_service", "terms_agreed_at"]}),
            ("Use", {"fields": ["used_by", "order_link", "created_at", "updated_at"]}),
        ]

    @admin.display(description="Email", ordering="email")
    def email_display(self, obj):
        return obj.email or "(no email)"

    @admin.display(description="Vendor", ordering="vendor")
    def vendor_display(self, obj):
        return _vendor_label(obj.vendor)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.get_status_display(), ACCOUNT_COLORS.get(obj.status, "#555"))

    @admin.display(description="Used by CAs")
    def used_by(self, obj):
        cas = list(
            CertificateAuthority.objects.filter(acme__account=obj).order_by("name").only("id", "name")[:20]
        )
        if not cas:
            return "no CA (a CA registered a newer account, or the CA was deleted)"
        return format_html_join(", ", "{}", ((admin_link(ca),) for ca in cas))

    @admin.display(description="Orders")
    def order_link(self, obj):
        url = reverse("admin:acmeca_acmeorder_changelist") + f"?account={obj.pk}"
        return format_html('<a href="{}">Orders placed with this account</a>', url)

    def delete_warnings(self, obj):
        if obj.settings.exists():
            return [
                "An ACME CA still uses this account: the deletion will be refused. Edit or delete the CA."
            ]
        return ["Certificates this account ordered stay in the inventory."]

    def remove(self, request, obj):
        services.delete_account(obj, actor=as_actor(request))

    def change_form_extra(self, request, obj):
        return {
            **super().change_form_extra(request, obj),
            "is_valid": obj.status == AcmeAccount.Status.VALID,
            "is_lost": obj.status == AcmeAccount.Status.INVALID,
            "in_use": obj.settings.exists(),
        }

    # --- actions and buttons -------------------------------------------------------------------------
    def do_deactivate(self, request, account):
        if self._call(request, services.deactivate_account, account) is not None:
            self.message_user(
                request, f"Account {account.pk} deactivated at the CA ({account.email}).", messages.SUCCESS
            )

    def _rollover(self, request, account, key_kind=None) -> None:
        if self._call(request, services.rollover_account_key, account, key_kind=key_kind) is not None:
            account.refresh_from_db(fields=["key_kind"])
            self.message_user(
                request, f"Account {account.pk}: new {account.get_key_kind_display()} key.", messages.SUCCESS
            )

    def do_reregister(self, request, account, *, new_key: bool = False):
        fresh = self._call(request, services.reregister_account, account, new_key=new_key)
        if fresh is None:
            return None
        key = "a new key" if new_key else "the same key"
        self.message_user(
            request,
            format_html(
                "Registered {} at the CA with {}; the CA uses it from now on.", admin_link(fresh), key
            ),
            messages.SUCCESS,
        )
        return fresh

    def do_reregister_new_key(self, request, account):
        return self.do_reregister(request, account, new_key=True)

    @admin.action(description="Register selected lost accounts again (same key)", permissions=["manage"])
    def reregister_accounts(self, request, queryset):
        for account in queryset.exclude(status=AcmeAccount.Status.VALID)[:ACTION_LIMIT]:
            self.do_reregister(request, account)

    @admin.action(description="Deactivate selected accounts at the CA (irreversible)", permissions=["manage"])
    def deactivate_accounts(self, request, queryset):
        for account in queryset[:ACTION_LIMIT]:
            self.do_deactivate(request, account)

    @admin.action(description="Roll over the key of selected accounts", permissions=["manage"])
    def rollover_keys(self, request, queryset):
        for account in queryset[:ACTION_LIMIT]:
            self._rollover(request, account)

    def get_urls(self):
        return [
            *self._button_urls(["deactivate", "reregister", "reregister_new_key"]),
            path(
                "<int:pk>/rollover/",
                self.admin_site.admin_view(self.rollover_view),
                name="acmeca_acmeaccount_rollover",
            ),
            *super().get_urls(),
        ]

    def rollover_view(self, request, pk):
        account = self._object(request, pk)
        self._require_manage(request, account)
        form = RolloverForm(request.POST or None, initial={"key_kind": account.key_kind})
        if request.method == "POST" and form.is_valid():
            self._rollover(request, account, form.cleaned_data["key_kind"])
            return HttpResponseRedirect(self._change_url(account))
        return self.form_page(
            request, title="Roll over the account key", form=form, obj=account, submit="Roll over"
        )


# --- orders --------------------------------------------------------------------------------------------
class AcmeCaFilter(IdFilter):
    title = "ACME CA"
    parameter_name = "ca"
    field = "ca_id"

    def choice_rows(self, request):
        return list(
            CertificateAuthority.objects.restrict(request)
            .filter(kind=CertificateAuthority.Kind.ACME)
            .order_by("name")
            .values_list("pk", "name")[:200]
        )


class AccountFilter(IdFilter):
    """Only the selected account (the account page links here); not offered as a list."""

    title = "account"
    parameter_name = "account"
    field = "account_id"

    def choice_rows(self, request):
        value = self.value()
        if not (value and value.isdigit()):
            return []
        return [
            (pk, f"account {pk} ({email or 'no email'})")
            for pk, email in AcmeAccount.objects.restrict(request)
            .filter(pk=int(value))
            .values_list("pk", "email")
        ]


def _manual_instructions(ch: AcmeChallenge) -> str:
    extra = (ch.provider_ref or {}).get("extra") or {}
    if extra.get("instructions"):
        return extra["instructions"]
    name = ch.record_name.rstrip(".") + "."
    return f'Create the DNS record: {name} {ch.ttl} IN TXT "{ch.record_value}"'


@admin.register(AcmeOrder)
class AcmeOrderAdmin(AcmeAdmin):
    list_display = [
        "order_id",
        "status_badge",
        "step_badge",
        "identifier_list",
        "ca_name",
        "subscriber_name",
        "attempts",
        "error_short",
        "created_at",
    ]
    list_filter = ["status", "step", AcmeCaFilter, AccountFilter, OrganizationFilter]
    list_select_related = ["ca", "subscriber", "organization"]
    search_fields = ["identifiers"]  # shows the box; get_search_results does the searching
    search_help_text = "A name of the order (or part of one), or an order id."
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    actions = [
        "refresh_orders",
        "retry_orders",
        "cancel_orders",
        "confirm_orders",
        "clear_cleanups",
        "delete_selected",
    ]
    change_form_template = "admin/acmeca/acmeorder/change_form.html"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("ca", "subscriber", "organization")
            .defer(
                "csr_pem",
                "private_key",
                "ca__private_key",
                "ca__certificate_pem",
                "ca__chain_pem",
                "ca__subject",
            )
        )

    def detail_queryset(self, request):
        return (
            self.get_queryset(request)
            .select_related("account", "certificate")
            .defer(
                "account__private_key",
                "certificate__private_key",
                "certificate__certificate_pem",
                "certificate__chain_pem",
            )
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        # The identifiers as JSON text: a substring of any name matches.
        matches = Q(identifiers_text__icontains=term)
        if term.isdigit():
            matches |= Q(pk=int(term))
        return queryset.annotate(identifiers_text=Cast("identifiers", TextField())).filter(matches), False

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or obj.finished)

    def get_fieldsets(self, request, obj=None):
        return [
            (
                None,
                {
                    "fields": [
                        "order_id",
                        "organization",
                        "ca_link",
                        "subscriber_link",
                        "identifier_list",
                        "challenge_type",
                        "status_badge",
                        "step_badge",
                        "certificate_display",
                        "retry_chain_display",
                    ]
                },
            ),
            ("Challenges", {"fields": ["challenges_display"]}),
            (
                "Progress",
                {
                    "fields": [
                        "attempts",
                        "error_display",
                        "next_attempt_at",
                        "cleanup_display",
                        "order_url",
                        "account_link",
                        "requested_by",
                        "created_at",
                        "updated_at",
                        "finished_at",
                    ]
                },
            ),
        ]

    # --- columns and details -------------------------------------------------------------------------
    @admin.display(description="Order", ordering="id")
    def order_id(self, obj):
        return obj.pk

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return badge(
            obj.get_status_display(), ORDER_STATUS_COLORS.get(obj.status, "#555"), "status at the CA"
        )

    @admin.display(description="Step", ordering="step")
    def step_badge(self, obj):
        return badge(obj.get_step_display(), ORDER_STEP_COLORS.get(obj.step, "#555"), "step in certmgr")

    @admin.display(description="Identifiers")
    def identifier_list(self, obj):
        names = obj.names
        shown = ", ".join(names[:3])
        return shown + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")

    @admin.display(description="CA", ordering="ca__name")
    def ca_name(self, obj):
        return obj.ca.name

    @admin.display(description="Subscriber")
    def subscriber_name(self, obj):
        return obj.subscriber.name if obj.subscriber_id else "— (direct)"

    @admin.display(description="Error")
    def error_short(self, obj):
        if not obj.last_error:
            return "—"
        return format_html('<span title="{}">{}</span>', obj.last_error[:2000], _short(obj.last_error, 60))

    @admin.display(description="CA")
    def ca_link(self, obj):
        return admin_link(obj.ca)

    @admin.display(description="Subscriber")
    def subscriber_link(self, obj):
        return admin_link(obj.subscriber) if obj.subscriber_id else "— (direct issuance)"

    @admin.display(description="Account")
    def account_link(self, obj):
        return admin_link(obj.account, f"account {obj.account_id}") if obj.account_id else "—"

    @admin.display(description="Certificate")
    def certificate_display(self, obj):
        cert = obj.certificate
        if cert is None:
            return "— (not issued yet)" if not obj.finished else "— (none)"
        download = reverse("admin:pki_certificate_download", args=[cert.pk, "fullchain"])
        return format_html(
            '{} · expires {} · <a href="{}" class="acme-download">download (PEM with chain)</a>',
            admin_link(cert, cert.serial),
            datetime_text(cert.not_after),
            download,
        )

    @admin.display(description="Retries")
    def retry_chain_display(self, obj):
        chain = orders.retry_chain(obj)
        if len(chain) == 1:
            return "— (not a retry, not retried)"
        earlier = [o for o in chain if o.pk < obj.pk]
        later = [o for o in chain if o.pk > obj.pk]
        parts = []
        if obj.retry_of_id:
            parts.append(format_html("Retry of order {}.", self._order_ref(chain[chain.index(obj) - 1])))
        nexts = [o for o in later if o.retry_of_id == obj.pk]
        if nexts:
            parts.append(format_html("Retried as order {}.", self._order_ref(nexts[0])))
        steps = format_html_join(
            " → ",
            "{}",
            (
                (self._order_ref(o) if o.pk != obj.pk else format_html("<strong>{}</strong>", o.pk),)
                for o in chain
            ),
        )
        parts.append(
            format_html(
                '<span class="acme-chain">Chain: {} ({} orders, {} before this one)</span>',
                steps,
                len(chain),
                len(earlier),
            )
        )
        return format_html_join(" ", "{}", ((part,) for part in parts))

    @staticmethod
    def _order_ref(order: AcmeOrder) -> str:
        url = reverse("admin:acmeca_acmeorder_change", args=[order.pk])
        return format_html(
            '<a href="{}" title="{}">{}</a> ({})',
            url,
            f"order {order.pk}",
            order.pk,
            order.get_step_display().lower(),
        )

    @admin.display(description="Error")
    def error_display(self, obj):
        if not obj.last_error:
            return "—"
        kind = format_html("<code>{}</code>: ", obj.error_type) if obj.error_type else ""
        hint = HINTS.get(obj.error_type, "")
        return format_html("{}{}{}", kind, obj.last_error, format_html(" <em>{}</em>", hint) if hint else "")

    @admin.display(description="Record cleanup")
    def cleanup_display(self, obj):
        if not obj.cleanup_pending:
            return "Done: no challenge record left to remove."
        if obj.cleanup_stopped_at is not None:
            return format_html(
                "Stopped on {}: {}. Remove the records by hand, then press “Clear cleanup”.",
                datetime_text(obj.cleanup_stopped_at),
                obj.cleanup_error or "no reason given",
            )
        return f"Pending (the janitor retries): {obj.cleanup_error or 'not tried yet'}"

    @admin.display(description="Challenge records")
    def challenges_display(self, obj):
        challenges = list(obj.challenges.select_related("authorization").order_by("id"))
        if not challenges:
            return "None yet (the CA has not been asked)."
        waiting = obj.step == AcmeOrder.Step.WAITING_MANUAL
        manual = [ch for ch in challenges if (ch.provider_ref or {}).get("extra", {}).get("instructions")]
        parts = []
        if waiting or (manual and not obj.finished):
            todo = [
                ch for ch in challenges if ch.type == "dns-01" and ch.status != AcmeChallenge.Status.VALID
            ]
            parts.append(
                format_html(
                    '<div class="acme-manual"><strong>Create these DNS records, then press “Confirm DNS '
                    'records”:</strong><ul class="pki-list">{}</ul></div>',
                    format_html_join(
                        "", "<li><code>{}</code></li>", ((_manual_instructions(ch),) for ch in todo)
                    ),
                )
            )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td><code class='acme-value'>{}</code></td>"
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    str(ch.authorization),
                    ch.get_type_display(),
                    ch.record_name,
                    ch.record_value,
                    ch.ttl,
                    badge(ch.get_status_display(), CHALLENGE_COLORS.get(ch.status, "#555")),
                    ch.error or "",
                )
                for ch in challenges
            ),
        )
        parts.append(
            format_html(
                '<table class="pki-details acme-challenges"><tr><th>Identifier</th><th>Type</th>'
                "<th>Record name</th><th>Value</th><th>TTL</th><th>Status</th><th>Error</th></tr>{}</table>",
                rows,
            )
        )
        return format_html_join("", "{}", ((part,) for part in parts))

    def change_form_extra(self, request, obj):
        return {
            **super().change_form_extra(request, obj),
            "finished": obj.finished,
            "waiting_manual": obj.step == AcmeOrder.Step.WAITING_MANUAL,
            "retryable": obj.step != AcmeOrder.Step.DONE,
            "cleanup_pending": obj.cleanup_pending,
            "live": progress.order_progress(obj),
        }

    def delete_warnings(self, obj):
        if not obj.finished:
            return ["This order is still running: cancel it first (its challenge records are removed)."]
        return ["The order's record goes; its certificate stays in the inventory."]

    # --- state changes -------------------------------------------------------------------------------
    def do_refresh(self, request, order):
        if self._call(request, orders.refresh_order, order) is not None:
            order.refresh_from_db(fields=["step", "status"])
            self.message_user(
                request, f"Order {order.pk} refreshed: {order.get_step_display()}.", messages.SUCCESS
            )

    def do_retry(self, request, order):
        outcome = self._call(request, orders.retry_order, order)
        if outcome is None:
            return None
        if outcome.certificate is not None:  # the subscriber now issues from a CA that signs at once
            certificate = outcome.certificate
            self.message_user(
                request,
                format_html("Order {}: issued {}.", order.pk, admin_link(certificate, certificate.serial)),
                messages.SUCCESS,
            )
            return None
        if outcome.kind == "acme_order" and outcome.id == order.pk:
            self.message_user(request, f"Order {order.pk} runs again.", messages.SUCCESS)
            return None
        self.message_user(
            request,
            format_html(
                'Order {} started again as <a href="{}">{}</a>.', order.pk, outcome.admin_url, outcome.label
            ),
            messages.SUCCESS,
        )
        return outcome.admin_url

    def do_cancel(self, request, order):
        if self._call(request, orders.cancel_order, order) is not None:
            self.message_user(
                request, f"Order {order.pk} cancelled; its challenge records are removed.", messages.SUCCESS
            )

    def do_confirm(self, request, order):
        if self._call(request, orders.confirm_manual_records, order) is not None:
            order.refresh_from_db(fields=["step"])
            self.message_user(
                request,
                f"Order {order.pk}: DNS records confirmed, checking them now ({order.get_step_display()}).",
                messages.SUCCESS,
            )

    def do_clear_cleanup(self, request, order):
        if self._call(request, orders.clear_cleanup, order) is not None:
            self.message_user(
                request,
                f"Order {order.pk}: its challenge records are left to you; the janitor stops trying.",
                messages.SUCCESS,
            )

    def _each(self, request, queryset, fn) -> None:
        for order in queryset.order_by("id")[:ACTION_LIMIT]:
            fn(request, order)

    @admin.action(description="Refresh selected orders from the CA", permissions=["manage"])
    def refresh_orders(self, request, queryset):
        self._each(request, queryset, self.do_refresh)

    @admin.action(description="Retry selected orders", permissions=["manage"])
    def retry_orders(self, request, queryset):
        self._each(request, queryset, self.do_retry)

    @admin.action(description="Cancel selected orders", permissions=["manage"])
    def cancel_orders(self, request, queryset):
        self._each(request, queryset, self.do_cancel)

    @admin.action(description="Confirm the manual DNS records of selected orders", permissions=["manage"])
    def confirm_orders(self, request, queryset):
        self._each(request, queryset, self.do_confirm)

    @admin.action(
        description="Clear the record cleanup of selected orders (records removed by hand)",
        permissions=["manage"],
    )
    def clear_cleanups(self, request, queryset):
        self._each(request, queryset.filter(cleanup_pending=True), self.do_clear_cleanup)

    def remove(self, request, obj):
        orders.delete_order(obj, actor=as_actor(request))

    # --- "Create ACME order": direct issuance ------------------------------------------------------------
    def has_add_permission(self, request):
        return self.managed_organizations(request).exists()

    def add_view(self, request, form_url="", extra_context=None):
        orgs = self.managed_organizations(request)
        if not orgs.exists():
            raise PermissionDenied
        form = DirectOrderForm(
            request.POST or None,
            cas=CertificateAuthority.objects.filter(
                organization__in=orgs, kind=CertificateAuthority.Kind.ACME, acme__direct_issuance=True
            ).order_by("name"),
            csrs=CertificateRequest.objects.filter(organization__in=orgs)
            .defer("private_key", "csr_pem")
            .order_by("-created_at"),
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            csr = None
            if data.get("csr") is not None:
                csr = CertificateRequest.objects.get(pk=data["csr"].pk)  # with its PEM and key
            try:
                order = orders.start_direct_order(
                    data["ca"],
                    data["name_list"],
                    actor=as_actor(request),
                    key_algorithm=data["key_algorithm"],
                    csr_pem=csr.csr_pem if csr else None,
                    csr_key_pem=(csr.private_key or None) if csr else None,
                )
            except errors.PermissionDenied as exc:
                raise PermissionDenied(str(exc)) from exc
            except (errors.ServiceError, ValidationError) as exc:
                apply_service_errors(form, exc)
            else:
                order.refresh_from_db(fields=["step"])
                self.message_user(
                    request,
                    f"ACME order {order.pk} started ({order.get_step_display().lower()}).",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(self._change_url(order))
        return self.form_page(
            request,
            title="Create ACME order",
            form=form,
            submit="Create order",
            description="A certificate by names alone, from an ACME CA that allows direct issuance. The "
            "order runs on a worker; its page shows the challenge records and, once issued, the certificate.",
        )

    def delete_queryset(self, request, queryset):
        """Each order on its own: a running one is refused with a message, the finished ones go."""
        for order in queryset[:ACTION_LIMIT]:
            self._call(request, orders.delete_order, order)

    def status_view(self, request, pk):
        """The order's progress as JSON, polled by its page (``acmeca/order_live.js``) while it runs."""
        return JsonResponse(progress.order_progress(self._object(request, pk)))

    def get_urls(self):
        return [
            path(
                "<int:pk>/status/",
                self.admin_site.admin_view(self.status_view),
                name="acmeca_acmeorder_status",
            ),
            *self._button_urls(["refresh", "retry", "cancel", "confirm", "clear_cleanup"]),
            *super().get_urls(),
        ]


# --- challenge records -----------------------------------------------------------------------------------
@admin.register(AcmeChallenge)
class AcmeChallengeAdmin(AcmeAdmin):
    list_display = ["record_name", "type", "value_short", "ttl", "status_badge", "order_link"]
    list_filter = ["status", "type", OrganizationFilter]
    list_select_related = ["organization"]
    search_fields = ["record_name"]
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-order_id", "id")

    def has_delete_permission(self, request, obj=None):
        return False  # records go with their order

    def get_fieldsets(self, request, obj=None):
        return [
            (None, {"fields": ["record_name", "type", "record_value", "ttl", "status_badge", "order_link"]}),
            ("Details", {"fields": ["instructions", "error", "answered_at", "validated_at", "confirmed_at"]}),
        ]

    @admin.display(description="Value")
    def value_short(self, obj):
        return format_html('<code title="{}">{}</code>', obj.record_value, _short(obj.record_value, 48))

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.get_status_display(), CHALLENGE_COLORS.get(obj.status, "#555"))

    @admin.display(description="Order", ordering="order_id")
    def order_link(self, obj):
        url = reverse("admin:acmeca_acmeorder_change", args=[obj.order_id])
        return format_html('<a href="{}">order {}</a>', url, obj.order_id)

    @admin.display(description="Record to create (manual DNS)")
    def instructions(self, obj):
        if obj.type != "dns-01":
            return "— (served by certmgr at the path above)"
        return format_html("<code>{}</code>", _manual_instructions(obj))


def order_link(order: AcmeOrder) -> str:
    """A link to the order's page (used by the subscriber admin's messages)."""
    return format_html(
        '<a href="{}">ACME order {}</a>', reverse("admin:acmeca_acmeorder_change", args=[order.pk]), order.pk
    )


CA_ADMIN = AcmeCaAdmin()
