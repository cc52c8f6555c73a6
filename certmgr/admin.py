"""Admin of the core: organizations, members, API tokens and the audit log."""

from __future__ import annotations

import csv
import json

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.http import StreamingHttpResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from certmgr import audit, invitations, services, two_factor
from certmgr.actors import as_actor
from certmgr.admin_base import ACTION_LIMIT, OrganizationFilter, TenantAdmin
from certmgr.models import ApiToken, AuditEvent, Invitation, JobRun, Membership, Organization, TOTPDevice
from certmgr.permissions import Action

User = get_user_model()

admin.site.site_header = "certmgr"
admin.site.site_title = "certmgr"
admin.site.index_title = "Certificates, CAs and DNS providers"


# --- organizations -----------------------------------------------------------------------------------
@admin.register(Organization)
class OrganizationAdmin(TenantAdmin):
    list_display = ["name", "slug", "two_factor_required", "created_at"]
    search_fields = ["name", "slug"]
    write_action = Action.MANAGE_MEMBERS

    def get_fields(self, request, obj=None):
        return ["name"] if obj is None else ["name", "slug", "two_factor_required"]

    def get_readonly_fields(self, request, obj=None):
        # names are fixed (the slug is in URLs and audit details); the rules of the organization change
        return ["name", "slug"] if obj is not None else []

    def has_add_permission(self, request):
        return as_actor(request).is_superuser

    def update(self, request, obj, form):
        return two_factor.set_requirement(
            obj, form.cleaned_data["two_factor_required"], actor=as_actor(request)
        )

    def has_delete_permission(self, request, obj=None):
        return False  # an organization's audit chain is kept for good

    def create(self, request, obj, form):
        return services.create_organization(form.cleaned_data["name"], actor=as_actor(request))


# --- memberships -------------------------------------------------------------------------------------
class MembershipForm(forms.ModelForm):
    username = forms.CharField(
        max_length=150, help_text="An existing user, or a new one created with the password below."
    )
    email = forms.EmailField(required=False, help_text="For a new user.")
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="For a new user only: the initial password (they can change it after signing in).",
    )

    class Meta:
        model = Membership
        fields = ["organization", "role"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:  # editing: only the role changes
            for name in ("username", "email", "password"):
                self.fields.pop(name, None)
            if "organization" in self.fields:  # absent when the viewer may only read
                self.fields["organization"].disabled = True

    def clean(self):
        super().clean()
        data = self.cleaned_data
        username = (data.get("username") or "").strip()
        if self.instance.pk or not username:
            return data
        user = User.objects.filter(username=username).first()
        if user is None:
            if not data.get("password"):
                self.add_error("password", "A new user needs an initial password.")
            else:
                try:
                    from django.contrib.auth.password_validation import validate_password

                    validate_password(data["password"], User(username=username, email=data.get("email", "")))
                except ValidationError as exc:
                    self.add_error("password", exc)
        elif (
            data.get("organization")
            and Membership.objects.filter(organization=data["organization"], user=user).exists()
        ):
            self.add_error("username", f"{username} is already a member of {data['organization']}.")
        return data


@admin.register(Membership)
class MembershipAdmin(TenantAdmin):
    form = MembershipForm
    list_display = ["user", "organization", "role", "two_factor", "created_at"]
    list_filter = ["role", OrganizationFilter]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user", "organization"]
    write_action = Action.MANAGE_MEMBERS
    actions = ["reset_two_factor"]

    def get_queryset(self, request):
        enrolled = TOTPDevice.objects.filter(user=OuterRef("user"), confirmed=True)
        return super().get_queryset(request).annotate(has_two_factor=Exists(enrolled))

    @admin.display(description="Two-factor", boolean=True, ordering="has_two_factor")
    def two_factor(self, obj):
        return obj.has_two_factor

    @admin.action(description="Reset two-factor authentication of selected members")
    def reset_two_factor(self, request, queryset):
        removed = 0
        for membership in queryset.select_related("user")[:ACTION_LIMIT]:
            removed += two_factor.reset_two_factor(membership.user, actor=as_actor(request))
        self.message_user(
            request,
            f"Removed {removed} authenticator app(s): those members set up a new one at their next sign-in "
            "if their organization requires it.",
        )

    def has_add_permission(self, request):
        # Attaching an existing account by user name is for superusers; administrators invite (below).
        return as_actor(request).is_superuser

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "title": "Members (invite new members under Invitations)"}
        return super().changelist_view(request, extra_context)

    def get_fields(self, request, obj=None):
        # The form drops the new-user fields on an edit: list what it renders, or the page fails.
        if obj is not None:
            return ["member", "organization", "role"]
        return ["organization", "username", "email", "password", "role"]

    def get_readonly_fields(self, request, obj=None):
        return ["member", *super().get_readonly_fields(request, obj)] if obj is not None else []

    @admin.display(description="User")
    def member(self, obj):
        return obj.user.get_username()

    def create(self, request, obj, form):
        data = form.cleaned_data
        user, created = services.get_or_create_user(data["username"], email=data.get("email") or "")
        if created and data.get("password"):
            user.set_password(data["password"])
            user.save(update_fields=["password"])
        return services.add_member(data["organization"], user, data["role"], actor=as_actor(request))

    def update(self, request, obj, form):
        return services.change_role(obj, form.cleaned_data["role"], actor=as_actor(request))

    def remove(self, request, obj):
        services.remove_member(obj, actor=as_actor(request))


# --- invitations ---------------------------------------------------------------------------------------
class InvitationForm(forms.ModelForm):
    class Meta:
        model = Invitation
        fields = ["organization", "email", "role"]


@admin.register(Invitation)
class InvitationAdmin(TenantAdmin):
    """Administrators bring members in by inviting an e-mail address; the invitee signs in or creates an
    account and accepts, so nobody is attached without agreeing and no user name is revealed."""

    form = InvitationForm
    list_display = [
        "email",
        "organization",
        "role",
        "state_display",
        "invited_by",
        "created_at",
        "expires_at",
    ]
    list_filter = ["role", OrganizationFilter]
    search_fields = ["email"]
    list_select_related = ["organization", "invited_by"]
    write_action = Action.MANAGE_MEMBERS
    actions = ["revoke_selected"]

    def has_change_permission(self, request, obj=None):
        return False  # an invitation is sent as it is; withdraw it and send another

    def has_delete_permission(self, request, obj=None):
        return False  # withdrawn, not deleted: the row stays for the audit trail

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["organization", "email", "role", "state_display", "invited_by", "created_at", "expires_at",
                "accepted_at", "accepted_by", "revoked_at"]  # fmt: skip

    def get_fields(self, request, obj=None):
        return (
            self.get_readonly_fields(request, obj) if obj is not None else ["organization", "email", "role"]
        )

    @admin.display(description="State")
    def state_display(self, obj):
        return obj.state()

    def create(self, request, obj, form):
        data = form.cleaned_data
        sent = invitations.invite(data["organization"], data["email"], data["role"], actor=as_actor(request))
        if sent.emailed:
            self.message_user(request, f"Invitation sent to {sent.invitation.email}.", messages.SUCCESS)
        else:
            self.message_user(
                request,
                f"Invitation created, but {sent.email_error}: {sent.link} (shown once)",
                messages.WARNING,
            )
        return sent.invitation

    @admin.action(description="Withdraw the selected pending invitations")
    def revoke_selected(self, request, queryset):
        done = 0
        for invitation in queryset.restrict(request, Action.MANAGE_MEMBERS):
            if invitation.state() == "pending":
                invitations.revoke(invitation, actor=as_actor(request))
                done += 1
        self.message_user(request, f"{done} invitation(s) withdrawn.", messages.SUCCESS)


# --- API tokens ----------------------------------------------------------------------------------------
class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["organization", "user", "name", "role", "expires_at"]
        help_texts = {"user": "The owner; the token never has more rights than the owner's membership."}


@admin.register(ApiToken)
class ApiTokenAdmin(TenantAdmin):
    form = ApiTokenForm
    list_display = [
        "name",
        "prefix",
        "user",
        "organization",
        "role",
        "state_badge",
        "expires_at",
        "last_used_at",
    ]
    list_filter = ["role", OrganizationFilter]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user", "organization"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_tokens"]
    write_action = Action.CREATE_TOKEN

    @admin.display(description="State")
    def state_badge(self, obj):
        return obj.state()

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["organization", "user", "name", "role", "expires_at"]
        return [
            "organization",
            "user",
            "name",
            "role",
            "prefix",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request)  # tokens are revoked, not edited

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if "user" in form.base_fields:
            orgs = Organization.objects.restrict(request, Action.CREATE_TOKEN)
            user_field = form.base_fields["user"]
            if isinstance(user_field, forms.ModelChoiceField):
                user_field.queryset = User.objects.filter(memberships__organization__in=orgs).distinct()
            user_field.initial = request.user.pk
        return form

    def create(self, request, obj, form):
        data = form.cleaned_data
        new = services.create_api_token(
            data["organization"],
            data["user"],
            name=data["name"],
            role=data["role"],
            expires_at=data.get("expires_at"),
            actor=as_actor(request),
        )
        # The one and only time the secret is shown.
        self.message_user(
            request,
            format_html(
                "Token created. Copy it now, it will not be shown again: <code class='api-token'>{}</code>",
                new.secret,
            ),
            messages.WARNING,
        )
        return new.token

    def remove(self, request, obj):
        services.revoke_api_token(obj, actor=as_actor(request))

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # tokens are revoked, so the trail stays
        return actions

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request, queryset):
        for token in queryset:
            services.revoke_api_token(token, actor=as_actor(request))
        self.message_user(request, f"Revoked {queryset.count()} token(s).")


# --- audit log -----------------------------------------------------------------------------------------
class _CachedChoicesFilter(admin.SimpleListFilter):
    """Filter choices from the distinct values of one column, cached briefly (the table is large)."""

    field: str = ""

    def lookups(self, request, model_admin):
        org_ids = as_actor(request).organization_ids(Action.VIEW_AUDIT)
        key = f"audit-filter:{self.field}:{sorted(org_ids) if org_ids is not None else 'all'}"
        values = cache.get(key)
        if values is None:
            values = sorted(
                v
                for v in model_admin.get_queryset(request)
                .order_by()
                .values_list(self.field, flat=True)
                .distinct()
                if v
            )[:500]
            cache.set(key, values, 60)
        return [(v, v) for v in values]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class ActionFilter(_CachedChoicesFilter):
    title = "action"
    parameter_name = "action"
    field = "action"


class TargetTypeFilter(_CachedChoicesFilter):
    title = "target type"
    parameter_name = "target_type"
    field = "target_type"


class ActorFilter(admin.SimpleListFilter):
    """People and tokens of the viewer's organizations, plus system tasks."""

    title = "actor"
    parameter_name = "actor"

    def lookups(self, request, model_admin):
        orgs = Organization.objects.restrict(request, Action.VIEW_AUDIT)
        users = User.objects.filter(memberships__organization__in=orgs).distinct().order_by("username")
        tokens = ApiToken.objects.filter(organization__in=orgs).order_by("name")
        return (
            [(f"user:{u.pk}", u.get_username()) for u in users[:200]]
            + [(f"token:{t.pk}", f"token {t.prefix} ({t.name})") for t in tokens[:200]]
            + [("system:", "System tasks")]
        )

    def queryset(self, request, queryset):
        value = self.value()
        if not value or ":" not in value:
            return queryset
        kind, _, actor_id = value.partition(":")
        queryset = queryset.filter(actor_type=kind)
        return queryset.filter(actor_id=actor_id) if actor_id else queryset


class DateRangeFilter(admin.FieldListFilter):
    """From / to date inputs (inclusive days), as ``time__gte`` / ``time__lt`` query parameters."""

    template = "admin/certmgr/date_range_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path):
        self.lookup_gte = f"{field_path}__gte"
        self.lookup_lt = f"{field_path}__lt"
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = "date range"

    def expected_parameters(self):
        return [self.lookup_gte, self.lookup_lt]

    def _param(self, name):
        value = self.used_parameters.get(name)
        return value[-1] if isinstance(value, list) else value

    def queryset(self, request, queryset):
        import datetime as dt

        filters = {}
        for name, shift in ((self.lookup_gte, 0), (self.lookup_lt, 1)):
            raw = self._param(name)
            if raw:
                try:
                    day = dt.date.fromisoformat(str(raw)[:10])
                except ValueError as exc:
                    raise admin.options.IncorrectLookupParameters(f"{name}: not a date") from exc
                start = timezone.make_aware(dt.datetime.combine(day + dt.timedelta(days=shift), dt.time()))
                filters[name] = start
        return queryset.filter(**filters)

    def choices(self, changelist):
        yield {
            "gte": self._param(self.lookup_gte) or "",
            "lt": self._param(self.lookup_lt) or "",
            "gte_name": self.lookup_gte,
            "lt_name": self.lookup_lt,
            "query_string": changelist.get_query_string(remove=[self.lookup_gte, self.lookup_lt]),
            "other_params": [
                (k, v)
                for k, v in changelist.get_filters_params().items()
                if k not in (self.lookup_gte, self.lookup_lt)
            ],
        }


AUDIT_EVENT_FIELDS = (
    "time",
    "organization",
    "action",
    "outcome",
    "error",
    "actor_type",
    "actor_label",
    "actor_id",
    "target_type",
    "target_id",
    "target_repr",
    "details_pretty",
    "request_id",
    "ip",
    "user_agent",
    "chain",
    "sequence",
    "prev_hash",
    "hash",
)


@admin.register(AuditEvent)
class AuditEventAdmin(TenantAdmin):
    read_action = Action.VIEW_AUDIT
    list_display = ["time", "organization", "actor_label", "action", "target_repr", "outcome_badge"]
    list_filter = [
        OrganizationFilter,
        ActorFilter,
        ActionFilter,
        TargetTypeFilter,
        "outcome",
        ("time", DateRangeFilter),
    ]
    search_fields = ["action", "actor_label", "target_repr", "target_id", "error", "request_id"]
    list_select_related = ["organization"]
    list_per_page = 100
    change_list_template = "admin/certmgr/auditevent/change_list.html"
    fields = AUDIT_EVENT_FIELDS
    readonly_fields = AUDIT_EVENT_FIELDS

    @admin.display(description="Outcome", ordering="outcome")
    def outcome_badge(self, obj):
        color = "#2e7d32" if obj.outcome == AuditEvent.Outcome.SUCCESS else "#c62828"
        return format_html('<span style="color:{}">{}</span>', color, obj.get_outcome_display())

    @admin.display(description="Details")
    def details_pretty(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.details, indent=2, sort_keys=True))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [
            path("export.csv", self.admin_site.admin_view(self.export_csv), name="certmgr_auditevent_export"),
            *super().get_urls(),
        ]

    def export_csv(self, request):
        """The list as filtered and searched on screen, streamed as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        queryset = changelist.get_queryset(request)
        org_ids = as_actor(request).organization_ids(Action.VIEW_AUDIT)
        with transaction.atomic():
            for org_id in sorted(org_ids) if org_ids is not None else [None]:
                audit.record(
                    request,
                    "audit.export",
                    ("certmgr.auditevent", "", "audit log CSV export"),
                    organization=org_id,
                    filters=dict(request.GET.items()),
                )
        columns = [
            "time",
            "organization_id",
            "actor_type",
            "actor_label",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "outcome",
            "error",
            "request_id",
            "ip",
            "user_agent",
            "details",
            "hash",
        ]

        class Echo:
            def write(self, value):
                return value

        writer = csv.writer(Echo())

        def rows():
            yield writer.writerow(columns)
            for event in queryset.iterator(chunk_size=2000):
                yield writer.writerow([_csv_safe(_csv_value(event, c)) for c in columns])

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
        return response


def _csv_value(event: AuditEvent, column: str) -> str:
    value = getattr(event, column)
    if column == "time":
        return value.isoformat()
    if column == "details":
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def _csv_safe(value: str) -> str:
    # Spreadsheets run cells that start with these as formulas (CSV injection).
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@admin.register(JobRun)
class JobRunAdmin(admin.ModelAdmin):
    """Runs of the periodic jobs. They span organizations (their errors name certificates of any), so
    only superusers see them."""

    list_display = ["name", "trigger", "status", "started_at", "duration_display", "counts_display"]
    list_filter = ["name", "status", "trigger"]
    date_hierarchy = "started_at"
    readonly_fields = ["name", "trigger", "status", "started_at", "finished_at", "counts", "errors"]
    show_full_result_count = False

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Duration")
    def duration_display(self, obj: JobRun) -> str:
        return f"{obj.duration.total_seconds():.1f} s" if obj.duration else "—"

    @admin.display(description="Counts")
    def counts_display(self, obj: JobRun) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(obj.counts.items())) or "—"
