"""Bring an existing MLflow schema up to the pinned MLflow's, before the server starts.

MLflow refuses to start on an out-of-date schema ("Detected out-of-date
database schema") and does not migrate by itself. `mlflow db upgrade` fails on
an empty database up to 3.8, so:

- an empty database (no alembic_version table) is left for the server, which
  creates its tables at the first start; with the GraphQL views on, init
  creates them itself, with MLflow's own tracking store (`python -m
  init.schema create`), so that the views can be made in the same run
  (`mlflow db upgrade` fails on an empty database up to 3.8);
- a schema at the head revision of the installed MLflow is left untouched;
- an older schema is migrated with the installed MLflow's `mlflow db upgrade`,
  after a line naming both revisions and reminding to back up;
- a revision the installed MLflow does not know was written by a newer MLflow:
  that is refused, because MLflow has no downgrades.

It runs in the image, beside the pinned MLflow. Where MLflow is not installed
(init run on its own), the step says so and does nothing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

from init.config import InitConfig
from init.psqlscript import StepResult

STEP = "mlflow schema"


class SchemaError(Exception):
    """The schema cannot be brought up to date; the message says why and what to do."""


@dataclass(frozen=True)
class InstalledMlflow:
    version: str
    migrations: Path

    @classmethod
    def find(cls) -> "InstalledMlflow | None":
        spec = importlib.util.find_spec("mlflow")
        if spec is None or not spec.submodule_search_locations:
            return None
        package = Path(list(spec.submodule_search_locations)[0])
        return cls(importlib.metadata.version("mlflow"), package / "store" / "db_migrations")

    def head(self) -> str:
        return self._scripts().get_current_head()

    def knows(self, revision: str) -> bool:
        from alembic.util import CommandError

        try:
            return self._scripts().get_revision(revision) is not None
        except CommandError:
            return False

    def _scripts(self):
        # alembic comes with MLflow; importing it does not import MLflow itself.
        from alembic.script import ScriptDirectory

        return ScriptDirectory(str(self.migrations))


def current_revision(config: InitConfig) -> str | None:
    """The MLflow database's alembic revision, or None for an empty database."""
    with psycopg.connect(host=config.pg_host, port=config.pg_port, user=config.db_user,
                         password=config.db_password, dbname=config.db_name, connect_timeout=10,
                         application_name="mlflow-init", autocommit=True) as connection:
        if connection.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0] is None:
            return None
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None


def upgrade(config: InitConfig, echo, mlflow: InstalledMlflow | None = None,
            before_migration=lambda: None) -> StepResult | None:
    """Check, then create (GraphQL on) or migrate the schema; `before_migration` runs right before a migration."""
    mlflow = mlflow or InstalledMlflow.find()
    if mlflow is None:
        echo(f"{STEP}: not checked: MLflow is not installed beside init")
        return None
    revision = current_revision(config)
    if revision is None and config.graphql_enabled:
        # No password in the URI: libpq reads PGPASSWORD, as for the server.
        uri = f"postgresql://{config.db_user}@{config.pg_host}:{config.pg_port}/{config.db_name}"
        run_create(uri, config.artifact_root, config.db_password, config.timeout)
        created = current_revision(config)
        if created != mlflow.head():
            raise SchemaError(f"creating the schema left it at {created}, not {mlflow.head()}")
        return StepResult(STEP, "created")
    if revision is None:
        echo(f"{STEP}: empty database; mlflow server creates the tables at its first start")
        return StepResult(STEP, "unchanged")
    head = mlflow.head()
    if revision == head:
        return StepResult(STEP, "unchanged")
    if not mlflow.knows(revision):
        raise SchemaError(
            f"the database is at revision {revision}, which MLflow {mlflow.version} does not know: a newer MLflow "
            "wrote it, and MLflow cannot downgrade; set MLFLOW_VERSION back to that version"
        )
    echo(f"{STEP}: back up the database first (nself db dump --database {config.db_name}); "
         f"migrating from revision {revision} to {head} with MLflow {mlflow.version}")
    before_migration()
    # No password in the URI: libpq reads PGPASSWORD, as for the server.
    uri = f"postgresql://{config.db_user}@{config.pg_host}:{config.pg_port}/{config.db_name}"
    run_db_upgrade(uri, config.db_password, config.timeout)
    after = current_revision(config)
    if after != head:
        raise SchemaError(f"mlflow db upgrade left the schema at {after}, not {head}")
    return StepResult(STEP, "updated")


MLFLOW_CLI = (sys.executable, "-m", "mlflow")
CREATE_CLI = (sys.executable, "-m", "init.schema", "create")


def _run_bounded(argv: list[str], program: str, password: str, timeout: float, what: str, after_timeout: str,
                 after_failure: str) -> None:
    """Run an MLflow step in a process of its own, bounded by MLFLOW_INIT_TIMEOUT; any failure is one line.

    Its own process: the password reaches libpq as PGPASSWORD (init's own is
    the admin's), and it is never in argv.
    """
    try:
        result = subprocess.run(argv, env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SchemaError(f"{what} did not finish within {timeout:g} s (MLFLOW_INIT_TIMEOUT) and was stopped; "
                          f"{after_timeout}") from None
    except OSError as error:
        raise SchemaError(f"cannot run {program} ({argv[0]}: {error.strerror or error})") from None
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else "no output"
        raise SchemaError(f"{what} failed (exit code {result.returncode}): {reason}{after_failure}")


def run_create(uri: str, artifact_root: str, password: str, timeout: float,
               create_cli: tuple[str, ...] = CREATE_CLI) -> None:
    """`python -m init.schema create URI ROOT`: MLflow is imported only when a schema is created."""
    _run_bounded([*create_cli, uri, artifact_root], " ".join(create_cli), password, timeout,
                 what="creating the schema with MLflow's tracking store",
                 after_timeout="drop and recreate the empty database before retrying", after_failure="")


def create_schema(uri: str, artifact_root: str) -> None:
    """What `mlflow server` does to an empty database: MLflow's tracking store makes its tables and the Default experiment.

    The root is the one the server resolves, so the Default experiment is the
    one the server would have made.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(uri, artifact_root)


def run_db_upgrade(uri: str, password: str, timeout: float, mlflow_cli: tuple[str, ...] = MLFLOW_CLI) -> None:
    """`mlflow db upgrade URI`, bounded by MLFLOW_INIT_TIMEOUT; any failure is one SchemaError line."""
    after_failure = "the database is unchanged or partly migrated, restore the backup before retrying"
    _run_bounded([*mlflow_cli, "db", "upgrade", uri], "mlflow db upgrade", password, timeout, what="mlflow db upgrade",
                 after_timeout=f"{after_failure}, or raise MLFLOW_INIT_TIMEOUT for a large database",
                 after_failure=f"; {after_failure}")


def classify(revision: str, mlflow: InstalledMlflow) -> str:
    """Where a schema revision stands against the installed MLflow: current, older or newer."""
    if revision == mlflow.head():
        return "current"
    return "older" if mlflow.knows(revision) else "newer"


def main(argv: list[str] | None = None) -> int:
    """`python -m init.schema check REVISION`: what restore asks before it touches a database.

    `python -m init.schema create URI ROOT`: what init runs on an empty database (password in PGPASSWORD).
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "create":
        create_schema(args[1], args[2])
        return 0
    if len(args) != 2 or args[0] != "check":
        print("usage: python -m init.schema check REVISION | create URI ARTIFACT_ROOT", file=sys.stderr)
        return 2
    mlflow = InstalledMlflow.find()
    if mlflow is None:
        print("MLflow is not installed beside init", file=sys.stderr)
        return 1
    print(f"{classify(args[1], mlflow)} {mlflow.head()} {mlflow.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
