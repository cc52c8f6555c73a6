"""The PKI management commands as an operator runs them: CAs, issuance into files, revocation, bulk import
with progress and summary, exports that load in openssl, and clear refusals."""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from certmgr.models import AuditEvent
from pki import services, x509
from pki.models import Certificate, CertificateAuthority
from tests.conftest import SYSTEM, make_tenant

ROOT = Path(__file__).resolve().parents[2]
P12_PASSWORD = "a long pkcs12 passphrase"


def run(*args, **kwargs) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def hierarchy(tenant):
    run(
        "init_ca",
        "acme",
        "Root",
        "--cn",
        "Acme Root CA",
        "--key-algorithm",
        "ec-p384",
        "--max-path-length",
        "1",
    )
    run("init_ca", "acme", "Issuing", "--cn", "Acme Issuing CA", "--o", "Acme", "--parent", "Root")
    return CertificateAuthority.objects.get(name="Root"), CertificateAuthority.objects.get(name="Issuing")


@pytest.fixture
def subscriber(tenant, hierarchy):
    return services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="web",
        ca=hierarchy[1],
        common_name="www.acme.test",
        sans=["www.acme.test"],
        validity_days=30,
        extended_key_usages=["server_auth"],
    )


@pytest.fixture
def issued(subscriber) -> Certificate:
    return services.issue(subscriber, actor=SYSTEM).certificate


class ExternalPki:
    """A CA certmgr does not manage, and leaves signed by it: material for imports."""

    def __init__(self, name: str = "Outside"):
        self.key = x509.generate_key("ec-p256")
        self.cert = x509.build_ca_certificate(
            subject=x509.Subject(common_name=f"{name} CA"), key=self.key, validity_days=365, max_path_length=0
        )

    def leaf(self, cn: str):
        key = x509.generate_key("ec-p256")
        cert = x509.build_leaf_certificate(
            csr_or_public_key=key.public_key(),
            subject=x509.Subject(common_name=cn),
            sans=[cn],
            issuer_cert=self.cert,
            issuer_key=self.key,
            validity_days=90,
        ).certificate
        return cert, key


# --- init_ca --------------------------------------------------------------------------------------------
def test_init_ca_root_and_intermediate(tenant, tmp_path):
    out, _ = run(
        "init_ca",
        "Acme",
        "Root",
        "--cn",
        "Acme Root CA",
        "--o",
        "Acme",
        "--c",
        "DE",
        "--key-algorithm",
        "ec-p384",
        "--validity-days",
        "3650",
        "--max-path-length",
        "1",
        "--print-pem",
    )
    root = CertificateAuthority.objects.get(organization=tenant.organization, name="Root")
    assert root.kind == "internal-root" and root.key_algorithm == "ec-p384" and root.max_path_length == 1
    assert f"id: {root.pk}" in out and f"serial: {root.serial}" in out and "CN=Acme Root CA" in out
    assert root.certificate_pem in out
    assert "PRIVATE KEY" not in out

    out, _ = run("init_ca", "acme", "Issuing", "--cn", "Acme Issuing CA", "--parent", "Root")
    inter = CertificateAuthority.objects.get(name="Issuing")
    assert inter.kind == "internal-intermediate" and inter.parent == root
    assert f"parent: Root (id {root.pk})" in out and "BEGIN CERTIFICATE" not in out
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    (tmp_path / "inter.pem").write_text(inter.certificate_pem)
    result = openssl("verify", "-CAfile", "root.pem", "inter.pem", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        list(AuditEvent.objects.filter(action="ca.create").values_list("actor_type", "actor_label"))
        == [("system", "manage.py init_ca")] * 2
    )

    with pytest.raises(CommandError, match="already exists"):
        run("init_ca", "acme", "Root", "--cn", "Again")
    with pytest.raises(CommandError, match="no CA named 'Nope' in organization 'Acme'"):
        run("init_ca", "acme", "Sub", "--cn", "Sub", "--parent", "Nope")
    with pytest.raises(CommandError, match="needs a common name"):
        run("init_ca", "acme", "NoCn")
    with pytest.raises(CommandError, match="no organization named 'globex'"):
        run("init_ca", "globex", "Root", "--cn", "x")
    with pytest.raises(CommandError, match="country"):
        run("init_ca", "acme", "BadC", "--cn", "x", "--c", "Germany")


def test_init_ca_import_from_files(tenant, tmp_path):
    outside = ExternalPki("Legacy")
    (tmp_path / "ca.pem").write_text(x509.to_pem(outside.cert))
    (tmp_path / "ca.key").write_text(x509.private_key_to_pem(outside.key))
    (tmp_path / "other.key").write_text(x509.private_key_to_pem(x509.generate_key("ec-p256")))

    with pytest.raises(CommandError, match="needs both --import-cert PATH and --import-key PATH"):
        run("init_ca", "acme", "Legacy", "--import-cert", str(tmp_path / "ca.pem"))
    with pytest.raises(CommandError, match="does not belong to this certificate"):
        run(
            "init_ca", "acme", "Legacy", "--import-cert", str(tmp_path / "ca.pem"),
            "--import-key", str(tmp_path / "other.key"),
        )  # fmt: skip
    with pytest.raises(CommandError, match="--cn cannot be combined with --import-cert"):
        run(
            "init_ca", "acme", "Legacy", "--cn", "x", "--import-cert", str(tmp_path / "ca.pem"),
            "--import-key", str(tmp_path / "ca.key"),
        )  # fmt: skip
    with pytest.raises(CommandError, match=r"--import-key .*missing.key: no such file"):
        run(
            "init_ca", "acme", "Legacy", "--import-cert", str(tmp_path / "ca.pem"),
            "--import-key", str(tmp_path / "missing.key"),
        )  # fmt: skip
    assert not CertificateAuthority.objects.exists()

    out, _ = run(
        "init_ca", "acme", "Legacy", "--import-cert", str(tmp_path / "ca.pem"),
        "--import-key", str(tmp_path / "ca.key"), "--print-pem",
    )  # fmt: skip
    ca = CertificateAuthority.objects.get(name="Legacy")
    assert ca.imported and ca.kind == "internal-root" and ca.serial == x509.serial_hex(outside.cert)
    assert out.startswith("Imported internal root CA 'Legacy'") and x509.to_pem(outside.cert) in out
    assert "PRIVATE KEY" not in out


# --- issue ----------------------------------------------------------------------------------------------
def test_issue_to_out_dir_verifies_with_openssl(tenant, subscriber, tmp_path):
    out_dir = tmp_path / "web"
    out, _ = run("issue", "web", "--org", "acme", "--out-dir", str(out_dir))
    cert = Certificate.objects.get(subscriber=subscriber)
    assert f"serial: {cert.serial}" in out and f"not_after: {cert.not_after:%Y-%m-%dT%H:%M:%SZ}" in out
    assert {p.name for p in out_dir.iterdir()} == {"cert.pem", "chain.pem", "key.pem"}
    result = openssl("verify", "-CAfile", "chain.pem", "cert.pem", cwd=out_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert mode(out_dir / "key.pem") == 0o600
    assert mode(out_dir / "cert.pem") == 0o644
    key = serialization.load_pem_private_key((out_dir / "key.pem").read_bytes(), None)
    assert x509.matches_key(x509.load_pem_certificates((out_dir / "cert.pem").read_text())[0], key)
    # Writing the key out is a key export: audited.
    assert AuditEvent.objects.filter(action="certificate.export_key", target_id=str(cert.pk)).count() == 1

    # Re-issuing into the same directory replaces the files; the key stays 0600.
    os.chmod(out_dir / "key.pem", 0o644)
    run("issue", str(subscriber.pk), "--out-dir", str(out_dir))
    assert mode(out_dir / "key.pem") == 0o600


def test_issue_to_stdout_and_from_csr(tenant, subscriber, tmp_path):
    out, err = run("issue", "web")
    cert = Certificate.objects.get(subscriber=subscriber)
    assert out == cert.certificate_pem  # nothing but the PEM on stdout
    assert f"serial: {cert.serial}" in err and "not_after: " in err

    key = x509.generate_key("ec-p256")
    csr = x509.build_csr(key, x509.Subject(common_name="www.acme.test"), [])
    (tmp_path / "req.csr").write_text(x509.to_pem(csr))
    out, _ = run("issue", "web", "--csr", str(tmp_path / "req.csr"), "--out-dir", str(tmp_path / "o"))
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"cert.pem", "chain.pem"}  # no key.pem
    issued = x509.load_pem_certificates((tmp_path / "o" / "cert.pem").read_text())[0]
    assert x509.matches_key(issued, key)
    assert issued.subject.rfc4514_string() == "CN=www.acme.test"

    (tmp_path / "bad.csr").write_text(
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(CommandError, match="csr: "):
        run("issue", "web", "--csr", str(tmp_path / "bad.csr"))


def test_issue_refusals(tenant, other_tenant, subscriber):
    with pytest.raises(CommandError, match="no subscriber named 'nope'"):
        run("issue", "nope")
    with pytest.raises(CommandError, match="no subscriber named 'web' in organization 'Globex'"):
        run("issue", "web", "--org", "globex")
    services.save_subscriber(
        other_tenant.organization, actor=SYSTEM, name="web", issuer_type="self-signed", common_name="w.globex"
    )
    with pytest.raises(CommandError, match=r"'web' is ambiguous: it exists in Acme, Globex. Give --org"):
        run("issue", "web")
    out, _ = run("issue", "web", "--org", "globex")
    assert Certificate.objects.get(organization=other_tenant.organization).certificate_pem == out
    services.set_ca_status(subscriber.ca, "disabled", actor=SYSTEM)
    with pytest.raises(CommandError, match="disabled and issues nothing"):
        run("issue", "web", "--org", "acme")
    assert not Certificate.objects.filter(organization=tenant.organization).exists()


# --- revoke ---------------------------------------------------------------------------------------------
def test_revoke_by_serial(tenant, issued):
    # Operators paste serials from openssl: upper case with colons.
    number = int(issued.serial, 16)
    pretty = ":".join(f"{b:02X}" for b in b"\x00" + number.to_bytes((number.bit_length() + 7) // 8, "big"))
    out, _ = run("revoke", pretty, "--reason", "KEY_COMPROMISE")
    issued.refresh_from_db()
    assert issued.status == "revoked" and issued.revocation_reason == "key_compromise"
    assert f"Revoked serial {issued.serial}" in out and "reason: key_compromise" in out
    assert "its full CRL and its delta CRL list it once the worker has rebuilt them" in out  # deltas on
    with pytest.raises(CommandError, match="already revoked"):
        run("revoke", issued.serial, "--reason", "superseded")
    with pytest.raises(CommandError, match="unknown revocation reason 'stolen'; choose one of: unspecified"):
        run("revoke", issued.serial, "--reason", "stolen")
    with pytest.raises(CommandError, match="not a hexadecimal serial"):
        run("revoke", "xyz", "--reason", "superseded")
    with pytest.raises(CommandError, match="either a SERIAL or --id"):
        run("revoke", "--reason", "superseded")


def test_revoke_by_id_and_rfc_reason_names(tenant, subscriber):
    cert = services.issue(subscriber, actor=SYSTEM).certificate
    services.set_delta_crl(cert.ca, enabled=False, actor=SYSTEM)
    out, _ = run("revoke", "--id", str(cert.pk), "--org", "acme", "--reason", "cessationOfOperation")
    cert.refresh_from_db()
    assert cert.revocation_reason == "cessation_of_operation"
    assert "CRL #" in out  # delta CRLs off: the full CRL is published at once


def test_ambiguous_serial_and_wrong_org(tenant, other_tenant, issued, tmp_path):
    # The same (external) certificate in two organizations' inventories: one serial, two rows.
    outside = ExternalPki()
    cert, _ = outside.leaf("shared.example")
    pem = x509.to_pem(cert) + x509.to_pem(outside.cert)
    for org in (tenant.organization, other_tenant.organization):
        assert services.import_certificates(org, pem, actor=SYSTEM).imported
    serial = x509.serial_hex(cert)
    with pytest.raises(
        CommandError, match=rf"serial {serial} matches several certificates: id .*Choose one with --id ID"
    ):
        run("export_certificate", serial, "--format", "pem")
    with pytest.raises(CommandError, match=r"matches several certificates.*--id ID"):
        run("revoke", serial, "--reason", "superseded")
    out, _ = run("export_certificate", serial, "--org", "globex", "--format", "pem")
    assert out == x509.to_pem(cert)

    with pytest.raises(CommandError, match=f"no certificate with id {issued.pk} in organization 'Globex'"):
        run("export_certificate", "--id", str(issued.pk), "--org", "globex", "--format", "pem")
    with pytest.raises(CommandError, match=f"no certificate with id {issued.pk} in organization 'Globex'"):
        run("revoke", "--id", str(issued.pk), "--org", "globex", "--reason", "superseded")
    with pytest.raises(CommandError, match="no certificate with serial abc123"):
        run("export_certificate", "ABC123", "--format", "pem")
    with pytest.raises(CommandError, match="CA is not managed here"):
        run("revoke", serial, "--org", "acme", "--reason", "superseded")
    issued.refresh_from_db()
    assert issued.status == "active"


# --- import_certificates --------------------------------------------------------------------------------
def test_import_certificates_directory(tenant, tmp_path):
    outside = ExternalPki()
    (one, _), (two, two_key), (three, _) = (outside.leaf(f"{n}.example") for n in ("one", "two", "three"))
    tree = tmp_path / "certs"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "one.pem").write_text(x509.to_pem(one) + x509.to_pem(outside.cert))  # a file with its chain
    (tree / "sub" / "two.crt").write_text(x509.to_pem(two))
    (tree / "sub" / "two.key").write_text(x509.private_key_to_pem(two_key))  # matches: kept
    (tree / "sub" / "deeper" / "three.cer").write_bytes(three.public_bytes(serialization.Encoding.DER))
    (tree / "sub" / "deeper" / "three.key").write_text(x509.private_key_to_pem(x509.generate_key("ec-p256")))
    (tree / "sub" / "copy-of-one.pem").write_text(x509.to_pem(one))  # duplicate
    (tree / "garbage.crt").write_text("this is not a certificate\n")
    (tree / "notes.txt").write_text("not scanned")

    out, err = run("import_certificates", "acme", str(tree))
    assert "imported 3, already present 1, rejected 1" in out
    assert f"  {tree / 'garbage.crt'}: neither PEM nor a DER certificate" in out
    assert "three.key does not belong to the certificate: imported without a key" in out
    assert "notes.txt" not in out
    assert "[##############################] 5/5" in err  # non-TTY: progress lines

    rows = {c.common_name: c for c in Certificate.objects.filter(organization=tenant.organization)}
    assert set(rows) == {"one.example", "two.example", "three.example"}
    assert rows["one.example"].chain_pem == x509.to_pem(outside.cert)
    assert rows["two.example"].private_key and not rows["three.example"].private_key
    assert all(c.source == "imported" for c in rows.values())

    # Again: everything is a duplicate now; the garbage is still rejected; exit status stays 0.
    out, _ = run("import_certificates", "acme", str(tree), verbosity=0)
    assert "imported 0, already present 4, rejected 1" in out
    with pytest.raises(CommandError, match=r"1 rejected \(listed above\)"):
        run("import_certificates", "acme", str(tree), "--fail-on-reject")


SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's ca-certificates


@pytest.mark.skipif(not SYSTEM_BUNDLE.is_file(), reason="ca-certificates is not installed")
def test_import_certificates_of_the_system_ca_bundle(tenant):
    """The README's example: the trust store is a bundle of unrelated roots, each imported on its own; the
    directory next to it (one .pem per root) then finds them all present."""
    roots = x509.load_pem_certificates(SYSTEM_BUNDLE.read_text())
    out, _ = run("import_certificates", "acme", str(SYSTEM_BUNDLE), verbosity=0)
    assert out.splitlines()[0] == f"imported {len(roots)}, already present 0, rejected 0"
    rows = Certificate.objects.filter(organization=tenant.organization)
    stored = set(rows.values_list("fingerprint_sha256", flat=True))
    assert stored == {x509.fingerprints(c).sha256 for c in roots}
    assert not Certificate.objects.exclude(chain_pem="").exists()  # each root stands alone

    out, _ = run("import_certificates", "acme", str(SYSTEM_BUNDLE.parent), verbosity=0)
    imported, present = re.match(r"imported (\d+), already present (\d+), rejected 0", out).groups()
    assert imported == "0" and int(present) > len(roots)  # the bundle again plus every root's own file


def test_import_certificates_bundle_rules(tenant, tmp_path):
    """Unrelated CAs are a bundle; a leaf with a chain that does not link is still refused; --each splits
    anything; a malformed block still refuses its whole file."""
    one, two = ExternalPki("One"), ExternalPki("Two")
    (tmp_path / "roots.pem").write_text(x509.to_pem(one.cert) + x509.to_pem(two.cert))
    leaf, _ = one.leaf("leaf.example")
    (tmp_path / "bad-chain.pem").write_text(x509.to_pem(leaf) + x509.to_pem(two.cert))
    other_leaf, _ = two.leaf("other.example")

    out, _ = run("import_certificates", "acme", str(tmp_path / "roots.pem"), verbosity=0)
    assert out.splitlines()[0] == "imported 2, already present 0, rejected 0"
    out, _ = run("import_certificates", "acme", str(tmp_path / "bad-chain.pem"), verbosity=0)
    assert "imported 0, already present 0, rejected 1" in out and "the chain does not link" in out
    out, _ = run("import_certificates", "acme", str(tmp_path / "bad-chain.pem"), "--each", verbosity=0)
    assert out.splitlines()[0] == "imported 1, already present 1, rejected 0"
    assert not Certificate.objects.get(common_name="leaf.example").chain_pem

    (tmp_path / "mixed.pem").write_text(
        x509.to_pem(other_leaf) + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    out, _ = run("import_certificates", "acme", str(tmp_path / "mixed.pem"), "--each", verbosity=0)
    assert "rejected 1" in out and "mixed.pem: certificate #2 of the PEM bundle is malformed" in out


def test_import_certificates_single_file_with_key_and_fatal_errors(tenant, tmp_path):
    outside = ExternalPki()
    cert, key = outside.leaf("solo.example")
    (tmp_path / "solo.pem").write_text(x509.to_pem(cert))
    (tmp_path / "solo-key.txt").write_text(x509.private_key_to_pem(key))
    (tmp_path / "wrong-key.txt").write_text(x509.private_key_to_pem(x509.generate_key("ec-p256")))

    out, _ = run(
        "import_certificates", "acme", str(tmp_path / "solo.pem"), "--key", str(tmp_path / "wrong-key.txt")
    )
    assert "imported 0, already present 0, rejected 1" in out
    assert "the private key does not belong to the certificate" in out
    out, _ = run(
        "import_certificates", "acme", str(tmp_path / "solo.pem"), "--key", str(tmp_path / "solo-key.txt")
    )
    assert "imported 1, already present 0, rejected 0" in out
    assert Certificate.objects.get(common_name="solo.example").private_key

    with pytest.raises(CommandError, match="no organization named 'globex'"):
        run("import_certificates", "globex", str(tmp_path))
    with pytest.raises(
        CommandError, match="no such file or directory: " + re.escape(str(tmp_path / "missing"))
    ):
        run("import_certificates", "acme", str(tmp_path / "solo.pem"), str(tmp_path / "missing"))
    (tmp_path / "second.pem").write_text(x509.to_pem(outside.cert))
    with pytest.raises(CommandError, match="--key applies to a single certificate file"):
        run("import_certificates", "acme", str(tmp_path), "--key", str(tmp_path / "solo-key.txt"))


def test_import_certificates_progress_on_a_terminal(tenant, tmp_path):
    outside = ExternalPki()
    for n in range(3):
        (tmp_path / f"c{n}.pem").write_text(x509.to_pem(outside.leaf(f"c{n}.example")[0]))

    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    call_command("import_certificates", "acme", str(tmp_path), stdout=io.StringIO(), stderr=err)
    text = err.getvalue()
    assert "\r\x1b[K[" in text and "] 3/3 c2.pem" in text and "] 0/3" in text and text.endswith("\n")


def test_import_certificates_for_real(tmp_path):
    """manage.py as a shell runs it: exit status, summary on stdout, progress on stderr."""
    outside = ExternalPki()
    certs = tmp_path / "certs"
    certs.mkdir()
    for n in range(12):
        (certs / f"host{n:02}.pem").write_text(x509.to_pem(outside.leaf(f"host{n}.example")[0]))
    (certs / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CERTMGR_ENCRYPTION_KEYS": ",".join(settings.CERTMGR_ENCRYPTION_KEYS),
    }

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    for args in (("migrate", "-v0"), ("create_organization", "Acme")):
        result = manage(*args)
        assert result.returncode == 0, result.stderr
    result = manage("import_certificates", "acme", str(certs), "--progress-every", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "imported 12, already present 0, rejected 1"
    assert f"  {certs / 'broken.pem'}: certificate #1 of the PEM bundle is malformed" in result.stdout
    assert result.stderr.splitlines() == [
        "[###########...................] 5/13 files",
        "[#######################.......] 10/13 files",
        "[##############################] 13/13 files",
    ]
    result = manage("import_certificates", "acme", str(certs / "nowhere"))
    assert result.returncode == 1
    assert "CommandError: no such file or directory" in result.stderr and "Traceback" not in result.stderr
    result = manage("import_certificates", "acme", str(certs), "--fail-on-reject", "-v0")
    assert result.returncode == 1 and "imported 0, already present 12, rejected 1" in result.stdout


# --- export_certificate ---------------------------------------------------------------------------------
def test_export_each_format(tenant, issued, tmp_path, monkeypatch):
    out, _ = run("export_certificate", issued.serial, "--format", "pem")
    (tmp_path / "cert.pem").write_text(out)
    assert openssl("x509", "-noout", "-in", "cert.pem", cwd=tmp_path).returncode == 0

    run(
        "export_certificate",
        "--id",
        str(issued.pk),
        "--format",
        "chain",
        "--out",
        str(tmp_path / "chain.pem"),
    )
    assert mode(tmp_path / "chain.pem") == 0o644
    result = openssl("verify", "-CAfile", "chain.pem", "cert.pem", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    out, _ = run("export_certificate", issued.serial, "--format", "bundle")
    assert out == issued.certificate_pem + issued.chain_pem and "PRIVATE KEY" not in out
    assert not AuditEvent.objects.filter(action="certificate.export_key").exists()

    run(
        "export_certificate",
        issued.serial,
        "--format",
        "bundle",
        "--include-key",
        "--out",
        str(tmp_path / "b"),
    )
    assert mode(tmp_path / "b") == 0o600 and "PRIVATE KEY" in (tmp_path / "b").read_text()

    out, _ = run("export_certificate", issued.serial, "--format", "key")
    assert out.startswith("-----BEGIN PRIVATE KEY-----")
    out, _ = run("export_certificate", issued.serial, "--format", "key", "--out", str(tmp_path / "key.pem"))
    assert "(mode 0600)" in out and mode(tmp_path / "key.pem") == 0o600
    result = openssl("pkey", "-in", "key.pem", "-noout", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    (tmp_path / "pw").write_text(P12_PASSWORD + "\n")
    p12 = tmp_path / "web.p12"
    run(
        "export_certificate", issued.serial, "--format", "pkcs12", "--out", str(p12),
        "--password-file", str(tmp_path / "pw"), "--alias", "web server",
    )  # fmt: skip
    assert mode(p12) == 0o600
    info = openssl(
        "pkcs12", "-info", "-noout", "-in", str(p12), "-passin", f"pass:{P12_PASSWORD}", cwd=tmp_path
    )
    assert info.returncode == 0, info.stderr
    bags = pkcs12.load_pkcs12(p12.read_bytes(), P12_PASSWORD.encode())
    assert bags.cert.friendly_name == b"web server" and len(bags.additional_certs) == 2
    assert (
        openssl(
            "pkcs12", "-info", "-noout", "-in", str(p12), "-passin", "pass:wrong-password!", cwd=tmp_path
        ).returncode
        != 0
    )

    monkeypatch.setenv("CERTMGR_EXPORT_PASSWORD", P12_PASSWORD)
    run("export_certificate", issued.serial, "--format", "pkcs12", "--out", str(tmp_path / "env.p12"))
    info = openssl(
        "pkcs12", "-info", "-noout", "-in", "env.p12", "-passin", "env:CERTMGR_EXPORT_PASSWORD", cwd=tmp_path
    )
    assert info.returncode == 0, info.stderr

    exports = AuditEvent.objects.filter(action="certificate.export_key", outcome="success")
    assert exports.count() == 5  # bundle --include-key, key twice, pkcs12 twice
    assert set(exports.values_list("actor_label", flat=True)) == {"manage.py export_certificate"}


def test_export_refusals(tenant, subscriber, issued, tmp_path, monkeypatch):
    monkeypatch.delenv("CERTMGR_EXPORT_PASSWORD", raising=False)
    (tmp_path / "short").write_text("short\n")
    (tmp_path / "pw").write_text(P12_PASSWORD)
    p12 = str(tmp_path / "x.p12")
    with pytest.raises(CommandError, match="password: Use at least 12 characters"):
        run(
            "export_certificate",
            issued.serial,
            "--format",
            "pkcs12",
            "--out",
            p12,
            "--password-file",
            str(tmp_path / "short"),
        )
    assert AuditEvent.objects.filter(action="certificate.export_key", outcome="failure").count() == 1
    with pytest.raises(
        CommandError,
        match="--format pkcs12 needs a password: --password-file FILE or the CERTMGR_EXPORT_PASSWORD",
    ):
        run("export_certificate", issued.serial, "--format", "pkcs12", "--out", p12)
    with pytest.raises(CommandError, match="pkcs12 is binary: give --out FILE"):
        run(
            "export_certificate", issued.serial, "--format", "pkcs12", "--password-file", str(tmp_path / "pw")
        )
    with pytest.raises(CommandError, match=r"--password-file .*nope: no such file"):
        run(
            "export_certificate",
            issued.serial,
            "--format",
            "pkcs12",
            "--out",
            p12,
            "--password-file",
            str(tmp_path / "nope"),
        )
    with pytest.raises(CommandError, match="only apply to --format pkcs12"):
        run("export_certificate", issued.serial, "--format", "pem", "--alias", "x")
    assert not Path(p12).exists()

    # A certificate issued from a CSR: certmgr has no key to export.
    csr = x509.build_csr(x509.generate_key("ec-p256"), x509.Subject(common_name="www.acme.test"), [])
    from_csr = services.issue(subscriber, actor=SYSTEM, csr_pem=x509.to_pem(csr)).certificate
    with pytest.raises(CommandError, match="certmgr holds no private key for this certificate"):
        run("export_certificate", "--id", str(from_csr.pk), "--format", "key")
    with pytest.raises(
        CommandError, match=re.escape(f"cannot write {tmp_path / 'no' / 'dir.pem'}: directory")
    ):
        run("export_certificate", issued.serial, "--format", "pem", "--out", str(tmp_path / "no" / "dir.pem"))

    self_signed = services.save_subscriber(
        tenant.organization,
        actor=SYSTEM,
        name="self",
        issuer_type="self-signed",
        common_name="self.acme.test",
    )
    cert = services.issue(self_signed, actor=SYSTEM).certificate
    with pytest.raises(CommandError, match="has no chain in certmgr"):
        run("export_certificate", "--id", str(cert.pk), "--format", "chain")


def test_commands_are_tenant_scoped_by_org(tenant, other_tenant, issued):
    """--org never reaches into another organization's rows (the commands act as the system, so --org is the
    only scoping an operator has)."""
    assert make_tenant("Initech").organization.slug == "initech"
    with pytest.raises(CommandError, match="no certificate with serial"):
        run("export_certificate", issued.serial, "--org", "initech", "--format", "key")
    with pytest.raises(CommandError, match="no certificate with serial"):
        run("revoke", issued.serial, "--org", "globex", "--reason", "superseded")
    assert not AuditEvent.objects.filter(action="certificate.export_key").exists()
