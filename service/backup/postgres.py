"""PostgreSQL's own tools on the MLflow database: pg_dump, pg_restore and psql."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from generator.errors import last_line
from service.backup.archive import CHUNK, ByteProgress, HashingReader
from service.backup.errors import BackupError


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


# -- restoring a dump ------------------------------------------------------------------

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


def restore_database(postgres: PostgresTools, stream: IO[bytes], counter: ByteProgress) -> None:
    """pg_restore turns the dump into SQL; psql runs it as the MLflow role, after the wipe, in one transaction.

    The transaction is opened with BEGIN and closed with a COMMIT written only
    once pg_restore has succeeded. Whatever else happens (an error, a
    damaged stream, this process killed), psql reaches the end of its input
    without COMMIT, or is killed, and PostgreSQL rolls everything back: the
    database stays as it was.

    Both stderr streams are read while the tools run, each by a thread of
    its own: a restore can print megabytes of NOTICE and WARNING lines (a
    DROP … CASCADE on a big schema, a noisy dump), and a tool blocked on a
    full stderr pipe would block the other two for ever.
    """
    psql = postgres.popen("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", postgres.database, "-f", "-",
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    psql_errors = StderrReader(psql.stderr)
    restore = restore_errors = None
    try:
        # A broken pipe means psql has already stopped (say, it could not
        # connect): pg_restore fails next, and psql's stderr says why.
        with contextlib.suppress(BrokenPipeError):
            psql.stdin.write(f"BEGIN;\nSET ROLE {_identifier(postgres.role)};\n{DROP_EVERYTHING}\n".encode())
            psql.stdin.flush()
        restore = postgres.popen("pg_restore", "--no-owner", "--no-privileges", "--file", "-",
                                 stdin=subprocess.PIPE, stdout=psql.stdin, stderr=subprocess.PIPE)
        restore_errors = StderrReader(restore.stderr)
        # A broken pipe means pg_restore stopped early: its exit code and psql's say why.
        with contextlib.suppress(BrokenPipeError):
            reader = HashingReader(stream, counter)
            for block in iter(lambda: reader.read(CHUNK), b""):
                restore.stdin.write(block)
            restore.stdin.close()
        restore.wait()
        if restore.returncode != 0:
            if restore.returncode == -signal.SIGPIPE:
                # psql stopped at an error first and closed the pipe: its reason is the one to report,
                # once it has ended (it may still be writing it).
                try:
                    psql.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            if psql.poll() is None:
                raise BackupError(f"{postgres.where}: pg_restore failed (exit code {restore.returncode}): "
                                  f"{restore_errors.reason()}; the database is unchanged")
            raise BackupError(f"{postgres.where}: restoring the dump failed: {psql_errors.reason()}; "
                              "the database is unchanged")
        try:
            psql.stdin.write(b"COMMIT;\n")
            psql.stdin.close()
            commit_sent = True
        except BrokenPipeError:
            commit_sent = False  # psql ended before the COMMIT: nothing was committed
        psql.wait()
        if psql.returncode != 0 or not commit_sent:
            raise BackupError(f"{postgres.where}: restoring the dump failed: {psql_errors.reason()}; "
                              "the database is unchanged")
    except BaseException:
        for process in (restore, psql):
            if process is not None and process.poll() is None:
                process.kill()  # a dropped session rolls its transaction back
                process.wait()
        raise
    finally:
        # The tools have ended (or were killed): their stderr is at its end.
        for errors in (restore_errors, psql_errors):
            if errors is not None:
                errors.join()


# psql: `psql:<stdin>:12: ERROR:  …`, `psql: error: connection … failed: FATAL:  …`;
# pg_restore: `pg_restore: error: …`. NOTICE, WARNING, CONTEXT and DETAIL lines are not errors.
_ERROR_LINE = re.compile(r"^(?:psql:[^ ]*:\d+: (?:ERROR|FATAL|PANIC):|[a-z_]+: error:)")


class StderrReader(threading.Thread):
    """Reads a tool's stderr to its end while the tool runs, keeping only what the error message needs.

    That is the first error line (the one that stopped the tool, before its
    CONTEXT and DETAIL lines) and the last few lines, whatever the volume.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.first_error: str | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=5)
        self.start()

    def run(self) -> None:
        with self.stream:
            for raw in self.stream:
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                self.tail.append(line[:2000])
                if self.first_error is None and _ERROR_LINE.match(line):
                    self.first_error = line[:2000]

    def reason(self) -> str:
        """The first error line, else the last line; once the tool has ended."""
        self.join()
        return self.first_error or last_line("\n".join(self.tail))
