"""What the ACME benchmark and the soak share: their throw-away database and the ACME CA they register
against the test bed's Pebble and BIND. Imported after Django is configured by the script."""

from __future__ import annotations

import os


def _admin_url(prefix: str) -> tuple[str, str]:
    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    assert name.startswith(prefix), f"refusing to drop {name!r}: the name must start with {prefix}"
    return url.rsplit("/", 1)[0] + "/postgres", name


def recreate_database(prefix: str) -> None:
    """Drop and create the database of ``DATABASE_URL`` (only one whose name starts with ``prefix``)."""
    import psycopg

    admin, name = _admin_url(prefix)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(prefix: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    admin, name = _admin_url(prefix)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pebble_ca(org, bind, pebble, *, actor, email: str):
    """An ACME CA on the test bed's Pebble, answering DNS-01 through an RFC 2136 connection to BIND."""
    from acmeca import services as acme_services
    from dnsproviders import services as dns_services

    connection = dns_services.create_connection(
        org, name="bind", kind="rfc2136", credentials=bind.credentials(), actor=actor
    )
    return acme_services.create_acme_ca(
        org,
        name="Pebble",
        vendor="custom",
        directory_url=pebble.directory_url,
        tls_ca_bundle=pebble.tls_ca_bundle,
        email=email,
        dns_connection=connection,
        challenge_type="dns-01",
        actor=actor,
    )
