"""The ACME server in the admin: profiles (saved through the service; each shows its directory URL, the
certbot command and the cert-manager ClusterIssuer to paste), and the accounts and orders of its clients
(read-only).

Each list reads the rows its columns name in its own query (``list_select_related``: Django's default
follows only non-null foreign keys, and a row's ``__str__`` or ``organization_id`` reaches its profile),
without their PEM and key columns."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from acmeserver import services
from acmeserver.choices import ChallengeType
from acmeserver.models import (
    AcmeEabKey,
    AcmeEarlyRenewal,
    AcmeOrderProfile,
    AcmeProfile,
    AcmeServerAccount,
    AcmeServerAuthorization,
    AcmeServerChallenge,
    AcmeServerOrder,
)
from certmgr.admin_base import ACTION_LIMIT, ReadOnlyAdmin, ServiceAdmin
from pki.admin.base import bulk_columns
from pki.models import Certificate, CertificateAuthority


class AcmeProfileForm(forms.ModelForm):
    """The JSON lists as a person fills them: challenge types ticked, CAA identities one per line."""

    challenge_types = forms.MultipleChoiceField(
        choices=ChallengeType.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="What the server offers clients to prove their names.",
    )
    caa_identities = forms.CharField(
        label="CAA identities",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One per line: the issuer domain names CAA records name for this directory (RFC 8659), "
        "e.g. certmgr.internal; when set, every name's CAA records are checked at finalize (empty: none).",
    )

    class Meta:
        model = AcmeProfile
        # The admin adds the rest from its fieldsets (with its own form fields: the URL's assume_scheme).
        fields = ["challenge_types", "caa_identities"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "caa_identities" in self.fields:
            self.initial["caa_identities"] = "\n".join(self.instance.caa_identities or [])

    def clean_caa_identities(self) -> list[str]:
        return [
            line.strip()
            for line in (self.cleaned_data.get("caa_identities") or "").splitlines()
            if line.strip()
        ]


@admin.register(AcmeProfile)
class AcmeProfileAdmin(ServiceAdmin):
    form = AcmeProfileForm
    list_display = ["name", "organization", "ca", "policy", "validity_days", "enabled"]
    list_select_related = ["organization", "ca", "policy"]
    list_filter = ["enabled"]
    search_fields = ["name", "slug"]
    readonly_fields = ["directory", "client_commands", "cert_manager"]
    actions = ["create_eab_key", "request_early_renewal"]
    change_form_template = "admin/acmeserver/acmeprofile/change_form.html"
    _settings = [
        "organization",
        "name",
        "slug",
        "ca",
        "policy",
        "validity_days",
        "challenge_types",
        "allow_wildcards",
        "allow_ip_identifiers",
        "eab_required",
        "enabled",
        "terms_of_service_url",
        "caa_identities",
    ]
    _limits = ["orders_per_hour", "max_pending_authorizations"]

    def get_fieldsets(self, request, obj=None):
        sets: list = [(None, {"fields": self._settings}), ("Limits per account", {"fields": self._limits})]
        if obj is not None:
            sets.append(
                (
                    "Clients",
                    {
                        "fields": ["directory", "client_commands", "cert_manager"],
                        "description": "What to paste on a client to enroll it with this profile.",
                    },
                )
            )
        return sets

    @admin.display(description="directory URL")
    def directory(self, obj: AcmeProfile) -> str:
        return services.directory_url(obj) if obj.pk else "—"

    @admin.display(description="client commands")
    def client_commands(self, obj: AcmeProfile) -> str:
        if not obj.pk:
            return "—"
        return format_html_join(
            "",
            '<div class="acme-client acme-client-{}"><strong>{}</strong><pre class="pem">{}</pre></div>',
            ((client, client, command) for client, command in services.client_commands(obj)),
        )

    @admin.display(description="ClusterIssuer (cert-manager)")
    def cert_manager(self, obj: AcmeProfile) -> str:
        return format_html('<pre class="pem">{}</pre>', services.cluster_issuer_yaml(obj)) if obj.pk else "—"

    def _create_eab_key(self, request, profile: AcmeProfile) -> None:
        made = self._call(request, services.create_eab_key, profile)
        if made is not None:
            key, hmac_key = made
            self.message_user(
                request,
                f"{profile}: --eab-kid {key.kid} --eab-hmac-key {hmac_key} (not shown again)",
                messages.SUCCESS,
            )

    @admin.action(description="Create an EAB key (shown once)")
    def create_eab_key(self, request, queryset):
        for profile in queryset:
            self._create_eab_key(request, profile)

    def get_urls(self):
        return [
            path(
                "<int:pk>/eab-key/",
                self.admin_site.admin_view(self.eab_key_view),
                name="acmeserver_acmeprofile_eab_key",
            ),
            *super().get_urls(),
        ]

    def eab_key_view(self, request, pk):
        """The change page's "Create an EAB key" button: the key is in the message on the page it leads to,
        which a reload no longer shows."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        profile = self._object(request, pk)
        self._require_manage(request, profile)
        self._create_eab_key(request, profile)
        return HttpResponseRedirect(self._change_url(profile))

    @admin.action(description="Ask clients to renew early (ARI: a window in the past)")
    def request_early_renewal(self, request, queryset):
        for profile in queryset:
            count = self._call(
                request, services.request_early_renewal, profile=profile, reason="asked in the admin"
            )
            if count is not None:
                self.message_user(
                    request, f"{profile}: {count} certificates suggest renewing now", messages.SUCCESS
                )

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*bulk_columns(CertificateAuthority, "ca"))

    def get_readonly_fields(self, request, obj=None):
        return ["organization", *self.readonly_fields] if obj is not None else self.readonly_fields

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "terms_of_service_url":
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def _values(self, form) -> dict:
        return {f: form.cleaned_data[f] for f in services.PROFILE_FIELDS if f in form.cleaned_data}

    def create(self, request, obj, form):
        return services.save_profile(form.cleaned_data["organization"], actor=request, **self._values(form))

    def update(self, request, obj, form):
        current = AcmeProfile.objects.get(pk=obj.pk)
        return services.save_profile(None, actor=request, instance=current, **self._values(form))


@admin.register(AcmeOrderProfile)
class AcmeOrderProfileAdmin(ServiceAdmin):
    """draft-ietf-acme-profiles: the names a directory lists in ``meta.profiles`` (``certbot
    --preferred-profile <name>``), each the policy and validity its orders are issued under."""

    list_display = ["name", "profile", "policy", "validity_days", "description"]
    list_select_related = ["profile", "policy"]
    search_fields = ["name", "description"]
    fields = ["profile", "name", "description", "policy", "validity_days"]

    def get_readonly_fields(self, request, obj=None):
        return ["profile"] if obj is not None else []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        from certmgr.permissions import Action
        from pki.models import Policy

        if db_field.name == "profile":
            kwargs["queryset"] = AcmeProfile.objects.restrict(request, Action.MANAGE)
        elif db_field.name == "policy":
            kwargs["queryset"] = Policy.objects.restrict(request, Action.MANAGE)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def _values(self, form) -> dict:
        return {f: form.cleaned_data[f] for f in services.ORDER_PROFILE_FIELDS if f in form.cleaned_data}

    def create(self, request, obj, form):
        return services.save_order_profile(form.cleaned_data["profile"], actor=request, **self._values(form))

    def update(self, request, obj, form):
        current = AcmeOrderProfile.objects.get(pk=obj.pk)
        return services.save_order_profile(None, actor=request, instance=current, **self._values(form))

    def remove(self, request, obj) -> None:
        services.delete_order_profile(obj, actor=request)


@admin.register(AcmeServerAccount)
class AcmeServerAccountAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "profile", "status", "created_at"]
    list_select_related = ["profile"]
    list_filter = ["status"]
    search_fields = ["public_id", "thumbprint"]
    actions = ["deactivate_accounts"]
    detail_fields = [
        "profile",
        "public_id",
        "thumbprint",
        "jwk",
        "contact",
        "status",
        "created_at",
        "updated_at",
    ]

    @admin.action(
        description="Deactivate selected accounts (their clients can do nothing more)", permissions=["manage"]
    )
    def deactivate_accounts(self, request, queryset):
        for account in queryset.select_related("profile")[:ACTION_LIMIT]:
            if self._call(request, services.deactivate_account, account) is not None:
                self.message_user(request, f"{account}: deactivated.", messages.SUCCESS)


@admin.register(AcmeServerOrder)
class AcmeServerOrderAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "account", "status", "created_at", "certificate"]
    list_select_related = ["account__profile", "certificate"]
    list_filter = ["status"]
    search_fields = ["public_id"]
    detail_fields = [
        "account",
        "public_id",
        "status",
        "identifiers",
        "profile_name",
        "not_before",
        "not_after",
        "expires_at",
        "error",
        "certificate",
        "created_at",
        "authorization_list",
    ]

    @admin.display(description="authorizations")
    def authorization_list(self, obj: AcmeServerOrder) -> str:
        """Each authorization with its challenges' outcomes: what the validator fetched and the error."""
        items = []
        for authz in obj.authorizations.prefetch_related("challenges"):
            url = reverse("admin:acmeserver_acmeserverauthorization_change", args=[authz.pk])
            challenges = format_html_join(
                "",
                "<li>{} {}{}{}</li>",
                (
                    (
                        c.type,
                        c.get_status_display(),
                        format_html(": {}", c.error.get("detail", "")) if c.error else "",
                        format_html(" <code>{}</code>", _record_text(c.validation_record))
                        if c.validation_record
                        else "",
                    )
                    for c in authz.challenges.all()
                ),
            )
            items.append(
                format_html(
                    '<a href="{}">{}</a> ({})<ul>{}</ul>',
                    url,
                    str(authz),
                    authz.get_status_display(),
                    challenges,
                )
            )
        return format_html_join("", "<div>{}</div>", ((item,) for item in items)) if items else "—"

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*bulk_columns(Certificate, "certificate"))


def _record_text(record: list) -> str:
    """The validator's record, one line per attempt (a URL or DNS name, where, what came back)."""
    import json

    return "; ".join(json.dumps(step, sort_keys=True, default=str) for step in record)


class ChallengeInline(admin.TabularInline):
    model = AcmeServerChallenge
    fields = ["type", "status", "error", "validation_record", "validation_seconds", "validated_at"]
    readonly_fields = ["type", "status", "error", "validation_record", "validation_seconds", "validated_at"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AcmeServerAuthorization)
class AcmeServerAuthorizationAdmin(ReadOnlyAdmin):
    list_display = ["identifier_value", "account", "status", "expires_at"]
    list_select_related = ["account__profile"]
    list_filter = ["status"]
    detail_fields = ["account", "identifier_type", "identifier_value", "wildcard", "status", "expires_at"]
    inlines = [ChallengeInline]


@admin.register(AcmeEabKey)
class AcmeEabKeyAdmin(ReadOnlyAdmin):
    list_display = ["kid", "name", "profile", "account", "created_at", "revoked_at"]
    list_select_related = ["profile", "account__profile"]
    search_fields = ["kid", "name"]
    detail_fields = ["profile", "name", "kid", "account", "created_at", "bound_at", "revoked_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("hmac_key")


@admin.register(AcmeEarlyRenewal)
class AcmeEarlyRenewalAdmin(ReadOnlyAdmin):
    """Certificates an operator asked to renew early (``request_early_renewal``): their ARI window lies in
    the past."""

    list_display = ["certificate", "reason", "requested_at"]
    list_select_related = ["certificate"]
    detail_fields = ["certificate", "reason", "requested_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*bulk_columns(Certificate, "certificate"))
