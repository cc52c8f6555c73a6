"""Request validation every API door shares: one way to validate a body, one way to name its errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import ValidationError

from certmgr.errors import ServiceError


def valid(serializer_class, request, *, dotted_errors: bool = False, **kwargs) -> dict:
    """The validated body (the serializer gets the request as context: tenant-scoped ids need it).
    With ``dotted_errors``, errors of nested objects are named by their dotted path (``acme.vendor``)."""
    serializer = serializer_class(data=request.data, context={"request": request}, **kwargs)
    if not serializer.is_valid():
        raise ValidationError(dotted(serializer.errors) if dotted_errors else serializer.errors)
    return serializer.validated_data


def dotted(detail, prefix: str = "") -> dict:
    """Nested serializer errors as one level with dotted paths: ``{"acme": {"vendor": [..]}}`` ->
    ``{"acme.vendor": [..]}``, so the error message and ``fields`` name the exact input."""
    if not isinstance(detail, dict):
        return {prefix or "non_field_errors": detail}
    result: dict = {}
    for key, value in detail.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            result.update(dotted(value, path))
        else:
            result[path] = value
    return result


@contextmanager
def renamed_errors(path: Callable[[str], str]) -> Iterator[None]:
    """Service errors with their field renamed to the request's own name for it."""
    try:
        yield
    except DjangoValidationError as exc:
        if not hasattr(exc, "error_dict"):
            raise
        raise DjangoValidationError({path(k): v for k, v in exc.message_dict.items()}) from exc
    except ServiceError as exc:
        if exc.field:
            exc.field = path(exc.field)
        if exc.fields:
            exc.fields = {path(k): v for k, v in exc.fields.items()}
        raise
