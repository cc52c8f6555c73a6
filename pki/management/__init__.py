"""Helpers shared by the PKI management commands: finding rows the way an operator names them, reading
input files and writing output files (private keys 0600)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.core.management.base import CommandError

from certmgr.models import Organization
from pki.models import Certificate, CertificateAuthority, Subscriber

MAX_INPUT_BYTES = 1024 * 1024  # certificates, keys and CSRs are a few KB; refuse to slurp anything huge


def normalize_serial(text: str) -> str:
    """A serial as operators type it (``0x1F``, ``1f:2a``, ``00 1F``, upper case) in certmgr's canonical form
    (lowercase hex, no separators or leading zeros)."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "").replace("-", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise CommandError(f"{text!r} is not a hexadecimal serial number") from None
    return format(value, "x")


def find_certificate(
    *, serial: str | None, certificate_id: int | None, organization: Organization | None
) -> Certificate:
    """The certificate named by SERIAL or --id, within --org when given.

    A serial is unique per issuer, not across the inventory (imported certificates of unrelated CAs can share
    one), so a serial that matches several certificates is refused with the candidates and a hint to use --id.
    """
    if (serial is None) == (certificate_id is None):
        raise CommandError("give either a SERIAL or --id ID (not both)")
    where = f" in organization {organization.name!r}" if organization else ""
    rows = Certificate.objects.select_related("organization", "ca")
    if organization is not None:
        rows = rows.filter(organization=organization)
    if certificate_id is not None:
        certificate = rows.filter(pk=certificate_id).first()
        if certificate is None:
            raise CommandError(f"no certificate with id {certificate_id}{where}")
        return certificate
    if serial is None:  # unreachable: one of the two was checked above
        raise CommandError("give either a SERIAL or --id ID (not both)")
    canonical = normalize_serial(serial)
    matches = list(rows.filter(serial=canonical).order_by("id")[:11])
    if not matches:
        raise CommandError(f"no certificate with serial {canonical}{where}")
    if len(matches) > 1:
        listed = "; ".join(
            f"id {c.pk} ({c.organization.name}, CA {c.ca.name if c.ca else '-'}, CN {c.common_name or '-'})"
            for c in matches[:10]
        )
        more = " and more" if len(matches) > 10 else ""
        raise CommandError(
            f"serial {canonical} matches several certificates{where}: {listed}{more}. "
            "Choose one with --id ID (or narrow with --org)."
        )
    return matches[0]


def find_ca(name_or_id: str, organization: Organization | None = None) -> CertificateAuthority:
    """The CA an operator named (exact name, any case, or id), within ``organization`` when given."""
    return _find_named(CertificateAuthority.objects.all(), "CA", name_or_id, organization)


def find_subscriber(name_or_id: str, organization: Organization | None = None) -> Subscriber:
    """The subscriber an operator named (exact name, any case, or id), within ``organization`` when given."""
    return _find_named(Subscriber.objects.all(), "subscriber", name_or_id, organization)


def _find_named(rows, what: str, name_or_id: str, organization: Organization | None):
    """A name is unique per organization, not across them: a name found in several is refused with the
    organizations it exists in."""
    rows = rows.select_related("organization")
    if organization is not None:
        rows = rows.filter(organization=organization)
    where = f" in organization {organization.name!r}" if organization else ""
    matches = list(rows.filter(name=name_or_id)[:11]) or list(rows.filter(name__iexact=name_or_id)[:11])
    if not matches and name_or_id.isdigit():
        matches = list(rows.filter(pk=int(name_or_id)))
    if not matches:
        raise CommandError(f"no {what} named {name_or_id!r}{where}")
    if len(matches) > 1:
        orgs = ", ".join(sorted({m.organization.name for m in matches}))
        raise CommandError(
            f"{what} name {name_or_id!r} is ambiguous: it exists in {orgs}. "
            f"Give --org ORG or the {what}'s id."
        )
    return matches[0]


def read_input(path: str | Path, what: str) -> str:
    """A small text input file (PEM, password), with a clear error instead of a traceback."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_INPUT_BYTES:
            raise CommandError(f"{what} {path}: file is larger than {MAX_INPUT_BYTES // 1024} KiB")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"{what} {path}: is a directory, expected a file") from None
    except OSError as exc:
        raise CommandError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"{what} {path}: not a text (PEM) file") from None


def write_output(path: str | Path, data: str | bytes, *, secret: bool) -> Path:
    """Write ``data`` to ``path`` atomically. ``secret`` files (private keys, PKCS#12) are created 0600 and
    stay 0600 even when they replace an existing file with wider permissions."""
    path = Path(path)
    payload = data.encode("ascii") if isinstance(data, str) else data
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise CommandError(f"cannot write {path}: directory {directory} does not exist")
    try:
        # mkstemp creates the file 0600 from the start: the secret is never readable by others.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            if not secret:
                os.chmod(tmp, 0o644)  # public material: readable like any certificate
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
