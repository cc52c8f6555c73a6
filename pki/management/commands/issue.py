import time
from pathlib import Path

from django.core.management.base import CommandError

from certmgr.management.commands._base import ServiceCommand, find_organization
from pki import services
from pki.issuers import IssuanceFailed, Pending
from pki.management import find_subscriber, read_input, write_output
from pki.models import Certificate, Subscriber
from pki.services.issuance import issuer_of


class Command(ServiceCommand):
    help = (
        "Issue a certificate from a subscriber (its CA, policy, names and validity), with a key generated "
        "here or from your CSR. With --out-dir, writes cert.pem, chain.pem (the issuing CA up to the root) "
        "and key.pem (mode 0600, only when certmgr generated the key; an audited key export) and prints "
        "serial and not_after. Without --out-dir, prints the certificate PEM on stdout and serial and "
        "not_after on stderr, so 'manage.py issue web > cert.pem' works. A CA that issues later (ACME) is "
        "waited for, with progress on stderr (--no-wait prints what runs and exits)."
    )

    def add_arguments(self, parser):
        parser.add_argument("subscriber", help="Subscriber name (unambiguous, or narrowed with --org) or id.")
        parser.add_argument("--org", help="Organization (name, slug or id) to look the subscriber up in.")
        parser.add_argument(
            "--csr", metavar="PATH", help="Issue for this CSR (PEM); certmgr then holds no key for it."
        )
        parser.add_argument(
            "--out-dir", metavar="DIR", help="Write cert.pem, chain.pem and key.pem here (created if needed)."
        )
        parser.add_argument(
            "--no-wait",
            action="store_true",
            help="When the CA issues later (ACME), print what runs and where to follow it, and exit.",
        )
        parser.add_argument(
            "--timeout", type=float, default=600.0, help="Seconds to wait for a CA that issues later."
        )

    def handle(self, *args, subscriber, org, csr, out_dir, no_wait, timeout, **options):
        organization = find_organization(org) if org else None
        sub = find_subscriber(subscriber, organization)
        csr_pem = read_input(csr, "--csr") if csr else None
        out = Path(out_dir) if out_dir else None
        if out is not None:
            if out.exists() and not out.is_dir():
                raise CommandError(f"--out-dir {out}: exists and is not a directory")
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CommandError(f"--out-dir {out}: cannot create it ({exc.strerror or exc})") from None
        outcome = services.issue(sub, actor=self.actor(), csr_pem=csr_pem)
        if isinstance(outcome, Pending):
            where = f"{outcome.label}: admin {outcome.admin_url}, API {outcome.api_url}"
            if no_wait:
                self.stdout.write(f"{where} (step: {outcome.step_label or outcome.step})")
                return
            self.stderr.write(f"waiting for {where}", style_func=_plain)
            certificate = self.wait(sub, outcome, timeout=timeout)
        else:
            certificate = outcome.certificate
        info = [
            f"serial: {certificate.serial}",
            f"not_after: {certificate.not_after:%Y-%m-%dT%H:%M:%SZ}",
        ]
        if out is None:
            self.stdout.write(certificate.certificate_pem, ending="")
            for line in info:
                self.stderr.write(line, style_func=_plain)
            return
        written = [write_output(out / "cert.pem", certificate.certificate_pem, secret=False)]
        if certificate.chain_pem:
            written.append(write_output(out / "chain.pem", certificate.chain_pem, secret=False))
        if certificate.private_key:
            key_pem = services.export_private_key(certificate, actor=self.actor())
            written.append(write_output(out / "key.pem", key_pem, secret=True))
        self.stdout.write(
            self.style.SUCCESS(f"Issued {certificate.common_name or certificate.serial} from {sub.name!r}.")
        )
        for line in info:
            self.stdout.write(line)
        self.stdout.write(f"id: {certificate.pk}")
        for path in written:
            self.stdout.write(f"wrote {path}")
        if not certificate.chain_pem:
            self.stdout.write("no chain.pem: the certificate is self-signed")

    def wait(self, sub: Subscriber, pending: Pending, *, timeout: float) -> Certificate:
        """Follow issuance that goes on at the CA's issuer (an ACME order) until its certificate exists."""
        started = time.monotonic()

        def progress(message: str) -> None:
            self.stderr.write(f"[{time.monotonic() - started:7.2f}s] {message}", style_func=_plain)

        try:
            return issuer_of(sub).wait(pending, progress=progress, timeout=timeout)
        except IssuanceFailed as exc:
            raise CommandError(str(exc)) from None


def _plain(text: str) -> str:
    return text
