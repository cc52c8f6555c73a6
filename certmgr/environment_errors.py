"""A management command run in the wrong environment (no database, an unmigrated one, missing settings) ends
with one line that says what is wrong and what to do, never a traceback."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

HINT_DEV = "for the environment of `make run` use scripts/manage COMMAND"


def _database() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"SQLite {db['NAME']}"
    return f"{db.get('NAME', '')} on {db.get('HOST') or 'localhost'}:{db.get('PORT') or 'default port'}"


def describe(exc: BaseException) -> str | None:
    """The one-line explanation of ``exc`` when it is an environment problem, else None (a real bug)."""
    if isinstance(exc, ImproperlyConfigured):
        return f"certmgr is not configured: {exc} ({HINT_DEV})"
    if isinstance(exc, DatabaseError):
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "no such table" in text or ("relation" in text and "does not exist" in text):
            return (
                f"the database ({_database()}) is not migrated: {text}. Run `manage.py migrate` with the "
                f"same environment ({HINT_DEV}), or set DATABASE_URL to the migrated database"
            )
        if type(exc).__name__ == "OperationalError":
            return f"cannot use the database ({_database()}): {text}. Check DATABASE_URL"
    return None
