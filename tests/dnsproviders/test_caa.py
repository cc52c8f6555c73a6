"""CAA decisions (RFC 8659, RFC 8657) on record sets, and the climb to the relevant set. The lookup here is a
table of records per name: the DNS side is tested against PowerDNS in tests/acmeca/test_caa_preflight.py."""

from __future__ import annotations

import pytest

from dnsproviders.caa import CaaRecord, forbids, preflight, records_to_publish, relevant

LE = ["letsencrypt.org"]
ACCOUNT = "https://acme-v02.api.letsencrypt.org/acme/acct/1234"


def r(tag: str, value: str, flags: int = 0) -> CaaRecord:
    return CaaRecord(flags, tag, value)


@pytest.mark.parametrize(
    ("name", "records", "allowed"),
    [
        ("a.example.com", [r("issue", "letsencrypt.org")], True),
        ("a.example.com", [r("issue", "pki.goog")], False),
        ("a.example.com", [r("issue", ";")], False),  # nobody may issue
        ("a.example.com", [r("issue", "pki.goog"), r("issue", "letsencrypt.org")], True),
        ("a.example.com", [r("iodef", "mailto:sec@example.com")], True),  # no issue property at all
        ("*.example.com", [r("issue", "letsencrypt.org"), r("issuewild", ";")], False),  # issuewild wins
        ("*.example.com", [r("issue", "letsencrypt.org")], True),  # no issuewild: issue applies
        ("example.com", [r("issue", "letsencrypt.org"), r("issuewild", ";")], True),
        ("a.example.com", [r("issue", "LetsEncrypt.org; ")], True),  # case and an empty parameter
        (
            "a.example.com",
            [r("issue", "letsencrypt.org; bad parameter")],
            False,
        ),  # unparseable grants nothing
        (
            "a.example.com",
            [r("issue", "letsencrypt.org"), r("tbs", "x", flags=128)],
            False,
        ),  # critical unknown
        ("a.example.com", [r("issue", "letsencrypt.org"), r("tbs", "x")], True),  # non-critical unknown
    ],
)
def test_issue_properties(name, records, allowed):
    assert (forbids(name, records, ca_identifiers=LE) is None) is allowed


def test_accounturi_and_validationmethods():
    record = [r("issue", f"letsencrypt.org; accounturi={ACCOUNT}; validationmethods=dns-01")]
    assert forbids("a.example.com", record, ca_identifiers=LE, account_uri=ACCOUNT, method="dns-01") is None
    other = forbids("a.example.com", record, ca_identifiers=LE, account_uri=ACCOUNT + "9", method="dns-01")
    assert other and "letsencrypt.org" in other
    assert forbids("a.example.com", record, ca_identifiers=LE, account_uri=ACCOUNT, method="http-01")


def test_the_relevant_set_is_the_closest_non_empty_one_climbing():
    table = {"example.com": [r("issue", "pki.goog")], "sub.example.com": []}
    assert relevant("a.sub.example.com", lambda n: table.get(n, [])) == ("example.com", table["example.com"])
    assert relevant("*.sub.example.com", lambda n: table.get(n, [])) == ("example.com", table["example.com"])
    assert relevant("nothing.test", lambda n: []) is None
    # a failed lookup on the way decides nothing: the CA checks for itself
    assert relevant("a.sub.example.com", lambda n: None if n == "sub.example.com" else []) is None


def test_preflight_names_the_refused_names_and_quotes_the_records():
    table = {"example.com": [r("issue", "pki.goog"), r("issuewild", ";")]}
    refusals = preflight(
        ["ok.other.test", "www.example.com", "*.example.com"], lambda n: table.get(n, []), ca_identifiers=LE
    )
    assert [x.name for x in refusals] == ["www.example.com", "*.example.com"]
    assert str(refusals[0]).startswith("CAA at example.com forbids this CA for www.example.com")
    assert '0 issue "pki.goog"' in str(refusals[0])


def test_records_to_publish_allow_only_this_ca_account_and_method():
    assert records_to_publish("*.example.com", "letsencrypt.org", account_uri=ACCOUNT, method="dns-01") == [
        f'example.com. CAA 0 issue "letsencrypt.org; accounturi={ACCOUNT}; validationmethods=dns-01"',
        f'example.com. CAA 0 issuewild "letsencrypt.org; accounturi={ACCOUNT}; validationmethods=dns-01"',
    ]
