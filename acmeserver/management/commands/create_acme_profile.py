from django.core.management.base import CommandError

from acmeserver import services
from acmeserver.choices import ChallengeType
from certmgr.management.commands._base import ServiceCommand, find_organization
from pki.management import find_ca
from pki.models import Policy


class Command(ServiceCommand):
    help = (
        "Create an ACME enrollment profile: an RFC 8555 directory whose orders the private CA --ca signs "
        "(under --policy when given). Prints the directory URL (from CERTMGR_BASE_URL) to give ACME clients, "
        "e.g. certbot --server <URL>."
    )

    def add_arguments(self, parser):
        parser.add_argument("organization", help="Organization (name, slug or id).")
        parser.add_argument("name", help="Profile name.")
        parser.add_argument("--ca", required=True, help="The private CA that signs (name or id).")
        parser.add_argument(
            "--slug", default="", help="The directory URL's last part (default: from the name)."
        )
        parser.add_argument("--policy", help="Policy (name or id) checked on every order and finalize.")
        parser.add_argument("--validity-days", type=int, default=90)
        parser.add_argument(
            "--challenge",
            action="append",
            choices=ChallengeType.values,
            help="A challenge type to offer (repeatable; default: http-01 and dns-01).",
        )
        parser.add_argument("--wildcards", action="store_true", help="Allow *.example.com (dns-01).")
        parser.add_argument("--ip", action="store_true", help="Allow IP address identifiers (RFC 8738).")
        parser.add_argument("--disabled", action="store_true", help="Create it disabled.")
        parser.add_argument(
            "--eab",
            action="store_true",
            help="Require external account binding and print a first EAB key (kid, HMAC key: shown once).",
        )

    def handle(self, *args, organization, name, ca, slug, policy, validity_days, challenge, **options):
        org = find_organization(organization)
        policy_row = None
        if policy:
            rows = Policy.objects.filter(organization=org)
            policy_row = rows.filter(name=policy).first() or (
                rows.filter(pk=int(policy)).first() if policy.isdigit() else None
            )
            if policy_row is None:
                raise CommandError(f"no policy {policy!r} in organization {org.name!r}")
        profile = services.save_profile(
            org,
            actor=self.actor(),
            name=name,
            slug=slug,
            ca=find_ca(ca, org),
            policy=policy_row,
            validity_days=validity_days,
            challenge_types=challenge or [ChallengeType.HTTP_01.value, ChallengeType.DNS_01.value],
            allow_wildcards=options["wildcards"],
            allow_ip_identifiers=options["ip"],
            enabled=not options["disabled"],
            eab_required=options["eab"],
        )
        self.stdout.write(services.directory_url(profile))
        if options["eab"]:
            key, hmac_key = services.create_eab_key(profile, actor=self.actor(), name="create_acme_profile")
            self.stdout.write(f"eab-kid: {key.kid}\neab-hmac-key: {hmac_key}")
