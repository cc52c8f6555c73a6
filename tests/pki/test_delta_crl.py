"""Delta CRLs (RFC 5280 §5.2.4) and the Issuing Distribution Point as relying parties see them: OpenSSL's
``verify -crl_check -use_deltas`` with a full CRL built before a revocation and the delta built on it (through
the revocation's on-commit task), a subordinate CA chain under ``-crl_check_all``, and CRL numbers that only
ever increase across full and delta rebuilds."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509 as cx509
from cryptography.x509.oid import ExtensionOID
from django.test import Client
from django.utils import timezone

from certmgr.models import AuditEvent
from pki import services, tasks, x509
from pki.models import CertificateAuthority, Crl
from pki.services import revocation
from tests.conftest import PASSWORD, SYSTEM, require_server
from tests.pki.conftest import make_subscriber

pytestmark = pytest.mark.django_db


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    require_server(shutil.which("openssl") is not None, "openssl is not installed")
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def fetch(path: str, target: Path) -> Path:
    """What a relying party downloads: the public URL's PEM."""
    response = Client().get(path)
    assert response.status_code == 200, response.content
    target.write_bytes(response.content)
    return target


def crl_files(ca: CertificateAuthority, tmp_path: Path, tag: str) -> tuple[Path, Path]:
    return (
        fetch(f"/pki/ca/{ca.pk}.pem", tmp_path / f"{tag}-base-{ca.pk}.pem"),
        fetch(f"/pki/ca/{ca.pk}/delta.pem", tmp_path / f"{tag}-delta-{ca.pk}.pem"),
    )


def revoke_through_the_worker(cert, capture, reason: str = "key_compromise"):
    """Revoke, then run the revocation's on-commit callbacks: the enqueued task runs as the worker runs it
    (tests/settings.py: django-q in sync mode)."""
    with capture(execute=True) as callbacks:
        services.revoke(cert, reason=reason, actor=SYSTEM)
    assert callbacks, "the revocation enqueued nothing"


def listed(crl: Crl) -> set[int]:
    return {entry.serial_number for entry in cx509.load_der_x509_crl(bytes(crl.der))}


def pem(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


def verify(tmp_path: Path, chain: Path, cert: Path, *crls: Path, deltas: bool = False):
    """``openssl verify -crl_check`` of ``cert`` with ``crls`` (and ``-use_deltas``); (passed, output)."""
    args = ["verify", "-crl_check", *(["-use_deltas"] if deltas else []), "-CAfile", str(chain)]
    run = openssl(*args, *(a for crl in crls for a in ("-CRLfile", str(crl))), str(cert), cwd=tmp_path)
    output = run.stdout + run.stderr
    assert "different CRL scope" not in output, output
    assert run.returncode == 0 or "certificate revoked" in output, output
    return run.returncode == 0, output


def test_after_a_revocation_full_crl_readers_and_anchor_plus_delta_readers_both_see_it(
    tenant, hierarchy, tmp_path, django_capture_on_commit_callbacks
):
    """A revocation publishes a full CRL listing it (for relying parties that read only full CRLs and
    refetch them) and a delta CRL naming the anchor (for those that cached the anchor until its nextUpdate);
    a second revocation's delta still names that anchor and lists both; the scheduled rebuild makes a new
    anchor, which the next delta names."""
    root, inter = hierarchy
    first, second, third, good = (
        services.issue(make_subscriber(tenant, inter, name), actor=SYSTEM).certificate
        for name in ("first", "second", "third", "good")
    )
    chain = pem(tmp_path, "ca.pem", inter.certificate_pem + root.certificate_pem)
    leaf = {c.pk: pem(tmp_path, f"{c.pk}.pem", c.certificate_pem) for c in (first, second, third, good)}
    cached = fetch(f"/pki/ca/{inter.pk}.pem", tmp_path / "anchor.pem")  # a client caches it before
    anchor = Crl.objects.get(ca=inter, delta=False)
    assert anchor.anchor

    revoke_through_the_worker(first, django_capture_on_commit_callbacks)
    full_row = Crl.objects.filter(ca=inter, delta=False).latest("number")
    delta_row = Crl.objects.filter(ca=inter, delta=True).latest("number")
    assert full_row.number > anchor.number and not full_row.anchor
    assert listed(full_row) == {int(first.serial, 16)} and full_row.entries == 1
    assert delta_row.base_number == anchor.number and delta_row.number > full_row.number
    assert listed(delta_row) == {int(first.serial, 16)}
    full = fetch(f"/pki/ca/{inter.pk}.pem", tmp_path / "full-1.pem")
    delta = fetch(f"/pki/ca/{inter.pk}/delta.pem", tmp_path / "delta-1.pem")
    assert full.read_bytes() != cached.read_bytes()

    # (a) a relying party that reads only full CRLs, refetching it: revoked
    assert not verify(tmp_path, chain, leaf[first.pk], full)[0]
    assert verify(tmp_path, chain, leaf[good.pk], full)[0]
    # the anchor alone (still current) does not know it: what a full-CRL-only reader saw before this fix
    assert verify(tmp_path, chain, leaf[first.pk], cached)[0]
    # (b) one that cached the anchor and reads the delta: revoked (RFC 5280 §5.2.4, base <= the full CRL)
    assert not verify(tmp_path, chain, leaf[first.pk], cached, delta, deltas=True)[0]
    assert verify(tmp_path, chain, leaf[good.pk], cached, delta, deltas=True)[0]
    # the newest full CRL with the delta combine too (the delta is numbered above it)
    assert not verify(tmp_path, chain, leaf[first.pk], full, delta, deltas=True)[0]
    assert verify(tmp_path, chain, leaf[good.pk], full, delta, deltas=True)[0]

    # (c) a second revocation: the delta still names the anchor and lists both; so does the new full CRL
    revoke_through_the_worker(second, django_capture_on_commit_callbacks)
    delta_row = Crl.objects.filter(ca=inter, delta=True).latest("number")
    assert delta_row.base_number == anchor.number
    assert listed(delta_row) == {int(first.serial, 16), int(second.serial, 16)}
    delta = fetch(f"/pki/ca/{inter.pk}/delta.pem", tmp_path / "delta-2.pem")
    full = fetch(f"/pki/ca/{inter.pk}.pem", tmp_path / "full-2.pem")
    for cert in (first, second):
        assert not verify(tmp_path, chain, leaf[cert.pk], cached, delta, deltas=True)[0]
        assert not verify(tmp_path, chain, leaf[cert.pk], full)[0]
    assert verify(tmp_path, chain, leaf[good.pk], cached, delta, deltas=True)[0]
    assert Crl.objects.filter(ca=inter, anchor=True).count() == 1  # revocations made no anchor

    # (d) the schedule rebuilds the anchor once it is past half its validity (though the newest full CRL,
    # a revocation's, is not), with a delta of it; the next revocation's delta names the new anchor
    Crl.objects.filter(pk=anchor.pk).update(next_update=timezone.now() + timedelta(hours=1))
    assert tasks.refresh_crls()["refreshed"] == 2  # the root's first CRLs too
    new_anchor = Crl.objects.filter(ca=inter, anchor=True).latest("number")
    assert new_anchor.number > delta_row.number and new_anchor.entries == 2
    assert Crl.objects.filter(ca=inter, delta=True).latest("number").base_number == new_anchor.number
    cached_again = fetch(f"/pki/ca/{inter.pk}.pem", tmp_path / "anchor-2.pem")
    revoke_through_the_worker(third, django_capture_on_commit_callbacks)
    delta_row = Crl.objects.filter(ca=inter, delta=True).latest("number")
    assert delta_row.base_number == new_anchor.number and int(third.serial, 16) in listed(delta_row)
    delta = fetch(f"/pki/ca/{inter.pk}/delta.pem", tmp_path / "delta-3.pem")
    for cert in (first, second, third):
        assert not verify(tmp_path, chain, leaf[cert.pk], cached_again, delta, deltas=True)[0]
    assert verify(tmp_path, chain, leaf[good.pk], cached_again, delta, deltas=True)[0]
    # RFC 5280 no longer lets the first anchor complete this delta (its number is below the base): a client
    # still holding it refetches the full CRL, which lists all three
    assert anchor.number < delta_row.base_number
    full = fetch(f"/pki/ca/{inter.pk}.pem", tmp_path / "full-3.pem")
    assert not any(verify(tmp_path, chain, leaf[c.pk], full)[0] for c in (first, second, third))


def test_crl_check_all_through_a_subordinate_ca_and_a_revoked_subordinate(
    tenant, hierarchy, tmp_path, django_capture_on_commit_callbacks
):
    """The root's CRLs cover the CA certificates it issued (no onlyContainsUserCerts): a chain checked at
    every level with full and delta CRLs passes, and a subordinate CA certificate revoked after the root's
    full CRL fails on the root's delta."""
    root, inter = hierarchy
    leaf = services.issue(make_subscriber(tenant, inter, "leaf"), actor=SYSTEM).certificate
    policy = services.save_policy(tenant.organization, actor=SYSTEM, name="ca", allow_ca=True)
    branch = services.save_subscriber(
        tenant.organization, actor=SYSTEM, name="branch", ca=root, policy=policy,
        common_name="Acme Branch CA", validity_days=365, ca_certificate=True, ca_path_length=0,
        key_usages=["key_cert_sign", "crl_sign", "digital_signature"],
    )  # fmt: skip
    sub = services.issue(branch, actor=SYSTEM).certificate
    root_base = fetch(f"/pki/ca/{root.pk}.pem", tmp_path / "root-base.pem")
    inter_base, inter_delta = crl_files(inter, tmp_path, "inter")
    revoke_through_the_worker(sub, django_capture_on_commit_callbacks, reason="ca_compromise")
    root_delta = fetch(f"/pki/ca/{root.pk}/delta.pem", tmp_path / "root-delta.pem")

    trust, untrusted = (
        pem(tmp_path, "root.pem", root.certificate_pem),
        pem(tmp_path, "inter.pem", inter.certificate_pem),
    )
    crls = [a for f in (root_base, root_delta, inter_base, inter_delta) for a in ("-CRLfile", str(f))]
    chain = openssl(
        "verify", "-crl_check_all", "-use_deltas", "-CAfile", str(trust), "-untrusted", str(untrusted), *crls,
        str(pem(tmp_path, "leaf.pem", leaf.certificate_pem)), cwd=tmp_path,
    )  # fmt: skip
    assert chain.returncode == 0, chain.stdout + chain.stderr
    # why a root's CRLs carry no IDP: -crl_check_all checks the root itself against them, and the root names
    # no CDP, so an IDP naming the URL would leave it out of scope (what trips OpenSSL on step-ca's CRLs)
    material = services.ca_material(root)
    now = timezone.now()
    scoped = x509.build_crl(
        issuer_cert=material.certificate, issuer_key=material.key, revoked=[], this_update=now,
        next_update=now + timedelta(hours=1), crl_number=10**6, distribution_point=services.crl_url(root),
    )  # fmt: skip
    scoped_file = pem(tmp_path, "root-scoped.pem", x509.to_pem(scoped))
    tripped = openssl(
        "verify", "-crl_check_all", "-CAfile", str(trust), "-untrusted", str(untrusted), "-CRLfile",
        str(scoped_file), "-CRLfile", str(inter_base), str(tmp_path / "leaf.pem"), cwd=tmp_path,
    )  # fmt: skip
    assert tripped.returncode != 0 and "different CRL scope" in tripped.stdout + tripped.stderr

    target = str(pem(tmp_path, "sub.pem", sub.certificate_pem))
    revoked = openssl(
        "verify", "-crl_check", "-use_deltas", "-CAfile", str(trust), *crls, target, cwd=tmp_path
    )
    output = revoked.stdout + revoked.stderr
    assert revoked.returncode != 0 and "certificate revoked" in output and "different CRL scope" not in output
    base_only = openssl(
        "verify", "-crl_check", "-CAfile", str(trust), "-CRLfile", str(root_base), target, cwd=tmp_path
    )
    assert base_only.returncode == 0, base_only.stdout + base_only.stderr


def test_certificates_and_full_crls_point_at_the_delta_and_the_idp_is_the_cdp(tenant, hierarchy):
    root, inter = hierarchy
    cert = cx509.load_pem_x509_certificate(
        services.issue(
            make_subscriber(tenant, inter, "web"), actor=SYSTEM
        ).certificate.certificate_pem.encode()
    )
    cdp = cert.extensions.get_extension_for_class(cx509.CRLDistributionPoints)
    freshest = cert.extensions.get_extension_for_class(cx509.FreshestCRL)
    assert not freshest.critical
    assert [n.value for n in freshest.value[0].full_name] == [services.delta_crl_url(inter)]
    assert services.delta_crl_url(inter).endswith(f"/pki/ca/{inter.pk}/delta.crl")
    intermediate = cx509.load_pem_x509_certificate(inter.certificate_pem.encode())
    assert intermediate.extensions.get_extension_for_class(cx509.FreshestCRL).value[0].full_name[0].value == (
        services.delta_crl_url(root)
    )

    base = cx509.load_der_x509_crl(bytes(services.current_crl(inter).der))
    delta = cx509.load_der_x509_crl(bytes(services.current_delta_crl(inter).der))
    for crl in (base, delta):
        idp = crl.extensions.get_extension_for_class(cx509.IssuingDistributionPoint)
        assert idp.critical
        # byte for byte the certificates' CRL distribution point: OpenSSL compares the names
        assert idp.value.full_name == cdp.value[0].full_name
        assert not (idp.value.only_contains_user_certs or idp.value.only_contains_ca_certs)
    root_crls = (services.current_crl(root), services.current_delta_crl(root))
    for crl in map(lambda row: cx509.load_der_x509_crl(bytes(row.der)), root_crls):
        assert ExtensionOID.ISSUING_DISTRIBUTION_POINT not in {e.oid for e in crl.extensions}
    assert base.extensions.get_extension_for_class(cx509.FreshestCRL).value == freshest.value
    indicator = delta.extensions.get_extension_for_class(cx509.DeltaCRLIndicator)
    assert indicator.critical
    assert (
        indicator.value.crl_number
        == base.extensions.get_extension_for_class(cx509.CRLNumber).value.crl_number
    )
    assert ExtensionOID.FRESHEST_CRL not in {e.oid for e in delta.extensions}  # RFC 5280 §5.2.6

    # delta CRLs off: new certificates and full CRLs carry no pointer, each revocation rebuilds the full CRL
    services.set_delta_crl(inter, enabled=False, actor=SYSTEM)
    inter.refresh_from_db()
    plain = services.issue(make_subscriber(tenant, inter, "plain"), actor=SYSTEM).certificate
    parsed = cx509.load_pem_x509_certificate(plain.certificate_pem.encode())
    assert ExtensionOID.FRESHEST_CRL not in {e.oid for e in parsed.extensions}
    before = services.current_crl(inter).number
    services.revoke(plain, reason="superseded", actor=SYSTEM)
    full = services.current_crl(inter)
    assert full.number > before and int(plain.serial, 16) in listed(full)
    assert ExtensionOID.FRESHEST_CRL not in {
        e.oid for e in cx509.load_der_x509_crl(bytes(full.der)).extensions
    }
    assert not Crl.objects.get(pk=full.pk).anchor
    # the delta URL keeps answering for the certificates issued while deltas were on, rebuilt to list the
    # revocation too (numbered above the full CRL, so the two combine)
    served = Client().get(f"/pki/ca/{inter.pk}/delta.crl")
    assert served.status_code == 200
    served_delta = cx509.load_der_x509_crl(served.content)
    assert int(plain.serial, 16) in {e.serial_number for e in served_delta}
    number = served_delta.extensions.get_extension_for_class(cx509.CRLNumber).value.crl_number
    assert number > full.number


def test_crl_numbers_strictly_increase_across_full_and_delta_rebuilds(
    tenant, hierarchy, settings, django_capture_on_commit_callbacks
):
    _, inter = hierarchy
    subscriber = make_subscriber(tenant, inter, "n")
    services.current_delta_crl(inter)  # full 1, delta 2
    revoke_through_the_worker(
        services.issue(subscriber, actor=SYSTEM).certificate, django_capture_on_commit_callbacks
    )
    services.refresh_crl(inter, actor=SYSTEM)  # full + delta
    revoke_through_the_worker(
        services.issue(subscriber, actor=SYSTEM).certificate, django_capture_on_commit_callbacks
    )
    Crl.objects.filter(ca=inter, delta=True).update(next_update=timezone.now() + timedelta(minutes=30))
    assert tasks.refresh_crls() == {"refreshed": 1, "delta refreshed": 1}  # the root's first CRLs
    services.set_delta_crl(inter, enabled=False, actor=SYSTEM)
    services.revoke(services.issue(subscriber, actor=SYSTEM).certificate, reason="superseded", actor=SYSTEM)
    services.set_delta_crl(inter, enabled=True, actor=SYSTEM)
    Crl.objects.filter(ca=inter, delta=False).update(next_update=timezone.now() + timedelta(minutes=1))
    Client().get(f"/pki/ca/{inter.pk}/delta.crl")  # past its base: both rebuilt on the spot

    rows = list(Crl.objects.filter(ca=inter).order_by("created_at", "id"))
    numbers = [row.number for row in rows]
    assert numbers == sorted(set(numbers)) and len(numbers) >= 10
    assert numbers[-1] == CertificateAuthority.objects.get(pk=inter.pk).crl_number
    assert any(not row.delta and not row.anchor for row in rows)  # the revocations' full CRLs
    latest_anchor = None
    for row in rows:
        crl = cx509.load_der_x509_crl(bytes(row.der))
        assert crl.extensions.get_extension_for_class(cx509.CRLNumber).value.crl_number == row.number
        if row.delta:
            assert row.base_number == latest_anchor  # always the newest anchor when it was built
            indicator = crl.extensions.get_extension_for_class(cx509.DeltaCRLIndicator).value.crl_number
            assert indicator == row.base_number
        elif row.anchor:
            latest_anchor = row.number


def test_the_on_commit_task_builds_once_and_skips_what_a_later_crl_covers(
    tenant, hierarchy, django_capture_on_commit_callbacks
):
    _, inter = hierarchy
    services.current_delta_crl(inter)
    first, second = (
        services.issue(make_subscriber(tenant, inter, n), actor=SYSTEM).certificate for n in "ab"
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.revoke(first, reason="superseded", actor=SYSTEM)
    number = CertificateAuthority.objects.get(pk=inter.pk).crl_number
    # a delta built since (the schedule's) lists it, but no full CRL does: the task still publishes both
    services.refresh_delta_crl(inter, actor=SYSTEM)
    assert tasks.refresh_delta_crl(inter.pk, number) == {"full": 1, "delta": 1}
    assert tasks.refresh_delta_crl(inter.pk, number) == {"covered": 1}  # a retry, or a second revocation's
    latest = Crl.objects.filter(ca=inter).latest("number")
    assert latest.delta and int(first.serial, 16) in listed(latest)
    assert int(first.serial, 16) in listed(Crl.objects.filter(ca=inter, delta=False).latest("number"))
    for callback in callbacks:  # the revocation's own enqueue, late: the CRLs built above list it
        callback()
    assert Crl.objects.filter(ca=inter).latest("number").pk == latest.pk
    # the CA's delta CRLs turned off between the revocation and the task: the full CRL lists it at once
    with django_capture_on_commit_callbacks(execute=False):
        services.revoke(second, reason="superseded", actor=SYSTEM)
    number = CertificateAuthority.objects.get(pk=inter.pk).crl_number
    CertificateAuthority.objects.filter(pk=inter.pk).update(delta_crl_enabled=False)
    assert tasks.refresh_delta_crl(inter.pk, number) == {"full": 1}
    assert int(second.serial, 16) in listed(Crl.objects.filter(ca=inter, delta=False).latest("number"))
    assert tasks.refresh_delta_crl(10**9, 0) == {"skipped": 1}


def test_revoke_many_publishes_one_full_and_one_delta_crl_per_ca(
    tenant, hierarchy, django_capture_on_commit_callbacks
):
    _, inter = hierarchy
    services.current_delta_crl(inter)
    certs = [
        services.issue(make_subscriber(tenant, inter, f"m{i}"), actor=SYSTEM).certificate for i in range(3)
    ]
    before = Crl.objects.filter(ca=inter).count()
    with django_capture_on_commit_callbacks(execute=True):
        assert revocation.revoke_many(certs, reason="superseded", actor=SYSTEM) == 3
    assert Crl.objects.filter(ca=inter).count() == before + 2
    serials = {int(c.serial, 16) for c in certs}
    assert listed(Crl.objects.filter(ca=inter, delta=True).latest("number")) == serials
    assert listed(Crl.objects.filter(ca=inter, delta=False).latest("number")) == serials


def test_the_delta_is_served_like_the_full_crl(
    tenant, hierarchy, settings, django_capture_on_commit_callbacks
):
    _, inter = hierarchy
    client = Client()
    url = f"/pki/ca/{inter.pk}/delta.crl"
    first = client.get(url)
    assert first.status_code == 200 and first["Content-Type"] == "application/pkix-crl"
    assert first["Cache-Control"] == f"public, max-age={settings.CERTMGR_CRL_MAX_AGE_SECONDS}"
    assert first["Last-Modified"] and first["Expires"]
    etag = first["ETag"]
    assert client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert client.get(f"/pki/ca/{inter.pk}.crl")["ETag"] != etag  # one number sequence: distinct tags
    pem_response = client.get(f"/pki/ca/{inter.pk}/delta.pem")
    assert pem_response.status_code == 200 and b"BEGIN X509 CRL" in pem_response.content
    cert = services.issue(make_subscriber(tenant, inter, "d"), actor=SYSTEM).certificate
    revoke_through_the_worker(cert, django_capture_on_commit_callbacks)
    fresh = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert fresh.status_code == 200 and fresh["ETag"] != etag
    assert int(cert.serial, 16) in {e.serial_number for e in cx509.load_der_x509_crl(fresh.content)}
    # never served past (or near) its nextUpdate: rebuilt on the spot, and cached at most until then
    current = Crl.objects.filter(ca=inter, delta=True).latest("number")
    Crl.objects.filter(pk=current.pk).update(next_update=timezone.now() + timedelta(minutes=2))
    rebuilt = client.get(url)
    assert Crl.objects.filter(ca=inter, delta=True).latest("number").number > current.number
    assert int(cert.serial, 16) in {e.serial_number for e in cx509.load_der_x509_crl(rebuilt.content)}
    settings.CERTMGR_CRL_MAX_AGE_SECONDS = 10**6
    max_age = int(client.get(url)["Cache-Control"].split("max-age=")[1])
    assert max_age <= settings.CERTMGR_DELTA_CRL_VALIDITY_HOURS * 3600
    assert client.get(f"/pki/ca/{10**9}/delta.crl").status_code == 404


def test_the_api_turns_delta_crls_off_and_on_and_read_only_roles_cannot(tenant, other_tenant, hierarchy):
    _, inter = hierarchy
    url = f"/api/v1/cas/{inter.pk}/"
    shown = tenant.auditor.client.get(url).json()
    assert shown["delta_crl_enabled"] is True and shown["delta_crl_url"].endswith(
        f"/pki/ca/{inter.pk}/delta.crl"
    )
    assert tenant.auditor.client.patch(url, {"delta_crl_enabled": False}, format="json").status_code == 403
    bad = tenant.admin.client.patch(url, {"delta_crl_enabled": "maybe"}, format="json")
    assert bad.status_code == 400 and "delta_crl_enabled" in bad.json()["error"]["fields"]
    off = tenant.admin.client.patch(url, {"delta_crl_enabled": False}, format="json")
    assert off.status_code == 200, off.content
    assert off.json()["delta_crl_enabled"] is False and off.json()["delta_crl_url"] is None
    assert AuditEvent.objects.filter(
        action="ca.update", outcome="success", details__changed=["delta_crl_enabled"]
    ).exists()
    # the seed listing: the full CRL only while deltas are off; read-only roles may read it
    rows = tenant.auditor.client.get(f"/api/v1/pki/ca/{inter.pk}/crls").json()
    assert [row["delta"] for row in rows] == [False]
    on = tenant.admin.client.patch(url, {"delta_crl_enabled": True}, format="json")
    assert on.status_code == 200 and on.json()["delta_crl_enabled"] is True
    rows = tenant.auditor.client.get(f"/api/v1/pki/ca/{inter.pk}/crls").json()
    assert [row["delta"] for row in rows] == [False, True]
    history = tenant.auditor.client.get(f"{url}crls/").json()["results"]
    assert {row["delta"] for row in history} == {False, True}
    assert other_tenant.admin.client.get(f"/api/v1/pki/ca/{inter.pk}/crls").status_code == 404
    assert (
        other_tenant.admin.client.patch(url, {"delta_crl_enabled": False}, format="json").status_code == 404
    )


def test_the_admin_turns_delta_crls_off_and_on_and_auditors_cannot(tenant, hierarchy):
    _, inter = hierarchy
    page = f"/admin/pki/certificateauthority/{inter.pk}"
    auditor = Client()
    assert auditor.login(username=tenant.auditor.user.username, password=PASSWORD)
    assert auditor.post(f"{page}/delta-crl/off/").status_code == 403
    operator = Client()
    assert operator.login(username=tenant.operator.user.username, password=PASSWORD)
    detail = operator.get(f"{page}/change/").content
    assert b"Turn delta CRLs off" in detail and f"/pki/ca/{inter.pk}/delta.crl".encode() in detail
    assert operator.get(f"{page}/delta-crl/off/").status_code == 405
    assert operator.post(f"{page}/delta-crl/off/").status_code == 302
    inter.refresh_from_db()
    assert not inter.delta_crl_enabled
    assert b"Turn delta CRLs on" in operator.get(f"{page}/change/").content
    assert operator.post(f"{page}/delta-crl/on/").status_code == 302
    inter.refresh_from_db()
    assert inter.delta_crl_enabled
    # the create form offers the setting, on by default
    add = operator.get("/admin/pki/certificateauthority/add/").content
    field = re.search(rb'<input[^>]*name="delta_crl_enabled"[^>]*>', add)
    assert field is not None and b"checked" in field.group(0)


def test_a_full_crl_built_before_delta_crls_is_replaced_before_a_delta_completes_it(
    tenant, hierarchy, django_capture_on_commit_callbacks
):
    """After the upgrade: the stored full CRL has no IDP (nor a count), so a delta could not match it."""
    _, inter = hierarchy
    legacy = services.current_crl(inter)
    Crl.objects.filter(pk=legacy.pk).update(entries=None)
    cert = services.issue(make_subscriber(tenant, inter, "u"), actor=SYSTEM).certificate
    revoke_through_the_worker(cert, django_capture_on_commit_callbacks)
    base = Crl.objects.filter(ca=inter, delta=False).latest("number")
    delta = Crl.objects.filter(ca=inter, delta=True).latest("number")
    # the revocation's full CRL is the new anchor (no second full CRL), and the delta names it
    assert base.number > legacy.number and base.anchor and delta.base_number == base.number
    assert Crl.objects.filter(ca=inter, delta=False).count() == 2
    assert int(cert.serial, 16) in listed(base)
    # the same on the spot, when the delta URL is fetched first, and on the schedule's next run
    Crl.objects.filter(ca=inter, delta=False).update(entries=None)
    served = services.current_delta_crl(inter)
    anchor = Crl.objects.filter(ca=inter, anchor=True).latest("number")
    assert anchor.entries == 1 and served.base_number == anchor.number
    Crl.objects.filter(ca=inter, delta=False).update(entries=None)
    assert tasks.refresh_crls()["refreshed"] == 2  # and the root's first
    assert Crl.objects.filter(ca=inter, anchor=True).latest("number").entries == 1


@pytest.mark.django_db(transaction=True)
def test_a_committed_revocation_reaches_the_delta_through_the_queue(tenant, hierarchy):
    """No captured callbacks: the revocation commits, its on-commit hook enqueues the task and django-q (sync
    in tests) runs it as a worker would."""
    _, inter = hierarchy
    cert = services.issue(make_subscriber(tenant, inter, "q"), actor=SYSTEM).certificate
    services.current_delta_crl(inter)
    services.revoke(cert, reason="key_compromise", actor=SYSTEM)
    delta = Crl.objects.filter(ca=inter, delta=True).latest("number")
    assert int(cert.serial, 16) in listed(delta)
    from django_q.models import Task

    assert Task.objects.filter(func="pki.tasks.refresh_delta_crl", success=True).exists()


def test_pruning_deletes_superseded_crls_past_their_next_update_and_keeps_what_is_served(
    tenant, hierarchy, tmp_path, django_capture_on_commit_callbacks
):
    """Each revocation adds a full CRL of every revoked certificate: superseded ones (and deltas) are deleted
    once past their nextUpdate, never an anchor, the newest full CRL or the newest delta CRL."""
    root, inter = hierarchy
    certs = [
        services.issue(make_subscriber(tenant, inter, f"p{i}"), actor=SYSTEM).certificate for i in range(3)
    ]
    services.current_delta_crl(inter)
    services.current_delta_crl(root)
    services.refresh_crl(inter, actor=SYSTEM)  # a newer anchor; the old one is kept all the same
    for cert in certs:
        revoke_through_the_worker(cert, django_capture_on_commit_callbacks)
    rows = {row.number: row for row in Crl.objects.filter(ca=inter).defer("der")}
    anchors = sorted(n for n, row in rows.items() if row.anchor)
    fulls = sorted(n for n, row in rows.items() if not row.delta and not row.anchor)
    deltas = sorted(n for n, row in rows.items() if row.delta)
    assert len(anchors) == 2 and len(fulls) == 3 and len(deltas) == 5
    # all past their nextUpdate but one superseded delta and the current anchor: the old anchor too
    past = timezone.now() - timedelta(minutes=1)
    Crl.objects.filter(ca=inter).exclude(number__in=[deltas[-2], anchors[-1]]).update(next_update=past)
    assert services.prune_crls(inter, actor=SYSTEM) == len(fulls) - 1 + len(deltas) - 2
    kept = set(Crl.objects.filter(ca=inter).values_list("number", flat=True))
    assert kept == {*anchors, fulls[-1], deltas[-2], deltas[-1]}
    event = AuditEvent.objects.filter(action="crl.prune").latest("id")
    assert event.details["count"] == len(rows) - len(kept) and event.target_id == str(inter.pk)

    # what is served survives and, fresh again, is what the public URLs answer with, unchanged
    Crl.objects.filter(ca=inter, number__in=[fulls[-1], deltas[-1]]).update(
        next_update=timezone.now() + timedelta(hours=3)
    )
    assert services.prune_crls(inter, actor=SYSTEM) == 0
    assert Client().get(f"/pki/ca/{inter.pk}.crl")["ETag"] == f'"crl-{inter.pk}-{fulls[-1]}-crl"'
    assert Client().get(f"/pki/ca/{inter.pk}/delta.crl")["ETag"] == f'"crl-{inter.pk}-{deltas[-1]}-crl"'
    assert set(Crl.objects.filter(ca=inter).values_list("number", flat=True)) == kept

    # the schedule prunes too: the next revocation's CRLs supersede the served ones, which go once past
    # their nextUpdate; the history endpoint lists what is kept, anchors marked
    extra = services.issue(make_subscriber(tenant, inter, "extra"), actor=SYSTEM).certificate
    revoke_through_the_worker(extra, django_capture_on_commit_callbacks)
    Crl.objects.filter(ca=inter, number__in=[deltas[-2], deltas[-1]]).update(next_update=past)
    counts = tasks.refresh_crls()
    assert counts["pruned"] == 2, counts
    numbers = set(Crl.objects.filter(ca=inter).values_list("number", flat=True))
    history = tenant.auditor.client.get(f"/api/v1/cas/{inter.pk}/crls/").json()["results"]
    assert {row["number"] for row in history} == numbers and fulls[-1] in numbers
    assert {row["number"] for row in history if row["anchor"]} == set(anchors)
    operator = Client()
    assert operator.login(username=tenant.operator.user.username, password=PASSWORD)
    listing = operator.get(f"/admin/pki/crl/?ca={inter.pk}")
    assert listing.status_code == 200 and b"Anchor" in listing.content
    assert {c.number for c in listing.context["cl"].result_list} == numbers
    assert b"(a revocation" in operator.get(f"/admin/pki/certificateauthority/{inter.pk}/change/").content
    # a relying party that cached the current anchor combines it with the served delta
    chain = pem(tmp_path, "ca.pem", inter.certificate_pem + root.certificate_pem)
    delta = fetch(f"/pki/ca/{inter.pk}/delta.pem", tmp_path / "delta.pem")
    anchor = cx509.load_der_x509_crl(bytes(Crl.objects.get(ca=inter, number=anchors[-1]).der))
    cached = pem(tmp_path, "anchor.pem", x509.to_pem(anchor))
    leaf = pem(tmp_path, "extra.pem", extra.certificate_pem)
    assert not verify(tmp_path, chain, leaf, cached, delta, deltas=True)[0]
