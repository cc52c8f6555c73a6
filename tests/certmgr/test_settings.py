"""Configuration from the environment: the worker broker follows REDIS_URL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_server

ROOT = Path(__file__).resolve().parents[2]
SHOW_BROKER = "from django_q.brokers import get_broker; b = get_broker(); print(type(b).__name__, b.ping())"


def broker(env: dict[str, str]) -> str:
    clean = {
        "PATH": os.environ["PATH"],
        "DEBUG": "1",
        "DATABASE_URL": "sqlite:////tmp/certmgr-broker.sqlite3",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SHOW_BROKER],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        return True
    except OSError:
        return False


def test_orm_broker_by_default():
    assert broker({}).startswith("ORM")


def test_redis_broker_when_redis_url_is_set():
    require_server(_redis_up(), "Redis is not running on 127.0.0.1:6379")
    assert broker({"REDIS_URL": "redis://127.0.0.1:6379/0"}) == "Redis True"
