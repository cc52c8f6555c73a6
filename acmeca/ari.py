"""ACME Renewal Information (RFC 9773): ask the issuing CA when to renew, and identify the certificate an
order replaces. Only for CAs whose directory has ``renewalInfo``."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

from acme import errors as acme_errors
from cryptography import x509 as cx509
from django.db.models import Q

from acmeca import client as acme
from acmeca.models import AcmeSettings
from certmgr.jobs import JobReport
from pki import renewal
from pki.models import Certificate, CertificateAuthority


def cert_id(certificate_pem: str) -> str:
    """The ARI certificate identifier: base64url(AKI keyIdentifier) "." base64url(serial DER integer)."""
    cert = cx509.load_pem_x509_certificate(certificate_pem.encode())
    aki = cert.extensions.get_extension_for_class(cx509.AuthorityKeyIdentifier).value.key_identifier
    serial = cert.serial_number
    serial_der = serial.to_bytes((serial.bit_length() + 8) // 8, "big")  # room for the sign bit

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64(aki or b'')}.{b64(serial_der)}"


DEFAULT_RETRY = dt.timedelta(hours=6)  # RFC 9773 §4.3.3, when the CA gave no Retry-After


class AriUnavailable(Exception):
    """renewalInfo failed for a certificate; ask again at ``retry_at``, not at every sweep."""

    def __init__(self, message: str, retry_at: dt.datetime):
        super().__init__(message)
        self.retry_at = retry_at


@dataclass(frozen=True)
class RenewalInfo:
    renew_at: dt.datetime | None  # None: the CA offers no ARI
    next_check: dt.datetime


def _aware(value: dt.datetime) -> dt.datetime:
    # The acme library returns its "ask again" time as a naive local time.
    return value if value.tzinfo else value.astimezone(dt.UTC)


class AriClient:
    """One client per ACME CA for a sweep: the directory is fetched once."""

    def __init__(self, acme_settings: AcmeSettings):
        account = acme_settings.account
        if account is None:
            raise acme.AcmeProblem("no ACME account", typ=acme.LOCAL_PREFIX + "account")
        self.session = acme.open_session(
            directory_url=account.directory_url,
            account_key=acme.account_key_from_pem(account.private_key),
            account_uri=account.account_url,
            tls_ca_bundle=acme_settings.tls_ca_bundle,
        )

    @property
    def supported(self) -> bool:
        return self.session.offers("renewalInfo")

    def renewal_info(self, certificate: Certificate) -> RenewalInfo:
        """Raises AriUnavailable (with when to ask again) when the CA has no answer for the certificate."""
        try:
            renew_at, next_check = self.session.renewal_time(certificate.certificate_pem)
        except acme.AcmeProblem as exc:
            cause = exc.__cause__
            if isinstance(cause, acme_errors.ARIError):
                raise AriUnavailable(
                    f"{cause.args[0]}: {cause.__cause__ or 'no answer'}", _aware(cause.retry_after)
                ) from exc
            raise AriUnavailable(str(exc), dt.datetime.now(dt.UTC) + DEFAULT_RETRY) from exc
        return RenewalInfo(renew_at=_aware(renew_at) if renew_at else None, next_check=_aware(next_check))

    def close(self) -> None:
        self.session.close()


def supports_ari(acme_settings: AcmeSettings) -> bool:
    ari = AriClient(acme_settings)
    try:
        return ari.supported
    finally:
        ari.close()


def refresh_renewal_times(report: JobReport, *, now: dt.datetime, limit: int = 1000) -> None:
    """Ask each ACME CA's renewalInfo about its certificates whose next check has come (RFC 9773): a random
    time inside the suggested window becomes ``next_renewal_at``, the CA's Retry-After the next check."""
    candidates = (
        Certificate.objects.filter(
            status=Certificate.Status.ACTIVE,
            ca__kind=CertificateAuthority.Kind.ACME,
            next_renewal_at__isnull=False,
            subscriber__auto_renew=True,
        )
        .filter(Q(ari_next_check_at__isnull=True) | Q(ari_next_check_at__lte=now))
        .select_related("subscriber")
        .order_by("ca_id", "next_renewal_at")[:limit]
    )
    clients: dict[int | None, AriClient | None] = {}
    try:
        for cert in candidates:
            if cert.ca_id not in clients:
                try:
                    settings_row = AcmeSettings.objects.select_related("account").get(ca_id=cert.ca_id)
                    clients[cert.ca_id] = AriClient(settings_row)
                except Exception as exc:  # one unreachable CA must not stop the sweep
                    report.error(f"ARI: CA {cert.ca_id} unreachable: {exc}")
                    clients[cert.ca_id] = None
            client = clients[cert.ca_id]
            if client is None:
                continue
            try:
                info = client.renewal_info(cert)
            except AriUnavailable as exc:
                # Keep the fallback time; ask again when the CA said (RFC 9773 §4.3.3), not every sweep.
                Certificate.objects.filter(pk=cert.pk).update(ari_next_check_at=exc.retry_at)
                report.error(f"ARI for certificate {cert.pk}: {exc}")
                continue
            when = renewal.next_renewal_at(
                cert.not_before,
                cert.not_after,
                renew_before_days=cert.subscriber.renew_before_days if cert.subscriber else None,
                ari_time=info.renew_at,
            )
            Certificate.objects.filter(pk=cert.pk).update(
                next_renewal_at=when, ari_checked_at=now, ari_next_check_at=info.next_check
            )
            report.add("ari_checked")
            if info.renew_at is not None:
                report.add("ari_windows")
    finally:
        for client in clients.values():
            if client is not None:
                client.close()
