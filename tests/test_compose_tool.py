"""The compose fragment as the real Docker Compose v2 reads it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from generator.artifacts import compose
from generator.envfiles import cascade, read_project_env
from generator.settings import load_settings
from tests.conftest import EXAMPLES, PROFILES, build_profile, write_tree


def nself_base(project_name: str, with_minio: bool) -> dict:
    """A stand-in for nself's docker-compose.yml: names and healthchecks as nself writes them."""
    network = f"{project_name}_network"
    services = {
        "postgres": {
            "image": "postgres:16-alpine",
            "container_name": f"{project_name}_postgres",
            "environment": {"POSTGRES_USER": "${POSTGRES_USER:-postgres}", "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}"},
            "healthcheck": {"test": ["CMD-SHELL", "pg_isready -U postgres"], "interval": "10s", "retries": 5},
            "networks": [network],
        },
        # nself's Hasura, which always runs; it lists its environment as KEY=VALUE lines.
        "hasura": {
            "image": "hasura/graphql-engine:v2.44.0",
            "container_name": f"{project_name}_hasura",
            "environment": [
                "HASURA_GRAPHQL_DATABASE_URL=postgres://postgres:${POSTGRES_PASSWORD}@postgres:5432/${POSTGRES_DB:-demo}",
                "HASURA_GRAPHQL_ENABLE_CONSOLE=true",
            ],
            "depends_on": ["postgres"],
            "networks": [network],
        },
    }
    if with_minio:
        services["minio"] = {
            "image": "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z",
            "container_name": f"{project_name}_minio",
            "command": "server /data --console-address :9001",
            "healthcheck": {"test": ["CMD", "mc", "ready", "local"], "interval": "30s", "retries": 3},
            "networks": [network],
        }
    return {"services": services, "networks": {network: {"name": network, "driver": "bridge"}}}


def compose_config(binary: Path, project_dir: Path, files: dict[str, bytes], env: str, with_minio: bool = True,
                   quiet: bool = False):
    """Run `config` on nself's base merged with the fragment, env files in cascade order."""
    settings = load_settings(read_project_env(project_dir, env))
    base = project_dir / "docker-compose.yml"
    base.write_text(yaml.safe_dump(nself_base(settings.stack.project_name, with_minio)))
    fragment = project_dir / compose.PATH
    fragment.write_bytes(files[compose.PATH])
    env_files = [arg for name in cascade(env) if (project_dir / name).exists() for arg in ("--env-file", project_dir / name)]
    command = [binary, "-f", base, "-f", fragment, *env_files, "config", *(["-q"] if quiet else ["--format", "json"])]
    return subprocess.run(command, capture_output=True, text=True, cwd=project_dir, timeout=60)


def secret(project_dir: Path, env: str, name: str) -> str:
    return read_project_env(project_dir, env).values[name]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_passes_compose_config(profile, compose_bin, tmp_path):
    project_dir = tmp_path / profile
    project_dir.mkdir()
    for source in (EXAMPLES / profile).iterdir():
        (project_dir / source.name).write_bytes(source.read_bytes())
    env = read_project_env(project_dir).env
    files = build_profile(project_dir)
    settings = load_settings(read_project_env(project_dir))
    # nself's base has a minio service only when nself runs MinIO (MINIO_ENABLED=true).
    nself_minio = settings.storage.minio_enabled and not settings.minio_auto_enabled

    result = compose_config(compose_bin, project_dir, files, env, with_minio=nself_minio)
    quiet = compose_config(compose_bin, project_dir, files, env, with_minio=nself_minio, quiet=True)

    assert result.returncode == 0, result.stderr
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stderr
    model = json.loads(result.stdout)
    mlflow = model["services"]["mlflow"]
    assert mlflow["command"] == compose.server_command(settings)
    assert mlflow["environment"]["PGPASSWORD"] == secret(project_dir, env, "MLFLOW_DB_PASSWORD")
    _access_key, secret_variable, _secret = settings.s3_credentials
    assert mlflow["environment"]["AWS_SECRET_ACCESS_KEY"] == secret(project_dir, env, secret_variable)
    assert mlflow["ports"][0]["host_ip"] == "127.0.0.1"
    assert mlflow["depends_on"]["mlflow-init"]["condition"] == "service_completed_successfully"
    assert mlflow["init"] is True and mlflow["restart"] == "unless-stopped"
    init = model["services"]["mlflow-init"]
    assert init["restart"] == "no" and init["labels"]["nself.type"] == "init-container"
    for name, service in model["services"].items():
        if service.get("image") == mlflow["image"]:  # every MLflow container: no telemetry by default
            assert service["environment"]["MLFLOW_DISABLE_TELEMETRY"] == "true", name
            assert service["environment"]["DO_NOT_TRACK"] == "true", name
    assert init["environment"]["PGPASSWORD"] == secret(project_dir, env, "POSTGRES_PASSWORD")
    assert "demo_network" in mlflow["networks"]


def test_compose_check_fails_without_the_services_the_fragment_depends_on(compose_bin, project, tmp_path):
    files = build_profile(project)
    fragment = project / compose.PATH
    fragment.write_bytes(files[compose.PATH])
    result = subprocess.run(
        [compose_bin, "-f", fragment, "--env-file", project / ".env.secrets", "config", "-q"],
        capture_output=True, text=True, cwd=project, timeout=60,
    )
    assert result.returncode != 0
    assert "depends on undefined service" in result.stderr


def test_compose_refuses_to_start_without_the_secrets(compose_bin, project):
    files = build_profile(project)
    (project / ".env.secrets").unlink()
    write_tree(project, {".env.secrets": "POSTGRES_PASSWORD=x-postgres-1\nMINIO_ROOT_PASSWORD=x-minio-1\n"})
    result = compose_config(compose_bin, project, files, "dev")
    assert result.returncode != 0
    assert "MLFLOW_DB_PASSWORD is not set" in result.stderr


def test_minio_is_added_when_mlflow_turns_it_on(compose_bin, project):
    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\n"})
    files = build_profile(project)

    result = compose_config(compose_bin, project, files, "dev", with_minio=False)

    assert result.returncode == 0, result.stderr
    minio = json.loads(result.stdout)["services"]["minio"]
    assert minio["environment"]["MINIO_ROOT_PASSWORD"] == secret(project, "dev", "MINIO_ROOT_PASSWORD")
    assert minio["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]


def test_an_external_s3_stack_has_no_minio_and_gets_its_keys(compose_bin, tmp_path):
    """examples/external-s3 against an nself base without MinIO: a dependency on minio would fail here."""
    project = tmp_path / "external-s3"
    shutil.copytree(EXAMPLES / "external-s3", project)
    files = build_profile(project)

    result = compose_config(compose_bin, project, files, "prod", with_minio=False)

    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert "minio" not in services
    for name in ("mlflow", "mlflow-init"):
        environment = services[name]["environment"]
        assert environment["MLFLOW_S3_ENDPOINT_URL"] == "http://s3.example.internal:8333"
        assert environment["AWS_ACCESS_KEY_ID"] == secret(project, "prod", "S3_ACCESS_KEY") != "minioadmin"
        assert environment["AWS_SECRET_ACCESS_KEY"] == secret(project, "prod", "S3_SECRET_KEY")
        assert environment["AWS_DEFAULT_REGION"] == "eu-central-1"
    assert set(services["mlflow-init"]["depends_on"]) == {"postgres"}
    assert set(services["mlflow"]["depends_on"]) == {"postgres", "mlflow-init"}


def test_compose_refuses_an_external_s3_stack_without_its_secret_key(compose_bin, tmp_path):
    project = tmp_path / "external-s3"
    shutil.copytree(EXAMPLES / "external-s3", project)
    (project / "docker-compose.yml").write_text(yaml.safe_dump(nself_base("demo", with_minio=False)))
    (project / compose.PATH).write_bytes(build_profile(project)[compose.PATH])
    secrets = project / ".env.secrets"
    secrets.write_text("".join(line for line in secrets.read_text().splitlines(True) if "S3_SECRET_KEY" not in line))

    result = subprocess.run(
        [compose_bin, "-f", project / "docker-compose.yml", "-f", project / compose.PATH,
         *(arg for name in cascade("prod") for arg in ("--env-file", project / name) if (project / name).exists()),
         "config", "-q"],
        capture_output=True, text=True, cwd=project, timeout=60,
    )

    assert result.returncode != 0
    assert "S3_SECRET_KEY is not set" in result.stderr


def test_hasura_gets_the_mlflow_source_url_and_keeps_its_own_environment(compose_bin, tmp_path):
    from generator.artifacts import graphql

    project_dir = tmp_path / "graphql"
    shutil.copytree(EXAMPLES / "graphql", project_dir)
    files = build_profile(project_dir)

    result = compose_config(compose_bin, project_dir, files, "prod")

    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    password = secret(project_dir, "prod", "MLFLOW_GRAPHQL_DB_PASSWORD")
    hasura = services["hasura"]
    assert hasura["image"] == "hasura/graphql-engine:v2.44.0"
    assert hasura["environment"][graphql.DATABASE_URL_VARIABLE] == f"postgres://mlflow_graphql:{password}@postgres:5432/mlflow"
    assert hasura["environment"]["HASURA_GRAPHQL_ENABLE_CONSOLE"] == "true"
    assert hasura["environment"]["HASURA_GRAPHQL_DATABASE_URL"].startswith("postgres://postgres:")
    init = services["mlflow-init"]["environment"]
    assert (init["MLFLOW_GRAPHQL_DB_USER"], init["MLFLOW_GRAPHQL_DB_PASSWORD"]) == ("mlflow_graphql", password)
    assert init["MLFLOW_INIT_ARTIFACT_ROOT"] == "mlflow-artifacts:/"
    assert password.encode() not in files[compose.PATH]

    (project_dir / ".env.secrets").write_text(
        (project_dir / ".env.secrets").read_text().replace(f"MLFLOW_GRAPHQL_DB_PASSWORD={password}\n", ""))
    refused = compose_config(compose_bin, project_dir, files, "prod")
    assert refused.returncode != 0 and "MLFLOW_GRAPHQL_DB_PASSWORD is not set" in refused.stderr


# Each accepted way of writing a password, and the value it must reach the
# container with. Together they use every awkward character: ' " \ $ % and spaces.
ACCEPTED_FORMS = [
    ("MLFLOW_DB_PASSWORD='pa$$word $HOME ${X} %s'", "pa$$word $HOME ${X} %s"),
    ("MLFLOW_DB_PASSWORD='back\\slash \"dq\" 50%'", 'back\\slash "dq" 50%'),
    ("MLFLOW_DB_PASSWORD=it's a \"pass\" \\ 100%", 'it\'s a "pass" \\ 100%'),
    ('MLFLOW_DB_PASSWORD="it\'s spaced % out"', "it's spaced % out"),
    ('MLFLOW_DB_PASSWORD="double \\\\ backslash"', "double \\ backslash"),
    ("MLFLOW_DB_PASSWORD=hash#inside", "hash#inside"),
    ("MLFLOW_DB_PASSWORD=plain-Token_123", "plain-Token_123"),
]


@pytest.mark.parametrize(("line", "expected"), ACCEPTED_FORMS)
def test_accepted_passwords_reach_the_container_unchanged(compose_bin, project, line, expected):
    write_tree(project, {".env.secrets": "POSTGRES_PASSWORD=x-postgres-1\nMINIO_ROOT_PASSWORD=x-minio-1\n" + line + "\n"})
    assert secret(project, "dev", "MLFLOW_DB_PASSWORD") == expected
    files = build_profile(project)

    result = compose_config(compose_bin, project, files, "dev")

    assert result.returncode == 0, result.stderr
    environment = json.loads(result.stdout)["services"]["mlflow"]["environment"]
    # `config --format json` re-escapes '$' as '$$' for its own output.
    assert environment["PGPASSWORD"].replace("$$", "$") == expected


REFUSED_FORMS = [
    "MLFLOW_DB_PASSWORD=Zq7$x-unquoted",
    'MLFLOW_DB_PASSWORD="Zq7$x-double"',
    "MLFLOW_DB_PASSWORD=\"Zq7\\'x-double\"",
    "MLFLOW_DB_PASSWORD='Zq7\\\\x-single'",
]


@pytest.mark.parametrize("line", REFUSED_FORMS)
def test_passwords_compose_would_read_differently_are_refused(project, line, tmp_path):
    from tests.conftest import run_generator

    write_tree(project, {".env.secrets": "POSTGRES_PASSWORD=x-postgres-1\nMINIO_ROOT_PASSWORD=x-minio-1\n" + line + "\n"})
    result = run_generator("build", "--project-dir", project, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "MLFLOW_DB_PASSWORD" in result.stderr and "Traceback" not in result.stderr
    assert "Zq7" not in result.stderr and "Zq7" not in result.stdout


@pytest.mark.parametrize("line", REFUSED_FORMS)
def test_refused_forms_really_differ_in_compose(compose_bin, project, line):
    """Why they are refused: Compose reads each of them differently from python-dotenv."""
    write_tree(project, {".env.secrets": "POSTGRES_PASSWORD=x-postgres-1\nMINIO_ROOT_PASSWORD=x-minio-1\n" + line + "\n"})
    ours = secret(project, "dev", "MLFLOW_DB_PASSWORD")
    fragment = {"services": {"probe": {"image": "busybox", "environment": {"VALUE": "${MLFLOW_DB_PASSWORD}"}}}}
    (project / "probe.yml").write_text(yaml.safe_dump(fragment))
    result = subprocess.run(
        [compose_bin, "-f", project / "probe.yml", "--env-file", project / ".env.secrets", "config", "--format", "json"],
        capture_output=True, text=True, cwd=project, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    assert result.returncode == 0, result.stderr
    theirs = json.loads(result.stdout)["services"]["probe"]["environment"]["VALUE"].replace("$$", "$")
    assert theirs != ours
