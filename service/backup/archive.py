"""The backup archive: its format, how it is written, and how it is verified.

The archive is a tar file (gzip-compressed when its name ends in .gz or
.tgz), written to FILE.partial and renamed when complete. Members, in order:

    database.pgdump   `pg_dump --format=custom` of the MLflow database
    auth-database.pgdump  the same of MLflow's users and permissions, only
                      with MLFLOW_AUTH_MODE=mlflow (manifest key "auth")
    objects/<key>     every object of the artifact bucket (the exact key is
                      also kept in the member's PAX header NSELF.key)
    manifest.json     {"format": "nself-mlflow-backup", "format_version": 1,
                       "created", "mlflow": {"version", "schema_revision"},
                       "postgres": {"version", "database", "dump": {"path", "size", "sha256"}},
                       ["auth": {"database", "dump": {"path", "size", "sha256"}},]
                       "bucket": {"name", "count", "bytes",
                                  "objects": [{"key", "size", "sha256"}, ...]}}

The manifest comes last because it holds the checksums of what precedes it;
`restore` therefore reads the archive twice: once to verify every checksum
before it touches anything, once to restore.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from generator.errors import UserError
from generator.fileio import atomic_file
from service.backup.errors import BackupError

FORMAT = "nself-mlflow-backup"
FORMAT_VERSION = 1
DUMP_MEMBER = "database.pgdump"
AUTH_DUMP_MEMBER = "auth-database.pgdump"
OBJECTS = "objects/"
MANIFEST_MEMBER = "manifest.json"
KEY_HEADER = "NSELF.key"
CHUNK = 1 << 20

Progress = Callable[[int, int, str], None] | None


# -- hashing streams -----------------------------------------------------------------

class HashingReader:
    """Reads from a stream, counting and hashing what passes through."""

    def __init__(self, stream: IO[bytes], on_bytes: Callable[[int], None] | None = None) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0
        self.on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        self.size += len(data)
        if self.on_bytes and data:
            self.on_bytes(len(data))
        return data

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


class ByteProgress:
    """Feeds a (done, total, label) progress callback from byte counts, about once per MiB."""

    def __init__(self, progress: Progress, total: int, label: str) -> None:
        self.progress, self.total, self.label = progress, max(total, 1), label
        self.done = self.reported = 0

    def __call__(self, count: int) -> None:
        self.done += count
        if self.progress and (self.done - self.reported >= CHUNK or self.done >= self.total):
            self.reported = self.done
            self.progress(min(self.done, self.total), self.total, self.label)

    def finish(self) -> None:
        if self.progress:
            self.progress(self.total, self.total, self.label)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# -- writing -------------------------------------------------------------------------

def new_manifest(created: str, mlflow_version: str, schema_revision: str | None, postgres_version: str,
                 database: str, dump: dict, bucket: str, objects: list[dict]) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": created,
        "mlflow": {"version": mlflow_version, "schema_revision": schema_revision},
        "postgres": {"version": postgres_version, "database": database, "dump": dump},
        "bucket": {"name": bucket, "count": len(objects), "bytes": sum(entry["size"] for entry in objects),
                   "objects": objects},
    }


def _compressor(file: IO[bytes], output: Path):
    """gzip for .gz and .tgz, at level 6: tarfile's own level 9 costs far more time than it saves space."""
    if output.name.endswith((".gz", ".tgz")):
        return gzip.GzipFile(filename="", mode="wb", fileobj=file, compresslevel=6, mtime=0)
    return contextlib.nullcontext(file)


class ArchiveWriter:
    """Adds the members, in the archive's order: the dump, the objects, the manifest."""

    def __init__(self, archive: tarfile.TarFile) -> None:
        self.archive = archive

    def add_dump(self, path: Path, size: int, name: str = DUMP_MEMBER) -> None:
        member = tarfile.TarInfo(name)
        member.size, member.mode = size, 0o600
        with open(path, "rb") as stream:
            self.archive.addfile(member, stream)

    def add_object(self, key: str, body: IO[bytes], size: int, mtime: int,
                   on_bytes: Callable[[int], None] | None = None) -> HashingReader:
        """Streams `size` bytes of `body`; the reader says how many came and their sha256."""
        member = tarfile.TarInfo(OBJECTS + key)
        member.size, member.mode, member.mtime = size, 0o600, mtime
        member.pax_headers = {KEY_HEADER: key}
        reader = HashingReader(body, on_bytes)
        self.archive.addfile(member, reader)
        return reader

    def add_manifest(self, manifest: dict) -> None:
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        member = tarfile.TarInfo(MANIFEST_MEMBER)
        member.size, member.mode = len(data), 0o644
        self.archive.addfile(member, io.BytesIO(data))


@contextlib.contextmanager
def writing(output: Path, partial: Path) -> Iterator[ArchiveWriter]:
    """The archive `output`, written to `partial` and renamed when the block ends without error.

    It holds the whole database and every artifact: the partial file is
    0600 from its first byte, whatever the umask (atomic_file).
    """
    with atomic_file(output, temporary=partial) as file, _compressor(file, output) as sink, tarfile.open(
        fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT
    ) as archive:
        yield ArchiveWriter(archive)
        archive.close()
        if sink is not file:
            sink.close()  # writes the gzip trailer


# -- reading -------------------------------------------------------------------------

def _open_archive(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise UserError(f"--input: {path} does not exist or is not a file")
    try:
        return tarfile.open(path, "r|*")
    except tarfile.ReadError:
        raise BackupError(f"--input: {path} is not a backup archive (not a tar or tar.gz file)") from None


def member_key(member: tarfile.TarInfo) -> str | None:
    """The object key a member holds; None for the database dump."""
    if member.name == DUMP_MEMBER:
        return None
    return member.pax_headers.get(KEY_HEADER, member.name[len(OBJECTS):])


@contextlib.contextmanager
def reading(path: Path):
    """Damage found while reading becomes one BackupError line."""
    try:
        yield
    except (tarfile.ReadError, EOFError, zlib.error, OSError) as error:
        if isinstance(error, BackupError):
            raise
        raise BackupError(f"--input: {path} is truncated or damaged ({error}); nothing was restored") from None


def members(path: Path) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    """Each member with a stream of its bytes; use it inside reading(path)."""
    archive = _open_archive(path)
    try:
        for member in archive:
            if not member.isfile():
                raise BackupError(f"--input: {path}: unexpected member {member.name!r}; not a backup archive")
            yield member, archive.extractfile(member)
    finally:
        archive.close()


def _check_manifest(path: Path, manifest: Any) -> dict:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"--input: {path} is not an nself MLflow backup (its manifest has another format)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"--input: {path} has format_version {manifest.get('format_version')!r}; "
                          f"this tool reads {FORMAT_VERSION}: restore it with a newer nself")
    return manifest


def verify_archive(path: Path, progress: Progress = None) -> dict:
    """Read the whole archive once: every member's checksum against the manifest.

    Returns the manifest. Any mismatch, missing or extra member, or damage
    is a BackupError naming it.
    """
    seen: dict[str | None, tuple[int, str]] = {}
    auth_seen: tuple[int, str] | None = None
    manifest = None
    counter = ByteProgress(progress, path.stat().st_size if path.is_file() else 1, "verify")
    with reading(path):
        for member, stream in members(path):
            if member.name == MANIFEST_MEMBER:
                try:
                    manifest = json.loads(stream.read())
                except ValueError:
                    raise BackupError(f"--input: {path}: manifest.json is not valid JSON") from None
                continue
            if manifest is not None:
                raise BackupError(f"--input: {path}: {member.name!r} follows the manifest; not a backup archive")
            if member.name not in (DUMP_MEMBER, AUTH_DUMP_MEMBER) and not member.name.startswith(OBJECTS):
                raise BackupError(f"--input: {path}: unexpected member {member.name!r}; not a backup archive")
            reader = HashingReader(stream, counter)
            for _ in iter(lambda: reader.read(CHUNK), b""):
                pass
            if member.name == AUTH_DUMP_MEMBER:
                auth_seen = (reader.size, reader.sha256)
                continue
            seen[member_key(member)] = (reader.size, reader.sha256)
    if manifest is None:
        raise BackupError(f"--input: {path} is truncated or damaged: it ends before its manifest; "
                          "nothing was restored")
    manifest = _check_manifest(path, manifest)
    dump = manifest["postgres"]["dump"]
    if seen.pop(None, None) != (dump["size"], dump["sha256"]):
        raise BackupError(f"--input: {path}: the database dump does not match its checksum; the archive is damaged")
    auth_dump = (manifest.get("auth") or {}).get("dump")
    if (auth_dump and auth_seen != (auth_dump["size"], auth_dump["sha256"])) or (auth_seen and not auth_dump):
        raise BackupError(f"--input: {path}: the users' database dump does not match the manifest; "
                          "the archive is damaged")
    for entry in manifest["bucket"]["objects"]:
        found = seen.pop(entry["key"], None)
        if found is None:
            raise BackupError(f"--input: {path}: object {entry['key']!r} is missing from the archive")
        if found != (entry["size"], entry["sha256"]):
            raise BackupError(f"--input: {path}: object {entry['key']!r} does not match its checksum; "
                              "the archive is damaged, nothing was restored")
    if seen:
        raise BackupError(f"--input: {path}: object {sorted(seen)[0]!r} is not in the manifest")
    counter.finish()
    return manifest
