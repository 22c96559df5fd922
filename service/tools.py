"""Where the operator's tools run: in the stack's containers through docker compose, or --direct from here.

The backup tools (pg_dump, pg_restore, psql), the bucket, the schema check in
the pinned MLflow, gc, and starting the stopped services again after a restore.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from generator.artifacts import compose as compose_artifact
from generator.errors import ServiceError, UserError, last_line
from generator.settings import Settings
from service.compose import compose_quietly, require_docker
from service.project import Project


def gc_command(settings: Settings, older_than: str | None, backend_store_uri: str | None = None) -> list[str]:
    command = compose_artifact.gc_command(settings)
    if backend_store_uri is not None:
        command[command.index("--backend-store-uri") + 1] = backend_store_uri
    if older_than is not None:
        command += ["--older-than", older_than]
    return command


def postgres_tools(project: Project, direct: bool, db_host: str, db_port: int | None, pg_bindir: Path | None,
                    out: Path | None):
    from service.backup import PostgresTools

    database = project.settings.database
    if not direct:
        require_docker()
        # The postgres image trusts its own socket: no password leaves the container.
        return PostgresTools(database.name, database.user, tuple(project.compose(out).argv("exec", "-T", "postgres")),
                             ("-U", database.admin_user), where="PostgreSQL (the postgres container)")
    if database.admin_password is None:
        raise UserError("POSTGRES_PASSWORD: not set in the project's env files; --direct connects as POSTGRES_USER")
    port = db_port or database.port
    return PostgresTools(database.name, database.user, (), ("-h", db_host, "-p", str(port), "-U", database.admin_user),
                         {"PGPASSWORD": database.admin_password.get_secret_value()}, pg_bindir,
                         where=f"PostgreSQL at {db_host}:{port}")


def auth_postgres_tools(project: Project, postgres):
    """The same tools on MLflow's users database, in MLFLOW_AUTH_MODE=mlflow; else None."""
    from dataclasses import replace

    from generator.artifacts import auth

    if not project.settings.auth.mlflow_mode:
        return None
    return replace(postgres, database=auth.database_name(project.settings))


def artifact_bucket(project: Project, s3_endpoint: str | None):
    from service.backup import s3_bucket

    settings = project.settings
    access_key, secret_variable, secret = settings.s3_credentials
    if secret is None:
        raise UserError(f"{secret_variable}: not set in the project's env files; the backup reads the bucket with it")
    endpoint = s3_endpoint or settings.s3_endpoint_from_host
    return s3_bucket(endpoint, access_key, secret.get_secret_value(), settings.storage.bucket, settings.storage.region)


def schema_checker(project: Project, direct: bool, mlflow_python: Path | None, out: Path | None):
    """How to ask the pinned MLflow where a schema revision stands: current, older or newer."""
    if direct and mlflow_python is None:
        raise UserError("--mlflow-python: --direct restore needs the Python of the pinned MLflow "
                        f"({project.settings.server.version}) to check the archive's schema revision")

    def check(revision: str) -> str:
        if direct:
            import init

            packages = str(Path(init.__file__).resolve().parent.parent)
            environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
                filter(None, [packages, os.environ.get("PYTHONPATH")]))}
            argv = [str(mlflow_python), "-m", "init.schema", "check", revision]
        else:
            environment = None
            argv = project.compose(out).argv("run", "--rm", "--no-deps", "-T", "mlflow-init",
                                             "python", "-m", "init.schema", "check", revision)
        try:
            result = subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=300)
        except FileNotFoundError:
            raise ServiceError(f"{argv[0]}: not found") from None
        words = result.stdout.split()
        if result.returncode != 0 or not words or words[0] not in ("current", "older", "newer"):
            detail = last_line(result.stderr, "no answer")
            raise ServiceError(f"checking schema revision {revision} with the pinned MLflow failed: {detail}")
        check.head = words[1]
        return words[0]

    return check


def restart_services(project: Project, out: Path | None, services: list[str],
                     after: BaseException | None = None) -> None:
    """`up -d` the services a restore stopped; if that fails after a failed restore, report both, the restore's first."""
    try:
        compose_quietly(project.compose(out), "up", "-d", *services)
    except ServiceError as restart_error:
        if after is None:
            raise
        first = after.message if isinstance(after, UserError) else (str(after) or type(after).__name__)
        combined = ServiceError(f"{first}\nthen starting {', '.join(services)} again failed too: {restart_error.message}")
        combined.exit_code = getattr(after, "exit_code", 1)
        raise combined from after
