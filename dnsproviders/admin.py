"""Admin for app connections: per-kind credential fields, write-only secrets, a "Test connection" button."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from certmgr.admin_base import TenantAdmin
from dnsproviders import credentials as creds
from dnsproviders import services
from dnsproviders.models import AppConnection


def _field_name(kind: creds.Kind, name: str) -> str:
    return f"cred_{kind.name.lower()}_{name}"


class AppConnectionForm(forms.ModelForm):
    """One fieldset per kind (the page's script shows the chosen kind's). Secret inputs are never
    filled in: left empty on an edit, the stored secret is kept."""

    class Meta:
        model = AppConnection
        fields = ["organization", "name", "kind", "description"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        editing = bool(self.instance.pk)
        stored = self.instance.credentials if editing else {}
        for kind, schema in creds.SCHEMAS.items():
            for f in schema.fields:
                if f.kind == "choice":
                    field = forms.ChoiceField(
                        choices=[("", "---------")] + [(c, c) for c in f.choices], required=False
                    )
                elif f.secret:
                    field = forms.CharField(
                        required=False,
                        widget=forms.PasswordInput(
                            render_value=False, attrs={"autocomplete": "new-password"}
                        ),
                    )
                else:
                    field = forms.CharField(required=False)
                field.label = f.label + ("" if f.required else " (optional)")
                help_parts = [f.help] if f.help else []
                if f.secret and editing and self.instance.kind == kind and stored.get(f.name):
                    help_parts.append("Stored; leave empty to keep it.")
                elif f.default is not None:
                    help_parts.append(f"Default: {f.default}.")
                field.help_text = " ".join(help_parts)
                if editing and self.instance.kind == kind and not f.secret and f.name in stored:
                    field.initial = stored[f.name]
                self.fields[_field_name(kind, f.name)] = field
        if editing:
            self.fields["kind"].disabled = True
            self.fields["organization"].disabled = True

    def clean(self):
        data = super().clean()
        kind = data.get("kind") or self.instance.kind
        if not kind:
            return data
        schema = creds.schema_for(kind)
        raw = {f.name: data.get(_field_name(schema.kind, f.name)) for f in schema.fields}
        raw = {k: v for k, v in raw.items() if v not in (None, "")}
        try:
            self.credentials = creds.validate(
                kind, raw, existing=self.instance.credentials if self.instance.pk else None
            )
        except creds.CredentialError as exc:
            for name, errors in exc.errors.items():
                target = _field_name(schema.kind, name)
                self.add_error(target if target in self.fields else None, errors)
        self.raw_credentials = raw
        return data


@admin.register(AppConnection)
class AppConnectionAdmin(TenantAdmin):
    form = AppConnectionForm
    list_display = ["name", "kind", "organization", "endpoint", "test_status", "updated_at"]
    list_filter = ["kind", "organization"]
    search_fields = ["name", "description"]
    list_select_related = ["organization"]
    actions = ["test_selected"]
    change_form_template = "admin/dnsproviders/appconnection/change_form.html"

    def get_fieldsets(self, request, obj=None):
        sets = [(None, {"fields": ["organization", "name", "kind", "description"]})]
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
                        "description": ""
                        if names
                        else "Nothing to configure: an operator creates each record.",
                    },
                )
            )
        if obj is not None:
            sets.append(("Last test", {"fields": ["last_tested_at", "last_test_ok", "last_test_message"]}))
        return sets

    def get_readonly_fields(self, request, obj=None):
        return ["last_tested_at", "last_test_ok", "last_test_message"] if obj else []

    @admin.display(description="Endpoint")
    def endpoint(self, obj):
        summary = creds.public_summary(obj.kind, obj.credentials)
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
            actor=request,
        )

    def update(self, request, obj, form):
        original = AppConnection.objects.get(pk=obj.pk)
        return services.update_connection(
            original,
            name=form.cleaned_data["name"],
            description=form.cleaned_data.get("description", ""),
            credentials=form.raw_credentials,
            actor=request,
        )

    def remove(self, request, obj):
        services.delete_connection(obj, actor=request)

    # --- test connection -----------------------------------------------------------------------------
    def get_urls(self):
        return [
            path(
                "<int:pk>/test/",
                self.admin_site.admin_view(self.test_view),
                name="dnsproviders_appconnection_test",
            ),
            *super().get_urls(),
        ]

    def _report(self, request, conn, result) -> None:
        level = messages.SUCCESS if result.ok else messages.ERROR
        self.message_user(request, f"{conn.name}: {'OK' if result.ok else 'failed'}: {result.message}", level)

    def test_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        conn = get_object_or_404(self.get_queryset(request), pk=pk)
        try:
            self._report(request, conn, services.test_connection(conn, actor=request))
        except Exception as exc:
            from certmgr.errors import ServiceError

            if not isinstance(exc, ServiceError):
                raise
            self.message_user(request, f"{conn.name}: {exc}", messages.ERROR)
        return HttpResponseRedirect(reverse("admin:dnsproviders_appconnection_change", args=[conn.pk]))

    @admin.action(description="Test selected connections")
    def test_selected(self, request, queryset):
        for conn in queryset:
            self._report(request, conn, services.test_connection(conn, actor=request))
