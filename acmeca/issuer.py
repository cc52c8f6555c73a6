"""The ACME issuer backend: how ``pki`` issues, renews and revokes through an external ACME CA.

Registered for CA kind ``acme`` from ``AcmeCaConfig.ready()``. Issuance answers ``Pending`` with the order a
worker runs (``acmeca.flow``); the worker ends it through ``pki.services.complete_external``.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from django.db.models import QuerySet

from acmeca.choices import ChallengeType, OrderStep
from acmeca.handles import pending
from acmeca.models import AcmeOrder, AcmeSettings
from pki.issuers import (
    CaAdminExtension,
    CaApiExtension,
    IssuanceFailed,
    IssuanceRequest,
    IssuerBackend,
    Outcome,
    Pending,
    PublicationHint,
    SubscriberOption,
)
from pki.models import CertificateAuthority

if TYPE_CHECKING:
    from certmgr.actors import Actor
    from certmgr.jobs import JobReport
    from pki.models import Certificate, Subscriber


class AcmeIssuer(IssuerBackend):
    kinds = (str(CertificateAuthority.Kind.ACME),)
    label = "ACME CA"

    @property
    def admin(self) -> CaAdminExtension:
        from acmeca.admin import CA_ADMIN

        return CA_ADMIN

    @property
    def api(self) -> CaApiExtension:
        from acmeca.api.ca_extension import CA_API

        return CA_API

    def subscriber_options(self) -> tuple[SubscriberOption, ...]:
        return (
            SubscriberOption(
                "profile",
                "ACME profile",
                "The CA's certificate profile for this subscriber (e.g. tlsserver, shortlived); empty: the "
                "ACME CA's setting.",
            ),
            SubscriberOption(
                "challenge_type",
                "Challenge type",
                "How this subscriber's names are proven; empty: the ACME CA's setting. dns-01 needs the "
                "CA's DNS app connection (and is the only one for wildcards).",
                choices=tuple(ChallengeType.choices),
            ),
        )

    def clean_subscriber_options(self, ca: CertificateAuthority, options: dict) -> dict:
        from django.core.exceptions import ValidationError

        cleaned = super().clean_subscriber_options(ca, options)
        settings = getattr(ca, "acme", None)
        if (
            cleaned.get("challenge_type") == ChallengeType.DNS_01
            and settings
            and not settings.dns_connection_id
        ):
            raise ValidationError(
                {"issuer_options": [f"{ca.name} has no DNS app connection: dns-01 cannot be used with it."]}
            )
        return cleaned

    def start(self, request: IssuanceRequest) -> Outcome:
        from acmeca import orders

        order = orders.start_order(
            request.subscriber,
            actor=request.actor,
            key=request.key,
            csr_pem=request.csr_pem if request.key is None else None,
            renewal_of=request.renewal_of,
        )
        return pending(order, reread=False)  # created (or found) in the caller's transaction just now

    def publication_hints(self, subscriber: Subscriber) -> list[PublicationHint]:
        """The CAA records (RFC 8659, RFC 8657) that allow only this CA, with this account and the
        subscriber's challenge type, to issue for each of the subscriber's names: ``issue`` and ``issuewild``
        at the name (a wildcard's at its base name)."""
        from dnsproviders import caa

        settings = AcmeSettings.objects.select_related("account").filter(ca_id=subscriber.ca_id).first()
        if settings is None:
            return []
        identifiers = [i.strip() for i in settings.caa_identifiers.split(",") if i.strip()]
        if not identifiers:
            return [
                PublicationHint(
                    "CAA records",
                    "This ACME CA has no CAA identifiers (its preset knows none): set them on the CA to see "
                    "the CAA records that allow only it.",
                    (),
                )
            ]
        account = settings.account
        account_uri = (
            account.account_url if account is not None and account.status == account.Status.VALID else ""
        )
        method = (subscriber.issuer_options or {}).get("challenge_type") or settings.challenge_type
        owners: dict[str, None] = {}
        for raw in [subscriber.common_name, *(subscriber.sans or [])]:
            name = str(raw or "").strip().lower().rstrip(".")
            try:
                ipaddress.ip_address(name)
                continue  # CAA is for DNS names
            except ValueError:
                pass
            if name:
                owners.setdefault(name.removeprefix("*."))
        what = f"only {identifiers[0]}"
        what += f", only for the account {account_uri}" if account_uri else ""
        what += f" and only by {method}"
        caveat = (
            " The account URL is pinned: when certmgr registers a new account at this CA (the CA forgot the "
            "old one), update these records."
            if account_uri
            else " The CA has no active account yet: register one to pin it (accounturi)."
        )
        return [
            PublicationHint(
                f"CAA records for {owner}",
                f"Publish these in the zone that holds {owner} to let {what} issue for {owner} and "
                f"*.{owner}; a name below it without CAA records of its own is covered too.{caveat}",
                tuple(caa.records_to_publish(owner, identifiers[0], account_uri=account_uri, method=method)),
            )
            for owner in owners
        ]

    def revoke_at_issuer(self, certificate: Certificate, reason: str) -> None:
        from acmeca.services import revoke_at_ca

        revoke_at_ca(certificate, reason)

    def busy_subscribers(self) -> QuerySet:
        return AcmeOrder.objects.unfinished().filter(subscriber__isnull=False).values("subscriber_id")

    def delete_blockers(self, ca: CertificateAuthority) -> list[str]:
        return ["this CA has ACME orders"] if AcmeOrder.objects.filter(ca=ca).exists() else []

    def refresh_renewal_times(self, report: JobReport, *, now: datetime) -> None:
        from acmeca import ari

        ari.refresh_renewal_times(report, now=now)

    def issue_by_names(
        self,
        ca: CertificateAuthority,
        names: list[str],
        *,
        actor: Actor,
        key_algorithm: str,
        csr_pem: str | None = None,
        csr_key_pem: str | None = None,
    ) -> Outcome:
        from acmeca import orders

        order = orders.start_direct_order(
            ca, names, actor=actor, key_algorithm=key_algorithm, csr_pem=csr_pem, csr_key_pem=csr_key_pem
        )
        return pending(order)

    def wait(
        self,
        pending: Pending,
        *,
        progress: Callable[[str], None] | None = None,
        timeout: float = 600.0,
    ) -> Certificate:
        """Drive the order here when no worker holds it, follow it when one does, until it ends."""
        from acmeca import orders

        order = orders.drive(pending.id, progress=progress, deadline=time.monotonic() + timeout)
        if order.step == OrderStep.DONE and order.certificate_id:
            return order.certificate  # type: ignore[return-value]
        if order.step == OrderStep.WAITING_MANUAL:
            raise IssuanceFailed(
                f"order {order.pk} waits for manual DNS records: create them, confirm in the admin or API"
            )
        if not order.finished:
            raise IssuanceFailed(f"order {order.pk} did not finish in {timeout:.0f}s (step: {order.step})")
        return _failed(order)

    def pending_for(self, subscriber: Subscriber) -> Pending | None:
        order = AcmeOrder.objects.filter(subscriber=subscriber).unfinished().first()
        return pending(order) if order is not None else None


def _failed(order: AcmeOrder):
    raise IssuanceFailed(f"order {order.pk} {order.step}: {order.last_error or 'no reason given'}")
