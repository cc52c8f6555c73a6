"""ACME profiles (draft-ietf-acme-profiles), notBefore/notAfter (RFC 8555 §7.4), early renewal over ARI
(RFC 9773) and the server's metrics, request by request through the hand-driven client of
``test_protocol``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from acmeserver import ari, services
from acmeserver.models import AcmeEarlyRenewal, AcmeServerChallenge, AcmeServerOrder
from certmgr.models import AuditEvent
from pki import services as pki_services
from pki import x509
from pki.models import Certificate
from tests.acmeserver.conftest import make_profile
from tests.acmeserver.test_protocol import Acme, csr_b64, problem, ready_order
from tests.conftest import SYSTEM


@pytest.fixture
def profile(tenant, hierarchy):
    return make_profile(tenant, hierarchy[1])


@pytest.fixture
def acme(profile):
    client = Acme(profile)
    client.register(contact=["mailto:ops@acme.test"])
    return client


@pytest.fixture
def short(tenant, profile):
    policy = pki_services.save_policy(tenant.organization, actor=SYSTEM, name="Short", max_validity_days=7)
    return services.save_order_profile(
        profile, actor=SYSTEM, name="shortlived", description="7 days", policy=policy, validity_days=6
    )


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finalize(acme, order, names):
    response = acme.post(acme.url(f"order/{order.public_id}/finalize"), {"csr": csr_b64(names)})
    assert response.status_code == 200, response.content
    return response.json()


# --- profiles -----------------------------------------------------------------------------------------
def test_the_directory_lists_the_profiles_and_an_order_naming_one_is_issued_under_it(acme, profile, short):
    directory = acme.http.get(acme.url("directory")).json()
    assert directory["meta"]["profiles"] == {"shortlived": "7 days"}
    response = acme.post(
        acme.url("new-order"),
        {"identifiers": [{"type": "dns", "value": "www.acme.test"}], "profile": "shortlived"},
    )
    assert response.status_code == 201, response.content
    assert response.json()["profile"] == "shortlived"
    order = AcmeServerOrder.objects.get()
    assert order.order_profile == short and order.profile_name == "shortlived"
    from acmeserver.models import AcmeServerAuthorization

    AcmeServerAuthorization.objects.filter(orders=order).update(status="valid")
    AcmeServerOrder.objects.filter(pk=order.pk).update(status="ready")
    order.refresh_from_db()
    body = _finalize(acme, order, ["www.acme.test"])
    assert body["status"] == "valid" and body["profile"] == "shortlived"
    cert = Certificate.objects.get()
    assert (
        cert.not_after - cert.not_before
    ).days == 6  # the order profile's validity, not the directory's 30
    event = AuditEvent.objects.get(action="acme_server.order.create")
    assert event.details["profile"] == "shortlived"


def test_an_unknown_profile_is_invalid_profile_and_orders_nothing(acme, short):
    response = acme.post(
        acme.url("new-order"),
        {"identifiers": [{"type": "dns", "value": "www.acme.test"}], "profile": "classic"},
    )
    body = problem(response, "invalidProfile", 400)
    assert "'classic'" in body["detail"] and "shortlived" in body["detail"]
    problem(
        acme.post(
            acme.url("new-order"), {"identifiers": [{"type": "dns", "value": "a.acme.test"}], "profile": 3}
        ),
        "malformed",
    )
    assert not AcmeServerOrder.objects.exists()


def test_order_profile_checks_and_audit(tenant, other_tenant, profile, short):
    with pytest.raises(ValidationError) as refused:
        services.save_order_profile(profile, actor=SYSTEM, name="bad name", validity_days=1)
    assert "name" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        services.save_order_profile(None, actor=SYSTEM, instance=short, validity_days=8)
    assert "at most 7 days" in refused.value.message_dict["validity_days"][0]
    foreign = pki_services.save_policy(other_tenant.organization, actor=SYSTEM, name="Theirs")
    with pytest.raises(ValidationError) as refused:
        services.save_order_profile(profile, actor=SYSTEM, name="x", policy=foreign)
    assert "policy" in refused.value.message_dict
    services.delete_order_profile(short, actor=SYSTEM)
    actions = set(AuditEvent.objects.filter(outcome="success").values_list("action", flat=True))
    assert {"acme_order_profile.create", "acme_order_profile.delete"} <= actions
    assert AuditEvent.objects.filter(action="acme_order_profile.update", outcome="failure").exists()


def test_order_profiles_through_the_api(tenant, other_tenant, profile):
    from tests.reports.test_metrics import bearer

    client = Client()
    created = client.post(
        "/api/v1/acme-order-profiles/",
        {"profile": profile.pk, "name": "tls-server", "description": "servers", "validity_days": 10},
        content_type="application/json",
        **bearer(tenant.operator.token),
    )
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    changed = client.patch(
        f"/api/v1/acme-order-profiles/{pk}/",
        {"validity_days": 12},
        content_type="application/json",
        **bearer(tenant.operator.token),
    )
    assert changed.status_code == 200 and changed.json()["validity_days"] == 12
    theirs = client.get(f"/api/v1/acme-order-profiles/{pk}/", **bearer(other_tenant.operator.token))
    assert theirs.status_code == 404
    gone = client.delete(f"/api/v1/acme-order-profiles/{pk}/", **bearer(tenant.operator.token))
    assert gone.status_code == 204


# --- notBefore / notAfter -----------------------------------------------------------------------------
def test_not_before_and_not_after_within_the_validity_are_carried_by_the_certificate(acme):
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now + timedelta(hours=1), now + timedelta(days=10)
    response = acme.post(
        acme.url("new-order"),
        {
            "identifiers": [{"type": "dns", "value": "www.acme.test"}],
            "notBefore": _rfc3339(start),
            "notAfter": _rfc3339(end),
        },
    )
    assert response.status_code == 201, response.content
    assert response.json()["notBefore"] == _rfc3339(start) and response.json()["notAfter"] == _rfc3339(end)
    order = AcmeServerOrder.objects.get()
    from acmeserver.models import AcmeServerAuthorization

    AcmeServerAuthorization.objects.filter(orders=order).update(status="valid")
    AcmeServerOrder.objects.filter(pk=order.pk).update(status="ready")
    order.refresh_from_db()
    body = _finalize(acme, order, ["www.acme.test"])
    leaf = x509.load_pem_certificates(acme.post(body["certificate"], None).content)[0]
    assert leaf.not_valid_before_utc == start and leaf.not_valid_after_utc == end


def test_only_not_after_starts_now(acme):
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    response = acme.post(
        acme.url("new-order"),
        {"identifiers": [{"type": "dns", "value": "www.acme.test"}], "notAfter": _rfc3339(end)},
    )
    assert response.status_code == 201, response.content
    order = AcmeServerOrder.objects.get()
    assert order.not_before is None and order.not_after == end


@pytest.mark.parametrize(
    ("not_before", "not_after", "words"),
    [
        (-timedelta(hours=1), None, "lies in the past"),
        (None, timedelta(days=31), "more than the profile's validity (30 days)"),
        (timedelta(days=2), timedelta(days=1), "not after notBefore"),
        (timedelta(days=31), None, "ahead"),
    ],
)
def test_a_window_outside_the_validity_is_malformed(acme, not_before, not_after, words):
    now = datetime.now(UTC)
    payload: dict = {"identifiers": [{"type": "dns", "value": "www.acme.test"}]}
    if not_before is not None:
        payload["notBefore"] = _rfc3339(now + not_before)
    if not_after is not None:
        payload["notAfter"] = _rfc3339(now + not_after)
    body = problem(acme.post(acme.url("new-order"), payload), "malformed", 400)
    assert words in body["detail"]
    assert not AcmeServerOrder.objects.exists()


def test_a_timestamp_that_is_not_rfc3339_is_malformed(acme):
    # the last two are RFC 3339 but out of Python's range once in UTC (they were a 500)
    for value in (
        "tomorrow",
        "2030-01-01T00:00:00",
        17,
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
    ):
        for name in ("notBefore", "notAfter"):
            payload = {"identifiers": [{"type": "dns", "value": "www.acme.test"}], name: value}
            problem(acme.post(acme.url("new-order"), payload), "malformed", 400)
    assert not AcmeServerOrder.objects.exists()


# --- early renewal (ARI) --------------------------------------------------------------------------------
def test_an_early_renewal_moves_the_window_into_the_past_for_the_profiles_certificates(tenant, profile, acme):
    order = ready_order(acme, "www.acme.test")
    body = _finalize(acme, order, ["www.acme.test"])
    leaf = x509.load_pem_certificates(acme.post(body["certificate"], None).content)[0]
    renewal_info = acme.http.get(acme.url("directory")).json()["renewalInfo"] + "/" + ari.cert_id(leaf)

    def window_end() -> datetime:
        window = acme.http.get(renewal_info).json()["suggestedWindow"]
        return datetime.fromisoformat(window["end"].replace("Z", "+00:00"))

    assert window_end() > datetime.now(UTC)
    assert services.request_early_renewal(actor=SYSTEM, profile=profile, reason="CA key rollover") == 1
    first = window_end()
    assert first < datetime.now(UTC)
    assert services.request_early_renewal(actor=SYSTEM, ca=profile.ca) == 1  # asked again: the same window
    assert window_end() == first
    event = AuditEvent.objects.filter(action="acme_server.early_renewal").order_by("pk").first()
    assert event.details["count"] == 1 and event.details["reason"] == "CA key rollover"
    assert event.details["serials"] == [Certificate.objects.get().serial]
    with pytest.raises(ValidationError):
        services.request_early_renewal(actor=SYSTEM)


def test_early_renewal_through_the_api_for_selected_certificates(tenant, other_tenant, profile, acme):
    from tests.reports.test_metrics import bearer

    order = ready_order(acme, "www.acme.test")
    _finalize(acme, order, ["www.acme.test"])
    cert = Certificate.objects.get()
    client = Client()
    theirs = client.post(
        "/api/v1/acme-early-renewals/",
        {"certificates": [cert.pk]},
        content_type="application/json",
        **bearer(other_tenant.operator.token),
    )
    assert theirs.status_code == 400 and not AcmeEarlyRenewal.objects.exists()
    made = client.post(
        "/api/v1/acme-early-renewals/",
        {"certificates": [cert.pk], "reason": "weak key"},
        content_type="application/json",
        **bearer(tenant.operator.token),
    )
    assert made.status_code == 201 and made.json() == {"certificates": 1}
    listed = client.get("/api/v1/acme-early-renewals/", **bearer(tenant.auditor.token)).json()
    assert [r["certificate"] for r in listed["results"]] == [cert.pk]
    pki_services.revoke(cert, reason="superseded", actor=SYSTEM)
    assert services.request_early_renewal(actor=SYSTEM, certificates=[cert]) == 0  # revoked: nothing to do


# --- metrics ----------------------------------------------------------------------------------------------
def test_metrics_count_validation_durations_and_refusals(tenant, other_tenant, profile, acme, short):
    from tests.reports.test_metrics import bearer, promtool_check, samples, scrape

    acme.post(
        acme.url("new-order"),
        {"identifiers": [{"type": "dns", "value": "www.acme.test"}], "profile": "shortlived"},
    )
    challenges = list(AcmeServerChallenge.objects.order_by("pk"))
    AcmeServerChallenge.objects.filter(pk=challenges[0].pk).update(status="valid", validation_seconds=0.2)
    AcmeServerChallenge.objects.filter(pk=challenges[1].pk).update(status="invalid", validation_seconds=3.0)
    problem(acme.post(acme.url("new-order"), {"identifiers": []}, nonce="bm90LWEtbm9uY2U"), "badNonce")
    services.save_profile(None, actor=SYSTEM, instance=profile, orders_per_hour=1)
    problem(acme.order("b.acme.test"), "rateLimited", 429)
    services.flush_problem_counts()  # what the next request after the interval (or the exit) does
    text = scrape(Client(), **bearer(tenant.auditor.token))
    promtool_check(text)
    assert samples(text, "certmgr_acme_server_orders") == {
        '{order_profile="shortlived",organization="acme",profile="web",status="pending"}': 1
    }
    problems = samples(text, "certmgr_acme_server_problems_total")
    assert problems['{organization="acme",profile="web",type="badNonce"}'] == 1
    assert problems['{organization="acme",profile="web",type="rateLimited"}'] == 1
    durations = samples(text, "certmgr_acme_server_validation_duration_seconds_bucket")

    def bucket(outcome: str, kind: str, le: str) -> float:
        return durations[f'{{le="{le}",organization="acme",outcome="{outcome}",profile="web",type="{kind}"}}']

    assert (
        bucket("valid", challenges[0].type, "0.25") == 1 and bucket("valid", challenges[0].type, "0.1") == 0
    )
    assert (
        bucket("invalid", challenges[1].type, "2.5") == 0
        and bucket("invalid", challenges[1].type, "5.0") == 1
    )
    assert (
        samples(scrape(Client(), **bearer(other_tenant.auditor.token)), "certmgr_acme_server_problems_total")
        == {}
    )


def test_order_profiles_and_early_renewals_in_the_admin(tenant, profile, acme):
    from tests.conftest import PASSWORD

    client = Client()
    assert client.login(username=tenant.operator.user.username, password=PASSWORD)
    assert client.get("/admin/acmeserver/acmeorderprofile/add/").status_code == 200
    form = {"profile": profile.pk, "name": "tls server", "description": "", "validity_days": 5}
    refused = client.post("/admin/acmeserver/acmeorderprofile/add/", form)
    assert refused.status_code == 200 and "Enter a token" in refused.content.decode()
    made = client.post("/admin/acmeserver/acmeorderprofile/add/", {**form, "name": "tls-server"})
    assert made.status_code == 302, made.content.decode()[:2000]
    assert acme.http.get(acme.url("directory")).json()["meta"]["profiles"] == {"tls-server": "tls-server"}
    order = ready_order(acme, "www.acme.test")
    _finalize(acme, order, ["www.acme.test"])
    done = client.post(
        "/admin/acmeserver/acmeprofile/",
        {"action": "request_early_renewal", "_selected_action": [profile.pk]},
        follow=True,
    )
    assert "1 certificates suggest renewing now" in done.content.decode()
    assert AcmeEarlyRenewal.objects.get().certificate == Certificate.objects.get()
    assert client.get("/admin/acmeserver/acmeearlyrenewal/").status_code == 200
