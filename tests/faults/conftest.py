"""Fixtures of the fault suite: one stack per MLflow version, with servers of its own.

The suite stops and starts PostgreSQL, SeaweedFS and MLflow, so each stack
owns its servers (the e2e suite's shared ones stay untouched). A test names
its version with `@pytest.mark.parametrize("fault_stack", [...], indirect=True)`;
pytest groups the tests by version, so one stack runs at a time and the
scenarios of a version share it.
"""

from __future__ import annotations

import pytest

from generator.envfiles import read_project_env
from tests.e2e.conftest import build_out, fresh_servers, make_project
from tests.e2e.mlflow_venv import image_venv
from tests.faults.harness import FaultStack
from tests.faults.report import Report


def pytest_collection_modifyitems(items):
    for item in items:
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def fault_stack(request, tmp_path_factory):
    version = request.param
    project = make_project(tmp_path_factory.mktemp(f"faults-{version}"), version)
    out = build_out(project, project.parent / "out")
    postgres, s3 = fresh_servers()
    stack = FaultStack(out, read_project_env(project).values, postgres, s3, image_venv(out / "mlflow" / "Dockerfile"))
    try:
        init = stack.run_init()
        assert init.returncode == 0, init.stdout + init.stderr
        stack.start_mlflow()
        stack.start_nginx()
        yield stack
    finally:
        stack.stop()
        s3.stop()
        postgres.remove()


@pytest.fixture(scope="session")
def report():
    """The figures of every scenario; docs/reliability.md is written when the whole suite ran."""
    collected = Report()
    yield collected
    collected.write_if_complete()
