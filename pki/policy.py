"""Policy checks: is this request allowed by the template? Pure Python, no Django.

Name patterns: ``example.com`` matches exactly, ``*.example.com`` matches any name below example.com
(``a.example.com``, ``a.b.example.com`` and the wildcard ``*.example.com`` itself), ``~regex`` must match the
whole name. Comparison is case-insensitive.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

import re2

from pki.choices import KeyAlgorithm


class PolicyViolation(ValueError):
    """A request outside its policy: every rule it breaks, as (field, message) in ``violations``; ``field``
    names the first offending input."""

    def __init__(
        self, message: str, field: str | None = None, violations: list[tuple[str, str]] | None = None
    ):
        super().__init__(message)
        self.field = field
        self.violations = violations if violations is not None else [(field or "non_field_errors", message)]

    def by_field(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for field_name, message in self.violations:
            result.setdefault(field_name, []).append(message)
        return result


@dataclass(frozen=True)
class PolicyRules:
    name: str
    common_name_patterns: list[str] = field(default_factory=list)
    san_patterns: list[str] = field(default_factory=list)
    allowed_san_types: list[str] = field(default_factory=list)
    allowed_key_algorithms: list[str] = field(default_factory=list)
    max_validity_days: int | None = None
    key_usages: list[str] = field(default_factory=list)
    extended_key_usages: list[str] = field(default_factory=list)
    allow_ca: bool = False  # may subscribers of it get CA certificates (subordinate CAs)
    new_key_at_renewal: bool = False  # a renewal must not keep the key of the certificate it renews


@dataclass(frozen=True)
class Request:
    common_name: str
    sans: list[str]
    key_algorithm: str
    validity_days: int
    key_usages: list[str]
    extended_key_usages: list[str]
    ca_certificate: bool = False  # a subordinate CA certificate (basic constraints cA) is asked for
    keeps_renewed_key: bool = False  # a renewal whose key is the key of the certificate it renews


# ~regex patterns run on RE2: linear time in the name, so no pattern an operator types can stall a worker
# (Python's backtracking engine takes exponential time on patterns such as ``(a+)+``).
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.case_sensitive = False
_RE2_OPTIONS.max_mem = 8 << 20  # a pattern that needs more is refused when it is saved


@functools.lru_cache(maxsize=1024)
def _regex(expression: str) -> re2._Regexp:
    return re2.compile(expression, _RE2_OPTIONS)


def _regex_error(exc: Exception) -> str:
    text = exc.args[0] if exc.args else str(exc)
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def validate_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable name pattern, or None."""
    if not isinstance(pattern, str) or not pattern.strip():
        return "a pattern must be a non-empty string"
    if pattern.startswith("~"):
        try:
            _regex(pattern[1:])
        except re2.error as exc:
            return f"invalid regular expression {pattern[1:]!r}: {_regex_error(exc)}"
    elif "*" in pattern[2:] or (pattern.startswith("*") and not pattern.startswith("*.")):
        return f"{pattern!r}: a wildcard is only allowed as the leading '*.' label"
    return None


def name_matches(name: str, pattern: str) -> bool:
    name, pattern = name.lower().rstrip("."), pattern.strip().lower().rstrip(".")
    if pattern.startswith("~"):
        try:
            return _regex(pattern[1:]).fullmatch(name) is not None
        except re2.error:  # saved before RE2 checked patterns: it matches nothing
            return False
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        return name.endswith(suffix) and len(name) > len(suffix)
    return name == pattern


def san_type(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return "ip"
    except ValueError:
        pass
    if "://" in value:
        return "uri"
    if "@" in value:
        return "email"
    return "dns"


def new_csr_needed(policy_name: str) -> str:
    """Why a renewal from the caller's CSR is refused under a policy that requires a new key."""
    return (
        f"a new CSR is needed: policy {policy_name!r} requires a new key at renewal, and the CSR has the key "
        "of the certificate it renews"
    )


def check(rules: PolicyRules, request: Request) -> None:
    """Raise PolicyViolation naming every rule the request breaks (so one answer shows all of them)."""
    found = violations(rules, request)
    if found:
        raise PolicyViolation("; ".join(message for _, message in found), found[0][0], found)


def violations(rules: PolicyRules, request: Request) -> list[tuple[str, str]]:
    """Every rule ``request`` breaks, as (field, message), in the order of the request's fields."""
    where = f"policy {rules.name!r}"
    found: list[tuple[str, str]] = []
    if (
        rules.common_name_patterns
        and request.common_name
        and not any(name_matches(request.common_name, p) for p in rules.common_name_patterns)
    ):
        found.append(("common_name", f"common name {request.common_name!r} is not allowed by {where}"))
    for value in request.sans:
        kind = san_type(value)
        if rules.allowed_san_types and kind not in rules.allowed_san_types:
            found.append(("sans", f"{kind.upper()} names such as {value!r} are not allowed by {where}"))
        elif (
            rules.san_patterns
            and kind in ("dns", "email")
            and not any(
                name_matches(value.split("@")[-1] if kind == "email" else value, p)
                for p in rules.san_patterns
            )
        ):
            found.append(("sans", f"name {value!r} is not allowed by {where}"))
    if rules.allowed_key_algorithms and request.key_algorithm not in rules.allowed_key_algorithms:
        found.append(
            (
                "key_algorithm",
                f"key algorithm {_algorithm_label(request.key_algorithm)} is not allowed by {where} "
                f"(allowed: {', '.join(_algorithm_label(a) for a in rules.allowed_key_algorithms)})",
            )
        )
    if rules.max_validity_days and request.validity_days > rules.max_validity_days:
        found.append(
            (
                "validity_days",
                f"validity of {request.validity_days} days exceeds the {rules.max_validity_days} days of "
                f"{where}",
            )
        )
    extra = sorted(set(request.key_usages) - set(rules.key_usages)) if rules.key_usages else []
    if extra:
        found.append(("key_usages", f"key usages {', '.join(extra)} are not allowed by {where}"))
    extra = (
        sorted(set(request.extended_key_usages) - set(rules.extended_key_usages))
        if rules.extended_key_usages
        else []
    )
    if extra:
        found.append(
            ("extended_key_usages", f"extended key usages {', '.join(extra)} are not allowed by {where}")
        )
    if request.ca_certificate and not rules.allow_ca:
        found.append(("ca_certificate", f"CA certificates are not allowed by {where}"))
    if request.keeps_renewed_key and rules.new_key_at_renewal:
        found.append(("csr", new_csr_needed(rules.name)))
    return found


def _algorithm_label(value: str) -> str:
    """ "ECDSA P-256", not the stored code "ec-p256"."""
    try:
        return KeyAlgorithm(value).label
    except ValueError:
        return value
