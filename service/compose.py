"""Docker compose: the `docker compose …` argv the service commands run, and running it.

The files and env files are the ones nself itself uses: nself's
docker-compose.yml in the project, docker-compose.mlflow.yml where the build
put it, and the env cascade in order (later files win, as in the build).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from generator.artifacts import compose as compose_artifact
from generator.envfiles import cascade
from generator.errors import ServiceError, last_line

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


def require_docker() -> None:
    reachable, reason = docker_reachable()
    if not reachable:
        raise ServiceError(f"docker compose is not usable here: {reason}; start the stack (nself start), "
                           "or pass --direct with --db-host and --s3-endpoint")


def compose_quietly(compose: ComposeProject, *command: str) -> None:
    result = subprocess.run(compose.argv(*command), capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"docker compose {' '.join(command)} failed: {last_line(result.stderr)}")
