"""The admin's tenancy and roles: every ModelAdmin of certmgr derives from ``TenantAdmin``.

Lists and lookups go through ``restrict(actor, action)`` like the API; add/change/delete rights come
from the same role table, so an auditor sees read-only pages and another organization's rows are 404.
Saves and deletes go through the services (subclasses implement ``create``/``update``/``remove``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import RelatedFieldWidgetWrapper
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Field, QuerySet
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.text import capfirst
from django.utils.timesince import timesince, timeuntil

from certmgr import errors
from certmgr.actors import as_actor
from certmgr.errors import ServiceError
from certmgr.models import Organization
from certmgr.org_choices import URL_ATTRIBUTE, choices_response, single_organization
from certmgr.permissions import Action
from certmgr.querysets import TenantQuerySet


class _Rejected(Exception):
    """A service refused a form's save; the form carries the errors and is shown again."""

    def __init__(self, form):
        super().__init__("rejected")
        self.form = form


class TenantAdmin(admin.ModelAdmin):
    read_action: str = Action.VIEW
    write_action: str = Action.MANAGE
    show_full_result_count = False  # no COUNT(*) over the whole table on every page view

    # --- tenancy -----------------------------------------------------------------------------------
    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if not isinstance(queryset, TenantQuerySet):
            raise TypeError(f"{self.model.__name__}'s manager does not return a TenantQuerySet")
        return queryset.restrict(request, self.read_action)

    # --- a page with one form (templates/admin/certmgr/form_page.html): imports, confirmations -------------
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
        return TemplateResponse(request, template or "admin/certmgr/form_page.html", context)

    @staticmethod
    def organization_id_of(obj) -> int | None:
        return obj.pk if isinstance(obj, Organization) else getattr(obj, "organization_id", None)

    def _allowed(self, request, action, obj=None) -> bool:
        actor = as_actor(request)
        if obj is None:
            org_ids = actor.organization_ids(action)
            return org_ids is None or bool(org_ids)
        return actor.can(action, self.organization_id_of(obj))

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff and self._allowed(request, self.read_action)

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request) and self._allowed(request, self.read_action, obj)

    def has_add_permission(self, request):
        return self._allowed(request, self.write_action)

    def has_change_permission(self, request, obj=None):
        return self._allowed(request, self.write_action, obj)

    def has_delete_permission(self, request, obj=None):
        return self._allowed(request, self.write_action, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "organization":
            kwargs["queryset"] = Organization.objects.restrict(request, self.write_action)
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "organization" and self._has_dependent_choices() and field is not None:
            opts = self.opts
            field.widget.attrs[URL_ATTRIBUTE] = reverse(
                f"admin:{opts.app_label}_{opts.model_name}_choices", current_app=self.admin_site.name
            )
        return field

    # --- choices that follow the organization (certmgr.org_choices) --------------------------------
    def _has_dependent_choices(self) -> bool:
        return bool(getattr(self.form, "organization_dependent", None))

    def get_changeform_initial_data(self, request):
        """The organization is preselected when the user can choose only one."""
        initial = super().get_changeform_initial_data(request)
        has_org = any(f.name == "organization" for f in self.opts.concrete_fields)
        if has_org and "organization" not in initial:
            only = single_organization(Organization.objects.restrict(request, self.write_action))
            if only is not None:
                initial["organization"] = only.pk
        return initial

    def get_urls(self):
        urls = super().get_urls()
        if not self._has_dependent_choices():
            return urls
        opts = self.opts
        choices = path(
            "choices/",
            self.admin_site.admin_view(self.dependent_choices_view),
            name=f"{opts.app_label}_{opts.model_name}_choices",
        )
        return [choices, *urls]

    def dependent_choices_view(self, request):
        """JSON: the add form's dependent choices for ``?organization=<id>`` (one the user may write in)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form_class = self.get_form(request)
        return choices_response(
            request,
            Organization.objects.restrict(request, self.write_action),
            lambda org: form_class(initial={"organization": org.pk}),
        )

    # --- services do the writing -------------------------------------------------------------------
    def save_model(self, request, obj, form, change):
        try:
            saved = self.update(request, obj, form) if change else self.create(request, obj, form)
        except errors.PermissionDenied:
            raise
        except (errors.ServiceError, ValidationError) as exc:
            # A refused save shows the form again with the errors on its fields: what was typed is kept.
            apply_service_errors(form, exc)
            raise _Rejected(form) from exc
        obj.pk = saved.pk
        for field in saved._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))

    def create(self, request, obj, form):
        raise NotImplementedError

    def update(self, request, obj, form):
        raise NotImplementedError

    def remove(self, request, obj) -> None:
        raise NotImplementedError

    def delete_model(self, request, obj):
        self.remove(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.remove(request, obj)

    def save_related(self, request, form, formsets, change):
        pass  # no m2m or inlines on service-managed models

    # A refusal from a service becomes a message, and the page is shown again, never a 500. The
    # failure's audit event commits with the admin's transaction.
    def _changeform_view(self, request, object_id, form_url, extra_context):
        try:
            # django-stubs leaves out ModelAdmin's private views (Django has them since 1.x).
            return super()._changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]
        except _Rejected as rejected:
            return self._render_rejected(request, rejected.form, object_id, form_url, extra_context)
        except ServiceError as exc:
            if request.method == "GET":
                raise  # an error page with its status (AdminServiceErrorMiddleware); a redirect would loop
            self.message_user(request, error_text(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        except ValidationError as exc:
            self.message_user(request, error_text(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def _render_rejected(self, request, form, object_id, form_url, extra_context):
        add = object_id is None
        obj = None if add else self.get_object(request, unquote(object_id))
        fieldsets = self.get_fieldsets(request, obj)
        admin_form = helpers.AdminForm(
            # django-stubs types AdminForm's fieldsets narrower than get_fieldsets' (Django passes one to
            # the other in changeform_view).
            form,
            list(fieldsets),  # type: ignore[arg-type]
            {},
            self.get_readonly_fields(request, obj),
            model_admin=self,
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

    def _delete_view(self, request, object_id, extra_context):
        try:
            return super()._delete_view(request, object_id, extra_context)  # type: ignore[misc]  # as above
        except (ServiceError, ValidationError) as exc:
            self.message_user(request, error_text(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def response_action(self, request, queryset, *args, **kwargs):
        try:
            return super().response_action(request, queryset, *args, **kwargs)
        except (ServiceError, ValidationError) as exc:
            self.message_user(request, error_text(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


class IdFilter(admin.SimpleListFilter):
    """Choices from a small table restricted to the viewer's organizations; the value is an id."""

    field = ""

    def choice_rows(self, request) -> list[tuple[int, str]]:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        return [(str(pk), label) for pk, label in self.choice_rows(request)]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if not value.isdigit():
            raise IncorrectLookupParameters(f"{self.parameter_name}: not an id")
        return queryset.filter(**{self.field: int(value)})


class OrganizationFilter(IdFilter):
    """Shown only to people who see more than one organization."""

    title = "organization"
    parameter_name = "organization"
    field = "organization_id"

    def choice_rows(self, request):
        org_ids = as_actor(request).organization_ids(Action.VIEW)
        if org_ids is not None and len(org_ids) < 2:
            return []
        return list(Organization.objects.restrict(request).order_by("name").values_list("pk", "name")[:200])


def model_choice_field(fields: Mapping[str, forms.Field], name: str) -> forms.ModelChoiceField[Any]:
    """``fields[name]`` as the ModelChoiceField it is (a form sets its queryset per request)."""
    field = fields[name]
    if not isinstance(field, forms.ModelChoiceField):
        raise TypeError(f"{name} is a {type(field).__name__}, not a ModelChoiceField")
    return field


def error_text(exc: Exception) -> str:
    """What the operator reads: the messages as sentences (the first letter up, names kept as typed) and,
    for a CA's or provider's problem, its hint."""
    if isinstance(exc, ValidationError):
        return "; ".join(sentence(m) for m in exc.messages)
    text = sentence(exc.message if isinstance(exc, ServiceError) else str(exc))
    hint = getattr(exc, "hint", "")
    return f"{text} {hint}" if hint else text


def sentence(text: str) -> str:
    """``text`` with its first letter up and a full stop; the rest (names such as "pdns-lab") unchanged,
    unless the text starts with a name: a lower-case word with a digit, dot or hyphen stays as it is."""
    text = " ".join(str(text).split())
    if not text:
        return text
    first = text.split(" ", 1)[0].rstrip(":,")
    if not any(c in first for c in "-._0123456789") and not first.startswith(("'", '"')):
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def apply_service_errors(form, exc: ValidationError | ServiceError) -> None:
    """Put a service's field errors on the form (fields it lacks go to the top of the form)."""
    if isinstance(exc, ServiceError):
        field_errors = exc.field_errors()
        if not field_errors:
            form.add_error(None, [error_text(exc)])
            return
        for field, messages in field_errors.items():
            form.add_error(field if field in form.fields else None, messages)
        return
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


# --- what the screens of every app share ----------------------------------------------------------------
COUNT_CAP = 10_000  # a large list counts at most this many rows per page view
ACTION_LIMIT = 500  # rows one bulk action (revoke, renew, issue) handles at a time


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
        rows = self.object_list
        if not isinstance(rows, QuerySet):  # a list: nothing to cap
            return len(rows)
        counted = rows.order_by()[: self.cap + 1].count()
        self.capped = counted > self.cap
        return min(counted, self.cap)


def filename(text: str, fallback: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", (text or "").replace("*", "wildcard")).strip("._")[:60]
    return name or fallback


def download(body: str | bytes, name: str, content_type: str = "application/x-pem-file") -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def badge(text: str, color: str, title: str = "") -> str:
    return format_html(
        '<span class="pki-badge" style="background:{};color:#fff;border-radius:8px;padding:1px 7px;'
        'white-space:nowrap" title="{}">{}</span>',
        color,
        title,
        text,
    )


def datetime_text(value: datetime) -> str:
    """The one date format of every screen: ``2026-12-02 14:37:05 UTC`` (settings' DATETIME_FORMAT)."""
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


def relative_text(value: datetime, now: datetime | None = None) -> str:
    """``in 12 days`` / ``3 hours ago``: the largest unit only, for a glance."""
    now = now or timezone.now()
    if value >= now:
        return f"in {timeuntil(value, now, depth=1)}"
    return f"{timesince(value, now, depth=1)} ago"


def when(value: datetime | None, *, relative: bool = False, empty: str = "—") -> str:
    """A date for a screen: the absolute time, with the relative one beside it where that helps (expiry,
    next renewal); the machine-readable time in ``<time datetime>``."""
    if value is None:
        return empty
    if not relative:
        return format_html('<time datetime="{}">{}</time>', value.isoformat(), datetime_text(value))
    return format_html(
        '<time datetime="{}">{}</time> <span class="cm-relative">({})</span>',
        value.isoformat(),
        datetime_text(value),
        relative_text(value),
    )


def admin_link(obj, text: str | None = None) -> str:
    if obj is None:
        return "—"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text or str(obj))


class ServiceAdmin(TenantAdmin):
    """A screen whose writes are services' and whose custom pages are forms: a refused save shows the form
    again with the service's errors on its fields (what was typed is kept), a role refusal is a 403, and
    the helpers the screens' own views share (``_object``, ``_call``; ``form_page`` is every admin's)."""

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
        if not isinstance(field, Field):  # a reverse relation: no column to look up by
            return None
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
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_{name}", args=args)

    def _change_url(self, obj) -> str:
        return self._url("change", obj.pk)

    def _call(self, request, fn, *args, **kwargs):
        """Run a service; its refusal becomes an error message (a role refusal a 403). None on failure."""
        try:
            return fn(*args, actor=as_actor(request), **kwargs)
        except errors.PermissionDenied as exc:
            raise PermissionDenied(str(exc)) from exc
        except (errors.ServiceError, ValidationError) as exc:
            self.message_user(request, error_text(exc), messages.ERROR)
            return None

    # --- deletion: the service decides; the page never walks millions of related rows -------------------
    delete_confirmation_template = "admin/certmgr/delete_confirmation.html"

    def get_deleted_objects(self, objs, request):
        objs = list(objs)
        to_delete = [format_html("{}: {}", capfirst(self.opts.verbose_name), admin_link(o)) for o in objs]
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


class ReadOnlyAdmin(ServiceAdmin):
    """Rows no form edits (certificates, CSRs, CRLs, ACME orders): the detail page shows
    ``detail_fieldsets`` (or ``detail_fields``) read-only; changes are the screens' buttons and actions."""

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
