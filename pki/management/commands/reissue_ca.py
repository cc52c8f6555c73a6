"""``manage.py reissue_ca``: re-issue every current certificate of a CA, in the foreground, with progress."""

from __future__ import annotations

from django.core.management.base import CommandError

from certmgr.management.commands._base import ServiceCommand, find_organization
from pki import services
from pki.management import find_ca
from pki.x509 import RevocationReason, X509Error, parse_revocation_reason

REASONS = ", ".join(r.value for r in RevocationReason)


class Command(ServiceCommand):
    help = (
        "Re-issue the current certificate of every subscriber of a CA: after a CA key compromise (with "
        "--to-ca the subscribers move to another CA first; with --revoke-reason the replaced certificates "
        "are revoked once their successors exist) or a misissuance. Internal CAs sign in batches; an ACME CA "
        "gets one order per subscriber. Exits 1 if any certificate could not be re-issued."
    )

    def add_arguments(self, parser):
        parser.add_argument("ca", help="The CA (name or id) whose certificates are re-issued.")
        parser.add_argument("--org", help="Organization (name, slug or id) to look in.")
        parser.add_argument("--to-ca", help="Move the subscribers to this CA (name or id) and issue from it.")
        parser.add_argument("--revoke-reason", help=f"Revoke the replaced certificates: {REASONS}.")

    def handle(self, *args, ca, org, to_ca, revoke_reason, **options):
        reason = None
        if revoke_reason:
            try:
                reason = parse_revocation_reason(revoke_reason).value
            except X509Error:
                raise CommandError(
                    f"unknown revocation reason {revoke_reason!r}; choose one of: {REASONS}"
                ) from None
        organization = find_organization(org) if org else None
        source = find_ca(ca, organization)
        target = find_ca(to_ca, source.organization) if to_ca else None
        report = services.reissue_ca(
            source, actor=self.actor(), to_ca=target, revoke_reason=reason, progress=self.stdout.write
        )
        self.stdout.write(
            f"CA {source.name!r}: {report.reissued} re-issued, {report.ordered} ordered from an external CA, "
            f"{report.revoked} revoked, {len(report.failed)} failed."
        )
        if report.failed:
            for cert_id, why in report.failed[:20]:
                self.stderr.write(f"certificate {cert_id}: {why}")
            raise CommandError(f"{len(report.failed)} certificates could not be re-issued")
