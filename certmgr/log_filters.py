"""Logging filters: one line per refused request.

Django logs every 4xx on ``django.request``; a refusal raised as ``PermissionDenied`` or
``SuspiciousOperation`` carries its traceback, which says nothing about a request the server was right to
refuse and buries the log. ``runserver`` logs the same request again on ``django.server``. What stays is
one line per refused request, with its status, method and path; 5xx keep their traceback.
"""

from __future__ import annotations

import logging


def _status(record: logging.LogRecord) -> int:
    status = getattr(record, "status_code", None)
    if status is None and isinstance(record.args, tuple) and len(record.args) >= 2:
        status = record.args[1]  # django.server: '"%s" %s %s' % (request line, status, size)
    try:
        return int(status)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


class RefusedRequestLine(logging.Filter):
    """On ``django.request``: a 4xx becomes one line (no traceback) naming status, method and path."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = _status(record)
        if 400 <= status < 500:
            request = getattr(record, "request", None)
            method = getattr(request, "method", "") or ""
            record.msg = f"{status} {method} {record.getMessage()}".replace("  ", " ")
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True


class WithoutRefusedRequests(logging.Filter):
    """On ``django.server`` (runserver's access lines): the 4xx are left to ``django.request``'s line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not 400 <= _status(record) < 500
