"""'Test connection': one cheap authenticated call per kind of DNS provider connection.

The answer is a CheckResult for a person to read: what the provider said, never a secret. Network and
provider errors become ``ok=False``; the one exception that escapes is
:class:`certmgr.errors.OutboundRefused` (a user-typed endpoint on a private or loopback address),
which the caller turns into a 4xx.

No Django models here: the caller decrypts the credentials and hands them in.
"""

from __future__ import annotations

import binascii
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import botocore.config
import botocore.exceptions
import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import requests
from django.utils.text import capfirst  # the first letter only: names keep their case

from certmgr import outbound
from certmgr.errors import OutboundRefused
from dnsproviders import edgegrid
from dnsproviders.aws import aws_session
from dnsproviders.credentials import CredentialError, Kind, schema_for
from dnsproviders.tsig import TSIG_ALGORITHMS

logger = logging.getLogger(__name__)

CLOUDFLARE_VERIFY_URL = "https://api.cloudflare.com/client/v4/user/tokens/verify"
# Edge DNS v2 "List zones", one zone per page: authenticated, read-only, cheap.
AKAMAI_ZONES_PATH = "/config-dns/v2/zones"
# acme-dns accepts exactly 43 characters of [A-Za-z0-9_-] (the size of an ACME key authorization
# digest) and keeps only the two latest values of a subdomain, so publishing this is harmless.
ACME_DNS_PLACEHOLDER_TXT = "certmgr-connection-test-" + "x" * 19
USER_AGENT = "certmgr/0.1"


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str
    host_key: str = ""  # SSH: the key the host showed (the caller pins it when none was)


def check_connection(kind: str, credentials: dict, *, timeout: float = 10.0) -> CheckResult:
    """Make one authenticated call to the provider behind ``credentials`` and say how it went.

    Raises OutboundRefused when a user-typed endpoint is not allowed; never raises otherwise.
    """
    try:
        schema = schema_for(kind)
    except CredentialError:
        return CheckResult(False, f"Unknown connection kind {kind!r}.")
    credentials = dict(credentials or {})
    missing = [f.name for f in schema.fields if f.required and credentials.get(f.name) in (None, "")]
    if missing:
        return CheckResult(False, f"Incomplete credentials: missing {', '.join(missing)}.")
    for f in schema.fields:
        if credentials.get(f.name) in (None, "") and f.default is not None:
            credentials[f.name] = f.default

    check = _CHECKS[Kind(kind)]
    try:
        result = check(credentials, timeout)
    except OutboundRefused:
        raise
    except Exception as exc:  # a bug or an unforeseen library error: still an answer, never a 500
        logger.exception("connection check of kind %s failed unexpectedly", kind)
        result = CheckResult(
            False, f"Unexpected error while testing the connection: {type(exc).__name__}: {exc}"
        )
    return _scrub(result, [str(credentials[n]) for n in schema.secret_names if credentials.get(n)])


def _scrub(result: CheckResult, secrets: list[str]) -> CheckResult:
    """Belt and braces: no secret value in a message, whatever a server echoed back."""
    message = result.message
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "[redacted]")
    return result if message == result.message else CheckResult(result.ok, message, result.host_key)


# --- HTTP helpers ----------------------------------------------------------------------------------


def excerpt(text: str, limit: int = 200) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def body_excerpt(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return excerpt(response.text) or "(empty body)"
    if isinstance(data, dict):
        for key in ("error", "message", "errors"):
            if data.get(key):
                return excerpt(str(data[key]))
    return excerpt(response.text)


def network_reason(exc: BaseException) -> str:
    """The innermost useful reason of a requests/urllib3 error chain (e.g. 'Connection refused')."""
    reason, seen = "", set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return f"certificate verification failed: {cur.verify_message or cur.reason}"
        if isinstance(cur, ssl.SSLError):
            return f"TLS error: {cur.reason or cur}"
        if isinstance(cur, OSError) and cur.strerror:
            reason = cur.strerror
        inner = getattr(cur, "reason", None)
        if not isinstance(inner, BaseException):
            inner = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = inner or cur.__cause__ or cur.__context__
    if reason:
        return reason
    return excerpt(str(exc))


def request_error(what: str, url: str, exc: requests.RequestException, timeout: float) -> CheckResult:
    if isinstance(exc, requests.ConnectTimeout):
        return CheckResult(False, f"Cannot reach {what} at {url}: no connection within {timeout:g}s.")
    if isinstance(exc, requests.ReadTimeout):
        return CheckResult(
            False, f"{what} at {url} accepted the connection but did not answer within {timeout:g}s."
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return CheckResult(False, f"TLS handshake with {what} at {url} failed: {network_reason(exc)}.")
    if isinstance(exc, requests.ConnectionError):
        return CheckResult(False, f"Cannot connect to {what} at {url}: {network_reason(exc)}.")
    return CheckResult(False, f"Request to {what} at {url} failed: {network_reason(exc)}.")


def _redirect(what: str, response: requests.Response) -> CheckResult:
    # Redirects are not followed: requests would carry X-API-Key style headers to the new host.
    location = response.headers.get("Location", "?")
    return CheckResult(
        False,
        f"{what} answered with a redirect (HTTP {response.status_code}) to {excerpt(location, 300)}: "
        "enter the final URL instead.",
    )


# --- AWS Route53 -----------------------------------------------------------------------------------


def aws_error(step: str, exc: Exception) -> CheckResult:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error") or {}
        if not err.get("Code"):
            # An <ErrorResponse><Errors><Error> body (as moto sends for Route53) is parsed one level down.
            nested = (exc.response.get("Errors") or {}).get("Error")
            err = nested if isinstance(nested, dict) else err
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = err.get("Code") or (f"HTTP {status}" if status else "unknown error")
        message = (err.get("Message") or "").rstrip(".")
        return CheckResult(False, f"AWS refused {step}: {code}" + (f": {message}." if message else "."))
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return CheckResult(False, f"AWS {step} failed: the access key ID and secret access key are required.")
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError):
        return CheckResult(False, f"AWS {step} timed out: {exc}.")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return CheckResult(False, f"Cannot reach AWS for {step}: {exc}.")
    return CheckResult(False, f"AWS {step} failed: {type(exc).__name__}: {exc}.")


def _check_aws(c: dict, timeout: float) -> CheckResult:
    region = c.get("region") or "us-east-1"
    config = botocore.config.Config(
        region_name=region,
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": 2, "mode": "standard"},
        user_agent_extra="certmgr-connection-test",
    )
    try:
        session, assumed_arn = aws_session(c, config, role_session_name="certmgr-connection-test")
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        return aws_error(f"assuming role {c.get('role_arn')}", exc)
    via = f" as {assumed_arn}" if assumed_arn else ""
    try:
        answer = session.client("route53", config=config).list_hosted_zones(MaxItems="1")
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        return aws_error(f"listing Route53 hosted zones{via}", exc)
    zones = answer.get("HostedZones") or []
    seen = f"first hosted zone: {zones[0].get('Name')}" if zones else "no hosted zone yet"
    return CheckResult(True, f"AWS Route53 answered{via}: the credentials can list hosted zones ({seen}).")


# --- Cloudflare ------------------------------------------------------------------------------------


def _check_cloudflare(c: dict, timeout: float) -> CheckResult:
    # A fixed public endpoint, not a user-typed one: a plain session (which honours proxy settings).
    with requests.Session() as s:
        try:
            r = s.get(
                CLOUDFLARE_VERIFY_URL,
                headers={"Authorization": f"Bearer {c['api_token']}", "User-Agent": USER_AGENT},
                timeout=(timeout, timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return request_error("Cloudflare", "api.cloudflare.com", exc, timeout)
    try:
        data = r.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return CheckResult(
            False, f"Cloudflare answered HTTP {r.status_code}: {excerpt(r.text) or '(empty body)'}"
        )
    result = data["result"] if isinstance(data.get("result"), dict) else {}
    if data.get("success") is True and result.get("status") == "active":
        return CheckResult(True, "Cloudflare answered: the API token is valid and active.")
    if data.get("success") is True:
        return CheckResult(
            False, f"Cloudflare answered: the API token is {result.get('status') or 'not active'}."
        )
    errors = data.get("errors") or []
    texts = [
        f"{e.get('message')} (code {e.get('code')})" if e.get("code") else str(e.get("message"))
        for e in errors
        if isinstance(e, dict) and e.get("message")
    ]
    detail = "; ".join(texts) or excerpt(r.text)
    return CheckResult(False, f"Cloudflare refused the API token (HTTP {r.status_code}): {detail}")


# --- PowerDNS --------------------------------------------------------------------------------------


def powerdns_base(api_url: str) -> str:
    base = api_url.strip().rstrip("/")
    return re.sub(r"/api(/v1)?$", "", base)


def _check_powerdns(c: dict, timeout: float) -> CheckResult:
    server_id = str(c.get("server_id") or "localhost")
    url = f"{powerdns_base(c['api_url'])}/api/v1/servers/{quote(server_id, safe='')}"
    with outbound.session() as s:
        try:
            r = s.get(
                url, headers={"X-API-Key": c["api_key"]}, timeout=(timeout, timeout), allow_redirects=False
            )
        except requests.RequestException as exc:
            return request_error("PowerDNS", url, exc, timeout)
    if r.is_redirect or 300 <= r.status_code < 400:
        return _redirect("PowerDNS", r)
    if r.status_code in (401, 403):
        return CheckResult(False, f"PowerDNS refused the API key (HTTP {r.status_code}).")
    if r.status_code == 404:
        return CheckResult(
            False,
            f"PowerDNS has no server with id {server_id!r} (HTTP 404 for {url}): the id is normally "
            "'localhost'; also check that the URL is the PowerDNS API (webserver) address.",
        )
    if r.status_code != 200:
        return CheckResult(False, f"PowerDNS answered HTTP {r.status_code}: {body_excerpt(r)}")
    try:
        data = r.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("type") != "Server":
        return CheckResult(
            False, f"{url} answered HTTP 200 but not with a PowerDNS server object: is this the PowerDNS API?"
        )
    return CheckResult(
        True,
        f"PowerDNS answered: server {data.get('id', server_id)!r} "
        f"({data.get('daemon_type', 'unknown type')}, version {data.get('version', 'unknown')})",
    )


# --- RFC 2136 (TSIG) -------------------------------------------------------------------------------


def _check_rfc2136(c: dict, timeout: float) -> CheckResult:
    server = str(c["server"]).strip()
    try:
        port = int(c.get("port") or 53)
    except (TypeError, ValueError):
        return CheckResult(False, f"Invalid port {c.get('port')!r}.")
    algorithm_text = str(c.get("tsig_algorithm") or "hmac-sha256").lower().rstrip(".")
    algorithm = TSIG_ALGORITHMS.get(algorithm_text)
    if algorithm is None:
        return CheckResult(
            False,
            f"Unsupported TSIG algorithm {algorithm_text!r} (one of: {', '.join(sorted(TSIG_ALGORITHMS))}).",
        )
    key_name = str(c["tsig_key_name"]).strip()
    try:
        key = dns.tsig.Key(key_name, str(c["tsig_secret"]).strip(), algorithm)
    except (binascii.Error, ValueError, TypeError):
        return CheckResult(False, "The TSIG secret is not valid base64 (paste it as tsig-keygen prints it).")
    except dns.exception.DNSException as exc:
        return CheckResult(False, f"Invalid TSIG key name {key_name!r}: {exc}")
    zone = str(c.get("zone") or "").strip() or "."
    try:
        zone_name = dns.name.from_text(zone)
    except dns.exception.DNSException as exc:
        return CheckResult(False, f"Invalid zone {zone!r}: {exc}")

    addresses = outbound.check_host(server, port)  # OutboundRefused propagates to the caller
    query = dns.message.make_query(zone_name, dns.rdatatype.SOA)
    query.use_tsig(key, keyname=key.name, algorithm=algorithm)
    failures = []
    for ip in addresses:
        where = f"{server}:{port}" if ip == server else f"{server}:{port} ({ip})"
        try:
            response, _ = dns.query.udp_with_fallback(query, ip, timeout=timeout, port=port)
        except dns.tsig.PeerBadKey:
            return CheckResult(
                False,
                f"{where} does not know the TSIG key {key_name!r} with algorithm {algorithm_text} (BADKEY): "
                "check the key name and algorithm.",
            )
        except dns.tsig.PeerBadSignature:
            return CheckResult(
                False,
                f"{where} rejected the TSIG signature of key {key_name!r} (BADSIG): "
                "the secret does not match the server's key.",
            )
        except dns.tsig.PeerBadTime:
            return CheckResult(
                False,
                f"{where} rejected the TSIG signature as out of time (BADTIME): the clocks of certmgr's host "
                "and the DNS server differ by more than 5 minutes.",
            )
        except dns.tsig.PeerError as exc:
            return CheckResult(
                False, f"{where} rejected the TSIG signature: {type(exc).__name__} {exc}".strip()
            )
        except (
            dns.tsig.BadSignature,
            dns.tsig.BadKey,
            dns.tsig.BadAlgorithm,
            dns.message.UnknownTSIGKey,
        ) as exc:
            return CheckResult(
                False,
                f"{where} signed its answer with a key that does not match ours ({type(exc).__name__}).",
            )
        except dns.tsig.BadTime:
            return CheckResult(
                False, f"{where} answered with a TSIG time too far from ours (BADTIME): check both clocks."
            )
        except dns.exception.Timeout:
            failures.append(f"no answer from {where} within {timeout:g}s")
            continue
        except (dns.exception.FormError, dns.message.Truncated) as exc:
            return CheckResult(
                False, f"{where} sent an invalid or unsigned answer: {exc or type(exc).__name__}."
            )
        except (OSError, EOFError) as exc:
            failures.append(
                f"cannot reach {where}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
            )
            continue
        except dns.exception.DNSException as exc:
            return CheckResult(
                False, f"{where} sent an answer that could not be read: {type(exc).__name__}: {exc}"
            )
        return _rfc2136_answer(response, where, key_name, zone_name, explicit_zone=zone != ".")
    return CheckResult(
        False, capfirst("; ".join(failures)) + "." if failures else f"No address for {server}."
    )


def _rfc2136_answer(
    response: dns.message.Message, where: str, key_name: str, zone: dns.name.Name, *, explicit_zone: bool
) -> CheckResult:
    rcode = response.rcode()
    signed = response.had_tsig  # dnspython verified the signature, or raised above
    zone_text = zone.to_text()
    if rcode == dns.rcode.NOERROR:
        soa = response.get_rrset(response.answer, zone, dns.rdataclass.IN, dns.rdatatype.SOA)
        if soa is None:
            soa = next((r for r in response.authority if r.rdtype == dns.rdatatype.SOA), None)
        serial = f", SOA serial {soa[0].serial} for {soa.name.to_text()}" if soa else ""
        return CheckResult(True, f"{where} accepted the TSIG key {key_name!r}{serial}.")
    name = dns.rcode.to_text(rcode)
    if rcode == dns.rcode.REFUSED and signed and not explicit_zone:
        return CheckResult(
            True,
            f"{where} accepted the TSIG key {key_name!r} (signed answer) and refused the SOA query for the "
            "root, as an authoritative-only server does: set the zone to also check that it serves it.",
        )
    if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
        key_state = "the key was accepted, but " if signed else ""
        return CheckResult(
            False,
            f"{where} answered {name} to the SOA query for {zone_text}: {key_state}"
            "it does not serve that zone or does not allow this key to query it.",
        )
    if rcode == dns.rcode.NXDOMAIN:
        return CheckResult(
            False, f"{where} answered NXDOMAIN for {zone_text}: the zone does not exist there."
        )
    return CheckResult(False, f"{where} answered {name} to the SOA query for {zone_text}.")


# --- acme-dns --------------------------------------------------------------------------------------


def _check_acme_dns(c: dict, timeout: float) -> CheckResult:
    url = f"{c['api_url'].strip().rstrip('/')}/update"
    headers = {"X-Api-User": c["username"], "X-Api-Key": c["password"]}
    body = {"subdomain": c["subdomain"], "txt": ACME_DNS_PLACEHOLDER_TXT}
    with outbound.session() as s:
        try:
            r = s.post(url, headers=headers, json=body, timeout=(timeout, timeout), allow_redirects=False)
        except requests.RequestException as exc:
            return request_error("acme-dns", url, exc, timeout)
    if r.is_redirect or 300 <= r.status_code < 400:
        return _redirect("acme-dns", r)
    if r.status_code in (401, 403):
        return CheckResult(
            False,
            f"acme-dns refused the credentials (HTTP {r.status_code}: {body_excerpt(r)}): wrong username or "
            "password, a subdomain that is not this account's, or an allowfrom list that excludes certmgr.",
        )
    if r.status_code != 200:
        return CheckResult(False, f"acme-dns answered HTTP {r.status_code}: {body_excerpt(r)}")
    return CheckResult(
        True, f"acme-dns accepted an update of subdomain {c['subdomain']} (a placeholder TXT value)."
    )


# --- Akamai Edge DNS -------------------------------------------------------------------------------


def akamai_refusal(response: requests.Response) -> str:
    """What a 401/403 of an EdgeGrid API means, for a person."""
    detail = excerpt(edgegrid.problem(response))
    if response.status_code == 401:
        return (
            f"Akamai refused the API client's credentials (HTTP 401: {detail}): the client token, access "
            "token or client secret is wrong, expired or revoked, or this host's clock is off; enter the "
            "API client's current credentials."
        )
    return (
        f"Akamai refused the request (HTTP 403: {detail}): the API client lacks READ-WRITE access to "
        "Edge DNS (or to this zone's contract and group)."
    )


def _check_akamai(c: dict, timeout: float) -> CheckResult:
    url = edgegrid.base_url(c) + AKAMAI_ZONES_PATH
    query = edgegrid.params(c, {"showAll": "false", "page": 1, "pageSize": 1})
    with edgegrid.session(c) as s:
        try:
            r = s.get(url, params=query, timeout=(timeout, timeout), allow_redirects=False)
        except requests.RequestException as exc:
            return request_error("Akamai", edgegrid.base_url(c), exc, timeout)
    if r.is_redirect or 300 <= r.status_code < 400:
        return _redirect("Akamai", r)
    if r.status_code in (401, 403):
        return CheckResult(False, akamai_refusal(r))
    if r.status_code != 200:
        return CheckResult(
            False, f"Akamai answered HTTP {r.status_code}: {excerpt(edgegrid.problem(r)) or '(empty body)'}"
        )
    try:
        data = r.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("zones", []), list):
        return CheckResult(False, f"{url} answered HTTP 200 but not with an Edge DNS zone list.")
    zones = data.get("zones") or []
    total = (data.get("metadata") or {}).get("totalElements")
    count = f"{total} zone(s)" if isinstance(total, int) else f"{len(zones)} zone(s) on the first page"
    first = zones[0].get("zone") if zones and isinstance(zones[0], dict) else None
    seen = f"{count}, e.g. {first}" if first else "no zone yet"
    return CheckResult(True, f"Akamai Edge DNS answered: the API client can list zones ({seen}).")


# --- manual ----------------------------------------------------------------------------------------


def _check_manual(c: dict, timeout: float) -> CheckResult:
    return CheckResult(True, "Manual connections have nothing to test: an operator creates the records.")


# --- delegated ---------------------------------------------------------------------------------------


def _check_delegated(c: dict, timeout: float) -> CheckResult:
    """No credentials: say whether certmgr's DNS server has a name (the NS target) and is answering."""
    from django.conf import settings

    name = (settings.CERTMGR_DNS_SERVER_NAME or "").strip()
    if not name:
        return CheckResult(
            False,
            "CERTMGR_DNS_SERVER_NAME is not set: certmgr's DNS server needs a host name for the "
            "_acme-challenge NS records to point at.",
        )
    name = name if name.endswith(".") else name + "."
    return CheckResult(
        True,
        f"Nothing to authenticate: delegate each _acme-challenge.<name> with an NS record to {name} "
        "(certmgr checks the delegation before every order).",
    )


def _check_ssh(credentials: dict, timeout: float) -> CheckResult:
    from dnsproviders import ssh

    try:
        message, key = ssh.check(credentials, timeout)
    except ssh.SshError as exc:
        return CheckResult(False, exc.message)
    return CheckResult(True, message, host_key=key)


# --- Azure, webhook (sync destinations) --------------------------------------------------------------


def _check_azure(c: dict, timeout: float) -> CheckResult:
    """A token for Key Vault with the client secret: the credentials work (vault access is the
    destination's own Test)."""
    from azure.core.exceptions import AzureError

    from dnsproviders import azure

    try:
        azure.credential(c, timeout=timeout).get_token(azure.KEY_VAULT_SCOPE)
    except OutboundRefused:
        raise
    except AzureError as exc:
        return CheckResult(False, f"Entra ID refused the credentials: {excerpt(str(exc), 300)}")
    return CheckResult(
        True, f"Entra ID ({azure.authority()}) issued a Key Vault token for client {c['client_id']}."
    )


def _check_webhook(c: dict, timeout: float) -> CheckResult:
    return CheckResult(
        True,
        "Nothing sent yet: a webhook destination's Test posts a signed ping event to the receiver.",
    )


_CHECKS: dict[Kind, Callable[[dict, float], CheckResult]] = {
    Kind.AWS: _check_aws,
    Kind.CLOUDFLARE: _check_cloudflare,
    Kind.POWERDNS: _check_powerdns,
    Kind.RFC2136: _check_rfc2136,
    Kind.ACME_DNS: _check_acme_dns,
    Kind.MANUAL: _check_manual,
    Kind.AKAMAI: _check_akamai,
    Kind.DELEGATED: _check_delegated,
    Kind.SSH: _check_ssh,
    Kind.AZURE: _check_azure,
    Kind.WEBHOOK: _check_webhook,
}

__all__ = ["ACME_DNS_PLACEHOLDER_TXT", "CLOUDFLARE_VERIFY_URL", "CheckResult", "check_connection"]
