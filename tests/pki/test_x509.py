"""pki.x509 against real verifiers: the openssl CLI and cryptography's WebPKI path validator.

No database and no Django: run with ``pytest tests/pki/test_x509.py -p no:django --noconftest``.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_pkcs12
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from pki import x509 as px
from pki.x509 import KeyAlgorithm, RevocationReason, Subject, X509Error

ROOT_DIR = Path(__file__).resolve().parents[2]
HOST = "www.example.com"
CRL_URL = "http://pki.example.com/inter.crl"
DELTA_URL = "http://pki.example.com/inter/delta.crl"
AIA_URL = "http://pki.example.com/inter.crt"
ALGORITHMS = list(KeyAlgorithm)
WEBPKI_ALGORITHMS = [alg for alg in KeyAlgorithm if alg is not KeyAlgorithm.ED25519]  # no EdDSA in WebPKI


def openssl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False)


def write(path: Path, *objects: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_text("".join(px.to_pem(obj) for obj in objects))
    return path


@functools.cache
def key(alg: KeyAlgorithm, slot: str) -> px.PrivateKey:
    """Keys are cached per (algorithm, role) because RSA-4096 generation dominates the run time."""
    return px.generate_key(alg)


class Pki(NamedTuple):
    root: x509.Certificate
    root_key: px.PrivateKey
    inter: x509.Certificate
    inter_key: px.PrivateKey
    leaf: x509.Certificate
    leaf_key: px.PrivateKey


def make_root(alg: KeyAlgorithm, *, path_length: int | None = 1, days: int = 3650) -> x509.Certificate:
    return px.build_ca_certificate(
        subject=Subject(common_name=f"Test Root {alg}", organization="certmgr tests", country="de"),
        key=key(alg, "root"),
        validity_days=days,
        max_path_length=path_length,
    )


@functools.cache
def pki(alg: KeyAlgorithm) -> Pki:
    root = make_root(alg)
    inter = px.build_ca_certificate(
        subject=Subject(common_name=f"Test Issuing CA {alg}", organization="certmgr tests"),
        key=key(alg, "inter"),
        issuer_cert=root,
        issuer_key=key(alg, "root"),
        validity_days=1825,
        max_path_length=0,
        crl_url="http://pki.example.com/root.crl",
        aia_url="http://pki.example.com/root.crt",
    )
    csr = px.build_csr(key(alg, "leaf"), Subject(common_name=HOST), [HOST])
    issued = px.build_leaf_certificate(
        csr_or_public_key=csr,
        subject=Subject(common_name=HOST, organization="certmgr tests"),
        sans=[HOST, "192.0.2.10"],
        issuer_cert=inter,
        issuer_key=key(alg, "inter"),
        validity_days=90,
        key_usages=None,
        extended_key_usages=["server_auth"],
        crl_url=CRL_URL,
        aia_url=AIA_URL,
    )
    assert not issued.clamped
    return Pki(root, key(alg, "root"), inter, key(alg, "inter"), issued.certificate, key(alg, "leaf"))


def ext(cert: x509.Certificate, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


# ------------------------------------------------------------------------------------- chains


@pytest.mark.parametrize("alg", ALGORITHMS, ids=str)
def test_chain_verifies_with_openssl(alg: KeyAlgorithm, tmp_path: Path) -> None:
    p = pki(alg)
    root = write(tmp_path / "root.pem", p.root)
    inter = write(tmp_path / "inter.pem", p.inter)
    leaf = write(tmp_path / "leaf.pem", p.leaf)
    strict = ["-x509_strict", "-purpose", "sslserver", "-verify_hostname", HOST]

    result = openssl("verify", *strict, "-CAfile", root, "-untrusted", inter, leaf, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{leaf}: OK"

    # The same check fails without the intermediate, or for another host name.
    missing = openssl("verify", *strict, "-CAfile", root, leaf, cwd=tmp_path)
    assert missing.returncode != 0
    assert "unable to get local issuer certificate" in missing.stdout + missing.stderr
    wrong_host = openssl(
        "verify", "-verify_hostname", "evil.example", "-CAfile", root, "-untrusted", inter, leaf, cwd=tmp_path
    )
    assert wrong_host.returncode != 0


@pytest.mark.parametrize("alg", WEBPKI_ALGORITHMS, ids=str)
def test_chain_verifies_with_cryptography_policy(alg: KeyAlgorithm) -> None:
    p = pki(alg)
    builder = verification.PolicyBuilder().store(verification.Store([p.root])).time(dt.datetime.now(dt.UTC))

    verifier = builder.build_server_verifier(x509.DNSName(HOST))
    assert verifier.verify(p.leaf, [p.inter]) == [p.leaf, p.inter, p.root]
    ip_verifier = builder.build_server_verifier(x509.IPAddress(ipaddress.ip_address("192.0.2.10")))
    assert ip_verifier.verify(p.leaf, [p.inter])[-1] == p.root

    with pytest.raises(verification.VerificationError):
        builder.build_server_verifier(x509.DNSName("evil.example")).verify(p.leaf, [p.inter])
    with pytest.raises(verification.VerificationError):
        verifier.verify(p.leaf, [])


def test_ca_certificate_profile() -> None:
    p = pki(KeyAlgorithm.EC_P256)
    for cert, path_length in ((p.root, 1), (p.inter, 0)):
        constraints = ext(cert, x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca and constraints.value.path_length == path_length
        usage = ext(cert, x509.KeyUsage)
        assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
        assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
            cert.public_key()
        )
        assert 0 < cert.serial_number < 2**159
    assert p.root.issuer == p.root.subject
    with pytest.raises(x509.ExtensionNotFound):
        ext(p.root, x509.CRLDistributionPoints)  # URLs are for intermediates only
    assert p.inter.issuer == p.root.subject
    assert ext(p.inter, x509.AuthorityKeyIdentifier).value.key_identifier == (
        ext(p.root, x509.SubjectKeyIdentifier).value.digest
    )
    assert p.inter.not_valid_after_utc <= p.root.not_valid_after_utc


@pytest.mark.parametrize(
    ("alg", "oid"),
    [
        (KeyAlgorithm.EC_P256, x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256),
        (KeyAlgorithm.EC_P384, x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384),
        (KeyAlgorithm.RSA_3072, x509.SignatureAlgorithmOID.RSA_WITH_SHA256),
        (KeyAlgorithm.ED25519, x509.SignatureAlgorithmOID.ED25519),
    ],
    ids=str,
)
def test_signature_algorithm_follows_key(alg: KeyAlgorithm, oid: x509.ObjectIdentifier) -> None:
    assert pki(alg).leaf.signature_algorithm_oid == oid


@pytest.mark.parametrize("alg", [KeyAlgorithm.EC_P384, KeyAlgorithm.ED25519], ids=str)
def test_three_level_hierarchy(alg: KeyAlgorithm, tmp_path: Path) -> None:
    """root (pathlen 2) -> policy CA (1) -> issuing CA (0) -> leaf; every issuer name is the parent's
    subject (with only two levels, a root's subject and issuer would hide a mix-up)."""
    root = make_root(alg, path_length=2)
    policy = px.build_ca_certificate(
        subject=Subject(common_name="Policy CA"),
        key=key(alg, "policy"),
        issuer_cert=root,
        issuer_key=key(alg, "root"),
        validity_days=365,
        max_path_length=1,
    )
    issuing = px.build_ca_certificate(
        subject=Subject(common_name="Issuing CA"),
        key=key(alg, "inter"),
        issuer_cert=policy,
        issuer_key=key(alg, "policy"),
        validity_days=180,
        max_path_length=0,
        crl_url="http://pki.example.com/policy.crl",
        aia_url="http://pki.example.com/policy.crt",
    )
    assert issuing.issuer == policy.subject != root.subject
    leaf = px.build_leaf_certificate(
        csr_or_public_key=key(alg, "leaf").public_key(),
        subject=Subject(common_name=HOST),
        sans=[HOST],
        issuer_cert=issuing,
        issuer_key=key(alg, "inter"),
        validity_days=30,
    ).certificate
    untrusted = write(tmp_path / "untrusted.pem", issuing, policy)
    result = openssl(
        "verify",
        "-x509_strict",
        "-CAfile",
        write(tmp_path / "root.pem", root),
        "-untrusted",
        untrusted,
        write(tmp_path / "leaf.pem", leaf),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert px.order_chain(leaf, [root, policy, issuing]) == [issuing, policy, root]


# -------------------------------------------------------------------- CA policy refusals


def test_path_length_zero_cannot_sign_a_ca() -> None:
    p = pki(KeyAlgorithm.EC_P256)
    with pytest.raises(X509Error, match="pathLenConstraint 0"):
        px.build_ca_certificate(
            subject=Subject(common_name="Sub CA"),
            key=key(KeyAlgorithm.EC_P256, "sub"),
            issuer_cert=p.inter,
            issuer_key=p.inter_key,
            validity_days=365,
            max_path_length=None,
        )


def test_child_path_length_must_shrink() -> None:
    alg = KeyAlgorithm.EC_P256
    root, sub_key = make_root(alg, path_length=1), key(alg, "sub")
    common = {"subject": Subject(common_name="Sub"), "key": sub_key, "issuer_cert": root, "validity_days": 30}
    for wanted in (None, 1):
        with pytest.raises(X509Error, match="at most 0"):
            px.build_ca_certificate(**common, issuer_key=key(alg, "root"), max_path_length=wanted)
    sub = px.build_ca_certificate(**common, issuer_key=key(alg, "root"), max_path_length=0)
    assert ext(sub, x509.BasicConstraints).value.path_length == 0


def test_intermediate_may_not_outlive_its_issuer() -> None:
    alg = KeyAlgorithm.EC_P256
    root = make_root(alg, days=30)
    with pytest.raises(X509Error, match=r"must not outlive its issuer.*at most 30 days"):
        px.build_ca_certificate(
            subject=Subject(common_name="Too long"),
            key=key(alg, "inter"),
            issuer_cert=root,
            issuer_key=key(alg, "root"),
            validity_days=31,
            max_path_length=0,
        )


def test_issuer_must_be_a_ca_with_the_matching_key() -> None:
    p = pki(KeyAlgorithm.EC_P256)
    args = {"subject": Subject(common_name="x"), "validity_days": 10}
    with pytest.raises(X509Error, match="is not a CA certificate"):
        px.build_ca_certificate(
            **args,
            key=key(KeyAlgorithm.EC_P256, "sub"),
            issuer_cert=p.leaf,
            issuer_key=p.leaf_key,
            max_path_length=None,
        )
    with pytest.raises(X509Error, match="does not belong to the issuer certificate"):
        px.build_leaf_certificate(
            **args,
            csr_or_public_key=p.leaf_key.public_key(),
            sans=[HOST],
            issuer_cert=p.inter,
            issuer_key=p.root_key,
        )
    with pytest.raises(X509Error, match="both issuer_cert and issuer_key"):
        px.build_ca_certificate(**args, key=p.root_key, issuer_cert=p.root, max_path_length=None)


def test_url_and_subject_refusals() -> None:
    p = pki(KeyAlgorithm.EC_P256)
    common = {
        "csr_or_public_key": p.leaf_key.public_key(),
        "subject": Subject(common_name=HOST),
        "sans": [HOST],
        "issuer_cert": p.inter,
        "issuer_key": p.inter_key,
        "validity_days": 30,
    }
    for url in (
        "ftp://pki.example.com/x.crl",
        "/relative.crl",
        "http://[::1/x.crl",
        "http://bücher.example/x",
    ):
        with pytest.raises(X509Error, match="must be an absolute ASCII"):
            px.build_leaf_certificate(**common, crl_url=url)
    with pytest.raises(X509Error, match="never its private key"):
        px.build_leaf_certificate(**(common | {"csr_or_public_key": p.leaf_key}))
    with pytest.raises(X509Error, match="non-empty subject"):
        px.build_self_signed_certificate(key=p.leaf_key, subject=Subject(), sans=[HOST], validity_days=1)
    with pytest.raises(X509Error, match="non-empty subject"):
        px.build_ca_certificate(subject=Subject(), key=p.root_key, validity_days=1, max_path_length=None)
    with pytest.raises(X509Error, match="validity_days must be a positive integer"):
        px.build_leaf_certificate(**(common | {"validity_days": 0}))


def test_leaf_validity_is_clamped_to_the_issuer(tmp_path: Path) -> None:
    alg = KeyAlgorithm.EC_P256
    root = make_root(alg, days=20)
    issued = px.build_leaf_certificate(
        csr_or_public_key=key(alg, "leaf").public_key(),
        subject=Subject(common_name=HOST),
        sans=[HOST],
        issuer_cert=root,
        issuer_key=key(alg, "root"),
        validity_days=365,
    )
    assert issued.clamped
    assert issued.certificate.not_valid_after_utc == root.not_valid_after_utc
    assert issued.requested_not_after > root.not_valid_after_utc
    assert issued.certificate.not_valid_before_utc >= root.not_valid_before_utc
    result = openssl(
        "verify",
        "-x509_strict",
        "-CAfile",
        write(tmp_path / "r.pem", root),
        write(tmp_path / "l.pem", issued.certificate),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- leaf profile


def test_leaf_extensions() -> None:
    p = pki(KeyAlgorithm.RSA_2048)
    leaf = p.leaf
    assert ext(leaf, x509.SubjectKeyIdentifier).value.digest == (
        x509.SubjectKeyIdentifier.from_public_key(p.leaf_key.public_key()).digest
    )
    assert ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == (
        ext(p.inter, x509.SubjectKeyIdentifier).value.digest
    )
    [point] = ext(leaf, x509.CRLDistributionPoints).value
    assert point.full_name == [x509.UniformResourceIdentifier(CRL_URL)]
    [access] = ext(leaf, x509.AuthorityInformationAccess).value
    assert access.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    assert access.access_location == x509.UniformResourceIdentifier(AIA_URL)
    constraints = ext(leaf, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = ext(leaf, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    san = ext(leaf, x509.SubjectAlternativeName)
    assert not san.critical
    assert px.sans_to_strings(leaf) == [HOST, "192.0.2.10"]
    assert leaf.issuer == p.inter.subject


def test_empty_subject_makes_the_san_critical(tmp_path: Path) -> None:
    p = pki(KeyAlgorithm.EC_P256)
    issued = px.build_leaf_certificate(
        csr_or_public_key=p.leaf_key.public_key(),
        subject=Subject(),
        sans=[HOST],
        issuer_cert=p.inter,
        issuer_key=p.inter_key,
        validity_days=30,
    )
    assert len(issued.certificate.subject) == 0
    assert ext(issued.certificate, x509.SubjectAlternativeName).critical
    chain = write(tmp_path / "chain.pem", p.inter, p.root)
    result = openssl(
        "verify",
        "-x509_strict",
        "-CAfile",
        chain,
        write(tmp_path / "l.pem", issued.certificate),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(X509Error, match="needs a subject or at least one subject alternative name"):
        px.build_leaf_certificate(
            csr_or_public_key=p.leaf_key.public_key(),
            subject=Subject(),
            sans=[],
            issuer_cert=p.inter,
            issuer_key=p.inter_key,
            validity_days=30,
        )


@pytest.mark.parametrize(
    ("alg", "usages", "message"),
    [
        (KeyAlgorithm.EC_P256, ["digital_signature", "key_encipherment"], "not permitted for a ec-p256 key"),
        (KeyAlgorithm.ED25519, ["key_agreement"], "not permitted for a ed25519 key"),
        (KeyAlgorithm.RSA_2048, ["key_agreement"], "not permitted for a rsa-2048 key"),
        (KeyAlgorithm.EC_P256, ["key_cert_sign"], "requires a CA certificate"),
        (KeyAlgorithm.EC_P256, ["sign_everything"], "unknown key usage 'sign_everything'"),
        (KeyAlgorithm.EC_P256, [], "at least one usage"),
    ],
)
def test_leaf_key_usage_policy(alg: KeyAlgorithm, usages: list[str], message: str) -> None:
    p = pki(KeyAlgorithm.EC_P256)
    with pytest.raises(X509Error, match=message):
        px.build_leaf_certificate(
            csr_or_public_key=key(alg, "leaf").public_key(),
            subject=Subject(common_name=HOST),
            sans=[HOST],
            issuer_cert=p.inter,
            issuer_key=p.inter_key,
            validity_days=30,
            key_usages=usages,
        )


def test_key_usage_and_eku_names() -> None:
    every = px.build_key_usage(px.KEY_USAGE_NAMES)
    assert all(getattr(every, name) for name in px.KEY_USAGE_NAMES)
    assert px.build_key_usage(["nonRepudiation"]).content_commitment
    with pytest.raises(X509Error, match="only meaningful together with key_agreement"):
        px.build_key_usage(["digital_signature", "encipher_only"])

    eku = px.build_extended_key_usage(
        ["server_auth", "CLIENT_AUTH", "1.3.6.1.4.1.311.20.2.2", ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert list(eku) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.2"),
    ]
    names = ["code_signing", "email_protection", "time_stamping", "ocsp_signing"]
    assert len(px.build_extended_key_usage(names)) == 4
    with pytest.raises(X509Error, match="unknown extended key usage 'web'"):
        px.build_extended_key_usage(["web"])


def test_self_signed_certificate(tmp_path: Path) -> None:
    k = key(KeyAlgorithm.EC_P384, "self")
    cert = px.build_self_signed_certificate(
        key=k,
        subject=Subject(common_name=HOST),
        sans=[HOST],
        validity_days=30,
        extended_key_usages=["server_auth", "client_auth"],
    )
    assert cert.issuer == cert.subject
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert px.cert_summary(cert).self_signed
    pem = write(tmp_path / "self.pem", cert)
    result = openssl("verify", "-CAfile", pem, pem, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------- CRLs


@pytest.mark.parametrize("alg", ALGORITHMS, ids=str)
def test_crl_revokes_the_leaf(alg: KeyAlgorithm, tmp_path: Path) -> None:
    p = pki(alg)
    now = dt.datetime.now(dt.UTC)
    chain = write(tmp_path / "chain.pem", p.inter, p.root)
    leaf = write(tmp_path / "leaf.pem", p.leaf)

    def crl(revoked: list[tuple[int, dt.datetime, str]], number: int) -> Path:
        built = px.build_crl(
            issuer_cert=p.inter,
            issuer_key=p.inter_key,
            revoked=revoked,
            this_update=now - dt.timedelta(minutes=1),
            next_update=now + dt.timedelta(days=7),
            crl_number=number,
        )
        assert built.is_signature_valid(p.inter.public_key())
        return write(tmp_path / f"crl{number}.pem", built)

    other = (p.leaf.serial_number ^ 0xFFFF, now - dt.timedelta(days=1), "SUPERSEDED")
    before = crl([other], 1)
    ok = openssl("verify", "-crl_check", "-CAfile", chain, "-CRLfile", before, leaf, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    after = crl([other, (p.leaf.serial_number, now - dt.timedelta(minutes=5), "KEY_COMPROMISE")], 2)
    revoked = openssl("verify", "-crl_check", "-CAfile", chain, "-CRLfile", after, leaf, cwd=tmp_path)
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr

    text = openssl("crl", "-in", after, "-noout", "-text", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "Key Compromise" in text.stdout and "Superseded" in text.stdout
    assert re.search(r"X509v3 CRL Number:\s*\n\s*2\b", text.stdout)
    assert "X509v3 Authority Key Identifier" in text.stdout


def test_crl_entry_details() -> None:
    p = pki(KeyAlgorithm.EC_P256)
    now = dt.datetime.now(dt.UTC)
    crl = px.build_crl(
        issuer_cert=p.inter,
        issuer_key=p.inter_key,
        revoked=[
            (10, now, "UNSPECIFIED"),
            (11, now, "certificateHold"),
            (12, now, RevocationReason.CA_COMPROMISE),
        ],
        this_update=now,
        next_update=now + dt.timedelta(hours=1),
        crl_number=7,
    )
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(p.inter, x509.SubjectKeyIdentifier).value.digest
    # RFC 5280 §5.3.1: unspecified is expressed by leaving the reasonCode extension out.
    assert len(crl.get_revoked_certificate_by_serial_number(10).extensions) == 0
    hold = crl.get_revoked_certificate_by_serial_number(11).extensions.get_extension_for_class(x509.CRLReason)
    assert hold.value.reason == x509.ReasonFlags.certificate_hold
    assert crl.get_revoked_certificate_by_serial_number(13) is None
    # any aware time: listed in UTC, to the second (UTCTime)
    local = dt.datetime(2026, 3, 1, 12, 30, 15, 987654, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    timed = px.build_crl(
        issuer_cert=p.inter, issuer_key=p.inter_key, revoked=[(14, local, "superseded")], this_update=now,
        next_update=now + dt.timedelta(hours=1), crl_number=8,
    )  # fmt: skip
    assert timed.get_revoked_certificate_by_serial_number(14).revocation_date_utc == dt.datetime(
        2026, 3, 1, 10, 30, 15, tzinfo=dt.UTC
    )

    bad = {"issuer_cert": p.inter, "issuer_key": p.inter_key, "this_update": now, "crl_number": 1}
    with pytest.raises(X509Error, match="listed twice"):
        px.build_crl(
            **bad, revoked=[(5, now, "superseded"), (5, now, "superseded")], next_update=now + dt.timedelta(1)
        )
    with pytest.raises(X509Error, match="next_update must be later"):
        px.build_crl(**bad, revoked=[], next_update=now)
    with pytest.raises(X509Error, match="timezone-aware"):
        px.build_crl(
            **bad, revoked=[(5, dt.datetime(2024, 1, 1), "superseded")], next_update=now + dt.timedelta(1)
        )
    with pytest.raises(X509Error, match="is not a CA"):
        px.build_crl(
            **(bad | {"issuer_cert": p.leaf, "issuer_key": p.leaf_key}),
            revoked=[],
            next_update=now + dt.timedelta(1),
        )


def test_delta_crl_extensions_and_refusals() -> None:
    p = pki(KeyAlgorithm.EC_P256)
    now = dt.datetime.now(dt.UTC)
    common = {"issuer_cert": p.inter, "issuer_key": p.inter_key, "this_update": now, "revoked": []}
    later = now + dt.timedelta(hours=1)
    full = px.build_crl(
        **common, next_update=later, crl_number=4, distribution_point=CRL_URL, freshest_crl=DELTA_URL
    )
    delta = px.build_crl(**common, next_update=later, crl_number=5, distribution_point=CRL_URL, delta_of=4)
    freshest = full.extensions.get_extension_for_class(x509.FreshestCRL)
    assert not freshest.critical and freshest.value[0].full_name == [
        x509.UniformResourceIdentifier(DELTA_URL)
    ]
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical and indicator.value.crl_number == 4
    for crl in (full, delta):
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        assert idp.critical and idp.value.full_name == [x509.UniformResourceIdentifier(CRL_URL)]
    with pytest.raises(X509Error, match="must exceed its base"):
        px.build_crl(**common, next_update=later, crl_number=4, delta_of=4)
    with pytest.raises(X509Error, match="no Freshest CRL"):
        px.build_crl(**common, next_update=later, crl_number=5, delta_of=4, freshest_crl=DELTA_URL)
    with pytest.raises(X509Error, match="delta_of"):
        px.build_crl(**common, next_update=later, crl_number=5, delta_of=-1)
    with pytest.raises(X509Error, match="issuing distribution point URL"):
        px.build_crl(**common, next_update=later, crl_number=5, distribution_point="/relative.crl")
    # a leaf and an intermediate point at the issuer's delta CRLs
    leaf = px.build_leaf_certificate(
        csr_or_public_key=px.generate_key(KeyAlgorithm.EC_P256).public_key(),
        subject=px.Subject(common_name="d.example.com"),
        sans=["d.example.com"],
        issuer_cert=p.inter,
        issuer_key=p.inter_key,
        validity_days=30,
        crl_url=CRL_URL,
        delta_crl_url=DELTA_URL,
    ).certificate
    assert ext(leaf, x509.FreshestCRL).value == freshest.value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("KEY_COMPROMISE", RevocationReason.KEY_COMPROMISE),
        ("keyCompromise", RevocationReason.KEY_COMPROMISE),
        ("key_compromise", RevocationReason.KEY_COMPROMISE),
        ("CA_COMPROMISE", RevocationReason.CA_COMPROMISE),
        ("cACompromise", RevocationReason.CA_COMPROMISE),
        ("AA_COMPROMISE", RevocationReason.AA_COMPROMISE),
        ("CESSATION_OF_OPERATION", RevocationReason.CESSATION_OF_OPERATION),
        (x509.ReasonFlags.privilege_withdrawn, RevocationReason.PRIVILEGE_WITHDRAWN),
        (9, RevocationReason.PRIVILEGE_WITHDRAWN),
        (None, RevocationReason.UNSPECIFIED),
    ],
)
def test_revocation_reason_parse(value: object, expected: RevocationReason) -> None:
    assert RevocationReason.parse(value) is expected


def test_revocation_reason_codes_and_flags() -> None:
    assert [r.code for r in RevocationReason] == [0, 1, 2, 3, 4, 5, 6, 9, 10]
    assert all(r.flag.name == r.value for r in RevocationReason)
    for bogus in ("remove_from_crl", "stolen", 7):
        with pytest.raises(X509Error, match="unknown revocation reason"):
            px.parse_revocation_reason(bogus)


# ------------------------------------------------------------------------------------ PKCS#12


@pytest.mark.parametrize("alg", [KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_2048, KeyAlgorithm.ED25519], ids=str)
def test_pkcs12_export(alg: KeyAlgorithm, tmp_path: Path) -> None:
    p = pki(alg)
    data = px.pkcs12(
        cert=p.leaf, key=p.leaf_key, chain=[p.inter, p.root], password="s3cret pw", alias="web server"
    )
    bundle = tmp_path / "f.p12"
    bundle.write_bytes(data)

    info = openssl("pkcs12", "-info", "-in", bundle, "-passin", "pass:s3cret pw", "-noout", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "AES-256-CBC" in info.stderr and "MAC: sha256" in info.stderr
    dump = openssl("pkcs12", "-in", bundle, "-passin", "pass:s3cret pw", "-nodes", cwd=tmp_path)
    assert dump.returncode == 0, dump.stderr
    assert "friendlyName: web server" in dump.stdout
    assert dump.stdout.count("BEGIN CERTIFICATE") == 3 and "BEGIN PRIVATE KEY" in dump.stdout
    wrong = openssl("pkcs12", "-info", "-in", bundle, "-passin", "pass:wrong", "-noout", cwd=tmp_path)
    assert wrong.returncode != 0
    assert "mac verify error" in wrong.stderr.lower()

    loaded = crypto_pkcs12.load_pkcs12(data, b"s3cret pw")
    assert loaded.cert.certificate == p.leaf
    assert loaded.cert.friendly_name == b"web server"
    assert px.matches_key(p.leaf, loaded.key)
    assert [c.certificate for c in loaded.additional_certs] == [p.inter, p.root]
    with pytest.raises(ValueError):
        crypto_pkcs12.load_pkcs12(data, b"wrong")


def test_pkcs12_refusals() -> None:
    p = pki(KeyAlgorithm.EC_P256)
    with pytest.raises(X509Error, match="non-empty password"):
        px.pkcs12(cert=p.leaf, key=p.leaf_key, chain=[], password="", alias="x")
    with pytest.raises(X509Error, match="does not belong to the certificate"):
        px.pkcs12(cert=p.leaf, key=p.inter_key, chain=[], password="pw", alias="x")


# --------------------------------------------------------------------------------------- CSRs


@pytest.mark.parametrize("alg", ALGORITHMS, ids=str)
def test_csr_round_trip(alg: KeyAlgorithm) -> None:
    subject = Subject(common_name=HOST, organization="Example", country="DE", email="ops@example.com")
    csr = px.build_csr(key(alg, "leaf"), subject, [HOST, "2001:db8::1", "ops@example.com"])
    loaded = px.load_csr(px.to_pem(csr))
    assert loaded == csr
    assert px.load_csr(csr.public_bytes(serialization.Encoding.DER)) == csr
    info = px.csr_info(loaded)
    assert info == (subject, [HOST, "2001:db8::1", "ops@example.com"], alg)
    assert info.key_algorithm is alg


def test_tampered_csr_is_rejected() -> None:
    csr = px.build_csr(key(KeyAlgorithm.EC_P256, "leaf"), Subject(common_name="tamper-me.example.com"), [])
    der = csr.public_bytes(serialization.Encoding.DER)
    assert b"tamper-me" in der
    forged = x509.load_der_x509_csr(der.replace(b"tamper-me", b"tamper-us"))
    forged_pem = px.to_pem(forged)
    with pytest.raises(X509Error, match="signature does not verify"):
        px.load_csr(forged_pem)
    p = pki(KeyAlgorithm.EC_P256)
    with pytest.raises(X509Error, match="signature does not verify"):
        px.build_leaf_certificate(
            csr_or_public_key=forged,
            subject=Subject(common_name=HOST),
            sans=[HOST],
            issuer_cert=p.inter,
            issuer_key=p.inter_key,
            validity_days=30,
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("hello world", "not a PEM certificate signing request"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "malformed PEM/DER",
        ),
        (b"\x30\x03\x02\x01\x01", "malformed PEM/DER"),
        (b"", "malformed PEM/DER"),
    ],
)
def test_garbage_csr_is_rejected(data: str | bytes, message: str) -> None:
    with pytest.raises(X509Error, match=message):
        px.load_csr(data)


def test_unsupported_csr_keys_are_rejected() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    builder = x509.CertificateSigningRequestBuilder().subject_name(Subject(common_name=HOST).to_name())
    pem = px.to_pem(builder.sign(weak, hashes.SHA256()))
    with pytest.raises(X509Error, match="unsupported key type rsa-1024"):
        px.load_csr(pem)
    k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(X509Error, match="unsupported key type ec-secp256k1"):
        px.load_csr(px.to_pem(builder.sign(k1, hashes.SHA256())))
    with pytest.raises(X509Error, match="unsupported key type rsa-1024"):
        px.build_csr(weak, Subject(common_name=HOST), [])


# ------------------------------------------------------------------------------------ SANs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("192.0.2.1", x509.IPAddress(ipaddress.ip_address("192.0.2.1"))),
        ("2001:DB8::1", x509.IPAddress(ipaddress.ip_address("2001:db8::1"))),
        ("admin@Example.COM", x509.RFC822Name("admin@example.com")),
        ("user@bücher.example", x509.RFC822Name("user@xn--bcher-kva.example")),
        ("https://example.com/a?b=c", x509.UniformResourceIdentifier("https://example.com/a?b=c")),
        ("spiffe://trust.example/ns/web", x509.UniformResourceIdentifier("spiffe://trust.example/ns/web")),
        ("WWW.Example.COM.", x509.DNSName("www.example.com")),
        (" api.example.com ", x509.DNSName("api.example.com")),
        ("*.example.com", x509.DNSName("*.example.com")),
        ("bücher.example", x509.DNSName("xn--bcher-kva.example")),
        ("*.Bücher.example", x509.DNSName("*.xn--bcher-kva.example")),
        ("xn--bcher-kva.example", x509.DNSName("xn--bcher-kva.example")),
        ("localhost", x509.DNSName("localhost")),
        ("a-1.b-2.example", x509.DNSName("a-1.b-2.example")),
    ],
)
def test_parse_sans_accepts(value: str, expected: x509.GeneralName) -> None:
    assert px.parse_sans([value]) == [expected]


@pytest.mark.parametrize(
    "value",
    [
        "exa mple.com",
        "-bad.com",
        "bad-.com",
        "*.*.x.com",
        "foo.*.example.com",
        "f*o.example.com",
        "*.com",
        "exa_mple.com",
        "a..b",
        "1.2.3",
        "999.1.1.1",
        "x" * 64 + ".com",
        "@example.com",
        "user@",
        "us er@example.com",
        "http://",
        "http://exa mple.com",
        "https://bücher.example/",
        "fe80::1%eth0",
        "☃☃.-",
    ],
)
def test_parse_sans_refuses(value: str) -> None:
    with pytest.raises(X509Error) as raised:
        px.parse_sans([value])
    assert repr(value.strip()) in str(raised.value) or value.strip() in str(raised.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("www.exa\u202emple.com", "direction-changing character (U+202E)"),  # right-to-left override
        ("a\u200b.example.com", "invisible or direction-changing character (U+200B)"),  # zero-width space
        ("www.p\u0430ypal.com", "mixes Cyrillic and Latin letters"),  # Cyrillic a among Latin letters
        ("xn--pypal-4ve.com", "mixes Cyrillic and Latin letters"),  # the same, as its A-label
        ("user@p\u0430ypal.com", "mixes Cyrillic and Latin letters"),
        ("\u03bfpenai.example", "mixes Greek and Latin letters"),  # Greek omicron
    ],
)
def test_spoofing_names_are_refused_with_the_reason(value: str, reason: str) -> None:
    with pytest.raises(X509Error, match=re.escape(reason)):
        px.parse_sans([value])


@pytest.mark.parametrize("value", ["bücher.de", "例え.jp", "ελλάδα.gr", "москва.рф", "xn--bcher-kva.de"])
def test_single_script_international_names_pass(value: str) -> None:
    assert px.parse_sans([value])


def test_wildcard_errors_explain_the_rule() -> None:
    for value in ("*.*.x.com", "foo.*.example.com", "f*o.example.com"):
        with pytest.raises(X509Error, match="only allowed as the whole left-most label"):
            px.parse_sans([value])
    with pytest.raises(X509Error, match="at least two labels"):
        px.parse_sans(["*.com"])


def test_parse_sans_refuses_empty_values() -> None:
    for value in ("", "   "):
        with pytest.raises(X509Error, match="empty"):
            px.parse_sans([value])


def test_sans_round_trip_and_dedupe() -> None:
    values = [
        "www.example.com",
        "WWW.example.com",
        "10.0.0.1",
        "::1",
        "a@example.com",
        "ldap://dir.example/o=x",
    ]
    names = px.parse_sans(values)
    assert len(names) == 5
    san = x509.SubjectAlternativeName(names)
    strings = px.sans_to_strings(san)
    assert strings == ["www.example.com", "10.0.0.1", "::1", "a@example.com", "ldap://dir.example/o=x"]
    assert px.parse_sans(strings) == names
    assert px.sans_to_strings(x509.Extension(san.oid, False, san)) == strings
    assert px.sans_to_strings(pki(KeyAlgorithm.EC_P256).root) == []


# ---------------------------------------------------------------------------- keys and subject


@pytest.mark.parametrize("alg", ALGORITHMS, ids=str)
def test_key_round_trip(alg: KeyAlgorithm) -> None:
    k = key(alg, "leaf")
    assert px.key_algorithm_of(k) is alg
    assert px.key_algorithm_of(k.public_key()) is alg
    pem = px.private_key_to_pem(k)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    assert px.private_key_to_pem(px.load_private_key(pem)) == pem
    expected = {KeyAlgorithm.ED25519: None, KeyAlgorithm.EC_P384: "sha384"}.get(alg, "sha256")
    digest = px.signature_hash(alg)
    assert (digest.name if digest else None) == expected


def test_unsupported_keys() -> None:
    for weird in (
        rsa.generate_private_key(public_exponent=65537, key_size=1024),
        dsa.generate_private_key(key_size=2048),
        ec.generate_private_key(ec.SECP521R1()),
    ):
        with pytest.raises(X509Error, match="unsupported key type"):
            px.key_algorithm_of(weird.public_key())
    with pytest.raises(X509Error, match="unknown key algorithm 'rsa-1024'"):
        px.generate_key("rsa-1024")
    encrypted = key(KeyAlgorithm.EC_P256, "leaf").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(X509Error, match="cannot load the private key"):
        px.load_private_key(encrypted)
    assert px.key_algorithm_of(px.load_private_key(encrypted, "pw")) is KeyAlgorithm.EC_P256
    with pytest.raises(X509Error, match="not a readable PEM private key"):
        px.load_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_subject() -> None:
    subject = Subject(
        common_name=" Example CA ",
        organization="Example GmbH",
        organizational_unit="PKI",
        country="de",
        state="Berlin",
        locality="Berlin",
        email="pki@example.com",
    )
    assert subject.common_name == "Example CA" and subject.country == "DE"
    name = subject.to_name()
    assert name.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"
    assert Subject.from_name(name) == subject
    assert str(subject) == (
        "1.2.840.113549.1.9.1=pki@example.com,CN=Example CA,OU=PKI,O=Example GmbH,L=Berlin,ST=Berlin,C=DE"
    )
    assert Subject(common_name="", organization=None).is_empty
    for bad, message in (
        ({"country": "DEU"}, "two-letter"),
        ({"country": "1A"}, "two-letter"),
        ({"common_name": "x" * 65}, "common_name"),
    ):
        with pytest.raises(X509Error, match=message):
            Subject(**bad)


# --------------------------------------------------------------------------- bundles & inventory


def test_bundle_parsing_and_fingerprints(tmp_path: Path) -> None:
    p = pki(KeyAlgorithm.EC_P256)
    indented = "\n".join("    " + line for line in px.to_pem(p.inter).splitlines())
    text = (
        "subject=CN=www.example.com\r\n"
        + px.to_pem(p.leaf).replace("\n", "\r\n")
        + "garbage between blocks\n"
        + indented
        + "\n\n"
        + px.to_pem(p.root)
        + "trailing junk"
    )
    assert px.load_pem_certificates(text) == [p.leaf, p.inter, p.root]
    assert px.load_pem_certificates(text.encode()) == [p.leaf, p.inter, p.root]

    with pytest.raises(X509Error, match="no PEM certificate found"):
        px.load_pem_certificates("just some text")
    corrupt = px.to_pem(p.leaf) + "-----BEGIN CERTIFICATE-----\nMIIB!!!\n-----END CERTIFICATE-----\n"
    with pytest.raises(X509Error, match="certificate #2 of the PEM bundle is malformed"):
        px.load_pem_certificates(corrupt)

    pem = write(tmp_path / "leaf.pem", p.leaf)
    sha256, sha1 = px.fingerprints(p.leaf)
    for digest, expected in (("-sha256", sha256), ("-sha1", sha1)):
        out = openssl("x509", "-in", pem, "-noout", "-fingerprint", digest, cwd=tmp_path).stdout
        assert out.split("=", 1)[1].strip().replace(":", "").lower() == expected
    assert re.fullmatch(r"[0-9a-f]{64}", sha256) and re.fullmatch(r"[0-9a-f]{40}", sha1)
    serial = openssl("x509", "-in", pem, "-noout", "-serial", cwd=tmp_path).stdout
    assert serial.split("=", 1)[1].strip().lower().lstrip("0") == px.serial_hex(p.leaf)


def test_serial_hex_and_explicit_serials() -> None:
    alg = KeyAlgorithm.EC_P256
    cert = px.build_self_signed_certificate(
        key=key(alg, "self"), subject=Subject(common_name="s"), sans=[], validity_days=1, serial=0x0ABC
    )
    assert px.serial_hex(cert) == "abc"
    assert int(px.serial_hex(cert), 16) == cert.serial_number
    for bad in (0, -1, 2**159, True):
        with pytest.raises(X509Error, match="positive integer of at most 20 octets"):
            px.build_self_signed_certificate(
                key=key(alg, "self"), subject=Subject(common_name="s"), sans=[], validity_days=1, serial=bad
            )


def test_cert_summary() -> None:
    p = pki(KeyAlgorithm.EC_P384)
    summary = px.cert_summary(p.leaf)
    assert summary.subject == f"CN={HOST},O=certmgr tests"  # RFC 4514: last RDN first
    assert summary.common_name == HOST
    assert summary.issuer == p.inter.subject.rfc4514_string()
    assert summary.sans == (HOST, "192.0.2.10")
    assert summary.key_algorithm is KeyAlgorithm.EC_P384 and summary.key_description == "ec-secp384r1"
    assert summary.not_before.tzinfo is not None and summary.not_after == p.leaf.not_valid_after_utc
    assert summary.serial == px.serial_hex(p.leaf)
    assert not summary.is_ca and not summary.self_signed
    assert summary.subject_key_identifier == ext(p.leaf, x509.SubjectKeyIdentifier).value.digest.hex()
    assert summary.authority_key_identifier == px.cert_summary(p.inter).subject_key_identifier
    assert summary.sha256 == px.fingerprints(p.leaf).sha256
    root = px.cert_summary(p.root)
    assert root.is_ca and root.path_length == 1 and root.self_signed and root.authority_key_identifier is None


def test_order_chain_and_matches_key() -> None:
    p = pki(KeyAlgorithm.EC_P256)
    stranger = pki(KeyAlgorithm.EC_P384)
    shuffled = [stranger.root, p.root, p.leaf, stranger.inter, p.inter, p.root]
    assert px.order_chain(p.leaf, shuffled) == [p.inter, p.root]
    assert px.order_chain(p.leaf, [p.root]) == []  # the intermediate is missing: no path
    assert px.order_chain(p.inter, [p.leaf, p.root]) == [p.root]
    assert px.order_chain(p.root, [p.inter, p.root]) == []

    assert px.matches_key(p.leaf, p.leaf_key)
    assert not px.matches_key(p.leaf, p.inter_key)
    assert not px.matches_key(p.leaf, stranger.leaf_key)


def test_module_does_not_import_django() -> None:
    code = "import sys, pki.x509; sys.exit(any(m.split('.')[0] == 'django' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT_DIR, check=False).returncode == 0
