"""No secret value of any example project reaches out/ or the build's output."""

from __future__ import annotations

import pytest

from generator.envfiles import read_project_env
from generator.settings import SECRET_VARIABLES
from tests.conftest import EXAMPLES, PROFILES, run_generator


@pytest.mark.parametrize("profile", PROFILES)
def test_out_holds_no_secret_value(profile, tmp_path):
    secrets = {
        name: value
        for name, value in read_project_env(EXAMPLES / profile).values.items()
        if name in SECRET_VARIABLES and value
    }
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_DB_PASSWORD"} <= set(secrets)

    result = run_generator("build", "--project-dir", EXAMPLES / profile, "--out", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    files = [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert files
    for name, value in secrets.items():
        assert value not in result.stdout + result.stderr, name
        for path in files:
            assert value.encode() not in path.read_bytes(), f"{name} found in {path}"

