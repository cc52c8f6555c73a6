"""The ACME building block: a guarded, badNonce-tolerant network, the directory, accounts, and errors.

Everything here is pure (no models, no Django settings) except that every HTTP request goes through
``certmgr.outbound.session()``: the directory URL is typed by a user, so it is subject to the SSRF guard
(``CERTMGR_OUTBOUND_ALLOWED_NETWORKS``). ``OutboundRefused`` raised by the guard always reaches the caller
unchanged; every other failure is turned into an ``AcmeProblem`` (see ``classify``).

Public API::

    build_network(account_key=..., tls_ca_bundle="", user_agent="certmgr", timeout=30) -> AcmeNetwork
    fetch_directory(directory_url, tls_ca_bundle="") -> acme.messages.Directory
    client_for(directory_url=..., account_key=..., account_uri="", tls_ca_bundle="") -> acme ClientV2
    open_session(same arguments) -> AcmeSession: new_order, order, authorization, answer, finalize,
        download (with alternate chains), deactivate_authorization, renewal_time, revoke
    generate_account_key(kind="ec-p256") -> josepy.JWK; account_key_to_pem(); account_key_from_pem()
    register_account(...) / query_account(...) / update_account(...) -> RegisteredAccount
    deactivate_account(...) -> RegisteredAccount; rollover_account_key(...) -> RegisteredAccount
    AcmeProblem; classify(exc) -> AcmeProblem
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import email.utils
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import josepy as jose
import requests
from acme import challenges, messages
from acme import client as acme_client
from acme import errors as acme_errors
from acme import jws as acme_jws
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certmgr import outbound
from certmgr.errors import OutboundRefused, UpstreamError

ERROR_PREFIX = messages.ERROR_PREFIX  # "urn:ietf:params:acme:error:"
LOCAL_PREFIX = "urn:certmgr:acme:"  # failures that are not ACME problem documents (TLS, network, HTTP)
DEFAULT_TIMEOUT = 30
DEFAULT_NONCE_ATTEMPTS = 8

# RFC 8555 error codes worth trying again later (with backoff, honouring Retry-After).
TRANSIENT_CODES = frozenset({"badNonce", "rateLimited", "serverInternal"})
# Local kinds (LOCAL_PREFIX + kind) that are transient.
TRANSIENT_LOCAL = frozenset({"connection", "timeout", "serverError", "nonce"})

TLS_UNTRUSTED = "the ACME server's HTTPS certificate is not trusted: add its CA as the TLS trust bundle"


# --- errors ----------------------------------------------------------------------------------------


class AcmeProblem(UpstreamError):
    """An ACME CA refused a request or could not be reached.

    ``typ``: the RFC 8555 error type (``urn:ietf:params:acme:error:<code>``) when the CA sent a problem
    document, else ``urn:certmgr:acme:<kind>`` (``tlsUntrusted``, ``connection``, ``timeout``,
    ``serverError``, ``httpError``, ``notADirectory``, ``protocol``, ``outboundRefused``, ``validation``,
    ``eabInvalid``). ``kind``: the last part of ``typ``. ``detail``: the CA's own message (show it to the
    user). ``transient``: retrying later may succeed (badNonce, rateLimited, 5xx, network); permanent ones
    (unauthorized, rejectedIdentifier, caa, externalAccountRequired, malformed, ...) will not.
    ``retry_after``: seconds the CA asked to wait (Retry-After), or None. ``status``: the HTTP status.
    """

    code = "acme_error"

    def __init__(
        self,
        message: str,
        *,
        typ: str,
        detail: str = "",
        transient: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
        subproblems: tuple[AcmeProblem, ...] = (),
        identifier: str = "",
    ):
        super().__init__(message)
        self.typ = typ
        self.detail = detail
        self.transient = transient
        self.retry_after = retry_after
        self.http_status = status  # the CA's HTTP status; ``status`` stays the API's 502
        self.subproblems = subproblems
        self.identifier = identifier

    @property
    def kind(self) -> str:
        """``badNonce``, ``unauthorized``, ``tlsUntrusted``, ... (``typ`` without its prefix)."""
        return self.typ.rsplit(":", 1)[-1]

    @property
    def hint(self) -> str:
        """What the operator can do about it, when there is something (``HINTS``)."""
        return HINTS.get(self.kind, "")

    @property
    def is_acme_error(self) -> bool:
        return self.typ.startswith(ERROR_PREFIX)

    def __repr__(self) -> str:
        return (
            f"AcmeProblem({self.typ!r}, detail={self.detail!r}, transient={self.transient}, "
            f"retry_after={self.retry_after}, status={self.http_status})"
        )


def parse_retry_after(value: str | None, *, now: datetime.datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    now = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (when - now).total_seconds())


def _local(kind: str, message: str, **kwargs: Any) -> AcmeProblem:
    kwargs.setdefault("transient", kind in TRANSIENT_LOCAL)
    kwargs.setdefault("detail", message)
    return AcmeProblem(message, typ=LOCAL_PREFIX + kind, **kwargs)


def _from_acme_error(error: messages.Error) -> AcmeProblem:
    typ = str(error.typ or "about:blank")
    code = typ.rsplit(":", 1)[-1] if typ.startswith(ERROR_PREFIX) else ""
    status = getattr(error, "http_status", None)
    retry_after = getattr(error, "retry_after", None)
    detail = error.detail or error.title or error.description or ""
    identifier = error.identifier.value if error.identifier else ""
    subproblems = tuple(_from_acme_error(sub) for sub in error.subproblems or ())
    transient = code in TRANSIENT_CODES or (status is not None and status >= 500)
    message = f"the ACME CA answered {code or typ}: {detail}" if detail else f"the ACME CA answered {typ}"
    if identifier:
        message = f"{message} (for {identifier})"
    return AcmeProblem(
        message,
        typ=typ,
        detail=detail,
        transient=transient,
        retry_after=retry_after,
        status=status,
        subproblems=subproblems,
        identifier=identifier,
    )


def _from_response(response: requests.Response, what: str = "") -> AcmeProblem:
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    body = (response.text or "").strip().replace("\n", " ")[:200]
    message = f"the ACME server answered HTTP {status} {response.reason or ''}".rstrip()
    if what:
        message += f" for {what}"
    if body:
        message += f": {body}"
    if status >= 500 or status == 429:
        return _local("serverError", message, status=status, retry_after=retry_after, transient=True)
    return _local("httpError", message, status=status, retry_after=retry_after)


def _is_tls_verification(exc: BaseException) -> bool:
    return isinstance(exc, requests.exceptions.SSLError)


def classify(exc: BaseException) -> AcmeProblem:
    """Turn whatever the acme library or requests raised into an ``AcmeProblem``.

    ``OutboundRefused`` becomes a permanent ``outboundRefused`` problem with the guard's message (the
    functions of this module re-raise the original instead).
    """
    if isinstance(exc, AcmeProblem):
        return exc
    if isinstance(exc, OutboundRefused):
        return _local("outboundRefused", exc.message, transient=False)
    if isinstance(exc, messages.Error):
        return _from_acme_error(exc)
    if isinstance(exc, acme_errors.IssuanceError):
        return _from_acme_error(exc.error)
    if isinstance(exc, acme_errors.ValidationError):
        problems = []
        for authzr in exc.failed_authzrs:
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    problem = _from_acme_error(challb.error)
                    problem.identifier = problem.identifier or authzr.body.identifier.value
                    problems.append(problem)
        if problems:
            first = problems[0]
            message = "; ".join(f"{p.identifier}: {p.kind}: {p.detail}" for p in problems)
            return AcmeProblem(
                f"validation failed: {message}",
                typ=first.typ,
                detail=first.detail,
                transient=False,
                subproblems=tuple(problems),
                identifier=first.identifier,
            )
        return _local("validation", f"validation failed: {exc}", transient=False)
    if isinstance(exc, acme_errors.ConflictError):
        return _local("conflict", f"the ACME server reports a conflict with {exc.location}", status=409)
    if isinstance(exc, acme_errors.NonceError):
        return _local("nonce", f"the ACME server sent a bad or no Replay-Nonce: {exc}")
    if isinstance(exc, acme_errors.PollError | acme_errors.TimeoutError):
        return _local("timeout", f"the ACME server did not finish in time: {exc}", transient=True)
    if isinstance(exc, acme_errors.ClientError):
        arg = exc.args[0] if exc.args else None
        if isinstance(arg, tuple) and arg and isinstance(arg[0], requests.Response):
            arg = arg[0]
        if isinstance(arg, requests.Response):
            return _from_response(arg)
        return _local("protocol", f"unexpected answer from the ACME server: {exc}", transient=False)
    if _is_tls_verification(exc):
        found = re.search(r"certificate verify failed: ([^()]+?)\s*\(_ssl", str(exc))
        reason = f"certificate verify failed: {found.group(1)}" if found else _short(exc)
        return _local("tlsUntrusted", f"{TLS_UNTRUSTED} ({reason})", transient=False)
    if isinstance(exc, requests.exceptions.Timeout):
        return _local(
            "timeout", f"the ACME server did not answer in time{network_reason(exc)}", transient=True
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return _local("connection", f"cannot reach the ACME server{network_reason(exc)}", transient=True)
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return _from_response(exc.response)
    if isinstance(exc, requests.exceptions.RequestException):
        return _local("connection", f"request to the ACME server failed{network_reason(exc)}", transient=True)
    if isinstance(exc, jose.DeserializationError | ValueError | KeyError):
        return _local("protocol", f"unexpected answer from the ACME server: {exc}", transient=False)
    return _local("protocol", f"ACME request failed: {type(exc).__name__}: {exc}", transient=False)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."


# What a network failure means, from the words the OS and urllib3 put into it; never the pool's repr.
_NETWORK_REASONS = (
    (
        re.compile(
            r"Name or service not known|nodename nor servname|getaddrinfo failed|No address associated|"
            r"Temporary failure in name resolution|NameResolutionError",
            re.I,
        ),
        "its host name does not resolve",
    ),
    (re.compile(r"Connection refused", re.I), "the connection was refused (nothing listens on that port)"),
    (re.compile(r"timed out|timeout", re.I), "it did not answer in time"),
    (re.compile(r"Network is unreachable|No route to host", re.I), "there is no network route to it"),
    (re.compile(r"Connection reset|RemoteDisconnected|Connection aborted", re.I), "it closed the connection"),
    (re.compile(r"wrong version number|SSLError|EOF occurred", re.I), "the TLS handshake failed"),
)
_HOST_PORT = re.compile(r"host='([^']+)', port=(\d+)")


def network_reason(exc: BaseException) -> str:
    """``exc`` (a requests/urllib3 error) as the operator's words: where, and what went wrong."""
    text = str(exc)
    found = _HOST_PORT.search(text)
    where = f" at {found.group(1)}:{found.group(2)}" if found else ""
    for pattern, reason in _NETWORK_REASONS:
        if pattern.search(text):
            return f"{where}: {reason}"
    return f"{where}: the network request failed"


# A next step for the failures an operator can fix, by ``AcmeProblem.kind``.
HINTS = {
    "connection": "Check the directory URL, that the ACME server is running, and the outbound firewall.",
    "timeout": "The server may be overloaded; certmgr tries again later.",
    "outboundRefused": "Allow its network in CERTMGR_OUTBOUND_ALLOWED_NETWORKS, or use another address.",
    "notADirectory": "The URL must be the ACME directory (it answers JSON with newAccount and newOrder).",
    "httpError": "Check the directory URL.",
    "eabInvalid": "Copy the EAB key id and HMAC key again from your account at the CA.",
    "externalAccountRequired": "This CA needs external account binding: enter the EAB key id and HMAC key.",
    "unauthorized": "The CA could not verify control of the name: check the DNS connection and the zone.",
    "dns": "The CA could not look the name up: check that the domain's DNS serves it publicly.",
    "rateLimited": "The CA's rate limit was hit; certmgr retries after the time it asks for.",
    "accountDoesNotExist": "The CA no longer knows the account: register it again from the account page.",
    "badNonce": "A transient protocol hiccup; certmgr retries.",
    "caa": "A CAA record of the domain forbids this CA: add the CA to the domain's CAA records.",
    "rejectedIdentifier": "The CA does not issue for this name.",
    "serverInternal": "The CA had an internal error; certmgr retries later.",
    "serverError": "The ACME server had an error; certmgr retries later.",
}


@contextlib.contextmanager
def acme_errors_as_problems() -> Iterator[None]:
    """Re-raise anything but OutboundRefused / AcmeProblem as ``classify(exc)``."""
    try:
        yield
    except (OutboundRefused, AcmeProblem):
        raise
    except Exception as exc:
        raise classify(exc) from exc


# --- network ---------------------------------------------------------------------------------------


class AcmeNetwork(acme_client.ClientNetwork):
    """``acme.client.ClientNetwork`` over certmgr's guarded session.

    Retries ``badNonce`` up to ``nonce_attempts`` times (the library retries once; Pebble rejects 5% of
    nonces and real CAs do too under load) and counts them in ``bad_nonces``; ``posts`` counts POST
    attempts. Problem documents get ``http_status`` and ``retry_after`` (seconds) attached, so
    ``classify`` can report them.
    """

    def __init__(
        self,
        key: jose.JWK | None,
        *,
        tls_ca_bundle: str = "",
        user_agent: str = "certmgr",
        timeout: float = DEFAULT_TIMEOUT,
        nonce_attempts: int = DEFAULT_NONCE_ATTEMPTS,
    ) -> None:
        super().__init__(
            key, alg=key_algorithm(key) if key is not None else jose.RS256, user_agent=user_agent
        )
        self._default_timeout = timeout  # type: ignore[assignment]
        self.session.close()
        self.session = outbound.session()
        self.nonce_attempts = max(1, nonce_attempts)
        self.bad_nonces = 0
        self.posts = 0
        self.responses: collections.Counter[str] = collections.Counter()  # "2xx", "4xx", ...: for metrics
        self._bundle_file = None
        if tls_ca_bundle.strip():
            # requests' ``verify`` takes a path: keep the file alive as long as this network.
            self._bundle_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the network)
                "w", prefix="certmgr-acme-ca-", suffix=".pem", encoding="ascii"
            )
            self._bundle_file.write(tls_ca_bundle.strip() + "\n")
            self._bundle_file.flush()
            self.verify_ssl = self._bundle_file.name  # type: ignore[assignment]

    def use_key(self, key: jose.JWK) -> None:
        self.key = key
        self.alg = key_algorithm(key)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.session.close()
        if self._bundle_file is not None:
            with contextlib.suppress(Exception):
                self._bundle_file.close()
            self._bundle_file = None

    def __del__(self) -> None:
        self.close()

    def _check_response(self, response: requests.Response, content_type: str | None = None):  # type: ignore[override]
        self.responses[f"{response.status_code // 100}xx"] += 1
        try:
            return super()._check_response(response, content_type=content_type)
        except messages.Error as error:
            error.http_status = response.status_code
            error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(self.nonce_attempts):
            self.posts += 1
            try:
                return self._post_once(*args, **dict(kwargs))
            except messages.Error as error:
                if error.code != "badNonce" or attempt == self.nonce_attempts - 1:
                    raise
                self.bad_nonces += 1
        raise AssertionError("unreachable")


def build_network(
    *,
    account_key: jose.JWK | None,
    tls_ca_bundle: str = "",
    user_agent: str = "certmgr",
    timeout: float = DEFAULT_TIMEOUT,
    nonce_attempts: int = DEFAULT_NONCE_ATTEMPTS,
) -> AcmeNetwork:
    """A ClientNetwork whose session is ``certmgr.outbound.session()``.

    ``tls_ca_bundle``: PEM of the CA(s) that signed the ACME server's HTTPS certificate; when set it
    replaces the public trust store for this network (private ACME servers: step-ca, Vault, Pebble).
    """
    return AcmeNetwork(
        account_key,
        tls_ca_bundle=tls_ca_bundle,
        user_agent=user_agent,
        timeout=timeout,
        nonce_attempts=nonce_attempts,
    )


def _get_directory(net: AcmeNetwork, directory_url: str) -> messages.Directory:
    with acme_errors_as_problems():
        response = net._send_request("GET", directory_url)
        if not response.ok:
            with contextlib.suppress(ValueError):
                jobj = response.json()
                if isinstance(jobj, dict) and "type" in jobj:
                    net._check_response(response)  # raises the CA's problem document (messages.Error)
            raise _from_response(response, f"the directory {directory_url}")
        try:
            jobj = response.json()
        except ValueError:
            jobj = None
        if not isinstance(jobj, dict) or not {"newNonce", "newAccount", "newOrder"} <= set(jobj):
            raise _local(
                "notADirectory",
                f"{directory_url} is not an ACME directory (no newNonce/newAccount/newOrder in its answer)",
                status=response.status_code,
            )
        return messages.Directory.from_json(jobj)


def fetch_directory(directory_url: str, *, tls_ca_bundle: str = "") -> messages.Directory:
    """GET the ACME directory (RFC 8555 §7.1.1) through the outbound guard.

    Raises OutboundRefused (unchanged) or AcmeProblem: ``tlsUntrusted`` with a message telling to add
    the TLS trust bundle, ``notADirectory``, ``httpError`` / ``serverError``, ``connection``, ``timeout``.
    """
    net = build_network(account_key=None, tls_ca_bundle=tls_ca_bundle)
    try:
        return _get_directory(net, directory_url)
    finally:
        net.close()


def client_for(
    *,
    directory_url: str,
    account_key: jose.JWK,
    account_uri: str = "",
    tls_ca_bundle: str = "",
    user_agent: str = "certmgr",
    timeout: float = DEFAULT_TIMEOUT,
    nonce_attempts: int = DEFAULT_NONCE_ATTEMPTS,
) -> acme_client.ClientV2:
    """An acme ClientV2 on a guarded AcmeNetwork; with ``account_uri`` requests are signed with the kid.

    ``client.net`` is the AcmeNetwork (``bad_nonces``, ``posts``). Call ``client.net.close()`` when done.
    """
    net = build_network(
        account_key=account_key,
        tls_ca_bundle=tls_ca_bundle,
        user_agent=user_agent,
        timeout=timeout,
        nonce_attempts=nonce_attempts,
    )
    try:
        directory = _get_directory(net, directory_url)
    except BaseException:
        net.close()
        raise
    if account_uri:
        net.account = messages.RegistrationResource(body=messages.Registration(), uri=account_uri)
    return acme_client.ClientV2(directory, net)


# --- the session: the protocol steps of an order ---------------------------------------------------


class _NewOrder(messages.NewOrder):
    """newOrder with RFC 9773's ``replaces`` (the acme library has no field for it)."""

    replaces: str | None = jose.field("replaces", omitempty=True)


@dataclass(frozen=True)
class Fetched:
    """A resource as the CA answered a POST-as-GET, and the seconds it asked to wait (Retry-After)."""

    body: Any  # messages.Order or messages.Authorization
    retry_after: float | None


class AcmeSession:
    """One account's conversation with an ACME CA: every protocol step certmgr takes, in one place.

    Built on ``acme.client.ClientV2``'s public methods where the library has one (authorizations, finalize,
    deactivation, revocation, renewal information). The library has no public call for three steps certmgr
    needs (fetching an order by its URL, a newOrder with RFC 9773's ``replaces``, downloading a certificate
    with its alternate chains outside ``poll_finalization``'s loop), so ``_post`` / ``_post_as_get`` /
    ``_get_links`` of ``ClientV2`` are used here and nowhere else. Every method raises ``AcmeProblem`` (or
    ``OutboundRefused``) on failure. ``net`` is the AcmeNetwork (``bad_nonces``, ``responses``).
    """

    def __init__(self, client: acme_client.ClientV2):
        self.client = client

    @property
    def net(self) -> AcmeNetwork:
        return self.client.net  # type: ignore[return-value]

    @property
    def directory(self) -> messages.Directory:
        return self.client.directory

    @property
    def account_key(self) -> jose.JWK:
        key = self.client.net.key
        if key is None:
            raise ValueError("this session has no account key")
        return key

    def offers(self, resource: str) -> bool:
        """Whether the directory names ``resource`` (``renewalInfo``, ``keyChange``, ...)."""
        try:
            self.client.directory[resource]
        except KeyError:
            return False
        return True

    def close(self) -> None:
        self.net.close()

    def __enter__(self) -> AcmeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the only uses of ClientV2's private methods ------------------------------------------------
    def post(self, url: str, body: jose.JSONDeSerializable) -> requests.Response:
        """A signed POST (RFC 8555 §6.2). Private in the library (``ClientV2._post``: it adds the newNonce
        URL for badNonce retries); needed for what the library has no call for: newOrder with ``replaces``,
        keyChange, account updates by URL, and answering a challenge (``answer_challenge`` refuses an
        answer without a Link rel="up", which RFC 8555 §7.5.1 does not require of a CA)."""
        with acme_errors_as_problems():
            return self.client._post(url, body)

    def post_as_get(self, url: str) -> requests.Response:
        """POST-as-GET (RFC 8555 §6.3). Private in the library (``ClientV2._post_as_get``); the library's
        public polls (``poll_finalization``) fetch orders only inside their own sleep loop."""
        with acme_errors_as_problems():
            return self.client._post_as_get(url)

    def _links(self, response: requests.Response, rel: str) -> list[str]:
        # Private in the library (``ClientV2._get_links``); requests' ``response.links`` keeps only one link
        # per relation, and a certificate may have several rel="alternate" chains (RFC 8555 §7.4.2).
        return self.client._get_links(response, rel)

    # -- the steps of an order ------------------------------------------------------------------------
    def new_order(
        self, identifiers: list[messages.Identifier], *, profile: str = "", replaces: str = ""
    ) -> messages.OrderResource:
        """newOrder (RFC 8555 §7.4, + profile, + RFC 9773 ``replaces``): the order and its URL; its
        authorizations are the caller's next requests (``authorization``), so it can store the URL first.

        ``ClientV2.new_order`` takes a CSR, knows no ``replaces`` and fetches the authorizations before it
        returns the order's URL: the identifiers are sent as stored."""
        request = _NewOrder(identifiers=identifiers, profile=profile or None, replaces=replaces or None)
        response = self.post(self.client.directory["newOrder"], request)
        with acme_errors_as_problems():
            body = messages.Order.from_json(response.json())
        return messages.OrderResource(body=body, uri=response.headers.get("Location"))

    def order(self, url: str) -> Fetched:
        """The order as the CA sees it now (POST-as-GET)."""
        response = self.post_as_get(url)
        with acme_errors_as_problems():
            body = messages.Order.from_json(response.json())
        return Fetched(body, parse_retry_after(response.headers.get("Retry-After")))

    def authorization(self, url: str) -> tuple[messages.AuthorizationResource, float | None]:
        """The authorization at ``url`` and the Retry-After the CA sent (``ClientV2.poll``)."""
        with acme_errors_as_problems():
            authzr, response = self.client.poll(_authz_at(url))
        return authzr, parse_retry_after(response.headers.get("Retry-After"))

    def answer(self, url: str, chall: challenges.KeyAuthorizationChallenge) -> None:
        """Tell the CA the challenge at ``url`` is ready (RFC 8555 §7.5.1)."""
        self.post(url, chall.response(self.account_key))

    def finalize(self, url: str, csr_pem: str) -> messages.Order:
        """POST the CSR to the finalize URL; the order as answered (``ClientV2.begin_finalization``)."""
        orderr = messages.OrderResource(body=messages.Order(finalize=url), csr_pem=csr_pem.encode("ascii"))
        with acme_errors_as_problems():
            return self.client.begin_finalization(orderr).body

    def download(self, url: str, *, alternates: bool = False) -> list[str]:
        """The certificate chain at ``url`` (PEM), then, with ``alternates``, each rel="alternate" chain."""
        response = self.post_as_get(url)
        chains = [response.text]
        if alternates:
            chains += [self.post_as_get(link).text for link in self._links(response, "alternate")]
        return chains

    def deactivate_authorization(self, url: str) -> messages.AuthorizationResource:
        """Abandon the authorization at ``url`` (RFC 8555 §7.5.2; ``ClientV2.deactivate_authorization``)."""
        with acme_errors_as_problems():
            return self.client.deactivate_authorization(_authz_at(url))

    # -- certificates -------------------------------------------------------------------------------
    def renewal_time(self, certificate_pem: str) -> tuple[datetime.datetime | None, datetime.datetime]:
        """RFC 9773 renewalInfo (``ClientV2.renewal_time``): when to renew, when to ask again."""
        with acme_errors_as_problems():
            return self.client.renewal_time(certificate_pem.encode("ascii"))

    def revoke(self, certificate: Any, reason_code: int) -> None:
        """revokeCert signed by the account (``ClientV2.revoke``)."""
        with acme_errors_as_problems():
            self.client.revoke(certificate, reason_code)


def _authz_at(url: str) -> messages.AuthorizationResource:
    # No identifier: ClientV2 checks the answer's identifier against it only when one is given.
    return messages.AuthorizationResource(body=messages.Authorization(), uri=url)


def open_session(
    *,
    directory_url: str,
    account_key: jose.JWK,
    account_uri: str = "",
    tls_ca_bundle: str = "",
    user_agent: str = "certmgr",
    timeout: float = DEFAULT_TIMEOUT,
    nonce_attempts: int = DEFAULT_NONCE_ATTEMPTS,
) -> AcmeSession:
    """An ``AcmeSession`` for the account (the directory fetched once). Close it (or use ``with``)."""
    return AcmeSession(
        client_for(
            directory_url=directory_url,
            account_key=account_key,
            account_uri=account_uri,
            tls_ca_bundle=tls_ca_bundle,
            user_agent=user_agent,
            timeout=timeout,
            nonce_attempts=nonce_attempts,
        )
    )


# --- account keys ----------------------------------------------------------------------------------

KEY_KINDS = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")


def generate_account_key(kind: str = "ec-p256") -> jose.JWK:
    """A new account key: ``ec-p256`` (default, ES256), ``ec-p384`` (ES384), ``rsa-2048|3072|4096``
    (RS256)."""
    if kind == "ec-p256":
        return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    if kind == "ec-p384":
        return jose.JWKEC(key=ec.generate_private_key(ec.SECP384R1()))
    if kind.startswith("rsa-") and kind in KEY_KINDS:
        return jose.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:])))
    raise ValueError(f"unknown account key kind {kind!r}: use one of {', '.join(KEY_KINDS)}")


def key_kind(key: jose.JWK) -> str:
    if isinstance(key, jose.JWKEC):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(key.key.curve.name, "ec-unknown")
    if isinstance(key, jose.JWKRSA):
        return f"rsa-{key.key.key_size}"
    raise ValueError(f"unsupported account key type {type(key).__name__}")


def key_algorithm(key: jose.JWK) -> jose.JWASignature:
    """The JWS algorithm for an account key: ES256 / ES384 for EC P-256 / P-384, RS256 for RSA."""
    if isinstance(key, jose.JWKEC):
        curve = key.key.curve.name
        if curve == "secp256r1":
            return jose.ES256
        if curve == "secp384r1":
            return jose.ES384
        if curve == "secp521r1":
            return jose.ES512
        raise ValueError(f"unsupported EC curve {curve} for an ACME account key")
    if isinstance(key, jose.JWKRSA):
        return jose.RS256
    raise ValueError(f"unsupported account key type {type(key).__name__}")


def account_key_to_pem(key: jose.JWK) -> str:
    """The private key as unencrypted PKCS#8 PEM (encrypt it at rest; that is the caller's job)."""
    return key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def account_key_from_pem(pem: str | bytes) -> jose.JWK:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key: {exc}") from exc
    if isinstance(private, ec.EllipticCurvePrivateKey):
        key: jose.JWK = jose.JWKEC(key=private)
    elif isinstance(private, rsa.RSAPrivateKey):
        key = jose.JWKRSA(key=private)
    else:
        raise ValueError(f"unsupported account key type {type(private).__name__}: use EC or RSA")
    key_algorithm(key)  # reject unsupported curves early
    return key


# --- accounts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredAccount:
    uri: str
    status: str
    terms_of_service: str | None
    contact: tuple[str, ...]


def _account(regr: messages.RegistrationResource, terms_of_service: str | None = None) -> RegisteredAccount:
    body = regr.body
    status = str(body.status) if body.status is not None else ""
    return RegisteredAccount(
        uri=regr.uri,
        status=status,
        terms_of_service=regr.terms_of_service or terms_of_service,
        contact=tuple(body.contact or ()),
    )


def _tos(directory: messages.Directory) -> str | None:
    meta = getattr(directory, "meta", None)
    return getattr(meta, "terms_of_service", None) if meta is not None else None


def _eab_required(directory: messages.Directory) -> bool:
    meta = getattr(directory, "meta", None)
    return bool(getattr(meta, "external_account_required", False)) if meta is not None else False


EAB_REQUIRED_MESSAGE = (
    "this ACME CA requires external account binding (EAB): enter the EAB key id and HMAC key issued by the CA"
)


def register_account(
    *,
    directory_url: str,
    email: str = "",
    account_key: jose.JWK,
    eab_kid: str = "",
    eab_hmac_key: str = "",
    tls_ca_bundle: str = "",
) -> RegisteredAccount:
    """Create (or find, when the key already has one) the ACME account, agreeing to the terms of service.

    ``eab_hmac_key`` is base64url as CAs hand it out. Errors: AcmeProblem ``externalAccountRequired``
    (message names EAB), ``eabInvalid`` (HMAC key not base64url, or the CA rejected the binding), the CA's
    own problem otherwise; OutboundRefused unchanged.
    """
    eab_kid, eab_hmac_key = eab_kid.strip(), eab_hmac_key.strip()
    if bool(eab_kid) != bool(eab_hmac_key):
        raise _local("eabInvalid", "external account binding (EAB) needs both the key id and the HMAC key")
    client = client_for(directory_url=directory_url, account_key=account_key, tls_ca_bundle=tls_ca_bundle)
    try:
        directory = client.directory
        if _eab_required(directory) and not eab_kid:
            raise AcmeProblem(
                EAB_REQUIRED_MESSAGE,
                typ=ERROR_PREFIX + "externalAccountRequired",
                detail="the directory says externalAccountRequired",
            )
        fields: dict[str, Any] = {"terms_of_service_agreed": True}
        if email:
            fields["email"] = email
        if eab_kid:
            eab_hmac_key = eab_hmac_key.replace("+", "-").replace("/", "_")  # standard base64 too
            if not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", eab_hmac_key):
                raise _local("eabInvalid", "the EAB HMAC key is not valid base64url")
            try:
                fields["external_account_binding"] = messages.ExternalAccountBinding.from_data(
                    account_public_key=account_key.public_key(),
                    kid=eab_kid,
                    hmac_key=eab_hmac_key,
                    directory=directory,
                )
            except (ValueError, TypeError, jose.DeserializationError) as exc:
                raise _local("eabInvalid", f"the EAB HMAC key is not valid base64url: {exc}") from exc
        with acme_errors_as_problems():
            try:
                regr = client.new_account(messages.NewRegistration.from_data(**fields))
            except acme_errors.ConflictError as exists:
                # The key already has an account: return it.
                client.net.account = messages.RegistrationResource(
                    body=messages.Registration(), uri=exists.location
                )
                regr = client.query_registration(client.net.account)
                regr = regr.update(uri=exists.location)
            except messages.Error as error:
                if error.code == "externalAccountRequired":
                    raise AcmeProblem(
                        f"{EAB_REQUIRED_MESSAGE} (the CA said: {error.detail or error.typ})",
                        typ=str(error.typ),
                        detail=error.detail or "",
                        status=getattr(error, "http_status", None),
                    ) from error
                if eab_kid and error.code in {"unauthorized", "malformed", "badSignatureAlgorithm"}:
                    raise _local(
                        "eabInvalid",
                        "the ACME CA rejected the external account binding (EAB): check the EAB key id "
                        f"and HMAC key (the CA said: {error.detail or error.typ})",
                        detail=error.detail or "",
                        status=getattr(error, "http_status", None),
                    ) from error
                raise
        return _account(regr, _tos(directory))
    finally:
        AcmeSession(client).close()


@contextlib.contextmanager
def _account_client(directory_url: str, account_uri: str, account_key: jose.JWK, tls_ca_bundle: str):
    """A session bound to the account, closed afterwards; CA errors surface as AcmeProblem."""
    session = open_session(
        directory_url=directory_url,
        account_key=account_key,
        account_uri=account_uri,
        tls_ca_bundle=tls_ca_bundle,
    )
    try:
        with acme_errors_as_problems():
            yield session
    finally:
        session.close()


def _post_to_account(session: AcmeSession, account_uri: str, body=None) -> RegisteredAccount:
    """POST ``body`` (or POST-as-GET) to the account URL and return the account as the CA answered."""
    response = session.post_as_get(account_uri) if body is None else session.post(account_uri, body)
    regr = messages.RegistrationResource(
        body=messages.Registration.from_json(response.json()), uri=account_uri
    )
    return _account(regr, _tos(session.directory))


def query_account(
    *, directory_url: str, account_uri: str, account_key: jose.JWK, tls_ca_bundle: str = ""
) -> RegisteredAccount:
    """The account as the CA sees it now (POST-as-GET to the account URL)."""
    with _account_client(directory_url, account_uri, account_key, tls_ca_bundle) as session:
        return _post_to_account(session, account_uri)


def update_account(
    *,
    directory_url: str,
    account_uri: str,
    account_key: jose.JWK,
    email: str | None = None,
    tls_ca_bundle: str = "",
) -> RegisteredAccount:
    """Update the account's contact (``email``: "" clears it, None keeps it) and return the account."""
    update: dict[str, Any] = {}
    if email is not None:
        update["contact"] = (f"mailto:{email}",) if email else ()
    with _account_client(directory_url, account_uri, account_key, tls_ca_bundle) as session:
        return _post_to_account(session, account_uri, messages.UpdateRegistration(**update))


def deactivate_account(
    *, directory_url: str, account_uri: str, account_key: jose.JWK, tls_ca_bundle: str = ""
) -> RegisteredAccount:
    """Deactivate the account (RFC 8555 §7.3.6); irreversible. Returns it with status ``deactivated``."""
    with _account_client(directory_url, account_uri, account_key, tls_ca_bundle) as session:
        return _post_to_account(
            session, account_uri, messages.UpdateRegistration(status=messages.STATUS_DEACTIVATED)
        )


def rollover_account_key(
    *,
    directory_url: str,
    account_uri: str,
    account_key: jose.JWK,
    new_key: jose.JWK,
    tls_ca_bundle: str = "",
) -> RegisteredAccount:
    """Replace the account key (RFC 8555 §7.3.5 keyChange; the acme library has no helper for it).

    The inner JWS is signed by ``new_key`` (jwk + url, no nonce), the outer one by ``account_key`` (kid,
    nonce, url). Afterwards only ``new_key`` is accepted for the account. Returns the account.
    """
    key_algorithm(new_key)
    with _account_client(directory_url, account_uri, account_key, tls_ca_bundle) as session:
        try:
            url = session.directory["keyChange"]
        except KeyError:
            raise _local(
                "protocol", "this ACME CA does not support account key rollover (no keyChange)"
            ) from None
        payload = json.dumps({"account": account_uri, "oldKey": account_key.public_key().to_partial_json()})
        inner = acme_jws.JWS.sign(
            payload.encode(), key=new_key, alg=key_algorithm(new_key), nonce=None, url=url
        )
        session.post(url, inner)
    return query_account(
        directory_url=directory_url, account_uri=account_uri, account_key=new_key, tls_ca_bundle=tls_ca_bundle
    )
