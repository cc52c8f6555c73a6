"""The OCSP responder's state: the per-CA setting, the delegated responder certificate (issued and rotated
here), the pre-signed responses (refreshed by the schedule and on revocation) and the answer to a request.

The request path only reads stored responses; it signs (with the responder key, never the CA key) for a
serial without a fresh stored response, for a CertID hashed other than SHA-1, and for a nonce when the CA
allows it.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from cryptography import x509 as cx509
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from certmgr import audit, tally
from certmgr.actors import Actor, as_actor
from certmgr.jobs import JobReport
from certmgr.permissions import Action
from certmgr.services import require
from pki import ocsp, x509
from pki.models import (
    Certificate,
    CertificateAuthority,
    OcspRequestCount,
    OcspResponder,
    OcspResponse,
    RevocationReason,
)
from pki.querysets import CertificateAuthorityQuerySet
from pki.services.cas import ca_material
from pki.services.common import x509_error

logger = logging.getLogger(__name__)
SYSTEM = Actor.system("ocsp")
# A responder certificate is replaced this long before it expires, so a response never outlives its signer.
RESPONDER_RENEW_BEFORE = timedelta(days=2)
MAX_REQUEST_BYTES = 10_000


def _validity() -> timedelta:
    return timedelta(hours=settings.CERTMGR_OCSP_VALIDITY_HOURS)


# --- the setting -----------------------------------------------------------------------------------------
def set_ocsp(
    ca: CertificateAuthority,
    *,
    enabled: bool | None = None,
    nonce_on_demand: bool | None = None,
    actor: Actor,
) -> CertificateAuthority:
    """Turn a private CA's OCSP responder on or off (and whether nonces are signed on demand). Turning it on
    issues the responder certificate and pre-signs every current certificate's response after the commit."""
    actor = as_actor(actor)
    with audit.failures(actor, "ca.update", ca, ocsp_enabled=enabled):
        require(actor, Action.MANAGE, ca.organization_id)
        if not ca.is_internal:
            raise ValidationError({"ocsp_enabled": ["Only a private (internal) CA answers OCSP here."]})
        with transaction.atomic():
            locked = CertificateAuthority.objects.select_for_update().defer("private_key").get(pk=ca.pk)
            changed = []
            if enabled is not None and locked.ocsp_enabled != enabled:
                locked.ocsp_enabled = enabled
                changed.append("ocsp_enabled")
            if nonce_on_demand is not None and locked.ocsp_nonce_on_demand != nonce_on_demand:
                locked.ocsp_nonce_on_demand = nonce_on_demand
                changed.append("ocsp_nonce_on_demand")
            if changed:
                locked.updated_at = timezone.now()
                locked.save(update_fields=[*changed, "updated_at"])
                audit.record(actor, "ca.update", locked, changed=changed)
                if "ocsp_enabled" in changed and locked.ocsp_enabled:
                    transaction.on_commit(lambda: enqueue_refresh(locked.pk, None))
    return locked


# --- the delegated responder -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ResponderMaterial:
    pk: int
    certificate: cx509.Certificate
    key: ec.EllipticCurvePrivateKey
    not_after: dt.datetime


_RESPONDERS: dict[int, ResponderMaterial] = {}  # CA id -> its current responder, per worker


def _keep_until(ca: CertificateAuthority, now: dt.datetime) -> dt.datetime:
    """A responder ending after this is kept: two days from now, or (a CA in its last two days, whose
    responders cannot outlive it) the CA's own end."""
    horizon = now + RESPONDER_RENEW_BEFORE
    if ca.not_after is not None and ca.not_after - timedelta(minutes=1) < horizon:
        return ca.not_after - timedelta(minutes=1)
    return horizon


def responder(ca: CertificateAuthority) -> ResponderMaterial:
    """The CA's current responder, issued (or replaced, two days before it expires) first if needed."""
    keep_until = _keep_until(ca, timezone.now())
    cached = _RESPONDERS.get(ca.pk)
    if cached is not None and cached.not_after > keep_until:
        return cached
    row = ca.ocsp_responders.filter(not_after__gt=keep_until).first()
    if row is None:
        with transaction.atomic():
            CertificateAuthority.objects.select_for_update().only("pk").get(pk=ca.pk)  # one issuer at a time
            row = ca.ocsp_responders.filter(not_after__gt=keep_until).first()
            if row is None:
                row = _issue_responder(ca)
    material = ResponderMaterial(
        pk=row.pk,
        certificate=cx509.load_pem_x509_certificate(row.certificate_pem.encode()),
        key=_ec_key(x509.load_private_key(row.private_key)),
        not_after=row.not_after,
    )
    if len(_RESPONDERS) > 256:
        _RESPONDERS.clear()
    _RESPONDERS[ca.pk] = material
    return material


def _ec_key(key: x509.PrivateKey) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("an OCSP responder key is an EC key")
    return key


def _issue_responder(ca: CertificateAuthority) -> OcspResponder:
    material = ca_material(ca)
    key = ocsp.generate_responder_key()
    try:
        cert = ocsp.build_responder_certificate(
            issuer_cert=material.certificate,
            issuer_key=material.key,
            responder_key=key,
            validity=timedelta(days=settings.CERTMGR_OCSP_RESPONDER_DAYS),
        )
    except x509.X509Error as exc:
        raise x509_error(exc) from exc
    row = OcspResponder.objects.create(
        ca=ca,
        certificate_pem=x509.to_pem(cert),
        private_key=x509.private_key_to_pem(key),
        serial=x509.serial_hex(cert),
        not_after=cert.not_valid_after_utc,
    )
    # Expired responders are of no use to anyone: their responses have expired too.
    ca.ocsp_responders.filter(not_after__lte=timezone.now()).delete()
    audit.record(SYSTEM, "ocsp.responder.issue", ca, serial=row.serial, not_after=row.not_after.isoformat())
    return row


# --- signing ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signed:
    der: bytes
    status: str
    this_update: dt.datetime
    next_update: dt.datetime


class _CertState(Protocol):
    """What signing reads of a certificate row: a ``Certificate`` or a ``values_list(named=True)`` row."""

    status: str
    revoked_at: dt.datetime | None
    revocation_reason: str


def _sign(
    ca: CertificateAuthority,
    query: ocsp.OcspQuery,
    cert: _CertState | None,
    *,
    include_nonce: bool = False,
    signer: ResponderMaterial | None = None,
    now: dt.datetime | None = None,
) -> Signed:
    """The response for ``query`` given the CA's row of that serial (None: never issued, so ``unknown``)."""
    signer = signer or responder(ca)
    now = now or timezone.now().replace(microsecond=0)
    next_update = min(now + _validity(), signer.not_after)
    revocation = None
    if cert is None:
        status = ocsp.CertStatus.UNKNOWN
    elif cert.status == Certificate.Status.REVOKED:
        status = ocsp.CertStatus.REVOKED
        revocation = ocsp.Revocation(
            cert.revoked_at or now, RevocationReason.parse(cert.revocation_reason or "unspecified")
        )
    else:
        status = ocsp.CertStatus.GOOD
    der = ocsp.sign_response(
        query=query,
        responder_cert=signer.certificate,
        responder_key=signer.key,
        status=status,
        revocation=revocation,
        this_update=now,
        next_update=next_update,
        include_nonce=include_nonce,
    )
    return Signed(der, status.name.lower(), now, next_update)


_STATUS_FIELDS = ("id", "serial", "status", "revoked_at", "revocation_reason")


def _store(ca: CertificateAuthority, serial: str, signed: Signed) -> None:
    """The request path's answer, kept for the next request: it replaces only an expired stored answer and is
    inserted only where none exists, so it never overwrites what a revocation's re-sign has just written
    (this request may have read the certificate before the revocation committed)."""
    fields = {
        "status": signed.status,
        "der": signed.der,
        "this_update": signed.this_update,
        "next_update": signed.next_update,
    }
    expired = OcspResponse.objects.filter(ca=ca, serial=serial, next_update__lte=signed.this_update)
    if not expired.update(**fields):
        row = OcspResponse(ca=ca, serial=serial, **fields)
        OcspResponse.objects.bulk_create([row], ignore_conflicts=True)


def presign(
    ca: CertificateAuthority,
    serials: Iterable[str] | None = None,
    *,
    due_only: bool = False,
    recheck: bool = True,
) -> int:
    """Sign and store the responses of the CA's active and revoked-unexpired certificates (those of
    ``serials`` only, when given; with ``due_only`` only those missing or past half their validity).
    Returns how many were signed."""
    now = timezone.now()
    certs = Certificate.objects.filter(
        ca=ca,
        not_after__gt=now,
        status__in=[Certificate.Status.ACTIVE, Certificate.Status.REVOKED],
    )
    if serials is not None:
        certs = certs.filter(serial__in=list(serials))
    if due_only:
        fresh = OcspResponse.objects.filter(ca=ca, next_update__gt=now + _validity() / 2).values("serial")
        certs = certs.exclude(serial__in=fresh)
    # SHA-1 CertIDs: what RFC 5019 clients send (other hashes are signed on demand)
    name_hash, key_hash = _issuer_hashes(ca, "sha1")
    # One responder and one thisUpdate per batch; rows read as tuples and written by one executemany
    # (no model instances: at 100,000 certificates they cost as much as the signatures).
    signer = responder(ca)
    rows: list[tuple[str, Signed]] = []
    count = 0
    signed_at = timezone.now().replace(microsecond=0)
    for cert in certs.values_list("serial", "status", "revoked_at", "revocation_reason", named=True).iterator(
        2000
    ):
        query = ocsp.OcspQuery(int(cert.serial, 16), name_hash, key_hash, "sha1", None)
        rows.append((cert.serial, _sign(ca, query, cert, signer=signer, now=signed_at)))
        count += 1
        if len(rows) >= 2000:
            _bulk_store(ca, rows)
            rows = []
            signed_at = timezone.now().replace(microsecond=0)
    _bulk_store(ca, rows)
    if recheck:
        # A certificate read as good just before its revocation committed may have been written after the
        # revocation's own re-sign: whatever is revoked but stored good is signed again.
        revoked = Certificate.objects.filter(ca=ca, status=Certificate.Status.REVOKED).values("serial")
        stored_good = OcspResponse.objects.filter(ca=ca, status="good", serial__in=revoked)
        wrong = list(stored_good.values_list("serial", flat=True))
        if wrong:
            count += presign(ca, wrong, recheck=False)
    return count


_UPSERT_SQL = (
    "INSERT INTO {table} (ca_id, serial, status, der, this_update, next_update)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (ca_id, serial) DO UPDATE SET status = EXCLUDED.status, der = EXCLUDED.der,"
    " this_update = EXCLUDED.this_update, next_update = EXCLUDED.next_update"
)


def _bulk_store(ca: CertificateAuthority, rows: list[tuple[str, Signed]]) -> None:
    """Insert or replace the stored responses (the unique (ca, serial) constraint), one executemany."""
    if not rows:
        return
    adapt = connection.ops.adapt_datetimefield_value
    params = [
        (ca.pk, serial, signed.status, signed.der, adapt(signed.this_update), adapt(signed.next_update))
        for serial, signed in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(_UPSERT_SQL.format(table=OcspResponse._meta.db_table), params)


def ocsp_cas() -> CertificateAuthorityQuerySet[CertificateAuthority]:
    """The CAs whose responder answers: internal, with a certificate and OCSP on."""
    return CertificateAuthority.objects.internal().filter(ocsp_enabled=True).exclude(certificate_pem="")


def refresh_due(report: JobReport, progress: Callable[[str], None] | None = None) -> None:
    """The schedule's run: every OCSP CA's responder rotated if near its end, and its responses pre-signed
    where missing or past half their validity."""
    for ca in ocsp_cas().defer("private_key"):
        try:
            responder(ca)
            # Expired answers serve no one (expired certificates are answered on demand from their rows).
            OcspResponse.objects.filter(ca=ca, next_update__lte=timezone.now()).delete()
            count = presign(ca, due_only=True)
            report.add("signed", count)
            if progress:
                progress(f"{ca.name}: {count} responses signed")
        except Exception as exc:  # one broken CA must not stop the others
            report.error(f"CA {ca.pk} ({ca.name}): {exc}")


def enqueue_refresh(ca_id: int, serials: list[str] | None) -> None:
    from django_q.tasks import async_task

    async_task("pki.tasks.refresh_ocsp_serials", ca_id, serials, task_name="pki.refresh_ocsp_serials")


def after_issue(issued: Iterable[tuple[CertificateAuthority, str]]) -> None:
    """New certificates of OCSP CAs get their responses pre-signed after the commit (until then, or if the
    queue is slow, the first request signs and stores one)."""
    by_ca: dict[int, list[str]] = {}
    for ca, serial in issued:
        if ca.ocsp_enabled:
            by_ca.setdefault(ca.pk, []).append(serial)
    for ca_id, serials in by_ca.items():
        transaction.on_commit(functools.partial(enqueue_refresh, ca_id, serials))


def after_revoke(ca: CertificateAuthority, serials: list[str]) -> None:
    """In the revocation's transaction: the stored ``good`` answers go (a request meanwhile is signed on
    demand with the new status) and a re-sign of those serials is enqueued for after the commit."""
    if not ca.ocsp_enabled or not serials:
        return
    OcspResponse.objects.filter(ca=ca, serial__in=serials).delete()
    transaction.on_commit(lambda: enqueue_refresh(ca.pk, serials))


# (CA id, CA serial, hash) -> the CA's CertID hashes: the request path needs neither its key nor a PEM parse.
_ISSUER_HASHES: dict[tuple[int, str, str], tuple[bytes, bytes]] = {}


def _issuer_hashes(ca: CertificateAuthority, hash_name: str) -> tuple[bytes, bytes]:
    key = (ca.pk, ca.serial, hash_name)
    hashes = _ISSUER_HASHES.get(key)
    if hashes is None:
        if len(_ISSUER_HASHES) > 1024:
            _ISSUER_HASHES.clear()
        cert = cx509.load_pem_x509_certificate(ca.certificate_pem.encode())
        hashes = _ISSUER_HASHES[key] = ocsp.issuer_hashes(cert, hash_name)
    return hashes


# --- answering -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    der: bytes
    # What the answer says, as counted by the metrics: good / revoked / unknown, or the error status
    # (unauthorized / malformedRequest).
    status: str
    # Set for a cacheable answer (RFC 5019 §6): when it was made and until when it holds.
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None


_ERROR_NAMES = {
    ocsp.ResponseStatus.MALFORMED_REQUEST: "malformedRequest",
    ocsp.ResponseStatus.UNAUTHORIZED: "unauthorized",
}


def _error(status: ocsp.ResponseStatus) -> Answer:
    return Answer(ocsp.error_response(status), _ERROR_NAMES[status])


def answer(ca_id: int, request_der: bytes) -> Answer:
    """The DER response to an OCSP request for CA ``ca_id``: a stored one when there is a fresh one."""
    if len(request_der) > MAX_REQUEST_BYTES:
        return _error(ocsp.ResponseStatus.MALFORMED_REQUEST)
    try:
        query = ocsp.parse_request(request_der)
    except ocsp.OcspMalformed:
        return _error(ocsp.ResponseStatus.MALFORMED_REQUEST)
    serial = x509.serial_hex(query.serial)
    if query.hash_name == "sha1":
        fast = _stored_answer(ca_id, serial, query)
        if fast is not None:
            return fast
    ca = ocsp_cas().defer("private_key").filter(pk=ca_id).first()
    if ca is None:
        return _error(ocsp.ResponseStatus.UNAUTHORIZED)
    if (query.issuer_name_hash, query.issuer_key_hash) != _issuer_hashes(ca, query.hash_name):
        return _error(ocsp.ResponseStatus.UNAUTHORIZED)  # a certificate of another issuer
    with_nonce = query.nonce is not None and ca.ocsp_nonce_on_demand
    if query.hash_name == "sha1" and not with_nonce:
        stored = (
            OcspResponse.objects.filter(ca=ca, serial=serial, next_update__gt=timezone.now())
            .only("der", "status", "this_update", "next_update")
            .first()
        )
        if stored is not None:
            return Answer(bytes(stored.der), stored.status, stored.this_update, stored.next_update)
    cert = (
        Certificate.objects.filter(ca=ca, serial=serial).only(*_STATUS_FIELDS).order_by("-not_after").first()
    )
    signed = _sign(ca, query, cert, include_nonce=with_nonce)
    if with_nonce:
        return Answer(signed.der, signed.status)  # answers this request only: not for caches
    if cert is not None and query.hash_name == "sha1" and _presignable(cert):
        _store(ca, serial, signed)
    return Answer(signed.der, signed.status, signed.this_update, signed.next_update)


_STORED_SQL = (
    "SELECT r.der, r.status, r.this_update, r.next_update, c.serial, c.ocsp_nonce_on_demand"
    " FROM {responses} r JOIN {cas} c ON c.id = r.ca_id"
    " WHERE r.ca_id = %s AND r.serial = %s AND r.next_update > %s"
    " AND c.ocsp_enabled AND c.kind IN ('internal-root', 'internal-intermediate') AND c.certificate_pem <> ''"
)


def _stored_answer(ca_id: int, serial: str, query: ocsp.OcspQuery) -> Answer | None:
    """The request path's common case in one indexed query (the unique (ca, serial) index, joined to the CA
    for its OCSP setting, as ``ocsp_cas()``): the fresh stored response of a SHA-1 request, written as SQL
    once rather than compiled by the ORM at each request. None when there is none, or when the slow path
    must decide (the CA's CertID hashes not yet known to this process, a nonce the CA signs)."""
    sql = _STORED_SQL.format(responses=OcspResponse._meta.db_table, cas=CertificateAuthority._meta.db_table)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    row = _fetch_one(sql, [ca_id, serial, now])
    if row is None:
        return None
    der, status, this_update, next_update, ca_serial, nonce_on_demand = row
    hashes = _ISSUER_HASHES.get((ca_id, ca_serial, "sha1"))
    if hashes is None or (query.nonce is not None and nonce_on_demand):
        return None
    if (query.issuer_name_hash, query.issuer_key_hash) != hashes:
        return _error(ocsp.ResponseStatus.UNAUTHORIZED)  # a certificate of another issuer
    return Answer(bytes(der), status, _aware(this_update), _aware(next_update))


def _fetch_one(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    """One row of ``sql``. On PostgreSQL a server-side-binding psycopg cursor with ``prepare=True``: the
    statement is parsed and planned once per database connection, not at every request (Django's own cursors
    bind on the client, so PostgreSQL would plan the query each time: most of its cost)."""
    if connection.vendor == "postgresql":
        import psycopg

        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(sql, params, prepare=True)
            return cursor.fetchone()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
        return row


def _aware(value: dt.datetime | str) -> dt.datetime:
    """A datetime column of a raw query: a datetime on PostgreSQL, text on SQLite (naive UTC)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _presignable(cert: Certificate) -> bool:
    return cert.not_after > timezone.now() and cert.status in (
        Certificate.Status.ACTIVE,
        Certificate.Status.REVOKED,
    )


# --- counting answers (the metrics) ----------------------------------------------------------------------
def _write_counts(counts: dict[tuple[int | None, str], int]) -> None:
    """Add counts to ``OcspRequestCount`` (CA ids that are not a CA of ours count under no CA)."""
    ours = set(
        CertificateAuthority.objects.filter(pk__in={ca for ca, _ in counts if ca is not None}).values_list(
            "pk", flat=True
        )
    )
    merged: dict[tuple[int | None, str], int] = {}
    for (ca_id, status), n in counts.items():
        key = (ca_id if ca_id in ours else None, status)
        merged[key] = merged.get(key, 0) + n
    for (ca_id, status), n in sorted(merged.items(), key=lambda item: (item[0][0] or 0, item[0][1])):
        tally.add_to_row(OcspRequestCount, n, ca_id=ca_id, status=status)


# This process's answers not yet added to ``OcspRequestCount``: (CA id from the URL, status) -> count, written
# every CERTMGR_OCSP_COUNT_FLUSH_SECONDS (certmgr.tally). CA ids come from the URL: past 1000 of them, unknown
# ones are counted as "no such CA".
_TALLY: tally.Tally[tuple[int | None, str]] = tally.Tally(
    "OCSP answer",
    _write_counts,
    lambda: float(settings.CERTMGR_OCSP_COUNT_FLUSH_SECONDS),
    overflow=lambda key: (None, key[1]),
)


def count_answer(ca_id: int, answer: Answer) -> None:
    """Count an answer of the responder for CA ``ca_id`` (as the URL named it) for the metrics."""
    _TALLY.count((ca_id, answer.status))


def flush_counts(*, quiet: bool = False) -> None:
    """Add this process's counts to ``OcspRequestCount``; on a database error they are kept for the next
    attempt."""
    _TALLY.flush(quiet=quiet)
