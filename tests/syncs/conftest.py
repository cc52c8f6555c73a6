"""Sync fixtures: an AWS app connection, ACM and Secrets Manager destinations on moto, rules."""

from __future__ import annotations

import pytest
from moto import mock_aws

from dnsproviders import services as connections
from syncs import services
from tests.conftest import SYSTEM
from tests.pki.conftest import hierarchy, issued, subscriber  # noqa: F401  (fixtures)
from tests.syncs.kind_fixtures import kv, receiver  # noqa: F401  (fixtures)

REGION = "eu-west-1"
AWS_KEYS = {
    "access_key_id": "AKIAIOSFODNN7EXAMPLE",
    "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


@pytest.fixture
def aws(monkeypatch):
    """moto's in-process AWS (ACM, Secrets Manager): what boto3 reaches while the test runs."""
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_ACM",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield


def make_connection(tenant, name="aws"):
    return connections.create_connection(
        tenant.organization, name=name, kind="aws", credentials={**AWS_KEYS, "region": REGION}, actor=SYSTEM
    )


@pytest.fixture
def connection(tenant):
    return make_connection(tenant)


@pytest.fixture
def acm(tenant, connection):
    return services.create_destination(
        tenant.organization,
        name="acm",
        kind="aws_acm",
        connection=connection,
        options={"tags": {"team": "web"}},
        actor=SYSTEM,
    )


@pytest.fixture
def secrets(tenant, connection):
    return services.create_destination(
        tenant.organization, name="secrets", kind="aws_secrets_manager", connection=connection, actor=SYSTEM
    )
