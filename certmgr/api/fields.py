"""API field types every app's serializers share: named enum components, tenant-scoped ids, PEM text."""

from __future__ import annotations

from django.db import models
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent, build_choice_description_list
from rest_framework import serializers

from certmgr.permissions import Action
from certmgr.querysets import tenant_rows

PEM_MAX = 200_000  # characters: a certificate with a long chain fits easily


class EnumChoiceField(serializers.ChoiceField):
    """A choice field whose choice set is one named schema component (``enum_name``) wherever it is used.

    drf-spectacular otherwise names enums after the property, and fields such as ``status`` or ``source``
    mean different choice sets on different resources (a CA's status is not a certificate's)."""

    def __init__(self, choices, *, enum_name: str, **kwargs):
        self.enum_name = enum_name
        super().__init__(choices, **kwargs)


class EnumChoiceFieldExtension(OpenApiSerializerFieldExtension):
    target_class = EnumChoiceField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        choices = [(k, v) for k, v in field.choices.items() if k not in ("", None)]
        component = ResolvedComponent(
            name=field.enum_name,
            type=ResolvedComponent.SCHEMA,
            schema={
                "type": "string",
                "enum": [k for k, _ in choices],
                "description": build_choice_description_list(choices),
            },
            object=EnumChoiceField,
        )
        auto_schema.registry.register_on_missing(component)
        if field.allow_blank:
            return {"oneOf": [component.ref, {"type": "string", "enum": [""]}]}
        return component.ref


class TenantPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A row id the caller may see (restrict VIEW); any other id is "does not exist", like a missing one.

    Same-organization checks are the services'."""

    def __init__(self, model: type[models.Model], **kwargs):
        self.model = model
        kwargs.setdefault("queryset", tenant_rows(model).none())
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        if request is None:
            return tenant_rows(self.model).none()
        return tenant_rows(self.model).restrict(request, Action.VIEW)

    def to_internal_value(self, data):
        if isinstance(data, int) and not isinstance(data, bool) and not 1 <= data < 2**63:
            self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(data)


def pem_field(**kwargs) -> serializers.CharField:
    kwargs.setdefault("max_length", PEM_MAX)
    kwargs.setdefault("trim_whitespace", False)
    return serializers.CharField(**kwargs)
