"""Backup and restore, step by step: what is read, checked and written, and in which order.

Consistency: the database is dumped first, in one snapshot; the objects are
listed and copied afterwards. Runs logged while the objects are copied are not
in the dump, and their objects, when copied, are harmless extras: the
restored server never refers to them. An object deleted between the listing
and its copy (gc) is left out of the manifest and reported.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from generator.artifacts.graphql import SCHEMA as GRAPHQL_SCHEMA
from generator.errors import UserError, last_line
from generator.fileio import atomic_file
from service.backup.archive import (
    AUTH_DUMP_MEMBER,
    DUMP_MEMBER,
    MANIFEST_MEMBER,
    ArchiveWriter,
    ByteProgress,
    HashingReader,
    Progress,
    file_sha256,
    member_key,
    members,
    new_manifest,
    reading,
    verify_archive,
    writing,
)
from service.backup.bucket import Bucket
from service.backup.errors import BackupError
from service.backup.postgres import PostgresTools, restore_database

# -- backup ------------------------------------------------------------------------
# The GraphQL views are made by mlflow-init from the generated files, not
# kept: restored, they would block the next migration of a stack that has
# them switched off, and clash with the schema init made on one that has them on.
EXCLUDED = ("--exclude-schema", GRAPHQL_SCHEMA)


@dataclass
class BackupResult:
    objects: int
    object_bytes: int
    dump_bytes: int
    skipped: list[str]
    schema_revision: str | None


def _dump(postgres: PostgresTools, target: Path, name: str) -> dict:
    with open(target, "wb") as stream:
        result = postgres.run("pg_dump", "--format=custom", *EXCLUDED, "--dbname", postgres.database,
                              stdout=stream, stderr=subprocess.PIPE, timeout=None)
    if result.returncode != 0:
        raise BackupError(f"{postgres.where}: pg_dump of {postgres.database} failed: {last_line(result.stderr)}")
    return {"path": name, "size": target.stat().st_size, "sha256": file_sha256(target)}


def create_backup(postgres: PostgresTools, bucket: Bucket, output: Path, mlflow_version: str, created: str,
                  progress: Progress = None, auth_postgres: PostgresTools | None = None) -> BackupResult:
    """Dump the database (and MLflow's users, when `auth_postgres` names their database), then copy every
    object, into `output`, atomically."""
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
        dump_entry = _dump(postgres, dump, DUMP_MEMBER)
        auth_dump = scratch / AUTH_DUMP_MEMBER
        auth_entry = _dump(auth_postgres, auth_dump, AUTH_DUMP_MEMBER) if auth_postgres is not None else None

        listed = list(bucket.objects())
        total = dump_entry["size"] + sum(item["Size"] for item in listed)
        counter = ByteProgress(progress, total, "backup")
        counter(dump_entry["size"])
        entries, skipped = [], []
        with writing(output, partial) as archive:
            archive.add_dump(dump, dump_entry["size"])
            if auth_entry is not None:
                archive.add_dump(auth_dump, auth_entry["size"], AUTH_DUMP_MEMBER)
            for item in listed:
                entry = _add_object(archive, bucket, item["Key"], counter)
                if entry is None:
                    skipped.append(item["Key"])
                else:
                    entries.append(entry)
            manifest = new_manifest(created, mlflow_version, revision, postgres_version, postgres.database,
                                    dump_entry, bucket.name, entries)
            if auth_entry is not None:
                manifest["auth"] = {"database": auth_postgres.database, "dump": auth_entry}
            archive.add_manifest(manifest)
        counter.finish()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BackupResult(len(entries), manifest["bucket"]["bytes"], dump_entry["size"], skipped, revision)


def _add_object(archive: ArchiveWriter, bucket: Bucket, key: str, counter: ByteProgress) -> dict | None:
    answer = bucket.open(key)
    if answer is None:
        return None  # deleted since the listing
    body = answer["Body"]
    size = int(answer["ContentLength"])
    mtime = int(answer["LastModified"].timestamp()) if answer.get("LastModified") else 0
    try:
        reader = archive.add_object(key, body, size, mtime, counter)
    finally:
        body.close()
    if reader.size != size:
        raise BackupError(f"S3 at {bucket.endpoint}: {key} ended after {reader.size} of {size} bytes")
    return {"key": key, "size": size, "sha256": reader.sha256}


# -- restore ---------------------------------------------------------------------------

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
                   progress: Progress = None, auth_postgres: PostgresTools | None = None) -> dict:
    """Restore the verified archive: the database in one transaction, MLflow's users (when the archive has them
    and `auth_postgres` names their database) in another, then the objects."""
    for tools in filter(None, (postgres, auth_postgres)):
        sessions = tools.other_sessions()
        if sessions:
            raise BackupError(f"{tools.where}: {sessions} other session(s) use database {tools.database}; "
                              "stop mlflow and mlflow-gc first (nself stop mlflow); nothing was changed")
    manifest = plan.manifest
    expected = {entry["key"]: entry for entry in manifest["bucket"]["objects"]}
    auth_size = (manifest.get("auth") or {}).get("dump", {}).get("size", 0) if auth_postgres is not None else 0
    counter = ByteProgress(progress, manifest["postgres"]["dump"]["size"] + auth_size + manifest["bucket"]["bytes"],
                           "restore")
    with reading(path):
        for member, stream in members(path):
            if member.name == DUMP_MEMBER:
                restore_database(postgres, stream, counter)
            elif member.name == AUTH_DUMP_MEMBER:
                if auth_postgres is not None:
                    restore_database(auth_postgres, stream, counter)
            elif member.name != MANIFEST_MEMBER:
                key = member_key(member)
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
