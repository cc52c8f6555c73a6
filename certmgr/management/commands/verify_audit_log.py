from django.core.management.base import BaseCommand, CommandError

from certmgr import audit, audit_checkpoints


class Command(BaseCommand):
    help = (
        "Check every audit-log chain (with --checkpoints: and that it matches the signed checkpoints); name "
        "each broken chain's first broken sequence and exit non-zero."
    )

    def add_arguments(self, parser):
        parser.add_argument("--organization", type=int, action="append", help="Only these organization ids.")
        parser.add_argument(
            "--checkpoints",
            action="append",
            metavar="DIR",
            help="A checkpoint directory or s3://bucket/prefix to compare with (repeatable).",
        )

    def handle(self, *args, organization, checkpoints, **options):
        problems: list[str] = []
        if checkpoints:
            found: list[audit_checkpoints.Checkpoint] = []
            for location in checkpoints:
                try:
                    signed, bad = audit_checkpoints.load(audit_checkpoints.open_store(location))
                except audit_checkpoints.CheckpointError as exc:
                    raise CommandError(str(exc)) from exc
                found += signed
                problems += bad
            states = audit_checkpoints.compare(found, organization)
        else:
            states = audit.verify_chains(organization)
        checked = sum(s.checked for s in states)
        problems += [str(s.broken) for s in states if s.broken is not None]
        if problems:
            for line in problems:
                self.stderr.write(line)
            summary = f"audit log broken ({len(problems)} problems, {checked} events checked)"
            raise CommandError(f"{summary}: {problems[0]}")
        legacy = sum(s.legacy for s in states)
        anchored = f", against {len(found)} signed checkpoints" if checkpoints else ""
        note = f" ({legacy} unkeyed links from before keyed links)" if legacy else ""
        self.stdout.write(self.style.SUCCESS(f"audit log intact: {checked} events verified{anchored}{note}"))
