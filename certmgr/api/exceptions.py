"""One error shape for every 4xx (and the rare 5xx) the API returns:

{"error": {"status": 400, "code": "invalid", "message": "...", "fields": {"name": ["..."]}},
 "request_id": "..."}
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from certmgr.denials import record_denied
from certmgr.errors import ServiceError
from certmgr.middleware import current as current_request


def error_body(status_code: int, code: str, message: str, fields: dict | None = None) -> dict:
    error = {"status": status_code, "code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error, "request_id": current_request.get().request_id}


def _flatten_dict(detail: dict) -> dict[str, Any]:
    return {str(k): _flatten(v) for k, v in detail.items()}


def _flatten(detail) -> dict | list | str:
    if isinstance(detail, dict):
        return _flatten_dict(detail)
    if isinstance(detail, list):
        return [_flatten(v) for v in detail]
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.status, exc.code, exc.message, exc.field_errors()), status=exc.status)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    elif isinstance(exc, RequestDataTooBig):
        return Response(
            error_body(413, "too_large", "The request body is larger than the configured limit."), status=413
        )
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ValidationError({"non_field_errors": [str(exc) or "Malformed request."]})
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_handler(exc, context)
    if isinstance(exc, exceptions.PermissionDenied) and context.get("request") is not None:
        view = context.get("view")
        record_denied(context["request"], view=type(view).__name__ if view is not None else "")
    if response is None:
        return None  # a real server error: Django's 500 handling and logging take over
    detail = getattr(exc, "detail", None)
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten_dict(detail) if isinstance(detail, dict) else {"non_field_errors": _flatten(detail)}
        non_field = fields.get("non_field_errors") if isinstance(fields, dict) else None
        message = non_field[0] if isinstance(non_field, list) and non_field else "Invalid input."
        if message == "Invalid input." and isinstance(fields, dict) and fields:
            first = next(iter(fields))
            value = fields[first]
            message = f"{first}: {value[0] if isinstance(value, list) and value else value}"
        body = error_body(response.status_code, "invalid", message, fields)
    else:
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        body = error_body(response.status_code, str(code), str(detail) if detail is not None else str(exc))
    response.data = body
    return response


def json_error_view(status_code: int, code: str, message: str):
    def view(request, exception=None, **kwargs):
        return JsonResponse(error_body(status_code, code, message), status=status_code)

    return view


# Unknown /api/ paths answer JSON 404 for every method (no CSRF page for a POST).
api_not_found = csrf_exempt(json_error_view(status.HTTP_404_NOT_FOUND, "not_found", "Not found."))
