"""Compose orchestration: the `docker compose …` argv the service commands run, running it,
and where the backup tools run (in the stack's containers, or --direct from here).

The files and env files are the ones nself itself uses: nself's
docker-compose.yml in the project, docker-compose.mlflow.yml where the build
put it, and the env cascade in order (later files win, as in the build).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from generator.artifacts import compose as compose_artifact
from generator.envfiles import cascade
from generator.errors import ServiceError, UserError, last_line
from generator.settings import Settings

if TYPE_CHECKING:
    from service.project import Project

SERVICES = ("mlflow", "mlflow-init", "mlflow-gc")


@dataclass(frozen=True)
class ComposeProject:
    name: str
    directory: Path  # where docker-compose.mlflow.yml and its ./mlflow, ./postgres … live
    files: tuple[Path, ...]
    env_files: tuple[Path, ...]

    @classmethod
    def locate(cls, project_dir: Path, env: str, project_name: str, out_dir: Path | None = None) -> "ComposeProject":
        # nself copies the build into the project root; a plain build leaves it in out/.
        candidates = [out_dir] if out_dir else [project_dir, project_dir / "out"]
        directory = next((c for c in candidates if (c / compose_artifact.PATH).exists()), candidates[-1])
        files = [path for path in (project_dir / "docker-compose.yml",) if path.exists()]
        files.append(directory / compose_artifact.PATH)
        env_files = tuple(project_dir / name for name in cascade(env) if (project_dir / name).is_file())
        return cls(project_name, directory, tuple(files), env_files)

    def argv(self, *command: str) -> list[str]:
        argv = ["docker", "compose", "--project-name", self.name, "--project-directory", str(self.directory)]
        for path in self.files:
            argv += ["-f", str(path)]
        for path in self.env_files:
            argv += ["--env-file", str(path)]
        return [*argv, *command]


def docker_reachable() -> tuple[bool, str]:
    """Whether a docker CLI is installed and its daemon answers."""
    if shutil.which("docker") is None:
        return False, "no docker CLI on PATH"
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                                capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"docker info failed ({error})"
    if result.returncode != 0:
        reason = last_line(result.stderr, "no answer")
        return False, f"the docker daemon is not reachable ({reason})"
    return True, f"docker {result.stdout.strip()}"


def parse_ps(output: str) -> list[dict]:
    """`compose ps --format json`: one JSON array (older v2) or one object per line."""
    text = output.strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def enabled_services(project: Project) -> list[str]:
    return [s for s in SERVICES if s != "mlflow-gc" or project.settings.gc.enabled]


def container_state(service: str, item: dict | None) -> tuple[bool, str]:
    if service == "mlflow-init":
        # A one-shot container: done is good, and nself removes it once it exited.
        if item is None:
            return True, "removed after it ran (nself removes init containers)"
        ok = item.get("State") == "exited" and item.get("ExitCode", 0) == 0
        return ok, f"{item.get('State', '?')} (exit code {item.get('ExitCode', '?')})"
    if item is None:
        return False, "not created (run nself start)"
    state, health = item.get("State", "?"), item.get("Health", "")
    ok = state == "running" and health in ("", "healthy")
    return ok, f"{state}{f' ({health})' if health else ''}"


def run_attached(argv: list[str]) -> int:
    """Run a docker command with the terminal attached; its exit code."""
    try:
        return subprocess.run(argv).returncode
    except FileNotFoundError:
        raise ServiceError(f"{argv[0]}: not installed; the command needs the docker CLI with Compose v2") from None


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


def artifact_bucket(project: Project, s3_endpoint: str | None):
    from service.backup import s3_bucket

    storage = project.settings.storage
    if storage.root_password is None:
        raise UserError("MINIO_ROOT_PASSWORD: not set in the project's env files; the backup reads the bucket with it")
    endpoint = s3_endpoint or f"http://localhost:{storage.minio_port}"
    return s3_bucket(endpoint, storage.root_user, storage.root_password.get_secret_value(), storage.bucket)


def require_docker() -> None:
    reachable, reason = docker_reachable()
    if not reachable:
        raise ServiceError(f"docker compose is not usable here: {reason}; start the stack (nself start), "
                           "or pass --direct with --db-host and --s3-endpoint")


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


def compose_quietly(compose: ComposeProject, *command: str) -> None:
    result = subprocess.run(compose.argv(*command), capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"docker compose {' '.join(command)} failed: {last_line(result.stderr)}")


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

