from django.core.management.base import CommandError

from certmgr.management.commands._base import ServiceCommand, find_organization
from pki import services
from pki.management import find_ca, read_input
from pki.models import CertificateAuthority
from pki.x509 import KeyAlgorithm

SUBJECT_OPTIONS = {
    "cn": "common_name",
    "o": "organization",
    "ou": "organizational_unit",
    "c": "country",
    "st": "state",
    "l": "locality",
}


class Command(ServiceCommand):
    help = (
        "Create an internal CA in an organization: a root, or an intermediate with --parent; or import an "
        "existing CA certificate and its key with --import-cert/--import-key. Prints the CA's id, serial and "
        "subject (and its certificate with --print-pem). The CA key is generated here, stored encrypted and "
        "never printed or exported."
    )

    def add_arguments(self, parser):
        parser.add_argument("organization", help="Organization name, slug or id.")
        parser.add_argument("name", help="The CA's name in certmgr (unique within the organization).")
        subject = parser.add_argument_group("subject of a new CA")
        subject.add_argument("--cn", help="Common name (required for a new CA).")
        subject.add_argument("--o", help="Organization (O).")
        subject.add_argument("--ou", help="Organizational unit (OU).")
        subject.add_argument("--c", help="Country (C), two letters.")
        subject.add_argument("--st", help="State or province (ST).")
        subject.add_argument("--l", help="Locality (L).")
        new = parser.add_argument_group("key and constraints of a new CA")
        new.add_argument(
            "--key-algorithm",
            default=None,
            choices=[a.value for a in KeyAlgorithm],
            help="Key algorithm of the CA (default: ec-p256).",
        )
        new.add_argument(
            "--validity-days",
            type=int,
            default=None,
            help="Days valid (default: 3650 for a root, 1825 for an intermediate ending before its parent).",
        )
        new.add_argument(
            "--max-path-length",
            type=int,
            default=None,
            metavar="N",
            help=(
                "Basic constraints pathLenConstraint: 0 = issues end-entity certificates only (default: "
                "unlimited for a root, the parent's limit minus one for an intermediate)."
            ),
        )
        new.add_argument(
            "--parent",
            metavar="CA_NAME_OR_ID",
            help="Make an intermediate signed by this CA of the same organization (default: a root).",
        )
        imp = parser.add_argument_group("import an existing CA instead")
        imp.add_argument("--import-cert", metavar="PATH", help="The CA certificate (PEM).")
        imp.add_argument("--import-key", metavar="PATH", help="The CA's private key (unencrypted PEM).")
        parser.add_argument(
            "--print-pem", action="store_true", help="Also print the CA certificate (PEM, never the key)."
        )

    def handle(self, *args, organization, name, import_cert, import_key, print_pem, **options):
        org = find_organization(organization)
        subject = {field: options[opt] for opt, field in SUBJECT_OPTIONS.items() if options[opt]}
        if import_cert or import_key:
            if not (import_cert and import_key):
                raise CommandError("importing a CA needs both --import-cert PATH and --import-key PATH")
            given = [f"--{opt}" for opt in SUBJECT_OPTIONS if options[opt]] + [
                "--" + opt.replace("_", "-")
                for opt in ("key_algorithm", "validity_days", "max_path_length", "parent")
                if options[opt] is not None
            ]
            if given:
                raise CommandError(
                    f"{', '.join(given)} cannot be combined with --import-cert: an imported CA keeps the "
                    "subject, key and constraints of its certificate"
                )
            ca = services.import_ca(
                org,
                name=name,
                certificate_pem=read_input(import_cert, "--import-cert"),
                private_key_pem=read_input(import_key, "--import-key"),
                actor=self.actor(),
            )
            verb = "Imported"
        else:
            if not options["cn"]:
                raise CommandError("a new CA needs a common name: --cn CN (or import one with --import-cert)")
            max_path_length = options["max_path_length"]
            if max_path_length is not None and max_path_length < 0:
                raise CommandError("--max-path-length must be 0 or more")
            parent = find_ca(options["parent"], org) if options["parent"] else None
            ca = services.create_internal_ca(
                org,
                name=name,
                kind=CertificateAuthority.Kind.INTERNAL_INTERMEDIATE
                if parent
                else CertificateAuthority.Kind.INTERNAL_ROOT,
                subject=subject,
                key_algorithm=options["key_algorithm"] or "ec-p256",
                validity_days=options["validity_days"],
                max_path_length=max_path_length,
                parent=parent,
                actor=self.actor(),
            )
            verb = "Created"
        self.stdout.write(
            self.style.SUCCESS(f"{verb} {ca.get_kind_display().lower()} CA {ca.name!r} in {org.name}.")
        )
        self.stdout.write(f"id: {ca.pk}")
        self.stdout.write(f"serial: {ca.serial}")
        self.stdout.write(f"subject: {ca.subject_dn}")
        if ca.parent is not None:
            self.stdout.write(f"parent: {ca.parent.name} (id {ca.parent_id})")
        self.stdout.write(f"key algorithm: {ca.key_algorithm}")
        self.stdout.write(f"not after: {ca.not_after:%Y-%m-%d %H:%M:%S}Z")
        if print_pem:
            self.stdout.write(ca.certificate_pem, ending="" if ca.certificate_pem.endswith("\n") else "\n")
