"""Secrets at rest: Fernet under a key list, rotation, clear errors for missing or wrong keys."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from certmgr import encryption
from certmgr.models import AuditEvent
from dnsproviders.models import AppConnection
from dnsproviders.services import create_connection
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db


def stored_token(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM dnsproviders_appconnection WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_first_key_encrypts_every_key_decrypts(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CERTMGR_ENCRYPTION_KEYS = [old]
    token = encryption.encrypt("s3cret")
    settings.CERTMGR_ENCRYPTION_KEYS = [new, old]
    assert encryption.decrypt(token) == "s3cret"
    settings.CERTMGR_ENCRYPTION_KEYS = [new]
    with pytest.raises(encryption.DecryptionError):
        encryption.decrypt(token)


def test_rotation_reencrypts_everything_under_the_first_key(tenant, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CERTMGR_ENCRYPTION_KEYS = [old]
    conns = [
        create_connection(
            tenant.organization,
            name=f"cf{i}",
            kind="cloudflare",
            credentials={"api_token": f"t{i}"},
            actor=SYSTEM,
        )
        for i in range(3)
    ]
    settings.CERTMGR_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_encryption_keys", stdout=open("/dev/null", "w"))  # noqa: SIM115
    settings.CERTMGR_ENCRYPTION_KEYS = [new]  # the old key is gone: everything must still decrypt
    for conn in conns:
        assert Fernet(new.encode()).decrypt(stored_token(conn.pk).encode())
        assert AppConnection.objects.get(pk=conn.pk).credentials["api_token"] == conn.credentials["api_token"]
    event = AuditEvent.objects.filter(action="encryption.rotate").latest("id")
    assert {"field": "dnsproviders.AppConnection.credentials", "count": 3} in event.details["rotated"]


def test_missing_keys_give_a_clear_error(settings):
    settings.CERTMGR_ENCRYPTION_KEYS = []
    settings.DEBUG = False
    with pytest.raises(ImproperlyConfigured, match="generate_encryption_key"):
        encryption.encrypt("x")


def test_invalid_key_gives_a_clear_error(settings):
    settings.CERTMGR_ENCRYPTION_KEYS = ["not-a-key"]
    with pytest.raises(ImproperlyConfigured, match="invalid key"):
        encryption.encrypt("x")


def test_generate_encryption_key_prints_a_usable_key(capsys):
    call_command("generate_encryption_key")
    Fernet(capsys.readouterr().out.strip().encode())


def test_rotation_names_what_it_cannot_decrypt_and_rotates_the_rest(tenant, settings):
    from django.core.management.base import CommandError
    from django.db import connection

    old, new, lost = (Fernet.generate_key().decode() for _ in range(3))
    settings.CERTMGR_ENCRYPTION_KEYS = [old]
    good = create_connection(
        tenant.organization, name="ok", kind="cloudflare", credentials={"api_token": "t1"}, actor=SYSTEM
    )
    settings.CERTMGR_ENCRYPTION_KEYS = [lost]
    orphan = create_connection(
        tenant.organization, name="orphan", kind="cloudflare", credentials={"api_token": "t2"}, actor=SYSTEM
    )
    settings.CERTMGR_ENCRYPTION_KEYS = [new, old]  # the key of "orphan" is gone
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 secrets could not be re-encrypted"):
        call_command("rotate_encryption_keys", stdout=io.StringIO(), stderr=err)
    assert f"dnsproviders.AppConnection.credentials id {orphan.pk}: cannot be decrypted" in err.getvalue()
    assert Fernet(new.encode()).decrypt(stored_token(good.pk).encode())  # the rest was rotated
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM dnsproviders_appconnection WHERE id = %s", [orphan.pk])
        assert Fernet(lost.encode()).decrypt(cursor.fetchone()[0].encode())  # left as it was
    event = AuditEvent.objects.filter(action="encryption.rotate").latest("id")
    assert event.outcome == "failure"
    assert event.details["not_decryptable"] == [f"dnsproviders.AppConnection.credentials id {orphan.pk}"]
