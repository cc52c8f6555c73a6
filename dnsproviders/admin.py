"""Admin for app connections: per-kind credential fields, write-only secrets, a "Test connection" button."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import escape, format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe

from certmgr.actors import as_actor
from certmgr.admin_base import OrganizationFilter, TenantAdmin, error_text
from certmgr.encryption import unreadable_secret
from certmgr.errors import ServiceError
from dnsproviders import credentials as creds
from dnsproviders import delegation, services
from dnsproviders.models import AppConnection


def _field_name(kind: creds.Kind, name: str) -> str:
    return f"cred_{kind.name.lower()}_{name}"


# Help for the credential inputs whose schema has none.
CREDENTIAL_HELP = {
    "access_key_id": "The access key id of an IAM user allowed to change the hosted zone's records.",
    "server": "The primary name server that accepts dynamic updates: a host name or an IP address.",
    "tsig_key_name": "The TSIG key's name, exactly as the name server's configuration names it.",
    "api_url": "The server's base URL, e.g. https://auth.example.org.",
    "username": "The account's user name (from the acme-dns /register answer).",
}


def _credential_field(spec: creds.CredentialField) -> forms.Field:
    field: forms.Field
    if spec.kind == "choice":
        field = forms.ChoiceField(
            choices=[("", "---------")] + [(c, c) for c in spec.choices], required=False
        )
    elif spec.kind == "pem":  # a private key: several lines, never shown back
        field = forms.CharField(
            required=False, strip=False, widget=forms.Textarea(attrs={"rows": 5, "autocomplete": "off"})
        )
    elif spec.secret:
        field = forms.CharField(
            required=False,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        )
    else:
        field = forms.CharField(required=False)
    field.label = spec.label + ("" if spec.required else " (optional)")
    help_parts = [
        spec.help
        or CREDENTIAL_HELP.get(spec.name)
        or ("Stored encrypted; never shown again." if spec.secret else "")
    ]
    help_parts = [part for part in help_parts if part]
    if spec.default is not None:
        help_parts.append(f"Default: {spec.default}.")
    field.help_text = " ".join(help_parts)
    return field


class _AppConnectionFormBase(forms.ModelForm):
    """One fieldset per kind (the page's script shows the chosen kind's). Secret inputs are never
    filled in: left empty on an edit, the stored secret is kept."""

    class Meta:
        model = AppConnection
        fields = ["organization", "name", "kind", "description"]
        help_texts = {
            "organization": "The organization whose ACME CAs may use this connection.",
            "name": "How ACME CAs choose this connection, e.g. pdns-lab.",
            "kind": "The DNS provider or protocol; it decides the credentials below. Fixed once saved.",
            "description": "A note for your colleagues (optional).",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.instance.pk:
            return
        for name in ("kind", "organization"):
            if name in self.fields:  # absent on read-only pages
                self.fields[name].disabled = True
        kind = creds.Kind(self.instance.kind)
        self.credentials_unreadable = unreadable_secret(self.instance, "credentials") is not None
        stored = {} if self.credentials_unreadable else self.instance.credentials
        for spec in creds.SCHEMAS[kind].fields:
            field = self.fields.get(_field_name(kind, spec.name))
            if field is None:
                continue
            if self.credentials_unreadable:
                field.help_text = (
                    "The stored credentials cannot be decrypted with the configured keys: enter them again."
                )
            elif spec.secret and stored.get(spec.name):
                field.help_text = "Stored; leave empty to keep it."
            elif not spec.secret and spec.name in stored:
                field.initial = stored[spec.name]

    def clean(self):
        super().clean()
        data = self.cleaned_data
        kind = data.get("kind") or self.instance.kind
        if not kind:
            return data
        schema = creds.schema_for(kind)
        raw = {f.name: data.get(_field_name(schema.kind, f.name)) for f in schema.fields}
        raw = {k: v for k, v in raw.items() if v not in (None, "")}
        readable = self.instance.pk and unreadable_secret(self.instance, "credentials") is None
        existing = self.instance.credentials if readable else None
        try:
            self.credentials = creds.validate(kind, raw, existing=existing)
        except creds.CredentialError as exc:
            for name, errors in exc.errors.items():
                target = _field_name(schema.kind, name)
                self.add_error(target if target in self.fields else None, errors)
        self.raw_credentials = raw
        return data


# Every kind's credential inputs are declared fields of the form, so the admin's fieldsets can name them.
AppConnectionForm = type(
    "AppConnectionForm",
    (_AppConnectionFormBase,),
    {
        _field_name(kind, spec.name): _credential_field(spec)
        for kind, schema in creds.SCHEMAS.items()
        for spec in schema.fields
    },
)


class RepinForm(forms.Form):
    """What the operator confirmed: the fingerprint the page showed, and the page to go back to."""

    host_key = forms.CharField(widget=forms.HiddenInput)
    next = forms.CharField(widget=forms.HiddenInput, required=False)


_NOTHING_BY_DEFAULT = "Nothing to configure: an operator creates each record."
_NOTHING_TO_CONFIGURE = {
    creds.Kind.DELEGATED: "No credentials: each name is delegated with an NS record to certmgr's own DNS "
    "server (_acme-challenge.<name>. NS <CERTMGR_DNS_SERVER_NAME>); the records to create are listed once "
    "saved.",
}


@admin.register(AppConnection)
class AppConnectionAdmin(TenantAdmin):
    form = AppConnectionForm
    list_display = ["name", "kind", "organization", "endpoint", "test_status", "updated_at"]
    list_filter = ["kind", OrganizationFilter]
    search_fields = ["name", "description"]
    list_select_related = ["organization"]
    actions = ["test_selected", "repin_selected"]
    change_form_template = "admin/dnsproviders/appconnection/change_form.html"

    def get_fieldsets(self, request, obj=None):
        sets: list[tuple[str | None, dict[str, Any]]] = [
            (None, {"fields": ["organization", "name", "kind", "description"]})
        ]
        if obj is not None and not self.has_change_permission(request, obj):
            # Read-only page: the non-secret settings, and which secrets are stored (never their values).
            sets.append(("Credentials", {"fields": ["credential_settings"]}))
            sets.append(("Last test", {"fields": ["last_tested_at", "last_test_ok", "last_test_message"]}))
            return sets
        for kind, schema in creds.SCHEMAS.items():
            if obj is not None and obj.kind != kind:
                continue
            names = [_field_name(kind, f.name) for f in schema.fields]
            sets.append(
                (
                    f"{creds.KIND_LABELS[kind]} credentials",
                    {
                        "fields": names or [],
                        "classes": ["kind-fields", f"kind-{kind.value}"],
                        # The admin shows a description as HTML: "<name>" must stay text.
                        "description": ""
                        if names
                        else escape(_NOTHING_TO_CONFIGURE.get(kind, _NOTHING_BY_DEFAULT)),
                    },
                )
            )
        if obj is not None and obj.kind == creds.Kind.DELEGATED:
            sets.append(("Delegation", {"fields": ["delegation_records"]}))
        if obj is not None and obj.kind == creds.Kind.SSH:
            sets.append(("SSH host key", {"fields": ["ssh_host_key"]}))
        if obj is not None:
            sets.append(("Last test", {"fields": ["last_tested_at", "last_test_ok", "last_test_message"]}))
        return sets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "credential_settings",
            "delegation_records",
            "ssh_host_key",
        ]

    @admin.display(description="Pinned host key")
    def ssh_host_key(self, obj):
        if unreadable_secret(obj, "credentials") is not None:
            return "credentials cannot be decrypted"
        pinned = creds.host_key_fingerprint(obj.credentials.get(creds.SSH_HOST_KEY, ""))
        return pinned or (
            "Not pinned yet: the first test or sync pins the key the host shows (trust on first use)."
        )

    @admin.display(description="NS records to create")
    def delegation_records(self, obj):
        """The exact NS record per subscriber name (a wildcard shares its base's), in each parent zone."""
        server = delegation.server_name()
        intro = (
            format_html(
                "Create these records in the parent zones; certmgr's DNS server (<code>{}</code>, listening "
                "on <code>{}</code>) answers the challenges. Each is checked before every order.",
                server,
                settings.CERTMGR_DNS_LISTEN,
            )
            if server
            else mark_safe(
                "<strong>CERTMGR_DNS_SERVER_NAME is not set</strong>: certmgr's DNS server needs a host name "
                "for the NS records to point at."
            )
        )
        records = delegation.required_records(obj)
        if not records:
            return format_html(
                "{}<br>No subscriber uses this connection yet; each name <code>example.com</code> needs "
                "<code>{}</code>.",
                intro,
                delegation.required_record("example.com"),
            )
        return format_html(
            '{}<ul class="delegation-records">{}</ul>',
            intro,
            format_html_join("", "<li><code>{}</code></li>", ((r,) for r in records)),
        )

    @admin.display(description="Settings")
    def credential_settings(self, obj):
        if (error := unreadable_secret(obj, "credentials")) is not None:
            return str(error)
        summary = creds.public_summary(obj.kind, obj.credentials)
        rows = [
            (spec.label, summary.get(spec.name, "—"))
            for spec in creds.schema_for(obj.kind).fields
            if not spec.secret
        ]
        rows += [
            (spec.label, "stored (hidden)" if obj.credentials.get(spec.name) else "not set")
            for spec in creds.schema_for(obj.kind).fields
            if spec.secret
        ]
        if not rows:
            return "Nothing to configure."
        return format_html_join(mark_safe("<br>"), "{}: {}", rows)

    @admin.display(description="Endpoint")
    def endpoint(self, obj):
        summary = obj.public_settings()
        if summary is None:
            return "credentials cannot be decrypted"
        return summary.get("api_url") or summary.get("server") or summary.get("region") or "—"

    @admin.display(description="Last test")
    def test_status(self, obj):
        if obj.last_test_ok is None:
            return "never"
        color, label = ("#2e7d32", "OK") if obj.last_test_ok else ("#c62828", "failed")
        return format_html('<span style="color:{}" title="{}">{}</span>', color, obj.last_test_message, label)

    # --- services ------------------------------------------------------------------------------------
    def create(self, request, obj, form):
        data = form.cleaned_data
        return services.create_connection(
            data["organization"],
            name=data["name"],
            kind=data["kind"],
            description=data.get("description", ""),
            credentials=form.credentials,
            actor=as_actor(request),
        )

    def update(self, request, obj, form):
        original = AppConnection.objects.get(pk=obj.pk)
        return services.update_connection(
            original,
            name=form.cleaned_data["name"],
            description=form.cleaned_data.get("description", ""),
            credentials=form.raw_credentials,
            actor=as_actor(request),
        )

    def remove(self, request, obj):
        services.delete_connection(obj, actor=as_actor(request))

    # --- every save is followed by a test: the page says at once whether the connection works ---------
    def response_add(self, request, obj, post_url_continue=None):
        self._test_after_save(request, obj)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        self._test_after_save(request, obj)
        return super().response_change(request, obj)

    def _test_after_save(self, request, obj) -> None:
        """Run ``services.test_connection`` on the saved row; a failure is a warning (the save stands)."""
        conn = AppConnection.objects.get(pk=obj.pk)
        try:
            result = services.test_connection(conn, actor=as_actor(request))
        except ServiceError as exc:
            self.message_user(
                request,
                f"{conn.name}: saved, but the test could not run: {error_text(exc)}",
                messages.WARNING,
            )
            return
        if result.ok:
            self.message_user(
                request, f"{conn.name}: connection test passed: {result.message}", messages.SUCCESS
            )
        else:
            self.message_user(
                request,
                f"{conn.name}: saved, but the connection test failed: {result.message} Orders that use this "
                "connection will fail until it works.",
                messages.WARNING,
            )

    # --- test connection -----------------------------------------------------------------------------
    def get_urls(self):
        return [
            path(
                "<int:pk>/test/",
                self.admin_site.admin_view(self.test_view),
                name="dnsproviders_appconnection_test",
            ),
            path(
                "<int:pk>/repin-host-key/",
                self.admin_site.admin_view(self.repin_view),
                name="dnsproviders_appconnection_repin",
            ),
            *super().get_urls(),
        ]

    def _repin(self, request, conn, expected: str | None = None) -> None:
        try:
            new = services.repin_host_key(conn, actor=as_actor(request), expected=expected)
        except (ServiceError, ValidationError) as exc:
            self.message_user(request, f"{conn.name}: not re-pinned: {error_text(exc)}", messages.ERROR)
            return
        self.message_user(request, f"{conn.name}: host key re-pinned: {new}", messages.SUCCESS)

    def repin_view(self, request, pk):
        """Re-pin after confirming: the page shows the pinned key and the one the host shows now; the POST
        pins only that one (a host that shows yet another key by then is refused)."""
        conn = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_change_permission(request, conn) or conn.kind != creds.Kind.SSH:
            raise PermissionDenied
        back = request.POST.get("next") or request.GET.get("next") or ""
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
            back = reverse("admin:dnsproviders_appconnection_change", args=[conn.pk])
        if (unreadable := unreadable_secret(conn, "credentials")) is not None:
            self.message_user(request, f"{conn.name}: not re-pinned: {unreadable}", messages.ERROR)
            return HttpResponseRedirect(back)
        form = RepinForm(request.POST or None, initial={"next": back})
        if request.method == "POST" and form.is_valid():
            self._repin(request, conn, expected=form.cleaned_data["host_key"])
            return HttpResponseRedirect(back)
        pinned = creds.host_key_fingerprint(conn.credentials.get(creds.SSH_HOST_KEY, ""))
        try:
            shown, problem = services.shown_host_key(conn, actor=as_actor(request)), ""
        except (ServiceError, ValidationError) as exc:
            shown, problem = "", error_text(exc)
        form = RepinForm(initial={"next": back, "host_key": shown})
        return self.form_page(
            request,
            title="Re-pin the SSH host key",
            form=form,
            obj=conn,
            submit="Yes, pin the key the host shows now" if shown and shown != pinned else None,
            template="admin/dnsproviders/appconnection/repin.html",
            pinned=pinned,
            shown=shown,
            problem=problem,
            back=back,
            cancel_url=back,
        )

    @admin.action(description="Re-pin the SSH host key of selected connections")
    def repin_selected(self, request, queryset):
        for conn in queryset.filter(kind=creds.Kind.SSH):  # ticking the rows is the confirmation
            self._repin(request, conn)

    def _report(self, request, conn, result) -> None:
        level = messages.SUCCESS if result.ok else messages.ERROR
        self.message_user(request, f"{conn.name}: {'OK' if result.ok else 'failed'}: {result.message}", level)

    def test_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        conn = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_change_permission(request, conn):
            raise PermissionDenied
        try:
            self._report(request, conn, services.test_connection(conn, actor=as_actor(request)))
        except ServiceError as exc:
            self.message_user(request, f"{conn.name}: {exc}", messages.ERROR)
        return HttpResponseRedirect(reverse("admin:dnsproviders_appconnection_change", args=[conn.pk]))

    @admin.action(description="Test selected connections")
    def test_selected(self, request, queryset):
        for conn in queryset:
            self._report(request, conn, services.test_connection(conn, actor=as_actor(request)))
