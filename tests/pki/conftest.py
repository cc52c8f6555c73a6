"""PKI fixtures shared by the service, admin and API tests: root, issuing CA, subscriber, certificate."""

from __future__ import annotations

import pytest

from pki import services
from tests.conftest import SYSTEM


def make_subscriber(tenant, ca, name: str, **values):
    """A subscriber of ``ca`` for ``<name>.acme.test`` (30 days): the plain one many tests need several of."""
    return services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name=name,
        ca=ca,
        common_name=f"{name}.acme.test",
        sans=[f"{name}.acme.test"],
        validity_days=30,
        **values,
    )


@pytest.fixture
def hierarchy(tenant):
    root = services.create_internal_ca(
        tenant.organization,
        name="Root",
        kind="internal-root",
        subject={"common_name": "Acme Root CA"},
        key_algorithm="ec-p384",
        validity_days=3650,
        max_path_length=1,
        actor=SYSTEM,
    )
    inter = services.create_internal_ca(
        tenant.organization,
        name="Issuing",
        kind="internal-intermediate",
        parent=root,
        subject={"common_name": "Acme Issuing CA", "organization": "Acme"},
        key_algorithm="ec-p256",
        validity_days=1825,
        max_path_length=0,
        actor=SYSTEM,
    )
    return root, inter


@pytest.fixture
def subscriber(tenant, hierarchy):
    return services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="web",
        ca=hierarchy[1],
        common_name="www.acme.test",
        sans=["www.acme.test", "10.0.0.5"],
        validity_days=30,
        extended_key_usages=["server_auth"],
    )


@pytest.fixture
def issued(subscriber):
    return services.issue(subscriber, actor=SYSTEM).certificate
