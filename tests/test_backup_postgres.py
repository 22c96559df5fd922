"""Backup and restore against a real PostgreSQL 15 and a real S3 server, without MLflow.

The archives are private: with a umask of 0, the backup archive and the
db-dump file are 0600 while they are written and once they are complete.

The database is not MLflow's: it is made to be hard on the restore. Its
CHECK constraint calls a function that raises a 1000-character WARNING for
every row, so restoring its dump makes psql write about 2 MB to stderr,
far more than a pipe holds. Setting `nself_test.refuse_row` on the target
database makes the same function raise an ERROR at that row instead, after
the warnings. The live MLflow round trip is in tests/e2e/test_backup.py.

Every command runs as users run it, `python -m generator service … --direct`,
in a session of its own with a deadline: a restore that blocks is killed and
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import psycopg
import pytest

from service.backup import PostgresTools, create_backup, dump_sql, s3_bucket
from tests.conftest import E2E_PROJECT, POSTGRES_ADMIN_PASSWORD, ROOT, require_tool
from tests.services import PG_BIN, PostgresServer

BUCKET = "backup-postgres-test"
ROWS = 2000
TAIL_ROWS = 50000
OBJECTS = {"1/run/artifacts/model.pkl": b"model bytes", "1/run/artifacts/big.bin": os.urandom(3 << 20)}
DEADLINE = 60  # seconds; a restore here takes a few

NOISY_DATABASE = f"""
CREATE FUNCTION public.noisy(i integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('nself_test.refuse_row', true) = i::text THEN
    RAISE EXCEPTION 'row % refused by the check', i;
  END IF;
  RAISE WARNING '%', repeat('w', 1000);
  RETURN true;
END $$;
CREATE TABLE public.a_noisy (i integer CHECK (public.noisy(i)));
INSERT INTO public.a_noisy SELECT generate_series(1, {ROWS});
CREATE TABLE public.b_tail (line text);
INSERT INTO public.b_tail SELECT md5(i::text) FROM generate_series(1, {TAIL_ROWS}) i;
"""


@pytest.fixture(scope="module")
def cluster():
    """A cluster of its own, with examples/prod's admin password, the mlflow role and database."""
    require_tool(PG_BIN / "initdb", "PostgreSQL 15 server binaries")
    server = PostgresServer(admin_password=POSTGRES_ADMIN_PASSWORD).initdb().start()
    try:
        with psycopg.connect(**server.dsn(), autocommit=True) as connection:
            connection.execute("CREATE ROLE mlflow")
            connection.execute("CREATE DATABASE mlflow OWNER mlflow")
        with connect(server) as connection:
            connection.execute("SET ROLE mlflow")
            connection.execute(NOISY_DATABASE)
        yield server
    finally:
        server.remove()


def connect(server: PostgresServer, dbname: str = "mlflow") -> psycopg.Connection:
    connection = psycopg.connect(**server.dsn(dbname=dbname), autocommit=True)
    connection.add_notice_handler(lambda notice: None)  # the 2000 warnings of every insert
    return connection


@pytest.fixture(scope="module")
def bucket(s3_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                      aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key)
    if BUCKET not in [found["Name"] for found in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=item["Key"])
    for key, data in OBJECTS.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return s3


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """examples/prod with a bucket of its own; nothing else of it is needed with --direct."""
    copy = tmp_path_factory.mktemp("backup-postgres") / "project"
    shutil.copytree(E2E_PROJECT, copy)
    with open(copy / ".env", "a") as env:
        env.write(f"MLFLOW_ARTIFACTS_BUCKET={BUCKET}\n")
    return copy


def service(cluster: PostgresServer, s3_server, project: Path, action: str, *args: str | Path,
            timeout: float = DEADLINE) -> subprocess.CompletedProcess:
    """`python -m generator service ACTION --direct …`, killed with its tools when the deadline passes."""
    argv = [sys.executable, "-m", "generator", "service", action, *map(str, args), "--project-dir", str(project),
            "--direct", "--db-host", "127.0.0.1", "--db-port", str(cluster.port), "--pg-bindir", str(PG_BIN)]
    if action != "db-dump":
        argv += ["--s3-endpoint", s3_server.endpoint]
    if action == "restore":
        # The test database has no alembic_version, so no schema revision is
        # ever checked; --direct still wants a Python for it.
        argv += ["--mlflow-python", sys.executable]
    process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the command, pg_restore and psql
        process.communicate()
        pytest.fail(f"`service {action}` did not finish within {timeout} s: it is blocked")
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def database_state(cluster: PostgresServer) -> dict:
    with connect(cluster) as connection:
        tables = {row[0]: row[1] for row in connection.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")}
        counts = {table: connection.execute(f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) "
                                            f"FROM public.{table} t").fetchone() for table in tables}
    return {"tables": tables, "rows": counts}


@pytest.fixture(scope="module")
def archive(cluster, s3_server, bucket, project, tmp_path_factory) -> dict:
    """A backup of the noisy database, and the database as it was dumped."""
    path = tmp_path_factory.mktemp("archive") / "noisy.tar"
    result = service(cluster, s3_server, project, "backup", "--output", path)
    assert result.returncode == 0, result.stderr
    return {"path": path, "state": database_state(cluster)}


def test_restoring_the_dump_writes_more_than_a_pipe_holds_to_stderr(cluster, archive, tmp_path):
    """What the restore tests rely on, measured: psql's stderr for this dump is over 1 MiB."""
    with tarfile.open(archive["path"]) as opened:
        dump = opened.extractfile("database.pgdump").read()
    sql = subprocess.run([PG_BIN / "pg_restore", "--no-owner", "--no-privileges", "--file", "-"], input=dump,
                         capture_output=True, check=True, timeout=60).stdout
    with psycopg.connect(**cluster.dsn(), autocommit=True) as connection:
        connection.execute("CREATE DATABASE stderr_probe OWNER mlflow")
    try:
        load = subprocess.run([PG_BIN / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                               "-p", str(cluster.port), "-U", "postgres", "-d", "stderr_probe", "-f", "-"],
                              input=sql, capture_output=True, timeout=120,
                              env={**os.environ, "PGPASSWORD": cluster.admin_password})
    finally:
        with psycopg.connect(**cluster.dsn(), autocommit=True) as connection:
            connection.execute("DROP DATABASE stderr_probe")
    assert load.returncode == 0, load.stderr[-2000:]
    assert load.stderr.count(b"WARNING:") == ROWS and len(load.stderr) > 1 << 20


def changed_since_the_backup(cluster: PostgresServer) -> dict:
    with connect(cluster) as connection:
        connection.execute("SET ROLE mlflow")
        connection.execute("INSERT INTO public.a_noisy VALUES (-1)")
        connection.execute("CREATE TABLE IF NOT EXISTS public.made_later (note text)")
        connection.execute("INSERT INTO public.made_later VALUES ('after the backup')")
    return database_state(cluster)


def test_a_restore_that_makes_megabytes_of_warnings_completes(cluster, s3_server, bucket, project, archive):
    changed = changed_since_the_backup(cluster)
    assert changed != archive["state"]
    result = service(cluster, s3_server, project, "restore", "--input", archive["path"], "--force")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checked against the manifest" in result.stdout
    restored = database_state(cluster)
    assert restored == archive["state"]
    assert restored["rows"]["a_noisy"][0] == ROWS and restored["rows"]["b_tail"][0] == TAIL_ROWS
    assert set(restored["tables"].values()) == {"mlflow"}


def with_dump(archive: Path, target: Path, dump: bytes) -> Path:
    """A copy of the archive with another dump, and a manifest that matches it."""
    with tarfile.open(archive) as old, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as new:
        manifest = json.load(old.extractfile("manifest.json"))
        for member in old:
            data = old.extractfile(member).read()
            if member.name == "database.pgdump":
                data = dump
                manifest["postgres"]["dump"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
            elif member.name == "manifest.json":
                data = json.dumps(manifest).encode()
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
    return target


def refused(result: subprocess.CompletedProcess) -> str:
    """Exit 1 with one line on stderr and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    return result.stderr.strip()


def test_psql_stopping_after_megabytes_of_warnings_changes_nothing(cluster, s3_server, bucket, project, archive):
    """The last row is refused after 2 MB of warnings: psql's error line is reported, and the wipe rolled back."""
    before = changed_since_the_backup(cluster)
    with psycopg.connect(**cluster.dsn(), autocommit=True) as connection:
        connection.execute(f"ALTER DATABASE mlflow SET nself_test.refuse_row = '{ROWS}'")
    try:
        message = refused(service(cluster, s3_server, project, "restore", "--input", archive["path"], "--force"))
    finally:
        with psycopg.connect(**cluster.dsn(), autocommit=True) as connection:
            connection.execute("ALTER DATABASE mlflow RESET nself_test.refuse_row")
    assert f"restoring the dump failed: psql:<stdin>:" in message
    assert f"ERROR:  row {ROWS} refused by the check; the database is unchanged" in message
    assert database_state(cluster) == before


def test_pg_restore_stopping_after_megabytes_of_warnings_changes_nothing(cluster, s3_server, bucket, project,
                                                                        archive, tmp_path):
    """The dump ends in the middle of its last table, after every warning: pg_restore's error, nothing changed."""
    with tarfile.open(archive["path"]) as opened:
        dump = opened.extractfile("database.pgdump").read()
    truncated = with_dump(archive["path"], tmp_path / "truncated.tar", dump[: len(dump) // 2])
    before = changed_since_the_backup(cluster)
    message = refused(service(cluster, s3_server, project, "restore", "--input", truncated, "--force"))
    assert ("pg_restore failed (exit code 1): pg_restore: error: could not read from input file: end of file; "
            "the database is unchanged") in message
    assert database_state(cluster) == before


# -- private archives -------------------------------------------------------------------

def direct_tools(cluster: PostgresServer, bindir: Path = PG_BIN) -> PostgresTools:
    """What `--direct` builds: local tools, the password in the environment."""
    return PostgresTools("mlflow", "mlflow", (), ("-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres"),
                         {"PGPASSWORD": cluster.admin_password}, bindir, where=f"PostgreSQL at 127.0.0.1:{cluster.port}")


@pytest.fixture
def open_umask(tmp_path):
    """umask 0: a file made without an explicit mode is readable and writable by everyone."""
    previous = os.umask(0)
    try:
        probe = tmp_path / "probe"
        probe.touch()
        assert stat.S_IMODE(probe.stat().st_mode) == 0o666
        probe.unlink()
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_backup_is_private_while_it_is_written_and_when_done(cluster, s3_server, bucket, tmp_path, open_umask):
    output = tmp_path / "mlflow-backup.tar.gz"
    partial = tmp_path / "mlflow-backup.tar.gz.partial"
    seen = []

    def progress(done: int, total: int, label: str) -> None:
        # Called about once a MiB while the objects are copied into the partial file.
        if partial.exists():
            seen.append(mode(partial))

    s3 = s3_bucket(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, BUCKET)
    create_backup(direct_tools(cluster), s3, output, "2.9.2", "2026-01-01T00:00:00Z", progress)
    assert len(seen) >= 2 and set(seen) == {0o600}, [oct(found) for found in seen]
    assert mode(output) == 0o600 and not partial.exists()
    with tarfile.open(output) as opened:
        assert opened.getnames()[-1] == "manifest.json"


PG_DUMP_SPY = """\
#!{python}
# pg_dump, after noting which file its stdout is and that file's mode.
import os, stat, sys
with open({log!r}, "a") as log:
    log.write(os.readlink("/proc/self/fd/1") + " " + oct(stat.S_IMODE(os.fstat(1).st_mode)) + "\\n")
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""


def test_a_db_dump_is_private_while_it_is_written_and_when_done(cluster, tmp_path, open_umask):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "pg_dump.log"
    spy = bindir / "pg_dump"
    spy.write_text(PG_DUMP_SPY.format(python=sys.executable, log=str(log), real=str(PG_BIN / "pg_dump")))
    spy.chmod(0o755)
    output = tmp_path / "mlflow-backup.sql"
    size = dump_sql(direct_tools(cluster, bindir), output)
    assert log.read_text().split() == [f"{output}.partial", "0o600"]
    assert mode(output) == 0o600 and output.stat().st_size == size
    assert output.read_text().startswith("--\n-- PostgreSQL database dump")
