"""CAA preflight (RFC 8659, with RFC 8657's ``accounturi`` and ``validationmethods``): would this CA, for this
account and validation method, be allowed to issue for a name? Checked before an order so that a forbidding
record fails it at once, quoted, instead of late at the CA.

Pure dnspython, no Django: the caller hands in the resolver. A lookup that fails (timeout, SERVFAIL) decides
nothing here: the CA makes the binding check itself, and the preflight only refuses what is certain.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

CRITICAL_FLAG = 128
KNOWN_TAGS = frozenset(
    {"issue", "issuewild", "iodef", "contactemail", "contactphone", "issuemail", "issuevmc"}
)
_PARAMETER = re.compile(r"^\s*([A-Za-z0-9]+)\s*=\s*([\x21-\x3a\x3c-\x7e]*)\s*$")


@dataclass(frozen=True)
class CaaRecord:
    flags: int
    tag: str
    value: str

    def __str__(self) -> str:
        return f'{self.flags} {self.tag} "{self.value}"'


@dataclass(frozen=True)
class Refusal:
    name: str  # the name ordered
    owner: str  # where the relevant records were found (the name or a parent)
    records: tuple[CaaRecord, ...]
    reason: str

    def __str__(self) -> str:
        quoted = "; ".join(str(r) for r in self.records)
        return f"CAA at {self.owner} forbids this CA for {self.name} ({self.reason}): {quoted}"


Lookup = Callable[[str], list[CaaRecord] | None]  # records at exactly this name; None when the lookup failed


def resolver_lookup(resolver: dns.resolver.Resolver) -> Lookup:
    def lookup(name: str) -> list[CaaRecord] | None:
        try:
            answer = resolver.resolve(name, dns.rdatatype.CAA, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.YXDOMAIN):
            return None
        if answer.rrset is None:
            return []
        return [_record(r) for r in answer.rrset]

    return lookup


def _record(rdata) -> CaaRecord:
    return CaaRecord(
        int(rdata.flags), rdata.tag.decode("ascii", "replace").lower(), rdata.value.decode("utf-8", "replace")
    )


def relevant(name: str, lookup: Lookup) -> tuple[str, list[CaaRecord]] | None:
    """RFC 8659 §3: the first non-empty CAA RRset climbing from the name to the root (a wildcard's base
    name first). None when no level has one, or a lookup failed on the way (nothing certain)."""
    current = dns.name.from_text(name.removeprefix("*."))
    while current != dns.name.root:
        owner = current.to_text(omit_final_dot=True)
        records = lookup(owner)
        if records is None:
            return None
        if records:
            return owner, records
        current = current.parent()
    return None


def _issuer_and_parameters(value: str) -> tuple[str, dict[str, str]] | None:
    """``issuer-domain-name *(";" parameter)``; None for a value RFC 8659 says cannot be parsed."""
    domain, *rest = value.split(";")
    parameters: dict[str, str] = {}
    for part in rest:
        if not part.strip():
            continue
        match = _PARAMETER.match(part)
        if not match:
            return None
        parameters[match.group(1).lower()] = match.group(2)
    return domain.strip().lower(), parameters


def forbids(
    name: str,
    records: Iterable[CaaRecord],
    *,
    ca_identifiers: Iterable[str],
    account_uri: str = "",
    method: str = "",
) -> str | None:
    """Why ``records`` (the relevant set for ``name``) forbid this CA, or None if they allow it."""
    records = list(records)
    for record in records:
        if record.flags & CRITICAL_FLAG and record.tag not in KNOWN_TAGS:
            return f"unknown critical property {record.tag!r}"
    wildcard = name.startswith("*.")
    issuewild = [r for r in records if r.tag == "issuewild"]
    properties = issuewild if wildcard and issuewild else [r for r in records if r.tag == "issue"]
    if not properties:
        return None  # no issue property (only iodef, say): any CA may issue
    identifiers = {i.strip().lower().rstrip(".") for i in ca_identifiers if i.strip()}
    for record in properties:
        parsed = _issuer_and_parameters(record.value)
        if parsed is None:
            continue  # unparseable: grants nothing
        domain, parameters = parsed
        if not domain or domain.rstrip(".") not in identifiers:
            continue
        if "accounturi" in parameters and account_uri and parameters["accounturi"] != account_uri:
            continue
        methods = {m.strip() for m in parameters.get("validationmethods", "").split(",") if m.strip()}
        if methods and method and method not in methods:
            continue
        return None
    tag = properties[0].tag
    return (
        f"no {tag} property names {', '.join(sorted(identifiers)) or 'this CA'} for this account and method"
    )


def preflight(
    names: Iterable[str],
    lookup: Lookup,
    *,
    ca_identifiers: Iterable[str],
    account_uri: str = "",
    method: str = "",
) -> list[Refusal]:
    """Every name whose CAA records certainly forbid the order."""
    identifiers = list(ca_identifiers)
    refusals = []
    for name in names:
        found = relevant(name, lookup)
        if found is None:
            continue
        owner, records = found
        reason = forbids(name, records, ca_identifiers=identifiers, account_uri=account_uri, method=method)
        if reason:
            refusals.append(Refusal(name, owner, tuple(records), reason))
    return refusals


def records_to_publish(
    name: str, ca_identifier: str, *, account_uri: str = "", method: str = ""
) -> list[str]:
    """The CAA records that allow only this CA (and account, and method) for ``name`` and its wildcard."""
    parameters = ""
    if account_uri:
        parameters += f"; accounturi={account_uri}"
    if method:
        parameters += f"; validationmethods={method}"
    owner = name.removeprefix("*.").rstrip(".") + "."
    return [
        f'{owner} CAA 0 issue "{ca_identifier}{parameters}"',
        f'{owner} CAA 0 issuewild "{ca_identifier}{parameters}"',
    ]
