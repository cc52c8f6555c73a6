"""The issuers ``pki`` brings itself: its internal CAs (roots and intermediates) and self-signed keys.

Both sign at once under the issuance transaction and record the certificate; an internal CA publishes a
certificate's revocation (a delta CRL after the commit, or a full CRL at once with delta CRLs off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pki.choices import INTERNAL_CA_KINDS
from pki.issuers.base import IssuanceRequest, Issued, IssuerBackend, Outcome

if TYPE_CHECKING:
    from certmgr.actors import Actor
    from pki.models import Certificate


class InternalIssuer(IssuerBackend):
    kinds = tuple(str(kind) for kind in INTERNAL_CA_KINDS)
    label = "Internal CA"
    signs_locally = True

    def start(self, request: IssuanceRequest) -> Outcome:
        from pki.services import issuance

        cert, chain_pem = issuance.sign(request)
        signed = issuance.signed_request(request, cert, chain_pem, source=self.source)
        return Issued(issuance.record([signed], actor=request.actor)[0])

    source = "issued"

    def after_revoke(self, certificate: Certificate, actor: Actor) -> None:
        from pki.services import revocation

        if certificate.ca is not None:  # always: this backend is chosen by the certificate's CA
            revocation.publish_revocation(certificate.ca, actor)


class SelfSignedIssuer(InternalIssuer):
    kinds = ("self-signed",)
    label = "Self-signed"
    source = "self-signed"

    def after_revoke(self, certificate: Certificate, actor: Actor) -> None:
        """A self-signed certificate has no CRL to publish."""


def register_builtin() -> None:
    from pki import issuers

    issuers.register(InternalIssuer())
    issuers.register(SelfSignedIssuer())
