"""``manage.py acme_order``: run one ACME order in this process, printing each step as it happens."""

from __future__ import annotations

import time

from django.core.management.base import CommandError

from acmeca import orders
from acmeca.models import AcmeOrder
from certmgr.management.commands._base import ServiceCommand, find_organization
from pki import services
from pki.management import find_ca, find_subscriber
from pki.models import CertificateAuthority


class Command(ServiceCommand):
    help = (
        "Run one ACME order in the foreground with progress output: a subscriber's order (like "
        "'manage.py issue' for an ACME CA), a direct order by names on a CA (--ca with --names), or an "
        "existing unfinished order (--resume). Exits non-zero with the CA's message when the order fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("subscriber", nargs="?", help="Subscriber name (or id) whose CA is an ACME CA.")
        parser.add_argument(
            "--organization", "--org", dest="organization", help="Organization (name, slug or id) to look in."
        )
        parser.add_argument("--ca", help="ACME CA (name or id) for a direct order by --names.")
        parser.add_argument("--names", help="Comma-separated names for a direct order on --ca.")
        parser.add_argument("--resume", type=int, metavar="ORDER_ID", help="Drive this unfinished order.")

    def handle(self, *args, subscriber, organization, ca, names, resume, **options):
        modes = [bool(subscriber), bool(names or ca), resume is not None]
        if sum(modes) != 1:
            raise CommandError("give a subscriber, or --ca with --names, or --resume ORDER_ID (one of them)")
        organization = find_organization(organization) if organization else None
        self.started = time.monotonic()
        if resume is not None:
            order = self.find_order(resume, organization)
        else:
            with orders.foreground():
                order = self.start(subscriber, ca, names, organization)
            self.say(f"order {order.pk} created for {', '.join(order.names)}")
        order = self.drive(order)
        self.summary(order)
        if order.step != AcmeOrder.Step.DONE:
            raise CommandError(self.failure(order))

    # -- starting ----------------------------------------------------------------------------------
    def start(self, subscriber: str | None, ca: str | None, names: str | None, organization) -> AcmeOrder:
        if subscriber:
            sub = find_subscriber(subscriber, organization)
            if sub.ca is None or sub.ca.kind != CertificateAuthority.Kind.ACME:
                raise CommandError(
                    f"subscriber {sub.name!r} issues from an internal CA: use manage.py issue {sub.pk}"
                )
            outcome = services.issue(sub, actor=self.actor())
            if outcome.certificate is not None or outcome.kind != "acme_order":  # the CA changed kind
                raise CommandError(f"subscriber {sub.name!r} did not start an ACME order")
            return AcmeOrder.objects.get(pk=outcome.id)
        if not ca or not names:
            raise CommandError("a direct order needs both --ca and --names")
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        return orders.start_direct_order(find_ca(ca, organization), wanted, actor=self.actor())

    def find_order(self, order_id: int, organization) -> AcmeOrder:
        rows = AcmeOrder.objects.all()
        if organization is not None:
            rows = rows.filter(organization=organization)
        order = rows.filter(pk=order_id).first()
        if order is None:
            raise CommandError(f"no ACME order {order_id}")
        if order.step == AcmeOrder.Step.WAITING_MANUAL:
            raise CommandError(
                f"order {order.pk} waits for manual DNS records: confirm them (admin or API), then resume it"
            )
        if order.finished and order.step != AcmeOrder.Step.DONE:
            raise CommandError(f"order {order.pk} is already {order.step}: {order.last_error or '-'}")
        return order

    # -- running -----------------------------------------------------------------------------------
    def drive(self, order: AcmeOrder) -> AcmeOrder:
        """Run the order here until it ends (``orders.drive``: sleeps through retries, follows a worker)."""
        return orders.drive(order.pk, progress=self.say)

    # -- output --------------------------------------------------------------------------------------
    def say(self, message: str) -> None:
        self.stdout.write(f"[{time.monotonic() - self.started:7.2f}s] {message}")

    def summary(self, order: AcmeOrder) -> None:
        order.refresh_from_db()
        cert = order.certificate
        style = self.style.SUCCESS if order.step == AcmeOrder.Step.DONE else self.style.WARNING
        self.stdout.write(style(f"order {order.pk}: {order.get_step_display().lower()}"))
        self.stdout.write(f"order: {order.pk}")
        self.stdout.write(f"step: {order.step}")
        self.stdout.write(f"status: {order.status or '-'}")
        if cert is not None:
            self.stdout.write(f"certificate: {cert.pk}")
            self.stdout.write(f"serial: {cert.serial}")
            self.stdout.write(f"not_after: {cert.not_after:%Y-%m-%dT%H:%M:%SZ}")
        self.stdout.write(f"elapsed: {time.monotonic() - self.started:.2f}s")

    def failure(self, order: AcmeOrder) -> str:
        if order.step == AcmeOrder.Step.WAITING_MANUAL:
            records = "; ".join(f"{c.record_name} TXT {c.record_value}" for c in order.challenges.all())
            return (
                f"order {order.pk} waits for manual DNS records ({records}): create them, confirm in the "
                f"admin or API, then run manage.py acme_order --resume {order.pk}"
            )
        return f"order {order.pk} {order.step}: {order.last_error or 'no reason given'}"
