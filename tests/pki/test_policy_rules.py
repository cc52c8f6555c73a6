"""The pure policy rules: name patterns, and ``~regex`` patterns that no operator can make run for ever."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError

from pki import policy, services
from tests.conftest import SYSTEM


@pytest.mark.parametrize(
    ("name", "pattern", "expected"),
    [
        ("www.example.com", "www.example.com", True),
        ("a.b.example.com", "*.example.com", True),
        ("example.com", "*.example.com", False),
        ("API.Example.com", r"~api\.example\.com", True),  # case-insensitive, like DNS
        ("api.example.com.evil", r"~api\.example\.com", False),  # a full match, not a search
    ],
)
def test_name_patterns(name, pattern, expected):
    assert policy.name_matches(name, pattern) is expected


def test_a_catastrophic_regex_answers_at_once():
    """``(a+)+`` against a long non-matching name backtracks exponentially in Python's engine; RE2 is linear.
    (A thread, not a timer: the test fails if the match is still running after a generous deadline.)"""
    name = "a" * 10_000 + "!example.org"
    answers: list[bool] = []
    worker = threading.Thread(
        target=lambda: answers.append(policy.name_matches(name, r"~(a+)+\.example\.org")), daemon=True
    )
    worker.start()
    worker.join(timeout=10)
    assert answers == [False], "the pattern is still being matched"


def test_a_pattern_re2_cannot_run_is_refused_with_its_reason():
    assert "invalid regular expression" in policy.validate_pattern(r"~(a)\1\.example\.org")
    assert policy.validate_pattern(r"~[a-z]+\.example\.org") is None


@pytest.mark.django_db
def test_the_policy_form_field_names_the_bad_pattern(tenant):
    with pytest.raises(ValidationError) as refused:
        services.save_policy(
            tenant.organization, actor=SYSTEM, name="p", san_patterns=[r"~(?<=a)b\.example\.org"]
        )
    assert "san_patterns" in refused.value.message_dict
