"""Domain errors. Each door turns them into its own form: a form error, a 4xx JSON body, an exit status."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal the user can act on. ``status`` is the HTTP status the API answers with."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, fields: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field if field is not None else next(iter(fields or {}), None)
        # Several inputs at fault at once (e.g. every policy rule a request breaks), each with its messages.
        self.fields = fields

    def field_errors(self) -> dict[str, list[str]] | None:
        if self.fields:
            return self.fields
        return {self.field: [self.message]} if self.field else None


class PermissionDenied(ServiceError):
    status = 403
    code = "permission_denied"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class OutboundRefused(ServiceError):
    """A user-typed endpoint resolves to an address certmgr may not reach."""

    status = 400
    code = "outbound_refused"


class UpstreamError(ServiceError):
    """A provider or CA answered with an error, or could not be reached."""

    status = 502
    code = "upstream_error"
