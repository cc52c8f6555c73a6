"""The development log shows one line per refused request (4xx), never a traceback; a 500 keeps its."""

from __future__ import annotations

import logging

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import path

from certmgr.urls import urlpatterns as site_urls


def _deny(request):
    raise PermissionDenied("members.manage")


def _crash(request):
    raise RuntimeError("a real bug")


urlpatterns = [path("probe/deny/", _deny), path("probe/crash/", _crash), *site_urls]


def _request_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "django.request"]


@pytest.mark.urls(__name__)
def test_a_refused_request_is_one_line_without_a_traceback(db, caplog):
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.INFO):
        assert client.get("/probe/deny/").status_code == 403
        assert client.post("/api/v1/subscribers/").status_code in (401, 403)
    lines = [caplog.handler.format(r) for r in _request_records(caplog)]
    assert len(lines) == 2, lines
    assert lines[0].endswith("403 GET Forbidden (Permission denied): /probe/deny/"), lines
    assert "/api/v1/subscribers/" in lines[1] and " POST " in lines[1], lines
    assert not any("Traceback" in line or "\n" in line for line in lines), lines


@pytest.mark.urls(__name__)
def test_a_server_error_keeps_its_traceback(db, caplog):
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.INFO):
        assert client.get("/probe/crash/").status_code == 500
    (record,) = _request_records(caplog)
    assert record.exc_info is not None and "RuntimeError: a real bug" in caplog.handler.format(record)


def test_runserver_leaves_a_refused_request_to_the_request_line(caplog):
    server = logging.getLogger("django.server")
    with caplog.at_level(logging.INFO):
        server.warning('"%s" %s %s', "GET /admin/ HTTP/1.1", 403, 0)
        server.info('"%s" %s %s', "GET /admin/ HTTP/1.1", 200, 1234)
    shown = [r.getMessage() for r in caplog.records if r.name == "django.server"]
    assert shown == ['"GET /admin/ HTTP/1.1" 200 1234'], shown
