"""Back up the MLflow service into one archive, and restore it.

The archive is a tar file (gzip-compressed when its name ends in .gz or
.tgz), written to FILE.partial and renamed when complete. Members, in order:

    database.pgdump   `pg_dump --format=custom` of the MLflow database
    objects/<key>     every object of the artifact bucket (the exact key is
                      also kept in the member's PAX header NSELF.key)
    manifest.json     {"format": "nself-mlflow-backup", "format_version": 1,
                       "created", "mlflow": {"version", "schema_revision"},
                       "postgres": {"version", "database", "dump": {"path", "size", "sha256"}},
                       "bucket": {"name", "count", "bytes",
                                  "objects": [{"key", "size", "sha256"}, ...]}}

The manifest comes last because it holds the checksums of what precedes it;
`restore` therefore reads the archive twice: once to verify every checksum
before it touches anything, once to restore.

Consistency: the database is dumped first, in one snapshot; the objects are
listed and copied afterwards. Runs logged while the objects are copied are not
in the dump, and their objects, when copied, are harmless extras: the
restored server never refers to them. An object deleted between the listing
and its copy (gc) is left out of the manifest and reported.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from generator.artifacts.graphql import SCHEMA as GRAPHQL_SCHEMA
from generator.errors import ServiceError, UserError, last_line
from generator.fileio import atomic_file

FORMAT = "nself-mlflow-backup"
FORMAT_VERSION = 1
DUMP_MEMBER = "database.pgdump"
# The GraphQL views are made by mlflow-init from the generated files, not
# kept: restored, they would block the next migration of a stack that has
# them switched off, and clash with the schema init made on one that has them on.
EXCLUDED = ("--exclude-schema", GRAPHQL_SCHEMA)
OBJECTS = "objects/"
MANIFEST_MEMBER = "manifest.json"
KEY_HEADER = "NSELF.key"
CHUNK = 1 << 20

Progress = Callable[[int, int, str], None] | None


class BackupError(ServiceError):
    """The backup or restore cannot go on; exit code 1, one line saying why."""


# -- the tools -------------------------------------------------------------------

@dataclass(frozen=True)
class PostgresTools:
    """How to run pg_dump, pg_restore and psql on the MLflow database.

    `prefix` is empty to run local binaries, or `docker compose … exec -T
    postgres` to run them in the postgres container; `connection` holds the
    libpq options and `environment` the password, never the argv.
    """

    database: str
    role: str
    prefix: tuple[str, ...] = ()
    connection: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    bindir: Path | None = None
    where: str = "PostgreSQL"

    def argv(self, tool: str, *args: str) -> list[str]:
        program = str(self.bindir / tool) if self.bindir and not self.prefix else tool
        return [*self.prefix, program, *self.connection, *args]

    def run(self, tool: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self._launch(subprocess.run, tool, args, kwargs)

    def popen(self, tool: str, *args: str, **kwargs) -> subprocess.Popen:
        return self._launch(subprocess.Popen, tool, args, kwargs)

    def _launch(self, launcher, tool: str, args: tuple[str, ...], kwargs: dict):
        try:
            return launcher(self.argv(tool, *args), env={**os.environ, **self.environment}, **kwargs)
        except FileNotFoundError as error:
            raise BackupError(f"{self.where}: {error.filename} not found; install the PostgreSQL client tools "
                              "(Debian: postgresql-client) or pass --pg-bindir") from None

    def query(self, sql: str) -> str:
        result = self.run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.database, "-c", sql,
                          capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise BackupError(f"{self.where}: psql failed: {last_line(result.stderr)}")
        return result.stdout.strip()

    def server_version(self) -> str:
        return self.query("SHOW server_version")

    def schema_revision(self) -> str | None:
        found = self.query("SELECT to_regclass('public.alembic_version') IS NOT NULL")
        if found != "t":
            return None
        return self.query("SELECT version_num FROM alembic_version") or None

    def relation_count(self) -> int:
        return int(self.query(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
        ))

    def other_sessions(self) -> int:
        return int(self.query(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = {_literal(self.database)} "
            "AND pid <> pg_backend_pid()"
        ))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


@dataclass(frozen=True)
class Bucket:
    """The artifact bucket, through boto3."""

    client: Any
    name: str
    endpoint: str

    def _call(self, what: str, function, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return function(**kwargs)
        except (ClientError, BotoCoreError) as error:
            raise self._failure(what, error) from None

    def _failure(self, what: str, error: Exception) -> BackupError:
        from botocore.exceptions import ClientError

        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "error")
            hint = "; check MINIO_ROOT_USER and MINIO_ROOT_PASSWORD" if code in (
                "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") else ""
            return BackupError(f"S3 at {self.endpoint}: {what} failed: {code}{hint}")
        return BackupError(f"S3 at {self.endpoint}: {what} failed: {error}; is MinIO up and "
                           "its port published (pass --s3-endpoint)?")

    def objects(self) -> Iterator[dict]:
        token = None
        while True:
            page = self._call(f"listing bucket {self.name}", self.client.list_objects_v2, Bucket=self.name,
                              **({"ContinuationToken": token} if token else {}))
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def is_empty(self) -> bool:
        page = self._call(f"listing bucket {self.name}", self.client.list_objects_v2, Bucket=self.name, MaxKeys=1)
        return not page.get("Contents")

    def open(self, key: str):
        """The object's body and size, or None when it is gone."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.name, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._failure(f"reading {key}", error) from None
        except BotoCoreError as error:
            raise self._failure(f"reading {key}", error) from None

    def upload(self, key: str, stream: IO[bytes]) -> None:
        from boto3.s3.transfer import TransferConfig

        # Multipart in 16 MiB parts: a 1 GiB object never sits in memory.
        config = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20, max_concurrency=4)
        self._call(f"uploading {key}", self.client.upload_fileobj, Fileobj=stream, Bucket=self.name, Key=key,
                   Config=config)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start:start + 1000]]
            self._call("deleting objects", self.client.delete_objects, Bucket=self.name,
                       Delete={"Objects": batch, "Quiet": True})


def s3_bucket(endpoint: str, access_key: str, secret_key: str, name: str) -> Bucket:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise BackupError("boto3 is not installed here; install nself-mlflow[init]") from None
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, connect_timeout=10, read_timeout=300,
                      retries={"max_attempts": 3, "mode": "standard"}),
    )
    return Bucket(client, name, endpoint)


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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _compressor(file: IO[bytes], output: Path):
    """gzip for .gz and .tgz, at level 6: tarfile's own level 9 costs far more time than it saves space."""
    if output.name.endswith((".gz", ".tgz")):
        return gzip.GzipFile(filename="", mode="wb", fileobj=file, compresslevel=6, mtime=0)
    return contextlib.nullcontext(file)


# -- backup ------------------------------------------------------------------------

@dataclass
class BackupResult:
    objects: int
    object_bytes: int
    dump_bytes: int
    skipped: list[str]
    schema_revision: str | None


def create_backup(postgres: PostgresTools, bucket: Bucket, output: Path, mlflow_version: str, created: str,
                  progress: Progress = None) -> BackupResult:
    """Dump the database, then copy every object, into `output`, atomically."""
    output = output.resolve()
    if output.is_dir():
        raise UserError(f"--output: {output} is a directory; name the archive file, e.g. mlflow-backup.tar.gz")
    if not output.parent.is_dir():
        raise UserError(f"--output: the directory {output.parent} does not exist")
    postgres_version = postgres.server_version()
    revision = postgres.schema_revision()
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    partial = output.with_name(output.name + ".partial")
    try:
        dump = scratch / DUMP_MEMBER
        with open(dump, "wb") as stream:
            result = postgres.run("pg_dump", "--format=custom", *EXCLUDED, "--dbname", postgres.database,
                                  stdout=stream, stderr=subprocess.PIPE, timeout=None)
        if result.returncode != 0:
            raise BackupError(f"{postgres.where}: pg_dump failed: {last_line(result.stderr)}")
        dump_entry = {"path": DUMP_MEMBER, "size": dump.stat().st_size, "sha256": _file_sha256(dump)}

        listed = list(bucket.objects())
        total = dump_entry["size"] + sum(item["Size"] for item in listed)
        counter = ByteProgress(progress, total, "backup")
        counter(dump_entry["size"])
        entries, skipped = [], []
        # The archive holds the whole database and every artifact: 0600 from its first byte.
        with atomic_file(output, temporary=partial) as file, _compressor(file, output) as sink, tarfile.open(
            fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT
        ) as archive:
            member = tarfile.TarInfo(DUMP_MEMBER)
            member.size, member.mode = dump_entry["size"], 0o600
            with open(dump, "rb") as stream:
                archive.addfile(member, stream)
            for item in listed:
                entry = _add_object(archive, bucket, item["Key"], counter)
                if entry is None:
                    skipped.append(item["Key"])
                else:
                    entries.append(entry)
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "created": created,
                "mlflow": {"version": mlflow_version, "schema_revision": revision},
                "postgres": {"version": postgres_version, "database": postgres.database, "dump": dump_entry},
                "bucket": {"name": bucket.name, "count": len(entries), "bytes": sum(e["size"] for e in entries),
                           "objects": entries},
            }
            data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
            member = tarfile.TarInfo(MANIFEST_MEMBER)
            member.size, member.mode = len(data), 0o644
            archive.addfile(member, io.BytesIO(data))
            archive.close()
            if sink is not file:
                sink.close()  # writes the gzip trailer
        counter.finish()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BackupResult(len(entries), manifest["bucket"]["bytes"], dump_entry["size"], skipped, revision)


def _add_object(archive: tarfile.TarFile, bucket: Bucket, key: str, counter: ByteProgress) -> dict | None:
    answer = bucket.open(key)
    if answer is None:
        return None  # deleted since the listing
    body = answer["Body"]
    member = tarfile.TarInfo(OBJECTS + key)
    member.size, member.mode = int(answer["ContentLength"]), 0o600
    member.mtime = int(answer["LastModified"].timestamp()) if answer.get("LastModified") else 0
    member.pax_headers = {KEY_HEADER: key}
    reader = HashingReader(body, counter)
    try:
        archive.addfile(member, reader)
    finally:
        body.close()
    if reader.size != member.size:
        raise BackupError(f"S3 at {bucket.endpoint}: {key} ended after {reader.size} of {member.size} bytes")
    return {"key": key, "size": member.size, "sha256": reader.sha256}


# -- reading an archive ----------------------------------------------------------------

def _open_archive(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise UserError(f"--input: {path} does not exist or is not a file")
    try:
        return tarfile.open(path, "r|*")
    except tarfile.ReadError:
        raise BackupError(f"--input: {path} is not a backup archive (not a tar or tar.gz file)") from None


def _member_key(member: tarfile.TarInfo) -> str | None:
    if member.name == DUMP_MEMBER:
        return None
    return member.pax_headers.get(KEY_HEADER, member.name[len(OBJECTS):])


@contextlib.contextmanager
def _reading(path: Path):
    """Damage found while reading becomes one BackupError line."""
    try:
        yield
    except (tarfile.ReadError, EOFError, zlib.error, OSError) as error:
        if isinstance(error, BackupError):
            raise
        raise BackupError(f"--input: {path} is truncated or damaged ({error}); nothing was restored") from None


def _members(path: Path) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    """Each member with a stream of its bytes; use it inside _reading(path)."""
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
    manifest = None
    counter = ByteProgress(progress, path.stat().st_size if path.is_file() else 1, "verify")
    with _reading(path):
        for member, stream in _members(path):
            if member.name == MANIFEST_MEMBER:
                try:
                    manifest = json.loads(stream.read())
                except ValueError:
                    raise BackupError(f"--input: {path}: manifest.json is not valid JSON") from None
                continue
            if manifest is not None:
                raise BackupError(f"--input: {path}: {member.name!r} follows the manifest; not a backup archive")
            if member.name != DUMP_MEMBER and not member.name.startswith(OBJECTS):
                raise BackupError(f"--input: {path}: unexpected member {member.name!r}; not a backup archive")
            reader = HashingReader(stream, counter)
            for _ in iter(lambda: reader.read(CHUNK), b""):
                pass
            seen[_member_key(member)] = (reader.size, reader.sha256)
    if manifest is None:
        raise BackupError(f"--input: {path} is truncated or damaged: it ends before its manifest; "
                          "nothing was restored")
    manifest = _check_manifest(path, manifest)
    dump = manifest["postgres"]["dump"]
    if seen.pop(None, None) != (dump["size"], dump["sha256"]):
        raise BackupError(f"--input: {path}: the database dump does not match its checksum; the archive is damaged")
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


# -- restore ---------------------------------------------------------------------------

# Empties the MLflow database as its own role, in the restore's transaction.
DROP_EVERYTHING = """
DO $$
DECLARE item record;
BEGIN
  FOR item IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f') LOOP
    EXECUTE format('DROP TABLE IF EXISTS public.%I CASCADE', item.relname);
  END LOOP;
  FOR item IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm', 'S') LOOP
    EXECUTE format(CASE item.relkind WHEN 'v' THEN 'DROP VIEW IF EXISTS public.%I CASCADE'
                   WHEN 'm' THEN 'DROP MATERIALIZED VIEW IF EXISTS public.%I CASCADE'
                   ELSE 'DROP SEQUENCE IF EXISTS public.%I CASCADE' END, item.relname);
  END LOOP;
  FOR item IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
              WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c')
                AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c') LOOP
    EXECUTE format('DROP TYPE IF EXISTS public.%I CASCADE', item.typname);
  END LOOP;
  -- 3.x keeps trigger functions beside its tables.
  FOR item IN SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS arguments
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' LOOP
    EXECUTE format('DROP ROUTINE IF EXISTS public.%I(%s) CASCADE', item.proname, item.arguments);
  END LOOP;
END $$;
"""


@dataclass
class RestorePlan:
    manifest: dict
    database_empty: bool
    bucket_empty: bool


def plan_restore(path: Path, postgres: PostgresTools, bucket: Bucket, force: bool,
                 schema_check: Callable[[str], str] | None, progress: Progress = None) -> RestorePlan:
    """Everything that can refuse, before anything is changed."""
    manifest = verify_archive(path, progress)
    revision = manifest["mlflow"].get("schema_revision")
    if revision and schema_check is not None:
        verdict = schema_check(revision)
        if verdict == "newer":
            raise BackupError(
                f"--input: the archive's schema revision {revision} (MLflow {manifest['mlflow']['version']}) is newer "
                "than the pinned MLflow knows, and MLflow cannot downgrade; set MLFLOW_VERSION to "
                f"{manifest['mlflow']['version']} or later, run nself build, then restore")
    database_empty = postgres.relation_count() == 0
    bucket_empty = bucket.is_empty()
    if not force and not (database_empty and bucket_empty):
        occupied = " and ".join(
            name for name, empty in ((f"database {postgres.database}", database_empty),
                                     (f"bucket {bucket.name}", bucket_empty)) if not empty)
        raise BackupError(f"refusing to overwrite the non-empty {occupied}; nothing was changed. "
                          "Pass --force to replace its contents with the archive's")
    return RestorePlan(manifest, database_empty, bucket_empty)


def restore_backup(path: Path, plan: RestorePlan, postgres: PostgresTools, bucket: Bucket,
                   progress: Progress = None) -> dict:
    """Restore the verified archive: the database in one transaction, then the objects."""
    sessions = postgres.other_sessions()
    if sessions:
        raise BackupError(f"{postgres.where}: {sessions} other session(s) use database {postgres.database}; "
                          "stop mlflow and mlflow-gc first (nself stop mlflow); nothing was changed")
    manifest = plan.manifest
    expected = {entry["key"]: entry for entry in manifest["bucket"]["objects"]}
    counter = ByteProgress(progress, manifest["postgres"]["dump"]["size"] + manifest["bucket"]["bytes"], "restore")
    with _reading(path):
        for member, stream in _members(path):
            if member.name == DUMP_MEMBER:
                _restore_database(postgres, stream, counter)
            elif member.name != MANIFEST_MEMBER:
                key = _member_key(member)
                reader = HashingReader(stream, counter)
                try:
                    bucket.upload(key, reader)
                except BackupError as error:
                    raise BackupError(f"{error.message}; the database is restored but not every object: "
                                      "run restore again with --force to finish") from None
                if (reader.size, reader.sha256) != (expected[key]["size"], expected[key]["sha256"]):
                    raise BackupError(f"--input: object {key!r} changed since it was verified; "
                                      "run restore again with --force")
    extras = [item["Key"] for item in bucket.objects() if item["Key"] not in expected]
    if extras:
        bucket.delete(extras)
    counter.finish()
    return check_restored(manifest, postgres, bucket)


def _restore_database(postgres: PostgresTools, stream: IO[bytes], counter: ByteProgress) -> None:
    """pg_restore turns the dump into SQL; psql runs it as the MLflow role, after the wipe, in one transaction.

    The transaction is opened with BEGIN and closed with a COMMIT written only
    once pg_restore has succeeded. Whatever else happens (an error, a
    damaged stream, this process killed), psql reaches the end of its input
    without COMMIT, or is killed, and PostgreSQL rolls everything back: the
    database stays as it was.
    """
    psql = postgres.popen("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", postgres.database, "-f", "-",
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    restore = None
    try:
        psql.stdin.write(f"BEGIN;\nSET ROLE {_identifier(postgres.role)};\n{DROP_EVERYTHING}\n".encode())
        psql.stdin.flush()
        restore = postgres.popen("pg_restore", "--no-owner", "--no-privileges", "--file", "-",
                                 stdin=subprocess.PIPE, stdout=psql.stdin, stderr=subprocess.PIPE)
        try:
            reader = HashingReader(stream, counter)
            for block in iter(lambda: reader.read(CHUNK), b""):
                restore.stdin.write(block)
            restore.stdin.close()
        except BrokenPipeError:
            pass  # pg_restore stopped early: its exit code and psql's say why
        restore_errors = restore.stderr.read().decode(errors="replace")
        restore.wait()
        if restore.returncode != 0:
            if psql.poll() is None:
                raise BackupError(f"{postgres.where}: pg_restore failed (exit code {restore.returncode}): "
                                  f"{last_line(restore_errors)}; the database is unchanged")
            # psql stopped at an error first, and pg_restore died of the closed pipe.
            raise BackupError(f"{postgres.where}: restoring the dump failed: "
                              f"{last_line(psql.stderr.read().decode(errors='replace'))}; the database is unchanged")
        try:
            psql.stdin.write(b"COMMIT;\n")
            psql.stdin.close()
            commit_sent = True
        except BrokenPipeError:
            commit_sent = False  # psql ended before the COMMIT: nothing was committed
        psql_errors = psql.stderr.read().decode(errors="replace")
        psql.wait()
        if psql.returncode != 0 or not commit_sent:
            raise BackupError(f"{postgres.where}: restoring the dump failed: {last_line(psql_errors)}; "
                              "the database is unchanged")
    except BaseException:
        for process in (restore, psql):
            if process is not None and process.poll() is None:
                process.kill()  # a dropped session rolls its transaction back
                process.wait()
        raise


def check_restored(manifest: dict, postgres: PostgresTools, bucket: Bucket) -> dict:
    """The restored state against the manifest: schema revision, keys and sizes."""
    revision = postgres.schema_revision()
    if revision != manifest["mlflow"]["schema_revision"]:
        raise BackupError(f"{postgres.where}: after the restore the schema is at {revision}, "
                          f"not {manifest['mlflow']['schema_revision']}")
    found = {item["Key"]: item["Size"] for item in bucket.objects()}
    wanted = {entry["key"]: entry["size"] for entry in manifest["bucket"]["objects"]}
    differing = sorted(key for key in set(found) | set(wanted) if found.get(key) != wanted.get(key))
    if differing:
        raise BackupError(f"S3 at {bucket.endpoint}: after the restore, object {differing[0]!r} "
                          f"({len(differing)} in all) differs from the manifest")
    return {"objects": len(wanted), "bytes": sum(wanted.values()), "schema_revision": revision}


# -- plain SQL dump ----------------------------------------------------------------------

def dump_sql(postgres: PostgresTools, output: Path) -> int:
    """The seed's `nself db dump`: plain SQL, written atomically."""
    output = output.resolve()
    if not output.parent.is_dir():
        raise UserError(f"--output: the directory {output.parent} does not exist")
    partial = output.with_name(output.name + ".partial")
    # Plain SQL of every run: 0600 from its first byte, whatever the umask.
    with atomic_file(output, temporary=partial) as stream:
        result = postgres.run("pg_dump", "--format=plain", "--no-owner", "--no-privileges", *EXCLUDED,
                              "--dbname", postgres.database, stdout=stream, stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise BackupError(f"{postgres.where}: pg_dump failed: {last_line(result.stderr)}")
    return output.stat().st_size
