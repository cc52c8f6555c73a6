"""Policy checks: is this request allowed by the template? Pure Python, no Django.

Name patterns: ``example.com`` matches exactly, ``*.example.com`` matches any name below example.com
(``a.example.com``, ``a.b.example.com`` and the wildcard ``*.example.com`` itself), ``~regex`` must match the
whole name. Comparison is case-insensitive.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field


class PolicyViolation(ValueError):
    """A request outside its policy; ``field`` names the offending input."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


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


@dataclass(frozen=True)
class Request:
    common_name: str
    sans: list[str]
    key_algorithm: str
    validity_days: int
    key_usages: list[str]
    extended_key_usages: list[str]


def validate_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable name pattern, or None."""
    if not isinstance(pattern, str) or not pattern.strip():
        return "a pattern must be a non-empty string"
    if pattern.startswith("~"):
        try:
            re.compile(pattern[1:])
        except re.error as exc:
            return f"invalid regular expression {pattern[1:]!r}: {exc}"
    elif "*" in pattern[2:] or (pattern.startswith("*") and not pattern.startswith("*.")):
        return f"{pattern!r}: a wildcard is only allowed as the leading '*.' label"
    return None


def name_matches(name: str, pattern: str) -> bool:
    name, pattern = name.lower().rstrip("."), pattern.strip().lower().rstrip(".")
    if pattern.startswith("~"):
        return re.fullmatch(pattern[1:], name, flags=re.IGNORECASE) is not None
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


def check(rules: PolicyRules, request: Request) -> None:
    """Raise PolicyViolation naming the first rule the request breaks."""
    where = f"policy {rules.name!r}"
    if (
        rules.common_name_patterns
        and request.common_name
        and not any(name_matches(request.common_name, p) for p in rules.common_name_patterns)
    ):
        raise PolicyViolation(f"common name {request.common_name!r} is not allowed by {where}", "common_name")
    for value in request.sans:
        kind = san_type(value)
        if rules.allowed_san_types and kind not in rules.allowed_san_types:
            raise PolicyViolation(
                f"{kind.upper()} names such as {value!r} are not allowed by {where}", "sans"
            )
        if (
            rules.san_patterns
            and kind in ("dns", "email")
            and not any(
                name_matches(value.split("@")[-1] if kind == "email" else value, p)
                for p in rules.san_patterns
            )
        ):
            raise PolicyViolation(f"name {value!r} is not allowed by {where}", "sans")
    if rules.allowed_key_algorithms and request.key_algorithm not in rules.allowed_key_algorithms:
        raise PolicyViolation(
            f"key algorithm {request.key_algorithm} is not allowed by {where} "
            f"(allowed: {', '.join(rules.allowed_key_algorithms)})",
            "key_algorithm",
        )
    if rules.max_validity_days and request.validity_days > rules.max_validity_days:
        raise PolicyViolation(
            f"validity of {request.validity_days} days exceeds the {rules.max_validity_days} days of {where}",
            "validity_days",
        )
    extra = sorted(set(request.key_usages) - set(rules.key_usages)) if rules.key_usages else []
    if extra:
        raise PolicyViolation(f"key usages {', '.join(extra)} are not allowed by {where}", "key_usages")
    extra = (
        sorted(set(request.extended_key_usages) - set(rules.extended_key_usages))
        if rules.extended_key_usages
        else []
    )
    if extra:
        raise PolicyViolation(
            f"extended key usages {', '.join(extra)} are not allowed by {where}", "extended_key_usages"
        )
