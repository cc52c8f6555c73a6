import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509 as cx509
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from certmgr.errors import ServiceError
from certmgr.management.commands._base import ServiceCommand, find_organization
from pki import services, x509
from pki.management import MAX_INPUT_BYTES

EXTENSIONS = (".pem", ".crt", ".cer", ".cert")
_KEY_BLOCK = re.compile(
    r"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL
)
_CERT_MARKER = "-----BEGIN CERTIFICATE-----"


@dataclass
class Summary:
    imported: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    key_files: list[str] = field(default_factory=list)  # PEM files holding only a private key: skipped
    warnings: list[tuple[str, str]] = field(default_factory=list)


class Command(ServiceCommand):
    help = (
        "Add existing certificates to an organization's inventory. PATH is a file or a directory (searched "
        f"recursively for {', '.join('*' + e for e in EXTENSIONS)}). A file may hold a chain (the leaf "
        "first or not: the leaf is the certificate that is not a CA) and may be PEM or DER. A private key "
        "is taken from NAME.key next to NAME.pem/NAME.crt/... when it belongs to the certificate (if not, "
        "the certificate is imported without a key and a warning says so), else from --key (one certificate "
        "file only) or a PRIVATE KEY block in the file itself; a key given those ways that does not belong "
        "to the certificate rejects the file. A bundle of CA certificates that do not form one chain (a "
        "trust store such as /etc/ssl/certs/ca-certificates.crt) is imported certificate by certificate; "
        "--each does that for every file. Files holding only a private key are skipped. Progress goes to "
        "stderr; the summary (certificates imported, already present, rejected, then each rejection with "
        "its reason) to "
        "stdout. Exit status: 0 when the run completed, even if some files were rejected (they are listed; "
        "add --fail-on-reject to exit 1 then); 1 on a fatal error (unknown organization, missing PATH)."
    )

    def add_arguments(self, parser):
        parser.add_argument("organization", help="Organization name, slug or id.")
        parser.add_argument("paths", nargs="+", metavar="PATH", help="Certificate files or directories.")
        parser.add_argument(
            "--key", metavar="PATH", help="Private key (PEM) of the certificate, when importing one file."
        )
        parser.add_argument(
            "--progress-every",
            type=int,
            default=10,
            metavar="N",
            help="When stderr is not a terminal, print a progress line every N files (default 10).",
        )
        parser.add_argument(
            "--each",
            action="store_true",
            help="Import every certificate of a file on its own (no chain), like a CA bundle.",
        )
        parser.add_argument(
            "--fail-on-reject", action="store_true", help="Exit with status 1 if any file was rejected."
        )

    def handle(
        self, *args, organization, paths, key, progress_every, each, fail_on_reject, verbosity, **options
    ):
        org = find_organization(organization)
        if progress_every < 1:
            raise CommandError("--progress-every must be at least 1")
        files = collect_files(paths)
        if key and len(files) != 1:
            raise CommandError(
                f"--key applies to a single certificate file, but the PATHs hold {len(files)} files; "
                "put each key next to its certificate as NAME.key instead"
            )
        progress = Progress(self.stderr, len(files), every=progress_every, enabled=verbosity > 0)
        summary = Summary()
        actor = self.actor()
        progress.show(0)
        for number, path in enumerate(files, start=1):
            self.import_file(org, path, Path(key) if key else None, summary, actor, each=each)
            progress.show(number, path.name)
        progress.finish()
        self.report(summary, verbosity)
        if fail_on_reject and summary.rejected:
            raise CommandError(f"{len(summary.rejected)} rejected (listed above)")

    def import_file(
        self, org, path: Path, key_path: Path | None, summary: Summary, actor, *, each: bool = False
    ) -> None:
        source = str(path)
        try:
            pem_text = read_certificate_file(path)
            if pem_text is None:
                summary.key_files.append(source)
                return
            key_pem, key_origin = None, ""
            sibling = path.with_suffix(".key")
            if sibling != path and sibling.is_file():
                key_pem, problem = sibling_key(pem_text, sibling)
                key_origin = str(sibling)
                if problem:
                    summary.warnings.append((source, f"{sibling.name} {problem}: imported without a key"))
            elif key_path is not None:
                key_pem = read_small(key_path).decode("utf-8", "replace")
                key_origin = str(key_path)
            elif embedded := _KEY_BLOCK.search(pem_text):
                key_pem, key_origin = embedded.group(0), "the file"
            result = services.import_certificates(
                org, pem_text, key_pem=key_pem, source_name=source, each=each, actor=actor
            )
        except _FileProblem as exc:
            summary.rejected.append((source, str(exc)))
            return
        except (ServiceError, ValidationError, ValueError) as exc:
            # ValueError covers parsing failures (pki.x509.X509Error is one) the service let through.
            reason = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            summary.rejected.append((source, reason))
            return
        for where, reason in result.rejected:  # a bundle's rejections name the certificate in the file
            if key_pem and ("private key" in reason):
                reason = f"{reason} (key from {key_origin})"
            summary.rejected.append((where, reason))
        summary.duplicates.extend(source for _ in result.duplicates)
        summary.imported.extend(source for _ in result.imported)

    def report(self, summary: Summary, verbosity: int) -> None:
        line = (
            f"imported {len(summary.imported)}, already present {len(summary.duplicates)}, "
            f"rejected {len(summary.rejected)}"
        )
        if summary.key_files:
            line += f" (skipped {len(summary.key_files)} key-only file(s))"
        style = self.style.SUCCESS if not summary.rejected else self.style.WARNING
        self.stdout.write(style(line))
        if summary.rejected:
            self.stdout.write("rejected:")
            for source, reason in summary.rejected:
                self.stdout.write(f"  {source}: {reason}")
        if summary.warnings:
            self.stdout.write("warnings:")
            for source, reason in summary.warnings:
                self.stdout.write(f"  {source}: {reason}")
        if verbosity >= 2:
            for title, items in (
                ("imported", summary.imported),
                ("already present", summary.duplicates),
                ("skipped key-only files", summary.key_files),
            ):
                if items:
                    self.stdout.write(f"{title}:")
                    for source in items:
                        self.stdout.write(f"  {source}")


class _FileProblem(Exception):
    pass


def collect_files(paths: list[str]) -> list[Path]:
    """Files named directly (whatever their extension) and certificate files under directories, in a stable
    order, each once. A missing PATH is fatal: nothing is imported."""
    missing = [p for p in paths if not os.path.lexists(p)]
    if missing:
        raise CommandError(f"no such file or directory: {', '.join(missing)}")
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, names in os.walk(path, onerror=None, followlinks=False):
                dirs.sort()
                for name in sorted(names):
                    if name.lower().endswith(EXTENSIONS):
                        found.setdefault(Path(root) / name, None)
        else:
            found.setdefault(path, None)
    return list(found)


def read_small(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_INPUT_BYTES:
            raise _FileProblem(f"larger than {MAX_INPUT_BYTES // 1024} KiB: not a certificate file")
        return path.read_bytes()
    except OSError as exc:
        raise _FileProblem(f"cannot read {path}: {exc.strerror or exc}") from None


def sibling_key(pem_text: str, key_path: Path) -> tuple[str | None, str]:
    """NAME.key next to a certificate file: (its PEM, "") when it belongs to the file's leaf certificate, else
    (None, why not). A sibling key is opportunistic: one that does not fit never rejects the certificate."""
    try:
        key = x509.load_private_key(read_small(key_path))
    except (_FileProblem, ValueError) as exc:
        return None, f"is not a usable private key ({exc})"
    try:
        certs = x509.load_pem_certificates(pem_text)
    except ValueError:
        return None, ""  # the service rejects the file and says why
    # The service's rule: the leaf is the first certificate that is not a CA, else the first.
    leaf = next((c for c in certs if not x509.cert_summary(c).is_ca), certs[0])
    if not x509.matches_key(leaf, key):
        return None, "does not belong to the certificate"
    return x509.private_key_to_pem(key), ""


def read_certificate_file(path: Path) -> str | None:
    """The file as PEM text (a DER certificate is converted); None for a PEM file holding only a key."""
    data = read_small(path)
    if b"-----BEGIN" not in data:
        try:
            return x509.to_pem(cx509.load_der_x509_certificate(data))
        except ValueError:
            raise _FileProblem("neither PEM nor a DER certificate") from None
    text = data.decode("latin-1")  # only the ASCII PEM blocks matter
    if _CERT_MARKER not in text and _KEY_BLOCK.search(text):
        return None
    return text


class Progress:
    """A dependency-free progress display on stderr: a bar redrawn with \\r on a terminal, a line every N
    files otherwise (logs, CI)."""

    WIDTH = 30

    def __init__(self, out, total: int, *, every: int, enabled: bool):
        self.out, self.total, self.every = out, total, every
        self.enabled = enabled and total > 0
        self.tty = out.isatty()

    def _write(self, text: str, ending: str) -> None:
        self.out.write(text, style_func=lambda s: s, ending=ending)

    def show(self, done: int, name: str = "") -> None:
        if not self.enabled:
            return
        filled = self.WIDTH * done // self.total
        bar = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total}"
        if self.tty:
            self._write(f"\r\x1b[K{bar} {name[:40]}", ending="")
            self.out.flush()
        elif done and (done % self.every == 0 or done == self.total):
            self._write(f"{bar} files", ending="\n")

    def finish(self) -> None:
        if self.enabled and self.tty:
            self._write("", ending="\n")
