"""DNS-01 through RFC 2136 dynamic updates signed with TSIG (BIND, Knot, PowerDNS with dnsupdate, ...).

An update ``add`` of a TXT value merges with the values already there and the server applies each update
atomically, so concurrent orders on one name never clobber each other; cleanup deletes exactly its own rdata
(deleting an rdata that is not there is a no-op, so cleanup is idempotent). Updates go over TCP.
"""

from __future__ import annotations

import base64
import binascii

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from certmgr import outbound
from dnsproviders.providers.base import DnsProvider, ProviderError, RecordRef, absolute
from dnsproviders.tsig import TSIG_ALGORITHMS

#: Rcodes worth retrying; every other non-NOERROR rcode of an update is a permanent refusal.
TRANSIENT_RCODES = {dns.rcode.SERVFAIL}


def quote_txt(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Provider(DnsProvider):
    kind = "rfc2136"

    def __init__(self, credentials: dict, *, timeout: float = 10.0, **context):
        super().__init__(credentials, timeout=timeout, **context)
        c = credentials
        try:
            self.server = str(c["server"]).strip()
            key_name = str(c["tsig_key_name"]).strip()
            secret = str(c["tsig_secret"]).strip()
        except KeyError as exc:
            raise ProviderError(f"RFC 2136 credentials lack {exc.args[0]!r}.") from None
        try:
            self.port = int(c.get("port") or 53)
        except (TypeError, ValueError):
            raise ProviderError(f"Invalid port {c.get('port')!r}.") from None
        algorithm_text = str(c.get("tsig_algorithm") or "hmac-sha256").lower().rstrip(".")
        algorithm = TSIG_ALGORITHMS.get(algorithm_text)
        if algorithm is None:
            raise ProviderError(
                f"Unsupported TSIG algorithm {algorithm_text!r} "
                f"(one of: {', '.join(sorted(TSIG_ALGORITHMS))})."
            )
        self.algorithm = algorithm
        self.algorithm_text = algorithm_text
        self.key_name = key_name
        try:
            if not base64.b64decode(secret, validate=True):
                raise ValueError("empty secret")
            self.key = dns.tsig.Key(key_name, secret, self.algorithm)
        except (binascii.Error, ValueError, TypeError):
            raise ProviderError(
                "The TSIG secret is not valid base64 (paste it as tsig-keygen prints it)."
            ) from None
        except dns.exception.DNSException as exc:
            raise ProviderError(f"Invalid TSIG key name {key_name!r}: {exc}") from None
        self.zone_hint = absolute(str(c["zone"])) if str(c.get("zone") or "").strip() else ""

    # --- transport -----------------------------------------------------------------------------------

    def _send(self, message: dns.message.Message, what: str) -> dns.message.Message:
        """Send over TCP to the first vetted address that answers; map failures to ProviderError."""
        addresses = outbound.check_host(self.server, self.port)  # OutboundRefused propagates unchanged
        failures = []
        for ip in addresses:
            where = f"{self.server}:{self.port}" if ip == self.server else f"{self.server}:{self.port} ({ip})"
            try:
                return dns.query.tcp(message, ip, port=self.port, timeout=self.timeout)
            except dns.tsig.PeerBadKey:
                raise ProviderError(
                    f"{where} does not know the TSIG key {self.key_name!r} with algorithm "
                    f"{self.algorithm_text} (BADKEY) for {what}: check the key name and algorithm."
                ) from None
            except dns.tsig.PeerBadSignature:
                raise ProviderError(
                    f"{where} rejected the TSIG signature of key {self.key_name!r} (BADSIG) for {what}: "
                    "the secret does not match the server's key."
                ) from None
            except dns.tsig.PeerBadTime:
                raise ProviderError(
                    f"{where} rejected the TSIG signature as out of time (BADTIME) for {what}: the clocks of "
                    "certmgr's host and the DNS server differ by more than 5 minutes."
                ) from None
            except dns.tsig.PeerError as exc:
                raise ProviderError(
                    f"{where} rejected the TSIG signature for {what}: {type(exc).__name__} {exc}".strip()
                ) from None
            except (
                dns.tsig.BadSignature,
                dns.tsig.BadKey,
                dns.tsig.BadAlgorithm,
                dns.tsig.BadTime,
                dns.message.UnknownTSIGKey,
            ) as exc:
                raise ProviderError(
                    f"{where} signed its answer to {what} with a key that does not match ours "
                    f"({type(exc).__name__})."
                ) from None
            except dns.exception.Timeout:
                failures.append(f"no answer from {where} within {self.timeout:g}s")
            except (OSError, EOFError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "closed"
                failures.append(f"cannot reach {where}: {reason}")
            except dns.exception.DNSException as exc:
                raise ProviderError(
                    f"{where} sent an answer to {what} that could not be read: {type(exc).__name__}: {exc}",
                    transient=True,
                ) from None
        detail = "; ".join(failures) or f"no address for {self.server}"
        raise ProviderError(f"{what[:1].upper()}{what[1:]} failed: {detail}.", transient=True)

    # --- interface -----------------------------------------------------------------------------------

    def find_zone(self, record_name: str) -> str:
        """Ask the server for the SOA of the name and its parents; its authority section names the zone.

        The credentials' ``zone`` is used when the server refuses every SOA query (an update-only setup)
        and the name lies in it.
        """
        name = dns.name.from_text(absolute(record_name))
        candidate = name
        while True:
            query = dns.message.make_query(candidate, dns.rdatatype.SOA)
            query.use_tsig(self.key, keyname=self.key.name, algorithm=self.algorithm)
            response = self._send(query, f"the SOA query for {candidate}")
            if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                for section in (response.answer, response.authority):
                    for rrset in section:
                        if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                            return rrset.name.to_text().lower()
            if candidate == dns.name.root:
                break
            candidate = candidate.parent()
        hint = self.zone_hint
        if hint and name.is_subdomain(dns.name.from_text(hint)):
            return hint
        raise ProviderError(
            f"{self.server}:{self.port} serves no zone holding {name.to_text().lower()} "
            "(no SOA for the name or any parent)."
        )

    def present(self, record_name: str, value: str, *, zone: str = "", ttl: int = 60) -> RecordRef:
        name = absolute(record_name)
        zone = absolute(zone) if zone else self.find_zone(name)
        update = self._update(zone)
        update.add(name, ttl, dns.rdatatype.TXT, quote_txt(value))
        self._apply(update, f"the update adding a TXT value to {name}")
        return RecordRef(name, value, zone)

    def cleanup(self, ref: RecordRef) -> None:
        name = absolute(ref.record_name)
        zone = absolute(ref.zone) if ref.zone else self.find_zone(name)
        update = self._update(zone)
        update.delete(name, dns.rdatatype.TXT, quote_txt(ref.value))
        self._apply(update, f"the update removing a TXT value from {name}")

    def _update(self, zone: str) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(
            zone, keyring=self.key, keyname=self.key.name, keyalgorithm=self.algorithm
        )

    def _apply(self, update: dns.update.UpdateMessage, what: str) -> None:
        response = self._send(update, what)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        name = dns.rcode.to_text(rcode)
        zone = update.zone[0].name.to_text() if update.zone else "?"
        hints = {
            dns.rcode.REFUSED: f"the key {self.key_name!r} may not update this name in zone {zone}",
            dns.rcode.NOTAUTH: f"the server is not authoritative for zone {zone} or rejected the key",
            dns.rcode.NOTZONE: f"the name is not in zone {zone}",
        }
        hint = hints.get(rcode)
        raise ProviderError(
            f"{self.server}:{self.port} answered {name} to {what}" + (f": {hint}." if hint else "."),
            transient=rcode in TRANSIENT_RCODES,
        )
