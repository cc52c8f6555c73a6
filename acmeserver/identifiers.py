"""Identifiers (RFC 8555 §7.1.4, RFC 8738) and the finalize CSR check (§7.4). Pure Python.

``clean()`` turns a newOrder's identifiers into normalised ``Identifier`` values, refusing what the profile
does not serve, with one subproblem per identifier. ``csr_problem()`` says why a CSR does not ask for
exactly the order's identifiers (None when it does).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from acmeserver.problems import AcmeProblem, malformed

MAX_IDENTIFIERS = 100
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True, order=True)
class Identifier:
    type: str  # "dns" | "ip"
    value: str  # lower-case DNS name (a wildcard keeps its "*."), or the canonical IP address text

    @property
    def wildcard(self) -> bool:
        return self.type == "dns" and self.value.startswith("*.")

    @property
    def base(self) -> str:
        """What is validated: the name without its wildcard label (RFC 8555 §7.1.3)."""
        return self.value[2:] if self.wildcard else self.value

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


def is_dns_name(name: str) -> bool:
    """A syntactically valid DNS name (no wildcard, not an address)."""
    return bool(name) and _dns_name_problem(name) is None


def _dns_name_problem(name: str) -> str | None:
    if len(name) > 253:
        return "is longer than 253 characters"
    labels = name.split(".")
    if any(not _LABEL.match(label) for label in labels):
        return "is not a valid DNS name (letters, digits and hyphens in labels of 1-63 characters)"
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return "is an IP address: use an identifier of type ip"
    if labels[-1].isdigit():
        return "ends in a numeric label"
    return None


def clean_one(raw: Any, *, allow_wildcards: bool, allow_ip: bool) -> Identifier:
    """One identifier of a newOrder, normalised; a problem naming it otherwise."""
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("type"), str)
        or not isinstance(raw.get("value"), str)
    ):
        raise malformed("each identifier is an object with a type and a value")
    kind, value = raw["type"], raw["value"].strip()
    ident = {"type": kind, "value": value}
    if kind == "ip":
        if not allow_ip:
            raise AcmeProblem(
                "rejectedIdentifier",
                f"{value}: this profile issues no IP address certificates",
                identifier=ident,
            )
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise AcmeProblem("malformed", f"{value!r} is not an IP address", identifier=ident) from None
        return Identifier("ip", str(ip))
    if kind != "dns":
        raise AcmeProblem(
            "unsupportedIdentifier", f"identifier type {kind!r} is not supported (dns, ip)", identifier=ident
        )
    name = value.lower().rstrip(".")
    if name.startswith("*."):
        if not allow_wildcards:
            raise AcmeProblem(
                "rejectedIdentifier",
                f"{value}: this profile issues no wildcard certificates",
                identifier=ident,
            )
        why = _dns_name_problem(name[2:])
    elif "*" in name:
        why = "has a wildcard that is not the whole leftmost label"
    else:
        why = _dns_name_problem(name)
    if why:
        raise AcmeProblem("rejectedIdentifier", f"{value!r} {why}", identifier=ident)
    return Identifier("dns", name)


def clean(raw: Any, *, allow_wildcards: bool, allow_ip: bool) -> list[Identifier]:
    """The identifiers of a newOrder, de-duplicated and sorted; every refused one as a subproblem."""
    if not isinstance(raw, list) or not raw:
        raise malformed("an order needs a non-empty list of identifiers")
    if len(raw) > MAX_IDENTIFIERS:
        raise AcmeProblem("rejectedIdentifier", f"an order takes at most {MAX_IDENTIFIERS} identifiers")
    found: set[Identifier] = set()
    problems: list[AcmeProblem] = []
    for item in raw:
        try:
            found.add(clean_one(item, allow_wildcards=allow_wildcards, allow_ip=allow_ip))
        except AcmeProblem as exc:
            problems.append(exc)
    raise_compound(problems)
    return sorted(found)


def raise_compound(problems: Sequence[AcmeProblem]) -> None:
    """Raise the one problem, or several under the first one's type (each a subproblem)."""
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    kinds = {p.kind for p in problems}
    kind = problems[0].kind if len(kinds) == 1 else "rejectedIdentifier"
    raise AcmeProblem(kind, "; ".join(p.detail for p in problems), subproblems=list(problems))


def csr_problem(
    identifiers: Iterable[Identifier], *, common_name: str | None, sans: Sequence[str]
) -> AcmeProblem | None:
    """badCSR unless the CSR's names (SANs, and its CN, which must be one of them) are exactly the order's."""
    wanted = {i.value for i in identifiers}
    asked: set[str] = set()
    for san in sans:
        try:
            asked.add(str(ipaddress.ip_address(san)))
        except ValueError:
            asked.add(san.lower().rstrip("."))
    if common_name:
        cn = common_name.lower().rstrip(".")
        with contextlib.suppress(ValueError):
            cn = str(ipaddress.ip_address(cn))
        if cn not in wanted:
            return AcmeProblem(
                "badCSR", f"the CSR's common name {common_name!r} is not an identifier of the order"
            )
        asked.add(cn)
    extra, missing = sorted(asked - wanted), sorted(wanted - asked)
    if not extra and not missing:
        return None
    parts = []
    if extra:
        parts.append(f"names the order does not have: {', '.join(extra)}")
    if missing:
        parts.append(f"lacks names of the order: {', '.join(missing)}")
    return AcmeProblem(
        "badCSR",
        "the CSR " + " and ".join(parts),
        subproblems=[
            AcmeProblem("rejectedIdentifier", f"{name} is not in the order", identifier=_ident_of(name))
            for name in extra
        ],
    )


def _ident_of(name: str) -> dict[str, str]:
    try:
        ipaddress.ip_address(name)
        return {"type": "ip", "value": name}
    except ValueError:
        return {"type": "dns", "value": name}
