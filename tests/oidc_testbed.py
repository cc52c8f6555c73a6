"""A real OpenID provider on loopback for the single sign-on tests: django-oidc-provider (PyPI) in the tiny
Django project under ``tests/oidc_provider/``, in its own process (``manage.py runserver``'s server on a free
port of 127.0.0.1), with its own SQLite database and RSA signing key made in a temporary directory.

It implements discovery, authorize (with its own login form), token, userinfo and JWKS; nothing of it is
mocked. The provider runs on ``127.0.0.1`` and certmgr's live server on ``localhost``: two hosts, so their
session cookies never meet (cookies ignore ports).

Fixture (module scoped; import it into a test module)::

    from tests.oidc_testbed import oidc_provider  # noqa: F401

- ``issuer``; ``client_id`` / ``client_secret`` of certmgr, registered with the live server's callback;
- ``user(name, password, groups=[...])`` creates or updates an account and sets its groups exactly (so a
  test removes a user from a group between two sign-ins);
- ``settings(role_map)``: the ``CERTMGR_OIDC_*`` settings that point certmgr at it (loopback allowed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.dnsservers import HOST, free_port, stop, tail, unavailable, wait_for

REPO = Path(__file__).resolve().parent.parent
CLIENT_ID = "certmgr-tests"


@dataclass
class OpenIDProvider:
    base_url: str
    client_secret: str
    workdir: Path
    env: dict[str, str] = field(repr=False)
    proc: subprocess.Popen | None = field(default=None, repr=False)
    client_id: str = CLIENT_ID

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/openid"

    @property
    def log(self) -> Path:
        return self.workdir / "provider.log"

    def manage(self, *args: str) -> None:
        """Run a command in the provider's project (its own settings and database)."""
        done = subprocess.run(
            [sys.executable, *args],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"provider command {args} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)

    def user(self, username: str, password: str, *, groups: list[str], email: str = "") -> None:
        self.manage(
            "-m",
            "tests.oidc_provider.cli",
            "user",
            username,
            password,
            "--email",
            email or f"{username}@idp.example.test",
            "--groups",
            *groups,
        )

    def settings(self, role_map: dict) -> dict[str, Any]:
        return {
            "CERTMGR_OIDC_ALLOWED_NETWORKS": ["127.0.0.0/8"],  # the provider runs on loopback
            "CERTMGR_OIDC_ISSUER": self.issuer,
            "CERTMGR_OIDC_CLIENT_ID": self.client_id,
            "CERTMGR_OIDC_CLIENT_SECRET": self.client_secret,
            "CERTMGR_OIDC_SCOPES": "openid email profile groups",
            "CERTMGR_OIDC_ROLE_MAP": json.dumps(role_map),
        }

    def tail_log(self, lines: int = 80) -> str:
        return tail(self.log, lines)


@pytest.fixture(scope="module")
def oidc_provider(live_server, tmp_path_factory) -> Iterator[OpenIDProvider]:
    """django-oidc-provider on loopback with certmgr's live server registered as its client; skipped
    (failed under CI=true) when the package is missing."""
    if importlib.util.find_spec("oidc_provider") is None:
        unavailable("django-oidc-provider not installed: pip install the dev extras (django-oidc-provider)")
    workdir = tmp_path_factory.mktemp("oidc-provider")
    port = free_port()
    base_url = f"http://{HOST}:{port}"
    # Its own settings only: nothing of certmgr's Django environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OP_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.oidc_provider.settings",
        OP_DATABASE=str(workdir / "provider.sqlite3"),
        OP_SITE_URL=base_url,
        PYTHONPATH=str(REPO),
    )
    provider = OpenIDProvider(
        base_url=base_url, client_secret=secrets.token_urlsafe(24), workdir=workdir, env=env
    )
    provider.manage("-m", "django", "migrate", "--noinput")
    provider.manage("-m", "django", "creatersakey")
    provider.manage(
        "-m",
        "tests.oidc_provider.cli",
        "client",
        provider.client_id,
        provider.client_secret,
        f"{live_server.url}/sso/callback/",
    )
    with provider.log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "django", "runserver", f"{HOST}:{port}", "--noreload"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    provider.proc = proc
    try:

        def ready() -> bool:
            r = requests.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=1)
            return r.status_code == 200 and r.json().get("issuer") == provider.issuer

        wait_for(ready, proc, provider.log, "django-oidc-provider")
        yield provider
    finally:
        stop(proc)
