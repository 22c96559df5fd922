"""Broken project files and output paths: a clean `Error:` and exit 2, never a traceback."""

from __future__ import annotations

import pytest

from tests.conftest import run_generator, write_tree

ENABLED = "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=true\n"


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: ")
    for fragment in fragments:
        assert fragment in result.stderr


def test_a_file_that_is_not_utf8(project, tmp_path):
    (project / ".env").write_bytes(ENABLED.encode() + b"MLFLOW_PORT=\xff\n")
    assert_clean_error(run_generator("build", "--project-dir", project, "--out", tmp_path / "o"), ".env line 4", "UTF-8")


def test_a_dangling_env_link_does_not_silently_switch_mlflow_off(project, tmp_path):
    out = tmp_path / "o"
    assert run_generator("build", "--project-dir", project, "--out", out).returncode == 0
    (project / ".env").unlink()
    (project / ".env").symlink_to(tmp_path / "missing")

    result = run_generator("build", "--project-dir", project, "--out", out)

    assert_clean_error(result, ".env: is not a readable file")
    assert (out / "docker-compose.mlflow.yml").exists()


def test_a_secrets_file_that_is_a_directory(project, tmp_path):
    (project / ".env.secrets").unlink()
    (project / ".env.secrets").mkdir()
    write_tree(project, {".secrets": "POSTGRES_PASSWORD=p\nMINIO_ROOT_PASSWORD=minio-secret-1\n"})
    assert_clean_error(run_generator("build", "--project-dir", project, "--out", tmp_path / "o"), ".env.secrets")


def test_out_that_is_a_file(project, tmp_path):
    (tmp_path / "o").write_text("")
    assert_clean_error(run_generator("build", "--project-dir", project, "--out", tmp_path / "o"), "--out")


def test_references_nested_too_deeply(project, tmp_path):
    chain = "".join(f"V{i}=${{V{i + 1}}}\n" for i in range(1500))
    write_tree(project, {".env.dev": chain})
    assert_clean_error(run_generator("build", "--project-dir", project, "--out", tmp_path / "o"), "nest too deeply")


def test_env_set_in_a_file_its_environment_would_not_read(project, tmp_path):
    write_tree(project, {".env.local": "ENV=prod\nMLFLOW_WORKERS=7\n"})
    assert_clean_error(run_generator("build", "--project-dir", project, "--out", tmp_path / "o"),
                       "ENV (in .env.local line 1)", "set ENV in .env")


@pytest.mark.parametrize("secret", ["Leak\\Me-pg-1234", "postgres-Leak-1"])
def test_a_setting_that_pulls_in_a_secret_never_echoes_it(project, tmp_path, secret):
    write_tree(project, {
        ".env": ENABLED + "MLFLOW_ARTIFACTS_ROOT=s3://x/${POSTGRES_PASSWORD}\nMLFLOW_DB_NAME=postgres\n",
        ".env.secrets": f"POSTGRES_PASSWORD='{secret}'\nMINIO_ROOT_PASSWORD=minio-secret-1\nMLFLOW_DB_PASSWORD=db-secret-1\n",
    })
    result = run_generator("build", "--project-dir", project, "--out", tmp_path / "o")
    assert_clean_error(result, "MLFLOW_ARTIFACTS_ROOT", "MLFLOW_DB_NAME")
    assert "Leak" not in result.stderr
    assert "(postgres, template0, template1)" in result.stderr  # messages are not mangled
