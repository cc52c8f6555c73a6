"""Structured logs through structlog on top of the standard library's logging, so Django's, django-q2's and
our own records share one format: one JSON object per line in production (``CERTMGR_LOG_JSON``, default
on unless ``DEBUG``), readable key=value lines in development. Each record carries the request's context
(request id, actor, organization) bound by the request middleware and the API token authentication."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from structlog.typing import Processor

SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def logging_config(*, json: bool, level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict; also points structlog's own loggers at the standard library."""
    structlog.configure(
        processors=[*SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": SHARED,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info if json else _identity,
                    renderer,
                ],
            }
        },
        # A refused request (4xx) is one line, never a traceback (certmgr/log_filters.py).
        "filters": {
            "refused_request_line": {"()": "certmgr.log_filters.RefusedRequestLine"},
            "without_refused_requests": {"()": "certmgr.log_filters.WithoutRefusedRequests"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # Through the root handler only: Django's own console handler (DEBUG) would print each line twice.
            "django": {"handlers": [], "level": "INFO"},
            "django.request": {"filters": ["refused_request_line"]},
            "django.server": {"filters": ["without_refused_requests"]},
            # django-q2 gives its logger a plain handler of its own unless it already has one.
            "django-q": {"handlers": ["console"], "level": level, "propagate": False},
            # edgegrid-python logs each request's signing key and body at DEBUG: never, whatever the level.
            "akamai.edgegrid": {"level": "INFO"},
            # At DEBUG botocore logs each request's parameters and body: a synced private key (syncs).
            "botocore": {"level": "INFO"},
            "boto3": {"level": "INFO"},
            "urllib3": {"level": "INFO"},
            # paramiko (SSH destinations): a line per channel and SFTP call at DEBUG; at most WARNING.
            "paramiko": {"level": "WARNING"},
        },
    }


def _identity(logger: Any, method: str, event: Any) -> Any:
    return event


def start_request(request_id: str) -> None:
    """A new request's context: what the previous request of this thread bound is forgotten. It is kept after
    the response so that Django's own "Not Found: ..." line, written after the middleware, still has it."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)


class Deferred:
    """A context value found only when a line is written (most requests write none): ``find()`` once."""

    def __init__(self, find: Callable[[], str | None]):
        self._find, self._found = find, False
        self._value: str | None = None

    def value(self) -> str:
        if not self._found:
            self._value, self._found = self._find(), True
        return self._value or ""

    __str__ = __structlog__ = value

    def __repr__(self) -> str:
        return self.value()


def bind_actor(actor: str, organization: str | Deferred | None = None) -> None:
    values: dict[str, Any] = {"actor": actor}
    if organization:
        values["organization"] = organization
    structlog.contextvars.bind_contextvars(**values)
