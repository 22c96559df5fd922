"""Generated passwords: made once by the CLI, saved to .env.secrets, never shown."""

from __future__ import annotations

import re
import stat

from generator.envfiles import read_project_env
from tests.conftest import run_generator, write_tree

NO_PASSWORDS_SECRETS = "# my secrets\nPOSTGRES_PASSWORD=pg-secret-abc\nMINIO_ROOT_PASSWORD=minio-secret-abc\n"


def saved_value(project, name):
    matches = re.findall(rf"^{name}=(.*)$", (project / ".env.secrets").read_text(), flags=re.M)
    assert len(matches) == 1, matches
    return matches[0]


def test_empty_passwords_are_generated_once_saved_and_never_printed(project, tmp_path):
    write_tree(project, {
        ".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=true\nMLFLOW_AUTH_ENABLED=true\n",
        ".env.secrets": NO_PASSWORDS_SECRETS,
    })
    (project / ".env.secrets").chmod(0o644)

    first = run_generator("build", "--project-dir", project, "--out", tmp_path / "out")

    assert first.returncode == 0, first.stderr
    text = (project / ".env.secrets").read_text()
    assert text.startswith(NO_PASSWORDS_SECRETS)  # other lines untouched
    assert stat.S_IMODE((project / ".env.secrets").stat().st_mode) == 0o600
    for name in ("MLFLOW_DB_PASSWORD", "MLFLOW_AUTH_PASSWORD"):
        value = saved_value(project, name)
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", value), name
        assert value not in first.stdout + first.stderr
        assert value not in "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert "generated MLFLOW_DB_PASSWORD, MLFLOW_AUTH_PASSWORD, MLFLOW_AUTH_HASH_SALT" in first.stderr
    # The htpasswd salt is saved input too, so rebuilds give the same hash.
    assert re.fullmatch(r"[./0-9A-Za-z]{21}[.Oeu]", saved_value(project, "MLFLOW_AUTH_HASH_SALT"))
    htpasswd = (tmp_path / "out" / "nginx/includes/mlflow.htpasswd").read_bytes()
    assert read_project_env(project).values["MLFLOW_DB_PASSWORD"] == saved_value(project, "MLFLOW_DB_PASSWORD")

    second = run_generator("build", "--project-dir", project, "--out", tmp_path / "out")

    assert second.returncode == 0, second.stderr
    assert (project / ".env.secrets").read_text() == text  # reused, not regenerated
    assert "generated" not in second.stderr
    assert "0 written" in second.stdout
    assert (tmp_path / "out" / "nginx/includes/mlflow.htpasswd").read_bytes() == htpasswd


def test_the_secrets_file_is_created_when_missing(project, tmp_path):
    (project / ".env.secrets").unlink()
    write_tree(project, {".secrets": NO_PASSWORDS_SECRETS})

    result = run_generator("build", "--project-dir", project, "--out", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((project / ".env.secrets").stat().st_mode) == 0o600
    saved_value(project, "MLFLOW_DB_PASSWORD")


def test_auth_password_is_not_generated_while_auth_is_off(project, tmp_path):
    write_tree(project, {".env.secrets": NO_PASSWORDS_SECRETS})
    assert run_generator("build", "--project-dir", project, "--out", tmp_path / "out").returncode == 0
    assert "MLFLOW_AUTH_PASSWORD" not in (project / ".env.secrets").read_text()


def test_the_graphql_password_is_generated_only_while_graphql_is_on(project, tmp_path):
    write_tree(project, {".env.secrets": NO_PASSWORDS_SECRETS})
    assert run_generator("build", "--project-dir", project, "--out", tmp_path / "out").returncode == 0
    assert "MLFLOW_GRAPHQL_DB_PASSWORD" not in (project / ".env.secrets").read_text()

    with open(project / ".env", "a") as env:
        env.write("MLFLOW_GRAPHQL_ENABLED=true\n")
    result = run_generator("build", "--project-dir", project, "--out", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert "generated MLFLOW_GRAPHQL_DB_PASSWORD" in result.stderr
    value = saved_value(project, "MLFLOW_GRAPHQL_DB_PASSWORD")
    # URL-safe as generated: Hasura reads it inside a connection URL.
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", value) and value != saved_value(project, "MLFLOW_DB_PASSWORD")
    assert value not in result.stdout + result.stderr
    assert value not in "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())


def test_an_empty_assignment_read_after_the_secrets_file_is_refused(project, tmp_path):
    """The seed's reference block has `MLFLOW_DB_PASSWORD=`; in .env it would hide the saved one."""
    write_tree(project, {
        ".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=true\nMLFLOW_DB_PASSWORD=\n",
        ".env.secrets": NO_PASSWORDS_SECRETS,
    })

    result = run_generator("build", "--project-dir", project, "--out", tmp_path / "out")

    assert result.returncode == 2
    assert "MLFLOW_DB_PASSWORD (in .env line 4)" in result.stderr
    assert (project / ".env.secrets").read_text() == NO_PASSWORDS_SECRETS
    assert not (tmp_path / "out").exists()


def test_check_mode_never_generates(project, tmp_path):
    write_tree(project, {".env.secrets": NO_PASSWORDS_SECRETS})
    result = run_generator("build", "--project-dir", project, "--out", tmp_path / "out", "--check")
    assert result.returncode == 2
    assert "MLFLOW_DB_PASSWORD" in result.stderr
    assert (project / ".env.secrets").read_text() == NO_PASSWORDS_SECRETS


def test_invalid_settings_generate_nothing(project, tmp_path):
    write_tree(project, {
        ".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMLFLOW_PORT=nope\n",
        ".env.secrets": NO_PASSWORDS_SECRETS,
    })
    result = run_generator("build", "--project-dir", project, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert (project / ".env.secrets").read_text() == NO_PASSWORDS_SECRETS
