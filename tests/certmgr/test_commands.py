"""Bootstrap commands for scripts, and configuration refusals, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from certmgr.models import AuditEvent, Membership, Organization

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


@pytest.mark.django_db
def test_bootstrap_commands_for_scripts(capsys):
    call_command("create_organization", "Initech")
    call_command("add_member", "initech", "milton", "operator")
    capsys.readouterr()
    call_command("create_api_token", "Initech", "milton", "operator", "--expires-days", "30")
    secret = capsys.readouterr().out.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/organizations/").json()["results"][0]["name"] == "Initech"
    assert Membership.objects.get(user__username="milton").role == "operator"
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "actor_type"))
    assert actions == [
        ("organization.create", "system"),
        ("membership.create", "system"),
        ("api_token.create", "system"),
    ]


@pytest.mark.django_db
def test_command_refusals_are_clear():
    call_command("create_organization", "Initech")
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_organization", "initech")
    with pytest.raises(CommandError, match="no organization named"):
        call_command("add_member", "nope", "x", "auditor")
    call_command("add_member", "initech", "peter", "auditor")
    with pytest.raises(CommandError, match="more rights than its owner"):
        call_command("create_api_token", "initech", "peter", "admin")
    assert Organization.objects.count() == 1


def test_production_refuses_to_start_without_secret_key():
    result = manage("check", env={"DATABASE_URL": "sqlite:////tmp/unused.sqlite3"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_generate_encryption_key_works_before_any_configuration():
    result = manage("generate_encryption_key", env={})
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) == 44


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    key = manage("generate_encryption_key", env={}).stdout.strip()
    audit_key = manage("generate_audit_key", env={}).stdout.strip()
    env = {
        "SECRET_KEY": "prod-" + "k3y" * 20,
        "ALLOWED_HOSTS": "certs.example.com",
        "CERTMGR_ENCRYPTION_KEYS": key,
        "CERTMGR_AUDIT_KEYS": audit_key,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    missing_key = manage("check", "--deploy", env={**env, "CERTMGR_ENCRYPTION_KEYS": ""})
    assert missing_key.returncode != 0 and "certmgr.E001" in missing_key.stderr
    missing_audit_key = manage("check", "--deploy", env={**env, "CERTMGR_AUDIT_KEYS": ""})
    assert missing_audit_key.returncode != 0 and "certmgr.E003" in missing_audit_key.stderr
    short = manage("check", env={**env, "CERTMGR_AUDIT_KEYS": "too-short"})
    assert short.returncode != 0 and "certmgr.E004" in short.stderr and "shorter than 32" in short.stderr
    typo = manage("check", env={**env, "CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS": "10.0.0.0/8,10.1.0/33"})
    assert typo.returncode != 0 and "certmgr.E007" in typo.stderr
    assert "CERTMGR_ACME_VALIDATION_ALLOWED_NETWORKS: '10.1.0/33'" in typo.stderr
