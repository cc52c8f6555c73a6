#!/usr/bin/env python
"""Django's command-line utility for certmgr."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "certmgr.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    try:
        execute_from_command_line(sys.argv)
    except (ImproperlyConfigured, DatabaseError) as exc:
        if "--traceback" in sys.argv:
            raise
        from certmgr.environment_errors import describe

        message = describe(exc)
        if message is None:
            raise
        sys.exit(f"manage.py: {message}")


if __name__ == "__main__":
    main()
