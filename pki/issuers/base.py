"""The issuer seam: what ``pki`` asks of whatever signs a subscriber's certificate.

``pki.services.issue`` checks the request (role, CA, renewal, key or CSR, policy) under the subscriber's row
lock, then hands an ``IssuanceRequest`` to the backend of the CA's kind. A backend answers ``Issued`` (the
certificate is in the inventory now: internal CAs, self-signed) or ``Pending`` (work goes on elsewhere, e.g.
an ACME order a worker runs; it ends through ``pki.services.complete_external``). Backends are registered by
CA kind (``pki.issuers.register``); internal and self-signed ones live in ``pki.internal_issuer``, others in
their own app, registered from its ``AppConfig.ready()``. ``pki`` never imports those apps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from django.urls import URLPattern
    from rest_framework import serializers

    from certmgr.actors import Actor
    from certmgr.jobs import JobReport
    from pki.models import Certificate, CertificateAuthority, Subscriber
    from pki.querysets import CertificateAuthorityQuerySet
    from pki.x509 import PrivateKey, PublicKey


@dataclass(frozen=True)
class IssuanceRequest:
    """A request that passed every check: the subscriber row is locked for the current transaction."""

    subscriber: Subscriber
    ca: CertificateAuthority | None  # None: self-signed
    actor: Actor
    action: str  # the audit action: "certificate.issue" or "certificate.renew"
    key: PrivateKey | None  # the certificate's key when certmgr holds it (None: the caller's CSR)
    public_key: PublicKey
    key_algorithm: str
    csr_pem: str | None = None
    renewal_of: Certificate | None = None
    not_before: datetime | None = None  # a window the caller asked for (ACME); None: now, validity_days
    not_after: datetime | None = None


@dataclass(frozen=True)
class Issued:
    """The certificate exists now."""

    certificate: Certificate

    @property
    def pending(self) -> None:
        return None


@dataclass(frozen=True)
class Pending:
    """Issuance goes on elsewhere; this says what it is and where to watch it."""

    kind: str  # what the handle names, e.g. "acme_order"
    id: int
    label: str  # for people: "ACME order 12"
    status: str  # the backend's own status words
    step: str
    step_label: str  # the step for people
    admin_url: str  # the admin page that shows its progress
    api_url: str  # the API resource to poll (a path; doors make it absolute)
    api_fields: Mapping[str, Any] = field(default_factory=dict)  # extra fields the API answer carries
    status_url: str = ""  # the admin's JSON status of it, polled by the pages that show it running

    @property
    def certificate(self) -> None:
        return None


Outcome = Issued | Pending


class IssuanceFailed(Exception):
    """A pending issuance ended without a certificate; the message is the issuer's own."""


class CaAdminExtension(Protocol):
    """What an issuer adds to the CA admin screens."""

    change_form_template: str | None

    def fieldsets(self, ca: CertificateAuthority) -> list: ...

    def readonly_fields(self) -> list[Callable[[CertificateAuthority], str]]: ...

    def urls(self, ca_admin: Any) -> list[URLPattern]: ...

    def add_links(self) -> list[tuple[str, str, str]]:
        """Buttons on the CA list: (label, admin URL name, CSS class)."""
        ...


class CaApiExtension(Protocol):
    """What an issuer adds to ``/api/v1/cas/``: its configuration, nested under ``key``."""

    key: str

    def create_serializer(self) -> type[serializers.Serializer]: ...

    def create(self, request: Any, data: dict) -> CertificateAuthority: ...

    def update(
        self, ca: CertificateAuthority, request: Any, values: dict | None, name: str | None
    ) -> CertificateAuthority: ...

    def read_field(self) -> serializers.Field: ...

    def update_field(self) -> serializers.Field: ...

    def prepare(self, queryset: CertificateAuthorityQuerySet) -> CertificateAuthorityQuerySet: ...


@dataclass(frozen=True)
class SubscriberOption:
    """A choice a subscriber makes for its CA's kind of issuer (an ACME profile, say): the subscriber form
    shows it while such a CA is chosen, and ``Subscriber.issuer_options`` keeps it under ``name``."""

    name: str
    label: str
    help_text: str
    choices: tuple[tuple[str, str], ...] = ()  # empty: free text
    max_length: int = 64


@dataclass(frozen=True)
class PublicationHint:
    """Records an operator may publish for a subscriber (an ACME CA's CAA records, say), shown on the
    subscriber's admin page to copy as they are."""

    title: str
    description: str
    records: tuple[str, ...]


class IssuerBackend:
    """One kind of issuer. Subclasses implement ``start``; everything else has a harmless default."""

    kinds: ClassVar[tuple[str, ...]] = ()
    label: ClassVar[str] = ""
    # May sign many certificates in one transaction (``pki.services.issue_batch``, the renewal sweep).
    signs_locally: ClassVar[bool] = False

    @property
    def admin(self) -> CaAdminExtension | None:
        """What this issuer adds to the CA admin screens (loaded on first use: admin code stays out of
        workers)."""
        return None

    @property
    def api(self) -> CaApiExtension | None:
        """What this issuer adds to ``/api/v1/cas/``."""
        return None

    def start(self, request: IssuanceRequest) -> Outcome:
        raise NotImplementedError

    def subscriber_options(self) -> tuple[SubscriberOption, ...]:
        """What a subscriber of this kind of CA may choose for itself (none by default)."""
        return ()

    def clean_subscriber_options(self, ca: CertificateAuthority, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` checked for ``ca``, empty values dropped; a refusal is a ValidationError on
        ``issuer_options``. By default: only the declared options, as text or one of their choices."""
        from django.core.exceptions import ValidationError

        declared = {o.name: o for o in self.subscriber_options()}
        unknown = sorted(set(options) - set(declared))
        if unknown:
            takes = ", ".join(declared) or "no options"
            raise ValidationError({"issuer_options": [f"{ca.name} takes {takes}; not {', '.join(unknown)}."]})
        cleaned: dict[str, Any] = {}
        for name, value in options.items():
            option = declared[name]
            text = "" if value is None else str(value).strip()
            if not text:
                continue
            if option.choices and text not in dict(option.choices):
                allowed = ", ".join(dict(option.choices))
                raise ValidationError({"issuer_options": [f"{option.label}: choose one of {allowed}."]})
            if len(text) > option.max_length:
                raise ValidationError(
                    {"issuer_options": [f"{option.label}: at most {option.max_length} characters."]}
                )
            cleaned[name] = text
        return cleaned

    def publication_hints(self, subscriber: Subscriber) -> list[PublicationHint]:
        """What the operator may publish for ``subscriber`` (e.g. CAA records allowing only this CA); none by
        default."""
        return []

    def revoke_at_issuer(self, certificate: Certificate, reason: str) -> None:
        """Revoke at the CA itself. Called before pki's transaction (no row lock is held during network
        calls); raising refuses the revocation and nothing is marked."""

    def after_revoke(self, certificate: Certificate, actor: Actor) -> None:
        """Inside the revocation's transaction, once the certificate is marked (e.g. publish a CRL)."""

    def busy_subscribers(self) -> QuerySet | None:
        """Ids of subscribers whose issuance is under way (the renewal sweep leaves them alone)."""
        return None

    def delete_blockers(self, ca: CertificateAuthority) -> list[str]:
        """Why ``ca`` cannot be deleted, beyond pki's own rows."""
        return []

    def refresh_renewal_times(self, report: JobReport, *, now: datetime) -> None:
        """Let the CA move its certificates' renewal times (e.g. ACME Renewal Information)."""

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
        """A certificate for ``names`` without a subscriber (where the CA allows it)."""
        from django.core.exceptions import ValidationError

        raise ValidationError({"ca": [f"{self.label or 'this CA'} does not issue by names alone."]})

    def wait(
        self,
        pending: Pending,
        *,
        progress: Callable[[str], None] | None = None,
        timeout: float = 600.0,
    ) -> Certificate:
        """Block until ``pending`` ends: its certificate, or IssuanceFailed with the issuer's message."""
        raise IssuanceFailed(f"{pending.label} cannot be waited for here")

    def pending_for(self, subscriber: Subscriber) -> Pending | None:
        """The subscriber's issuance under way at this issuer, if any."""
        return None
