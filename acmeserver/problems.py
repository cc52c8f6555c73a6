"""RFC 8555 §6.7 problem documents (RFC 7807): what every refusal of the ACME server answers. Pure Python.

``AcmeProblem`` is raised anywhere below the views; the views turn it into ``application/problem+json`` with
its status (and a fresh ``Replay-Nonce``, like every answer).
"""

from __future__ import annotations

from typing import Any

PREFIX = "urn:ietf:params:acme:error:"

# type -> HTTP status
STATUS = {
    "accountDoesNotExist": 400,
    "alreadyReplaced": 409,  # RFC 9773
    "alreadyRevoked": 400,
    "badCSR": 400,
    "badNonce": 400,
    "badPublicKey": 400,
    "badRevocationReason": 400,
    "badSignatureAlgorithm": 400,
    "caa": 403,
    "compound": 403,
    "connection": 400,
    "dns": 400,
    "externalAccountRequired": 400,
    "incorrectResponse": 403,
    "invalidContact": 400,
    "invalidProfile": 400,  # draft-ietf-acme-profiles
    "malformed": 400,
    "orderNotReady": 403,
    "rateLimited": 429,
    "rejectedIdentifier": 400,
    "serverInternal": 500,
    "tls": 400,
    "unauthorized": 403,
    "unsupportedContact": 400,
    "unsupportedIdentifier": 400,
    "userActionRequired": 403,
}


class AcmeProblem(Exception):
    """A refusal in RFC 8555's words: ``kind`` is the error type without its URN prefix."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        status: int | None = None,
        subproblems: list[AcmeProblem] | None = None,
        identifier: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        location: str | None = None,
        retry_after: int | None = None,
    ):
        if kind not in STATUS:
            raise ValueError(f"unknown ACME error type {kind!r}")
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status or STATUS[kind]
        self.subproblems = subproblems or []
        self.identifier = identifier
        self.extra = extra or {}
        self.location = location  # the Location header of the answer (keyChange: the account with the key)
        self.retry_after = retry_after  # seconds, the Retry-After header (rateLimited)

    @property
    def type(self) -> str:
        return PREFIX + self.kind

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "detail": self.detail, "status": self.status}
        if self.identifier:
            body["identifier"] = self.identifier
        if self.subproblems:
            body["subproblems"] = [p.to_json() for p in self.subproblems]
        body.update(self.extra)
        return body

    def __repr__(self) -> str:
        return f"AcmeProblem({self.kind!r}, {self.detail!r})"


def malformed(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail)


def unauthorized(detail: str) -> AcmeProblem:
    return AcmeProblem("unauthorized", detail)
