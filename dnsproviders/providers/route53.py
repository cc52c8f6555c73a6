"""AWS Route53 DNS-01 provider (connection kind ``aws``).

Route53 keeps all TXT values of one name in one record set, so ``present`` reads the set, adds its value
and UPSERTs the merged set (an apex and its wildcard share ``_acme-challenge.<name>``), then waits for the
change to be INSYNC. ``cleanup`` UPSERTs the remaining values, or DELETEs the set, with its exact current
values, when only ours is left; a DELETE whose values no longer match (someone changed the set meanwhile)
is re-read and retried.

Zones: ``find_zone`` asks ListHostedZonesByName for each candidate name, walking up from the record name.
A *public* hosted zone is always preferred, at any depth, since the ACME CA resolves through public DNS; a
private hosted zone (VPC only) is used only when no public zone holds the name, for internal ACME CAs that
resolve through the VPC resolver.

Credentials: an access key, optionally used to assume ``role_arn`` (temporary credentials, 1 hour).
"""

from __future__ import annotations

import time

import botocore.config
import botocore.exceptions

from dnsproviders.aws import aws_session
from dnsproviders.connection_checks import aws_error
from dnsproviders.providers.base import DnsProvider, ProviderError, RecordRef, absolute

PERMANENT_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "ExpiredToken",
    "NoSuchHostedZone",
    "InvalidInput",
}
TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "PriorRequestNotComplete",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
}
ROLE_SESSION_NAME = "certmgr-dns01"


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    err = exc.response.get("Error") or {}
    if not err.get("Code"):
        nested = (exc.response.get("Errors") or {}).get("Error")  # moto's Route53 <ErrorResponse> body
        err = nested if isinstance(nested, dict) else err
    return str(err.get("Code") or "")


def _provider_error(step: str, exc: Exception) -> ProviderError:
    """AWS's own words (via the connection check's formatter), classified as transient or not."""
    message = aws_error(step, exc).message
    if isinstance(exc, botocore.exceptions.ClientError):
        code = _error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        transient = code in TRANSIENT_CODES or (code not in PERMANENT_CODES and status >= 500)
        return ProviderError(message, transient=transient)
    transient = isinstance(
        exc,
        botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError,
    )
    return ProviderError(message, transient=transient)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Provider(DnsProvider):
    kind = "aws"
    #: Seconds between GetChange polls while waiting for INSYNC.
    poll_interval = 2.0

    def __init__(self, credentials: dict, *, timeout: float = 10.0, sync_timeout: float = 120.0, **context):
        super().__init__(credentials, timeout=timeout, **context)
        self.sync_timeout = sync_timeout
        self._client = None

    # --- AWS plumbing --------------------------------------------------------------------------------

    def _config(self, region: str) -> botocore.config.Config:
        return botocore.config.Config(
            region_name=region,
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            retries={"total_max_attempts": 3, "mode": "standard"},
            user_agent_extra="certmgr-dns01",
        )

    def client(self):
        if self._client is None:
            c = self.credentials
            region = c.get("region") or "us-east-1"
            config = self._config(region)
            try:
                session, _ = aws_session(c, config, role_session_name=ROLE_SESSION_NAME, duration=3600)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise _provider_error(f"assuming role {c.get('role_arn')}", exc) from exc
            self._client = session.client("route53", config=config)
        return self._client

    def _call(self, step: str, method: str, **kwargs):
        client = self.client()
        try:
            return getattr(client, method)(**kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _provider_error(step, exc) from exc

    # --- the interface -------------------------------------------------------------------------------

    def find_zone(self, record_name: str) -> str:
        labels = absolute(record_name).rstrip(".").split(".")
        private_match = ""
        for i in range(len(labels)):
            candidate = ".".join(labels[i:]) + "."
            answer = self._call(
                f"listing hosted zones named {candidate}",
                "list_hosted_zones_by_name",
                DNSName=candidate,
                MaxItems="20",
            )
            for zone in answer.get("HostedZones") or []:
                if str(zone.get("Name", "")).lower() != candidate:
                    continue  # the listing continues with the names that sort after the candidate
                zone_id = str(zone["Id"]).rsplit("/", 1)[-1]
                if not (zone.get("Config") or {}).get("PrivateZone"):
                    return zone_id
                private_match = private_match or zone_id
        if private_match:
            return private_match
        raise ProviderError(f"no Route53 hosted zone holds {absolute(record_name)}")

    def _current(self, zone: str, name: str) -> tuple[list[str], int | None]:
        answer = self._call(
            f"reading the TXT record {name}",
            "list_resource_record_sets",
            HostedZoneId=zone,
            StartRecordName=name,
            StartRecordType="TXT",
            MaxItems="1",
        )
        for rrset in answer.get("ResourceRecordSets") or []:
            if str(rrset.get("Name", "")).lower() == name and rrset.get("Type") == "TXT":
                return [r["Value"] for r in rrset.get("ResourceRecords") or []], rrset.get("TTL")
        return [], None

    def _change(self, zone: str, name: str, action: str, values: list[str], ttl: int, step: str) -> str:
        answer = self._call(
            step,
            "change_resource_record_sets",
            HostedZoneId=zone,
            ChangeBatch={
                "Comment": "certmgr DNS-01",
                "Changes": [
                    {
                        "Action": action,
                        "ResourceRecordSet": {
                            "Name": name,
                            "Type": "TXT",
                            "TTL": ttl,
                            "ResourceRecords": [{"Value": v} for v in values],
                        },
                    }
                ],
            },
        )
        return answer["ChangeInfo"]["Id"]

    def _wait_insync(self, change_id: str) -> None:
        deadline = time.monotonic() + self.sync_timeout
        while True:
            answer = self._call(f"polling change {change_id}", "get_change", Id=change_id)
            status = answer["ChangeInfo"]["Status"]
            if status == "INSYNC":
                return
            if time.monotonic() + self.poll_interval > deadline:
                raise ProviderError(
                    f"Route53 change {change_id} is still {status} after {self.sync_timeout:g}s",
                    transient=True,
                )
            time.sleep(self.poll_interval)

    def present(self, record_name: str, value: str, *, zone: str = "", ttl: int = 60) -> RecordRef:
        name = absolute(record_name)
        zone = zone or self.find_zone(name)
        ours = _quote(value)
        values, _ = self._current(zone, name)
        if ours not in values:
            change_id = self._change(
                zone, name, "UPSERT", [*values, ours], ttl, f"adding a TXT value to {name}"
            )
            self._wait_insync(change_id)
        return RecordRef(name, value, zone)

    def cleanup(self, ref: RecordRef) -> None:
        name = absolute(ref.record_name)
        zone = ref.zone or self.find_zone(name)
        ours = _quote(ref.value)
        for attempt in range(3):
            values, ttl = self._current(zone, name)
            if ours not in values:
                return
            remaining = [v for v in values if v != ours]
            try:
                if remaining:
                    change_id = self._change(
                        zone, name, "UPSERT", remaining, ttl or 60, f"removing a TXT value from {name}"
                    )
                else:
                    # DELETE must name the exact current values: it fails if the set changed meanwhile.
                    change_id = self._change(
                        zone, name, "DELETE", values, ttl or 60, f"deleting the TXT record {name}"
                    )
            except ProviderError as exc:
                cause = exc.__cause__
                if (
                    attempt < 2
                    and isinstance(cause, botocore.exceptions.ClientError)
                    and _error_code(cause) == "InvalidChangeBatch"
                ):
                    continue  # the set changed between read and write: read again
                raise
            self._wait_insync(change_id)
            return
