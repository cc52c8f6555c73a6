"""A key larger than certmgr accepts (RSA-16384) is refused on every import path before the RSA consistency
check that costs ~40 s of CPU on such a key (measured: 38.7 s here): an attacker's upload costs a parse.

The deadline threads below are far above the expected answer (well under 100 ms): they turn "still
checking the key" into a failure instead of a hung test run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.db import connections

from pki import services, x509
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db(transaction=True)

DATA = Path(__file__).resolve().parents[1] / "data"
HUGE_KEY = (DATA / "rsa16384.key.pem").read_text()
HUGE_CSR = (DATA / "rsa16384.csr.pem").read_text()


def answered_within(seconds: float, call):
    result: list = []

    def run() -> None:
        try:
            result.append(("answer", call()))
        except Exception as exc:  # the refusal is the answer
            result.append(("error", exc))
        finally:
            connections.close_all()  # this thread's own database connection

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert result, f"no answer within {seconds} s: the huge key is being checked"
    return result[0]


def test_loading_a_huge_key_is_refused_by_its_size():
    kind, value = answered_within(10, lambda: x509.load_private_key(HUGE_KEY))
    assert kind == "error" and isinstance(value, x509.X509Error)
    assert "16384 bits is larger than the 4096 bits certmgr accepts" in str(value)


def test_a_huge_csr_is_refused_by_its_key(tenant):
    kind, value = answered_within(10, lambda: x509.load_csr(HUGE_CSR))
    assert kind == "error" and "unsupported key type rsa-16384" in str(value)
    upload = answered_within(
        10,
        lambda: tenant.operator.client.post(
            "/api/v1/csrs/", {"name": "huge", "csr": HUGE_CSR}, format="json"
        ),
    )[1]
    assert upload.status_code == 400 and "csr" in upload.json()["error"]["fields"]


def test_every_key_import_door_refuses_it_fast(tenant):
    ca = services.create_internal_ca(
        tenant.organization, name="Root", kind="internal-root", subject={"common_name": "R"}, actor=SYSTEM
    )
    client = tenant.operator.client
    doors = {
        "certificate import": (
            "/api/v1/certificates/import/",
            {"certificate": ca.certificate_pem, "private_key": HUGE_KEY},
        ),
        "CA import": (
            "/api/v1/cas/import/",
            {"name": "imported", "certificate": ca.certificate_pem, "private_key": HUGE_KEY},
        ),
    }
    for door, (url, body) in doors.items():
        response = answered_within(10, lambda url=url, body=body: client.post(url, body, format="json"))[1]
        assert response.status_code == 400, (door, response.status_code, response.content[:300])
        assert "private_key" in response.json()["error"]["fields"], door
        assert "16384 bits" in str(response.json()), door
