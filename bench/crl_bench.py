"""CRL building at scale: certmgr's ``pki.x509.build_crl`` against raw ``cryptography`` building the same list
(the builder given ``revoked_certificates=`` at once), in the same run, with the same key.

    .venv/bin/python bench/crl_bench.py [--entries 100000] [--rounds 3]

No database: both sides get the same (serial, time, reason) rows and the same extensions (CRL number, AKI,
Issuing Distribution Point, Freshest CRL: a full CRL of an intermediate with delta CRLs on). Prints a
Markdown table for
docs/benchmarks.md; the target is certmgr within 1.5x of raw.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki import x509

# A full CRL of an intermediate with delta CRLs on carries both (pki.services.revocation).
CRL_URL, DELTA_URL = "http://pki.example.com/pki/ca/1.crl", "http://pki.example.com/pki/ca/1/delta.crl"
REASONS = ["key_compromise", "superseded", "cessation_of_operation", "unspecified"]
FLAGS = {
    "key_compromise": cx509.ReasonFlags.key_compromise,
    "superseded": cx509.ReasonFlags.superseded,
    "cessation_of_operation": cx509.ReasonFlags.cessation_of_operation,
}


def issuer() -> tuple[cx509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "CRL bench root")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        cx509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(cx509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(cx509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            cx509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(cx509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def raw(cert, key, rows, now) -> bytes:
    reason_ext = {
        name: [cx509.Extension(cx509.CRLReason.oid, False, cx509.CRLReason(flag))]
        for name, flag in FLAGS.items()
    }
    entries = [
        cx509.RevokedCertificateBuilder(serial, at, reason_ext.get(reason, [])).build()
        for serial, at, reason in rows
    ]
    aki = cx509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    idp = cx509.IssuingDistributionPoint(
        full_name=[cx509.UniformResourceIdentifier(CRL_URL)], relative_name=None,
        only_contains_user_certs=False, only_contains_ca_certs=False, only_some_reasons=None,
        indirect_crl=False, only_contains_attribute_certs=False,
    )  # fmt: skip
    freshest = cx509.FreshestCRL(
        [cx509.DistributionPoint([cx509.UniformResourceIdentifier(DELTA_URL)], None, None, None)]
    )
    crl = cx509.CertificateRevocationListBuilder(
        issuer_name=cert.subject,
        last_update=now,
        next_update=now + dt.timedelta(hours=24),
        extensions=[
            cx509.Extension(cx509.CRLNumber.oid, False, cx509.CRLNumber(1)),
            cx509.Extension(cx509.AuthorityKeyIdentifier.oid, False, aki),
            cx509.Extension(cx509.IssuingDistributionPoint.oid, True, idp),
            cx509.Extension(cx509.FreshestCRL.oid, False, freshest),
        ],
        revoked_certificates=entries,
    ).sign(key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


def ours(cert, key, rows, now) -> bytes:
    crl = x509.build_crl(
        issuer_cert=cert, issuer_key=key, revoked=rows, this_update=now,
        next_update=now + dt.timedelta(hours=24), crl_number=1, distribution_point=CRL_URL,
        freshest_crl=DELTA_URL,
    )  # fmt: skip
    return crl.public_bytes(serialization.Encoding.DER)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cert, key = issuer()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rows = [
        (cx509.random_serial_number(), now - dt.timedelta(minutes=i % 50_000), REASONS[i % len(REASONS)])
        for i in range(args.entries)
    ]
    times: dict[str, list[float]] = {"raw cryptography": [], "certmgr build_crl": []}
    sizes = {}
    for _ in range(args.rounds):
        for label, fn in (("raw cryptography", raw), ("certmgr build_crl", ours)):
            start = time.perf_counter()
            sizes[label] = len(fn(cert, key, rows, now))
            times[label].append(time.perf_counter() - start)
    base = statistics.median(times["raw cryptography"])
    print(f"| builder | entries | median of {args.rounds} (s) | vs raw | DER bytes |")
    print("|---|---|---|---|---|")
    for label, samples in times.items():
        median = statistics.median(samples)
        print(f"| {label} | {args.entries:,} | {median:.2f} | {median / base:.2f}x | {sizes[label]:,} |")


if __name__ == "__main__":
    main()
