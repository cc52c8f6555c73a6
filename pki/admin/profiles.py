"""Policies and subscribers: their forms, and issuing from a subscriber."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from certmgr import errors
from certmgr.actors import as_actor
from certmgr.admin_base import (
    ACTION_LIMIT,
    OrganizationFilter,
    admin_link,
    apply_service_errors,
    badge,
    datetime_text,
    model_choice_field,
)
from certmgr.permissions import Action
from pki import forms as pki_forms
from pki import issuers, services
from pki.admin import panels
from pki.admin.base import PkiAdmin, bulk_columns
from pki.admin.filters import (
    CaFilter,
    PolicyFilter,
)
from pki.admin.outcomes import live_context, outcome_redirect, say_pending
from pki.admin.rendering import STATUS_COLORS, short_list
from pki.issuers import Outcome
from pki.models import (
    CertificateAuthority,
    Policy,
    Subscriber,
)


# --- policies ------------------------------------------------------------------------------------------
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
            (
                "Keys and validity",
                {"fields": ["allowed_key_algorithms", "max_validity_days", "new_key_at_renewal"]},
            ),
            (
                "Usages",
                {"fields": ["key_usages", "extended_key_usages", "other_extended_key_usages", "allow_ca"]},
            ),
        ]

    @admin.display(description="Common names")
    def cn_patterns(self, obj):
        return short_list(obj.common_name_patterns)

    @admin.display(description="SAN names")
    def san_pattern_list(self, obj):
        kinds = dict(pki_forms.SAN_TYPE_CHOICES)
        types = (
            f" [{', '.join(kinds.get(t, t) for t in obj.allowed_san_types)}]" if obj.allowed_san_types else ""
        )
        return short_list(obj.san_patterns) + types

    @admin.display(description="Key algorithms")
    def key_algorithms(self, obj):
        labels = dict(pki_forms.KEY_ALGORITHMS)
        return short_list([labels.get(k, k) for k in obj.allowed_key_algorithms], limit=6)

    @admin.display(description="Subscribers", ordering="subscriber_total")
    def subscriber_count(self, obj):
        return obj.subscriber_total

    def delete_warnings(self, obj):
        if obj.subscribers.exists():
            return ["Subscribers use this policy: the deletion will be refused until they use another one."]
        return []

    def create(self, request, obj, form):
        return services.save_policy(
            form.cleaned_data["organization"], actor=as_actor(request), **form.service_values()
        )

    def update(self, request, obj, form):
        original = Policy.objects.get(pk=obj.pk)
        return services.save_policy(None, actor=as_actor(request), instance=original, **form.service_values())

    def remove(self, request, obj):
        services.delete_object(obj, actor=as_actor(request))


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
        "auto_renew",
        "last_operation",
    ]  # key and validity are on the subscriber's page: the list keeps what fits 1366 px
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
            .defer(*bulk_columns(CertificateAuthority, "ca"))
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
            *self._issuer_option_fieldsets(),
            (
                "Subordinate CA",
                {
                    "fields": ["ca_certificate", "ca_path_length"],
                    "classes": ["collapse"],
                    "description": "A CA certificate for a CA run elsewhere (its key or CSR stays there); "
                    "the subscriber's policy must allow CA certificates.",
                },
            ),
        ]
        if obj is not None:
            sets.append(("Last operation", {"fields": ["last_operation", "last_operation_at"]}))
            sets.append(
                (
                    "Renewal",
                    {
                        "fields": [
                            "key_at_renewal",
                            "renewal_failures",
                            "last_error_category",
                            "next_attempt_at",
                        ]
                    },
                )
            )
            sets.append(("Certificates", {"fields": ["recent_certificates"]}))
            if self._publication_hints(obj):
                sets.append(
                    (
                        "Records to publish",
                        {
                            "fields": ["publication_hints"],
                            "description": "What the issuing CA suggests publishing for these names, to copy "
                            "into the DNS as it is.",
                        },
                    )
                )
        return sets

    @staticmethod
    def _publication_hints(obj) -> list[issuers.PublicationHint]:
        """The issuing CA's backend's hints (ACME: CAA records allowing only it), asked once per page."""
        cached = getattr(obj, "_publication_hints_cache", None)
        if cached is None:
            try:
                backend = issuers.backend_for(obj.ca if obj.ca_id else None)
            except LookupError:
                cached = []
            else:
                cached = backend.publication_hints(obj)
            obj._publication_hints_cache = cached
        return cached

    @staticmethod
    def _issuer_option_fieldsets() -> list:
        """One fieldset per CA kind whose issuer lets a subscriber choose (ACME: profile, challenge type)."""
        by_kind: dict[str, list[str]] = {}
        for name, (kind, _) in pki_forms.SubscriberForm.issuer_option_fields().items():
            by_kind.setdefault(kind, []).append(name)
        return [
            (
                f"Options of {issuers.backend_for_kind(kind).label or kind} subscribers",
                {"fields": names, "classes": [f"issuer-options-{kind}"]},
            )
            for kind, names in by_kind.items()
        ]

    def change_form_extra(self, request, obj):
        return {
            **super().change_form_extra(request, obj),
            **live_context(obj.pk),
            "panels": panels.render("subscriber", request, obj),
        }

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "last_operation",
            "last_operation_at",
            "key_at_renewal",
            "renewal_failures",
            "last_error_category",
            "next_attempt_at",
            "recent_certificates",
            "publication_hints",
        ]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "ca" and field is not None:
            # The script hides what an ACME CA decides when one of these is chosen.
            acme_ids = CertificateAuthority.objects.restrict(request, Action.MANAGE).filter(
                kind=CertificateAuthority.Kind.ACME
            )
            field.widget.attrs["data-acme-cas"] = json.dumps(
                list(acme_ids.values_list("pk", flat=True)[:500])
            )
            field.widget.attrs["data-acme-decides"] = json.dumps(pki_forms.SubscriberForm.ACME_DECIDES)
            field.widget.attrs["data-acme-options"] = json.dumps(
                [
                    name
                    for name, (kind, _) in pki_forms.SubscriberForm.issuer_option_fields().items()
                    if kind == CertificateAuthority.Kind.ACME
                ]
            )
        return field

    def get_form(self, request, obj=None, change=False, **kwargs):
        # The issuer option fields are the form's own (one per option a registered issuer declares), not
        # the model's: the admin lists them in a fieldset, the model form must not look for them.
        fields = kwargs.get("fields") or flatten_fieldsets(self.get_fieldsets(request, obj))
        readonly = set(self.get_readonly_fields(request, obj))
        kwargs["fields"] = [f for f in fields if not f.startswith("issuer_option_") and f not in readonly]
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:  # the CA and policy of the subscriber's own organization only
            for name in ("ca", "policy"):
                if name in form.base_fields:
                    field = model_choice_field(form.base_fields, name)
                    if field.queryset is not None:
                        field.queryset = field.queryset.filter(organization_id=obj.organization_id)
        return form

    @admin.display(description="Issuer")
    def issuer(self, obj):
        if obj.issuer_type == Subscriber.IssuerType.SELF_SIGNED:
            return "self-signed"
        return obj.ca.name if obj.ca_id else "—"

    @admin.display(description="SANs")
    def san_summary(self, obj):
        return short_list(obj.sans) if obj.sans else "—"

    @admin.display(description="Last operation", ordering="last_operation_at")
    def last_operation(self, obj):
        if not obj.last_operation_status:
            return "—"
        return format_html(
            "{} {}",
            badge(
                obj.get_last_operation_status_display(), STATUS_COLORS.get(obj.last_operation_status, "#555")
            ),
            obj.last_operation_message[:200],
        )

    @admin.display(description="Key at renewal")
    def key_at_renewal(self, obj):
        return services.renewal_plan(obj)

    @admin.display(description="Records")
    def publication_hints(self, obj):
        return format_html_join(
            "",
            '<div class="pki-publication"><strong>{}</strong><p>{}</p><pre class="pem">{}</pre></div>',
            (
                (hint.title, hint.description, "\n".join(hint.records) or "—")
                for hint in self._publication_hints(obj)
            ),
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
                    admin_link(c, c.serial),
                    badge(c.get_status_display(), STATUS_COLORS.get(c.status, "#555")),
                    datetime_text(c.not_after),
                )
                for c in recent
            ),
        )
        return format_html(
            '<ul class="pki-list">{}</ul><a href="{}">All certificates of {}</a>', rows, all_url, obj.name
        )

    def create(self, request, obj, form):
        return services.save_subscriber(
            form.cleaned_data["organization"], actor=as_actor(request), **form.service_values()
        )

    def update(self, request, obj, form):
        original = Subscriber.objects.get(pk=obj.pk)
        return services.save_subscriber(
            None, actor=as_actor(request), instance=original, **form.service_values()
        )

    def remove(self, request, obj):
        services.delete_object(obj, actor=as_actor(request))

    # --- issuance -----------------------------------------------------------------------------------
    def _issue(self, request, subscriber, *, service=services.issue, **kwargs) -> Outcome | None:
        """Issue (or, with ``service=services.retry_now``, renew at once) and say what happened."""
        outcome = self._call(request, service, subscriber, **kwargs)
        if outcome is None:
            return None
        if outcome.certificate is None:
            say_pending(self, request, subscriber.name, outcome)
        else:
            certificate = outcome.certificate
            self.message_user(
                request,
                format_html(
                    "{}: issued certificate {} (expires {}).",
                    subscriber.name,
                    admin_link(certificate, certificate.serial),
                    datetime_text(certificate.not_after),
                ),
                messages.SUCCESS,
            )
        return outcome

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
        outcome = self._issue(request, subscriber)
        if outcome is not None:
            return outcome_redirect(outcome)
        return HttpResponseRedirect(self._change_url(subscriber))

    def issue_csr_view(self, request, pk):
        subscriber = self._object(request, pk)
        self._require_manage(request, subscriber)
        form = pki_forms.IssueFromCsrForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                outcome = services.issue(
                    subscriber, csr_pem=form.cleaned_data["csr_data"], actor=as_actor(request)
                )
            except errors.PermissionDenied as exc:
                raise PermissionDenied(str(exc)) from exc
            except (errors.ServiceError, ValidationError) as exc:
                apply_service_errors(form, exc)  # shown once: on the form, not also as a message
            else:
                if outcome.certificate is None:
                    say_pending(self, request, subscriber.name, outcome)
                else:
                    self.message_user(
                        request,
                        f"Issued certificate {outcome.certificate.serial} from the CSR (no private key is "
                        "stored).",
                        messages.SUCCESS,
                    )
                return outcome_redirect(outcome)
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
