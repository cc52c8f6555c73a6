"""The HTTP-01 responder: ``/.well-known/acme-challenge/<token>`` answered from the database, so any
instance behind a load balancer that forwards that path can serve every order's tokens."""

from __future__ import annotations

from django.http import Http404, HttpResponse
from django.views.decorators.http import require_GET

from acmeca.models import AcmeChallenge, ChallengeType


@require_GET
def http01_challenge(request, token: str):
    value = (
        AcmeChallenge.objects.filter(
            token=token,
            type=ChallengeType.HTTP_01,
            record_present=True,
            status__in=[AcmeChallenge.Status.READY, AcmeChallenge.Status.VALID],
        )
        .values_list("record_value", flat=True)
        .first()
    )
    if value is None:
        raise Http404
    return HttpResponse(value, content_type="application/octet-stream")
