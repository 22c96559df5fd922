"""Backup and restore of the MLflow service, against the live stacks.

The source is the shared stack with the seed's workload. The target is a
second stack from the same generated files, with a PostgreSQL and an S3
server of its own, provisioned by init. Every command runs as users run it,
`python -m generator service …`, here in --direct mode (local pg_dump and
psql, boto3) because no Docker engine runs here; the docker compose argv of
the default mode is covered in tests/test_service_commands.py.

The tests share the stacks and run in file order.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import psycopg
import pytest

from generator.envfiles import read_project_env
from tests.conftest import run_generator
from tests.e2e.conftest import fresh_servers
from tests.e2e.stack import CLIENTS, Stack
from tests.e2e.test_stack import TABLES, s3_client
from tests.services import PG_BIN
from tests.test_init import outcomes

BUCKET = "mlflow-artifacts"


def service(stack: Stack, project: Path, action: str, *args: str | Path) -> subprocess.CompletedProcess:
    """`python -m generator service ACTION` in --direct mode against one stack."""
    extra = ["--mlflow-python", stack.venv / "bin/python"] if action == "restore" else []
    database = ["--db-host", "127.0.0.1", "--db-port", str(stack.pg.port), "--pg-bindir", PG_BIN]
    s3 = ["--s3-endpoint", stack.s3.endpoint] if action != "db-dump" else []
    return run_generator("service", action, *args, "--project-dir", project, "--direct", *database, *s3, *extra)


def succeeded(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess) -> str:
    """Exit 1 with one line on stderr and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def read_manifest(archive: Path) -> dict:
    with tarfile.open(archive, "r:*") as opened:
        return json.load(opened.extractfile("manifest.json"))


def bucket_state(stack: Stack) -> dict[str, str]:
    """Every object of the bucket with the sha256 of its bytes."""
    s3 = s3_client(stack)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {
        item["Key"]: hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()).hexdigest()
        for page in pages for item in page.get("Contents", [])
    }


def table_rows(stack: Stack) -> dict[str, int]:
    with psycopg.connect(**stack.pg.dsn(dbname="mlflow"), autocommit=True) as connection:
        present = {row[0] for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in TABLES if table in present}


def state(stack: Stack) -> tuple[dict, dict]:
    return table_rows(stack), bucket_state(stack)


def wipe(stack: Stack) -> None:
    """What a lost volume leaves: an empty database (still owned by the role) and an empty bucket."""
    with psycopg.connect(**stack.pg.dsn(dbname="mlflow"), autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
    s3 = s3_client(stack)
    for key in bucket_state(stack):
        s3.delete_object(Bucket=BUCKET, Key=key)


@pytest.fixture(scope="module")
def source(stack: Stack, seeded: dict, e2e_project: Path, tmp_path_factory) -> dict:
    """A backup of the seeded shared stack, and what the server held when it was taken."""
    run_ids = [seeded["tracking"]["run_id"], seeded["tracking"]["loop_run_id"]]
    archive = tmp_path_factory.mktemp("backup") / "mlflow-backup.tar.gz"
    started = time.monotonic()
    output = succeeded(service(stack, e2e_project, "backup", "--output", archive))
    seconds = time.monotonic() - started
    assert f"backup written to {archive}" in output
    return {"archive": archive, "run_ids": run_ids, "seconds": seconds,
            "inspected": stack.run_client("inspect_runs.py", *run_ids), "state": state(stack)}


@pytest.fixture(scope="module")
def target(e2e_project: Path, e2e_out: Path, image_python_venv: Path):
    """A second stack from the same files: provisioned by init, empty, MLflow not started yet."""
    postgres, s3 = fresh_servers()
    second = Stack(e2e_out, read_project_env(e2e_project).values, postgres, s3, image_python_venv)
    try:
        init = second.run_init()
        assert init.returncode == 0, init.stdout + init.stderr
        yield second
    finally:
        second.stop()
        s3.stop()
        postgres.remove()


def test_the_archive_holds_the_dump_every_object_and_a_manifest(stack, source):
    manifest = read_manifest(source["archive"])
    assert manifest["format"] == "nself-mlflow-backup" and manifest["format_version"] == 1
    assert manifest["mlflow"]["version"] == ".".join(map(str, stack.version))
    with psycopg.connect(**stack.pg.dsn(dbname="mlflow"), autocommit=True) as connection:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        server_version = connection.execute("SHOW server_version").fetchone()[0]
    assert manifest["mlflow"]["schema_revision"] == revision
    assert manifest["postgres"]["version"] == server_version and manifest["postgres"]["database"] == "mlflow"
    objects = {entry["key"]: entry["sha256"] for entry in manifest["bucket"]["objects"]}
    assert manifest["bucket"]["name"] == BUCKET and objects == source["state"][1]
    with tarfile.open(source["archive"], "r:gz") as opened:
        names = opened.getnames()
        dump = opened.extractfile("database.pgdump").read()
    assert names[0] == "database.pgdump" and names[-1] == "manifest.json"
    assert dump.startswith(b"PGDMP") and hashlib.sha256(dump).hexdigest() == manifest["postgres"]["dump"]["sha256"]
    assert not list(source["archive"].parent.glob("*.partial")), "the temp file is renamed"


def test_restore_after_losing_the_database_and_the_bucket(stack, seeded, source, e2e_project):
    stack.stop_mlflow()
    wipe(stack)
    assert state(stack) == ({}, {})
    output = succeeded(service(stack, e2e_project, "restore", "--input", source["archive"]))
    assert "checked against the manifest" in output
    init = stack.run_init()
    assert init.returncode == 0 and set(outcomes(init).values()) == {"unchanged"}, init.stdout
    stack.start_mlflow()

    assert state(stack) == source["state"]
    assert stack.run_client("inspect_runs.py", *source["run_ids"]) == source["inspected"]
    loaded = stack.run_client("load_production_model.py", seeded["inputs_file"])
    assert loaded["predictions"] == seeded["tracking"]["predictions"]
    with psycopg.connect(**stack.pg.dsn(dbname="mlflow"), autocommit=True) as connection:
        owners = {row[0] for row in connection.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
    assert owners == {"mlflow"}


def test_restore_into_a_fresh_stack(target, seeded, source, e2e_project):
    succeeded(service(target, e2e_project, "restore", "--input", source["archive"]))
    target.start_mlflow()
    target.start_nginx()
    assert state(target) == source["state"]
    assert target.run_client("inspect_runs.py", *source["run_ids"]) == source["inspected"]
    loaded = target.run_client("load_production_model.py", seeded["inputs_file"])
    assert loaded["predictions"] == seeded["tracking"]["predictions"]


def test_a_restore_over_a_non_empty_stack_is_refused_without_force(target, source, e2e_project):
    before = state(target)
    message = refused(service(target, e2e_project, "restore", "--input", source["archive"]))
    assert "refusing to overwrite the non-empty database mlflow and bucket mlflow-artifacts" in message
    assert "--force" in message and state(target) == before


def corrupted_copy(archive: Path, directory: Path) -> tuple[Path, str]:
    """The archive, uncompressed, with one byte changed in the data of one object."""
    plain = directory / "corrupted.tar"
    with gzip.open(archive) as source, open(plain, "wb") as copy:
        shutil.copyfileobj(source, copy)
    with tarfile.open(plain) as opened:
        member = next(m for m in opened.getmembers() if m.name.startswith("objects/") and m.size > 0)
    with open(plain, "r+b") as handle:
        handle.seek(member.offset_data)
        byte = handle.read(1)
        handle.seek(member.offset_data)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return plain, member.pax_headers["NSELF.key"]


def test_a_corrupted_object_is_named_and_nothing_is_changed(target, source, e2e_project, tmp_path):
    archive, key = corrupted_copy(source["archive"], tmp_path)
    target.stop_mlflow()
    before = state(target)
    message = refused(service(target, e2e_project, "restore", "--input", archive, "--force"))
    assert f"object {key!r} does not match its checksum" in message
    assert state(target) == before


def test_a_newer_schema_is_refused(target, source, e2e_project, tmp_path):
    """A revision the pinned MLflow does not know, as a newer MLflow writes it."""
    newer = rewritten(source["archive"], tmp_path / "newer.tar", revision="ffffffffffff")
    before = state(target)
    message = refused(service(target, e2e_project, "restore", "--input", newer, "--force"))
    assert "schema revision ffffffffffff" in message and "MLflow cannot downgrade" in message
    assert state(target) == before


def rewritten(archive: Path, target: Path, dump: bytes | None = None, revision: str | None = None) -> Path:
    """A copy of the archive with another dump or schema revision, and a manifest that matches it."""
    with tarfile.open(archive, "r:gz") as old, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as new:
        manifest = json.load(old.extractfile("manifest.json"))
        for member in old:
            data = old.extractfile(member).read()
            if member.name == "database.pgdump" and dump is not None:
                data = dump
                manifest["postgres"]["dump"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
            if member.name == "manifest.json":
                if revision is not None:
                    manifest["mlflow"]["schema_revision"] = revision
                data = json.dumps(manifest).encode()
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
    return target


def test_a_dump_that_fails_half_way_changes_nothing(target, source, e2e_project, tmp_path):
    """pg_restore stops in the middle of the data: the wipe and the half restore are rolled back."""
    with tarfile.open(source["archive"], "r:gz") as opened:
        dump = opened.extractfile("database.pgdump").read()
    archive = rewritten(source["archive"], tmp_path / "half.tar", dump=dump[: len(dump) * 3 // 5])
    target.stop_mlflow()
    before = state(target)
    message = refused(service(target, e2e_project, "restore", "--input", archive, "--force"))
    assert "the database is unchanged" in message
    assert state(target) == before


@pytest.mark.parametrize("damage", ["truncated", "not-an-archive", "empty"])
def test_a_damaged_or_foreign_file_is_refused(target, source, e2e_project, tmp_path, damage):
    bad = tmp_path / "bad.tar.gz"
    data = source["archive"].read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "not-an-archive": b"\x89PNG\r\n\x1a\n" + b"x" * 4000,
                     "empty": b""}[damage])
    before = state(target)
    message = refused(service(target, e2e_project, "restore", "--input", bad, "--force"))
    expected = "is truncated or damaged" if damage == "truncated" else "is not a backup archive"
    assert expected in message
    assert state(target) == before


def test_a_backup_taken_during_writes_restores_what_it_lists(stack, target, source, e2e_project, tmp_path):
    stop_file = tmp_path / "stop"
    workdir = tmp_path / "client"
    workdir.mkdir()
    writer = subprocess.Popen([stack.venv / "bin/python", CLIENTS / "keep_logging.py", stop_file], cwd=workdir,
                              env=stack.client_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        started = json.loads(writer.stdout.readline())["started"]
        time.sleep(2)
        archive = tmp_path / "during-writes.tar"
        succeeded(service(stack, e2e_project, "backup", "--output", archive))
        time.sleep(1)
    finally:
        stop_file.touch()
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    written = json.loads(out.strip().splitlines()[-1])
    assert written["run_id"] == started and written["steps"] > 0

    manifest = read_manifest(archive)
    target.stop_mlflow()
    succeeded(service(target, e2e_project, "restore", "--input", archive, "--force"))
    target.start_mlflow()
    restored = bucket_state(target)
    assert restored == {entry["key"]: entry["sha256"] for entry in manifest["bucket"]["objects"]}
    # The runs finished before the backup read back whole; the live run reads
    # back as far as the dump saw it.
    assert target.run_client("inspect_runs.py", *source["run_ids"]) == source["inspected"]
    live = target.run_client("inspect_runs.py", started)["runs"][started]
    steps = [step for step, _ in live["histories"]["live"]]
    assert steps == list(range(len(steps))) and 0 < len(steps) <= written["steps"]
    assert all(sha == restored[key] for key, sha in restored.items())


def test_db_dump_writes_plain_sql_that_psql_restores(stack, source, e2e_project, tmp_path):
    dump = tmp_path / "mlflow-backup.sql"
    output = succeeded(service(stack, e2e_project, "db-dump", "--output", dump))
    assert f"dumped to {dump}" in output
    text = dump.read_text()
    assert "CREATE TABLE public.experiments" in text and "COPY public.runs" in text
    with psycopg.connect(**stack.pg.dsn(), autocommit=True) as connection:
        connection.execute("DROP DATABASE IF EXISTS mlflow_dump_check")
        connection.execute("CREATE DATABASE mlflow_dump_check")
    try:
        load = subprocess.run([PG_BIN / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                               "-p", str(stack.pg.port), "-U", "postgres", "-d", "mlflow_dump_check", "-f", dump],
                              env={"PGPASSWORD": stack.pg.admin_password}, capture_output=True, text=True)
        assert load.returncode == 0, load.stderr
        with psycopg.connect(**stack.pg.dsn(dbname="mlflow_dump_check"), autocommit=True) as copy:
            counts = {table: copy.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}
        assert counts == table_rows(stack)
    finally:
        with psycopg.connect(**stack.pg.dsn(), autocommit=True) as connection:
            connection.execute("DROP DATABASE IF EXISTS mlflow_dump_check")


def test_a_missing_archive_or_a_directory_is_bad_input(target, source, e2e_project, tmp_path):
    missing = service(target, e2e_project, "restore", "--input", tmp_path / "nope.tar")
    assert missing.returncode == 2 and f"--input: {tmp_path / 'nope.tar'} does not exist" in missing.stderr
    directory = service(target, e2e_project, "backup", "--output", tmp_path)
    assert directory.returncode == 2 and "is a directory; name the archive file" in directory.stderr
    assert "Traceback" not in missing.stderr + directory.stderr
