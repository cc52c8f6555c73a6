import os
import sys

from django.core.management.base import CommandError

from certmgr.management.commands._base import ServiceCommand, find_organization
from pki import services
from pki.management import find_certificate, read_input, write_output

PASSWORD_ENV = "CERTMGR_EXPORT_PASSWORD"
FORMATS = {
    "pem": "the certificate",
    "chain": "its chain (issuing CA first, up to the root)",
    "bundle": "certificate followed by the chain (add --include-key for the key too)",
    "key": "the private key (audited)",
    "pkcs12": "PKCS#12 with certificate, chain and key (audited; needs --out and a password)",
}


class Command(ServiceCommand):
    help = (
        "Export a certificate named by SERIAL (hex) or --id. Formats: "
        + "; ".join(f"{name}: {what}" for name, what in FORMATS.items())
        + f". The PKCS#12 password comes from --password-file or the {PASSWORD_ENV} environment variable, "
        "never from the command line (it would show in 'ps'); at least "
        f"{services.PKCS12_MIN_PASSWORD} characters. Without --out, PEM formats go to stdout. Files holding "
        "a key are written with mode 0600."
    )

    def add_arguments(self, parser):
        parser.add_argument("serial", nargs="?", help="Serial number in hex.")
        parser.add_argument("--id", type=int, dest="certificate_id", metavar="ID", help="Certificate id.")
        parser.add_argument("--org", help="Only look in this organization (name, slug or id).")
        parser.add_argument("--format", required=True, choices=list(FORMATS), help="What to export.")
        parser.add_argument("--out", metavar="FILE", help="Write to FILE instead of stdout.")
        parser.add_argument(
            "--password-file",
            metavar="FILE",
            help=f"pkcs12: read the password from FILE ('-' for stdin; default: ${PASSWORD_ENV}).",
        )
        parser.add_argument("--alias", default="", help="pkcs12: friendly name (default: the common name).")
        parser.add_argument(
            "--include-key", action="store_true", help="bundle: append the private key (audited)."
        )

    def handle(self, *args, serial, certificate_id, org, format, out, password_file, alias, **options):
        if format != "pkcs12" and (password_file or alias):
            raise CommandError("--password-file and --alias only apply to --format pkcs12")
        if format != "bundle" and options["include_key"]:
            raise CommandError("--include-key only applies to --format bundle (see also --format key)")
        if format == "pkcs12" and not out:
            raise CommandError("--format pkcs12 is binary: give --out FILE")
        password = self.password(password_file) if format == "pkcs12" else None
        organization = find_organization(org) if org else None
        certificate = find_certificate(
            serial=serial, certificate_id=certificate_id, organization=organization
        )
        actor = self.actor()
        secret = format in ("key", "pkcs12") or (format == "bundle" and options["include_key"])
        data: str | bytes
        if format == "pem":
            data = certificate.certificate_pem
        elif format == "chain":
            if not certificate.chain_pem:
                raise CommandError(
                    f"certificate {certificate.serial} has no chain in certmgr (self-signed, or imported "
                    "without its issuers)"
                )
            data = certificate.chain_pem
        elif format == "bundle":
            data = services.bundle_pem(certificate, with_key=options["include_key"], actor=actor)
        elif format == "key":
            data = services.export_private_key(certificate, actor=actor)
        else:
            assert password is not None  # read above for pkcs12
            data = services.export_pkcs12(certificate, password=password, alias=alias, actor=actor)
        if out:
            path = write_output(out, data, secret=secret)
            self.stdout.write(
                self.style.SUCCESS(f"Wrote {format} of serial {certificate.serial} to {path}")
                + (" (mode 0600)" if secret else "")
            )
        else:
            assert isinstance(data, str)  # pkcs12 (bytes) always goes to --out
            self.stdout.write(data, ending="" if data.endswith("\n") else "\n")

    def password(self, password_file: str | None) -> str:
        if password_file == "-":
            text = sys.stdin.readline()
        elif password_file:
            text = read_input(password_file, "--password-file")
        else:
            text = os.environ.get(PASSWORD_ENV)
            if text is None:
                raise CommandError(
                    f"--format pkcs12 needs a password: --password-file FILE or the {PASSWORD_ENV} "
                    "environment variable"
                )
        # A password file usually ends with a newline that is not part of the password.
        password = text.splitlines()[0] if text.strip("\r\n") else ""
        if not password:
            raise CommandError("the PKCS#12 password is empty")
        return password
