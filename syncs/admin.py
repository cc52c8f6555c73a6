"""Admin of certificate syncs: destinations (Test, Sync now), rules, runs (Retry), and a panel on the
certificate and subscriber pages that says where each certificate is deployed and since when."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from certmgr.actors import as_actor
from certmgr.admin_base import OrganizationFilter, ReadOnlyAdmin, ServiceAdmin, admin_link, badge, when
from certmgr.permissions import Action
from dnsproviders.models import AppConnection
from pki.admin import panels
from pki.admin.base import bulk_columns
from pki.models import Certificate, Subscriber
from syncs import services
from syncs.choices import CONNECTION_KIND, DestinationKind, RunStatus, RunTrigger
from syncs.models import Deployment, SyncDestination, SyncRule, SyncRun

RUN_COLORS = {
    RunStatus.PENDING: "#946c00",
    RunStatus.RUNNING: "#205493",
    RunStatus.SUCCEEDED: "#2e7d32",
    RunStatus.FAILED: "#b3261e",
    RunStatus.SUPERSEDED: "#666",
}


class SyncDestinationForm(forms.ModelForm):
    class Meta:
        model = SyncDestination
        fields = ["organization", "name", "kind", "connection", "region", "options", "enabled"]


@admin.register(SyncDestination)
class SyncDestinationAdmin(ServiceAdmin):
    form = SyncDestinationForm
    list_display = ["name", "kind", "connection", "region", "enabled", "test_status"]
    list_filter = ["kind", "enabled", OrganizationFilter]
    search_fields = ["name"]
    list_select_related = ["connection", "organization"]
    actions = ["test_selected", "sync_selected"]
    change_form_template = "admin/syncs/syncdestination/change_form.html"
    readonly_fields = ["last_tested_at", "last_test_ok", "last_test_message", "host_key"]

    @admin.display(description="SSH host key")
    def host_key(self, obj):
        """SSH: the key pinned on the connection ("Re-pin host key…" above changes it)."""
        if obj is None or obj.pk is None or obj.kind != DestinationKind.SSH:
            return "—"
        pinned = (obj.connection.public_settings() or {}).get("host_key", "—")
        return format_html(
            '<code class="ssh-host-key">{}</code>, pinned on the connection {}',
            pinned,
            admin_link(obj.connection),
        )

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, *(["organization", "kind"] if obj is not None else [])]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "connection":
            kwargs["queryset"] = AppConnection.objects.restrict(request, Action.MANAGE).filter(
                kind__in=sorted(set(CONNECTION_KIND.values()))
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="last test")
    def test_status(self, obj):
        if obj.last_test_ok is None:
            return "—"
        return badge(
            "passed" if obj.last_test_ok else "failed",
            "#2e7d32" if obj.last_test_ok else "#b3261e",
            obj.last_test_message,
        )

    def create(self, request, obj, form):
        data = form.cleaned_data
        return services.create_destination(
            data["organization"],
            name=data["name"],
            kind=data["kind"],
            connection=data.get("connection"),
            region=data.get("region", ""),
            options=data.get("options") or {},
            enabled=data.get("enabled", True),
            actor=as_actor(request),
        )

    def update(self, request, obj, form):
        changes = {f: form.cleaned_data[f] for f in form.changed_data if f in services._DESTINATION_EDITABLE}
        return services.update_destination(obj, actor=as_actor(request), **changes)

    def remove(self, request, obj):
        services.delete_destination(obj, actor=as_actor(request))

    def get_urls(self):
        return [
            path(
                "<int:pk>/test/",
                self.admin_site.admin_view(self.test_view),
                name="syncs_syncdestination_test",
            ),
            path(
                "<int:pk>/sync/",
                self.admin_site.admin_view(self.sync_view),
                name="syncs_syncdestination_sync",
            ),
            *super().get_urls(),
        ]

    def _test(self, request, dest) -> None:
        result = self._call(request, services.test_destination, dest)
        if result is not None:
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(
                request, f"{dest.name}: {'OK' if result.ok else 'failed'}: {result.message}", level
            )

    def _sync(self, request, dest) -> None:
        runs = self._call(request, services.sync_now, destination=dest, trigger=RunTrigger.MANUAL)
        if runs is not None:
            self.message_user(request, f"{dest.name}: {len(runs)} certificate(s) queued for syncing.")

    def test_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        dest = self._object(request, pk)
        self._require_manage(request, dest)
        self._test(request, dest)
        return HttpResponseRedirect(self._change_url(dest))

    def sync_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        dest = self._object(request, pk)
        self._require_manage(request, dest)
        self._sync(request, dest)
        return HttpResponseRedirect(self._change_url(dest))

    @admin.action(description="Test selected destinations", permissions=["manage"])
    def test_selected(self, request, queryset):
        for dest in queryset.select_related("connection"):
            self._test(request, dest)

    @admin.action(description="Sync now", permissions=["manage"])
    def sync_selected(self, request, queryset):
        for dest in queryset:
            self._sync(request, dest)


class SyncRuleForm(forms.ModelForm):
    name_patterns = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line: example.com, *.example.com or ~regex (RE2); empty = any name.",
    )

    class Meta:
        model = SyncRule
        fields = [
            "destination",
            "subscriber",
            "name_patterns",
            "name_schema",
            "include_private_key",
            "remove_on_expiry_or_revocation",
            "enabled",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["name_patterns"] = "\n".join(self.instance.name_patterns or [])

    def clean_name_patterns(self):
        return [
            line.strip()
            for line in (self.cleaned_data.get("name_patterns") or "").splitlines()
            if line.strip()
        ]


@admin.register(SyncRule)
class SyncRuleAdmin(ServiceAdmin):
    form = SyncRuleForm
    list_display = ["__str__", "destination", "subscriber", "name_schema", "include_private_key", "enabled"]
    list_filter = ["enabled", OrganizationFilter]
    list_select_related = ["destination", "subscriber", "organization"]

    def get_readonly_fields(self, request, obj=None):
        return ["destination"] if obj is not None else []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "destination":
            kwargs["queryset"] = SyncDestination.objects.restrict(request, Action.MANAGE)
        if db_field.name == "subscriber":
            kwargs["queryset"] = Subscriber.objects.restrict(request, Action.MANAGE)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def create(self, request, obj, form):
        data = dict(form.cleaned_data)
        return services.create_rule(data.pop("destination"), actor=as_actor(request), **data)

    def update(self, request, obj, form):
        changes = {f: form.cleaned_data[f] for f in form.changed_data if f in services._RULE_EDITABLE}
        return services.update_rule(obj, actor=as_actor(request), **changes)

    def remove(self, request, obj):
        services.delete_rule(obj, actor=as_actor(request))


class DestinationFilter(admin.SimpleListFilter):
    title = "destination"
    parameter_name = "destination"

    def lookups(self, request, model_admin):
        return [(d.pk, d.name) for d in SyncDestination.objects.restrict(request).order_by("name")[:200]]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(destination_id=value) if value and str(value).isdigit() else queryset


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "name",
        "destination",
        "certificate_link",
        "status_badge",
        "attempts",
        "trigger",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "action", "trigger", DestinationFilter, OrganizationFilter]
    list_select_related = ["destination", "certificate", "organization"]
    search_fields = ["name", "serial"]
    actions = ["retry_selected"]
    detail_fields = [
        "destination",
        "certificate_link",
        "name",
        "action",
        "trigger",
        "status_badge",
        "attempts",
        "next_attempt_at",
        "identifier",
        "version",
        "serial",
        "include_private_key",
        "error",
        "created_at",
        "started_at",
        "finished_at",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*bulk_columns(Certificate, "certificate"))

    @admin.display(description="certificate")
    def certificate_link(self, obj):
        return admin_link(obj.certificate, obj.certificate.common_name or obj.certificate.serial)

    @admin.display(description="status")
    def status_badge(self, obj):
        return badge(obj.get_status_display(), RUN_COLORS.get(obj.status, "#666"), obj.error)

    @admin.action(description="Retry now", permissions=["manage"])
    def retry_selected(self, request, queryset):
        done = [r for r in queryset if self._call(request, services.retry_run, r) is not None]
        if done:
            self.message_user(request, f"{len(done)} run(s) queued again.")


# --- where a certificate is deployed: a panel on pki's pages ----------------------------------------------
def _deployments_panel(rows: list[Deployment], title: str) -> SafeString:
    if not rows:
        return format_html(
            '<fieldset class="module aligned"><h2>{}</h2><p>Not deployed anywhere.</p></fieldset>', title
        )
    body = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
        (
            (
                admin_link(d.destination),
                d.name,
                d.certificate.serial,
                d.identifier,
                when(d.deployed_at),
                d.drift or "in step" if d.checked_at else "not checked yet",
            )
            for d in rows
        ),
    )
    return format_html(
        '<fieldset class="module aligned sync-deployments"><h2>{}</h2><table><thead><tr><th>Destination</th>'
        "<th>Name</th><th>Serial</th><th>Identifier</th><th>Since</th><th>Drift check</th></tr></thead>"
        "<tbody>{}</tbody></table></fieldset>",
        title,
        body,
    )


def certificate_panel(request, obj: Certificate) -> SafeString:
    return _deployments_panel(services.deployments_of(certificate=obj), "Deployed to")


def subscriber_panel(request, obj: Subscriber) -> SafeString:
    return _deployments_panel(services.deployments_of(subscriber=obj), "Its certificates are deployed to")


panels.register("certificate", certificate_panel)
panels.register("subscriber", subscriber_panel)
