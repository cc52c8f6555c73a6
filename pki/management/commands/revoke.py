from django.core.management.base import CommandError

from certmgr.management.commands._base import ServiceCommand, find_organization
from pki import services
from pki.management import find_certificate
from pki.x509 import RevocationReason, X509Error, parse_revocation_reason

REASONS = ", ".join(r.value for r in RevocationReason)


class Command(ServiceCommand):
    help = (
        "Revoke a certificate of an internal CA and publish the CA's new CRL. Name the certificate by SERIAL "
        "(hex; colons, 0x and upper case accepted) or by --id. A serial found in several certificates "
        "(e.g. of different CAs or organizations) is refused: use --id or --org."
    )

    def add_arguments(self, parser):
        parser.add_argument("serial", nargs="?", help="Serial number in hex.")
        parser.add_argument("--id", type=int, dest="certificate_id", metavar="ID", help="Certificate id.")
        parser.add_argument("--org", help="Only look in this organization (name, slug or id).")
        parser.add_argument(
            "--reason",
            required=True,
            help=(
                f"RFC 5280 reason: {REASONS}. The seed API's names (KEY_COMPROMISE) and the RFC's "
                "(keyCompromise) are accepted too."
            ),
        )

    def handle(self, *args, serial, certificate_id, org, reason, **options):
        try:
            parsed = parse_revocation_reason(reason)
        except X509Error:
            raise CommandError(f"unknown revocation reason {reason!r}; choose one of: {REASONS}") from None
        organization = find_organization(org) if org else None
        certificate = find_certificate(
            serial=serial, certificate_id=certificate_id, organization=organization
        )
        certificate = services.revoke(certificate, reason=parsed.value, actor=self.actor())
        ca = certificate.ca
        crl = ca.crls.filter(delta=False).defer("der").order_by("-number").first() if ca is not None else None
        label = certificate.common_name or "no CN"
        self.stdout.write(
            self.style.SUCCESS(f"Revoked serial {certificate.serial} ({label}, id {certificate.pk}).")
        )
        self.stdout.write(f"reason: {certificate.revocation_reason}")
        self.stdout.write(f"revoked_at: {certificate.revoked_at:%Y-%m-%dT%H:%M:%SZ}")
        if ca is not None and ca.is_internal and ca.delta_crl_enabled:
            self.stdout.write(
                f"CA {ca.name!r}: its full CRL and its delta CRL list it once the worker has rebuilt them."
            )
        elif ca is not None and crl is not None:
            self.stdout.write(f"CRL #{crl.number} of CA {ca.name!r} published.")
