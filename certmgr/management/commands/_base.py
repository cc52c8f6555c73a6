"""Shared plumbing: commands act as a system actor and turn service refusals into exit status 1."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from certmgr.actors import Actor
from certmgr.errors import ServiceError
from certmgr.models import Organization


class ServiceCommand(BaseCommand):
    def actor(self) -> Actor:
        return Actor.system(f"manage.py {self.__module__.rsplit('.', 1)[-1]}")

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except ServiceError as exc:
            raise CommandError(str(exc)) from exc
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
                if hasattr(exc, "error_dict")
                else "; ".join(exc.messages)
            ) from exc


def find_organization(name_or_slug: str) -> Organization:
    org = (
        Organization.objects.filter(slug=name_or_slug).first()
        or Organization.objects.filter(name__iexact=name_or_slug).first()
        or (Organization.objects.filter(pk=name_or_slug).first() if name_or_slug.isdigit() else None)
    )
    if org is None:
        raise CommandError(f"no organization named {name_or_slug!r}")
    return org
