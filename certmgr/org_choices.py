"""Choices that follow a form's organization: CAs, policies, connections, channels of that organization only.

A form with an organization field lists in ``organization_dependent`` the fields whose rows belong to one
organization. The chosen (or preselected) organization narrows their querysets; a choice of another
organization is refused on its own field with a sentence (never "Unknown DNS connection" later, from the
service). A small static script (``certmgr/organization_choices.js``) reloads the dependent selects from
the admin's JSON ``choices`` endpoint when the organization changes; without script the server-side
narrowing and the check still hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from django import forms
from django.http import Http404, JsonResponse

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.db.models import QuerySet
    from django.http import HttpRequest

    _Form = forms.BaseForm
else:
    _Form = object

SCRIPT = "certmgr/organization_choices.js"
URL_ATTRIBUTE = "data-dependent-choices-url"


def single_organization(organizations: QuerySet[Any]) -> Any | None:
    """The one organization of ``organizations``, or None when there are none or several."""
    first_two = list(organizations[:2])
    return first_two[0] if len(first_two) == 1 else None


class OrganizationChoicesMixin(_Form):
    """Goes in front of a Django form with an ``organization`` field (or an ``instance`` that has one)."""

    #: field name -> what one of its rows is called in an error ("CA", "policy", "DNS connection").
    organization_dependent: ClassVar[dict[str, str]] = {}

    class Media:
        js = [SCRIPT]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.narrow_to_organization()

    def selected_organization_id(self) -> int | None:
        """The posted organization, else the initial one, else the edited row's."""
        field = self.fields.get("organization")
        if field is not None and not field.disabled:
            raw = self.data.get(self.add_prefix("organization")) if self.is_bound else None
            if raw is None:
                raw = self.initial.get("organization", field.initial)
            value = getattr(raw, "pk", raw)
            if value not in (None, "") and str(value).isdigit():
                return int(value)
            return None
        instance = getattr(self, "instance", None)
        return getattr(instance, "organization_id", None)

    def narrow_to_organization(self) -> None:
        org_id = self.selected_organization_id()
        if org_id is None:
            return
        for name in self.organization_dependent:
            field = self.fields.get(name)
            if isinstance(field, forms.ModelChoiceField) and field.queryset is not None:
                field.queryset = field.queryset.filter(organization_id=org_id)

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]  # BaseForm's hook, left out of django-stubs
        org_id = self.selected_organization_id()
        if org_id is not None:
            for name, what in self.organization_dependent.items():
                chosen = self.cleaned_data.get(name)
                rows: list[Any] = list(chosen) if hasattr(chosen, "__iter__") else [chosen]  # type: ignore[arg-type]
                strays = [row for row in rows if row is not None and row.organization_id != org_id]
                if strays and name not in self.errors:
                    names = ", ".join(str(row) for row in strays)
                    self.add_error(
                        name, f"{names} belongs to another organization: choose a {what} of this one."
                    )
        self.narrow_to_organization()  # the page shown again lists this organization's rows only


def choices_response(
    request: HttpRequest, organizations: QuerySet[Any], make_form: Callable[[Any], forms.BaseForm]
) -> JsonResponse:
    """``{"fields": {name: [[value, label], ...]}}`` of the dependent fields of ``make_form(organization)``.

    ``organizations`` are those the viewer may choose (another organization's id is a 404).
    """
    raw = request.GET.get("organization", "")
    if not raw.isdigit():
        raise Http404("no organization")
    organization = organizations.filter(pk=int(raw)).first()
    if organization is None:
        raise Http404("unknown organization")
    form = make_form(organization)
    dependent = getattr(form, "organization_dependent", {})
    fields: dict[str, list[list[str]]] = {}
    for name in dependent:
        field = form.fields.get(name)
        if isinstance(field, forms.ModelChoiceField):
            fields[name] = [[str(value), str(label)] for value, label in field.iterator(field)]
    return JsonResponse({"organization": organization.pk, "fields": fields})
