"""The admin's tenancy and roles: every ModelAdmin of certmgr derives from ``TenantAdmin``.

Lists and lookups go through ``restrict(actor, action)`` like the API; add/change/delete rights come
from the same role table, so an auditor sees read-only pages and another organization's rows are 404.
Saves and deletes go through the services (subclasses implement ``create``/``update``/``remove``).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect

from certmgr.actors import as_actor
from certmgr.errors import ServiceError
from certmgr.models import Organization
from certmgr.permissions import Action


class TenantAdmin(admin.ModelAdmin):
    read_action: str = Action.VIEW
    write_action: str = Action.MANAGE
    show_full_result_count = False  # no COUNT(*) over the whole table on every page view

    # --- tenancy -----------------------------------------------------------------------------------
    def get_queryset(self, request):
        return super().get_queryset(request).restrict(request, self.read_action)

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
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # --- services do the writing -------------------------------------------------------------------
    def save_model(self, request, obj, form, change):
        saved = self.update(request, obj, form) if change else self.create(request, obj, form)
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
            return super()._changeform_view(request, object_id, form_url, extra_context)
        except (ServiceError, ValidationError) as exc:
            self.message_user(request, _message(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def _delete_view(self, request, object_id, extra_context):
        try:
            return super()._delete_view(request, object_id, extra_context)
        except (ServiceError, ValidationError) as exc:
            self.message_user(request, _message(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def response_action(self, request, queryset):
        try:
            return super().response_action(request, queryset)
        except (ServiceError, ValidationError) as exc:
            self.message_user(request, _message(exc), messages.ERROR)
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


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    return str(exc)


def apply_service_errors(form, exc: ValidationError | ServiceError) -> None:
    """Put a service's field errors on the form (fields it lacks go to the top of the form)."""
    if isinstance(exc, ServiceError):
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)
