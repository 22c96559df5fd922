"""No secret value of any example project reaches out/ or the build's output."""

from __future__ import annotations

import pytest

from generator.envfiles import read_project_env
from generator.settings import SECRET_VARIABLES, load_settings
from tests.conftest import EXAMPLES, PROFILES, run_generator


@pytest.mark.parametrize("profile", PROFILES)
def test_out_holds_no_secret_value(profile, tmp_path):
    secrets = {
        name: value
        for name, value in read_project_env(EXAMPLES / profile).values.items()
        if name in SECRET_VARIABLES and value
    }
    # The S3 secret is MINIO_ROOT_PASSWORD, or S3_SECRET_KEY for an external S3.
    _access_key, s3_secret, _value = load_settings(read_project_env(EXAMPLES / profile)).s3_credentials
    assert {"POSTGRES_PASSWORD", s3_secret, "MLFLOW_DB_PASSWORD"} <= set(secrets)

    result = run_generator("build", "--project-dir", EXAMPLES / profile, "--out", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    files = [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert files
    for name, value in secrets.items():
        assert value not in result.stdout + result.stderr, name
        for path in files:
            assert value.encode() not in path.read_bytes(), f"{name} found in {path}"

