"""Session fixtures of the end-to-end suite: one stack, built from examples/prod."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from generator.envfiles import read_project_env
from tests.conftest import E2E_PROJECT, require_tool, run_generator
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.stack import Stack
from tests.nginx_harness import NGINX, installed_nginx_version


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def e2e_project(tmp_path_factory) -> Path:
    """A copy of the example project, plus one line: the nginx this stack runs.

    NGINX_VERSION tells the build which nginx serves the vhost; here that is
    the Debian nginx the harness starts, which predates `http2 on;`.
    """
    require_tool(NGINX, "nginx (Debian package nginx)")
    project = tmp_path_factory.mktemp("e2e") / "project"
    shutil.copytree(E2E_PROJECT, project)
    version = ".".join(map(str, installed_nginx_version()))
    with open(project / ".env", "a") as env:
        env.write(f"NGINX_VERSION={version}\n")
    return project


@pytest.fixture(scope="session")
def e2e_out(e2e_project: Path) -> Path:
    """`nself build` of that project, through the CLI."""
    out = e2e_project.parent / "out"
    result = run_generator("build", "--project-dir", e2e_project, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def image_python_venv(e2e_out: Path) -> Path:
    return image_venv(e2e_out / "mlflow" / "Dockerfile")


@pytest.fixture(scope="session")
def stack(e2e_project, e2e_out, image_python_venv, postgres_server, s3_server):
    running = Stack(e2e_out, read_project_env(e2e_project).values, postgres_server, s3_server, image_python_venv)
    try:
        init = running.run_init()
        assert init.returncode == 0, init.stdout + init.stderr
        running.start_mlflow()
        running.start_nginx()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def seeded(stack: Stack, tmp_path_factory) -> dict:
    """The seed's tracking and registry examples, run first on the empty server."""
    tracking = stack.run_client("seed_tracking.py")
    inputs = tmp_path_factory.mktemp("registry") / "inputs.json"
    inputs.write_text(json.dumps(tracking["test_inputs"]))
    registry = stack.run_client("seed_registry.py", tracking["run_id"])
    loaded = stack.run_client("load_production_model.py", str(inputs))
    return {"tracking": tracking, "registry": registry, "loaded": loaded, "inputs_file": str(inputs)}
