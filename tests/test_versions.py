"""Version rules, tested at the releases where the behaviour changed."""

from __future__ import annotations

import pytest

from generator.artifacts import compose, image
from generator.envfiles import read_project_env
from generator.settings import load_settings
from generator.versions import (
    checks_host_header,
    scoring_server_uses_uvicorn,
    scoring_workers_variable,
    needs_sqlalchemy_pin,
    parse_version,
    support_problem,
    uses_uvicorn,
)
from tests.conftest import write_tree


def v(text):
    return parse_version(text)


@pytest.mark.parametrize(
    ("rule", "before", "since"),
    [
        (uses_uvicorn, "3.2.9", "3.3.0"),
        (checks_host_header, "3.4.9", "3.5.0"),
        (scoring_server_uses_uvicorn, "2.20.9", "2.21.0"),
    ],
)
def test_rules_switch_exactly_at_their_release(rule, before, since):
    assert not rule(v(before))
    assert rule(v(since))


def test_sqlalchemy_pin_applies_to_every_2x_and_no_3x():
    assert needs_sqlalchemy_pin(v("2.9.2")) and needs_sqlalchemy_pin(v("2.22.4"))
    assert not needs_sqlalchemy_pin(v("3.0.0"))


@pytest.mark.parametrize("text", ["2.9.0", "2.9.2", "2.22.4", "3.0.0", "3.17.2"])
def test_supported_range(text):
    assert support_problem(v(text)) is None


@pytest.mark.parametrize("text", ["2.8.1", "1.30.0", "3.18.0", "4.0.0"])
def test_outside_the_supported_range(text):
    assert "outside the supported range" in support_problem(v(text))


@pytest.mark.parametrize("text", ["2.9", "v2.9.2", "2.9.2rc1", "latest", "02.9.2", ""])
def test_version_must_be_a_release_number(text):
    assert parse_version(text) is None


def settings_for(tmp_path, version, **extra):
    lines = {"PROJECT_NAME": "demo", "MLFLOW_ENABLED": "true", "MINIO_ENABLED": "true", "MLFLOW_VERSION": version,
             "POSTGRES_PASSWORD": "pg-secret-1", "MINIO_ROOT_PASSWORD": "minio-secret-1",
             "MLFLOW_DB_PASSWORD": "db-secret-1", "BASE_DOMAIN": "example.com", **extra}
    write_tree(tmp_path, {".env": "".join(f"{k}={val}\n" for k, val in lines.items())})
    return load_settings(read_project_env(tmp_path))


def test_2x_runs_gunicorn_with_a_long_timeout(tmp_path):
    command = compose.server_command(settings_for(tmp_path, "2.9.2"))
    assert command[command.index("--gunicorn-opts") + 1] == "--timeout 600 --graceful-timeout 30"
    assert "--uvicorn-opts" not in command and "--allowed-hosts" not in command


def test_3_3_uses_uvicorn_and_never_passes_gunicorn_opts(tmp_path):
    command = compose.server_command(settings_for(tmp_path, "3.3.0"))
    assert "--uvicorn-opts" in command and "--gunicorn-opts" not in command
    assert "--allowed-hosts" not in command


def test_3_5_lists_the_public_host_and_the_network_name(tmp_path):
    command = compose.server_command(settings_for(tmp_path, "3.5.0", MLFLOW_PORT="5050"))
    hosts = command[command.index("--allowed-hosts") + 1].split(",")
    assert {"mlflow.example.com", "mlflow:5000", "localhost:5050", "127.0.0.1:5050"} <= set(hosts)
    assert command[command.index("--cors-allowed-origins") + 1] == "https://mlflow.example.com"


def test_image_pins_follow_the_version(tmp_path):
    assert "sqlalchemy<2.1" in image.requirements(v("2.9.2"))
    assert "sqlalchemy<2.1" not in image.requirements(v("3.1.0"))
    dockerfile = image.build(settings_for(tmp_path, "3.1.0"))["mlflow/Dockerfile"].decode()
    assert "FROM ghcr.io/mlflow/mlflow:v3.1.0\n" in dockerfile
    assert all(requirement.count("==") == 1 for requirement in image.requirements(v("3.1.0")))


def test_allowed_hosts_are_listed_once_with_the_default_port(tmp_path):
    command = compose.server_command(settings_for(tmp_path, "3.5.0"))
    hosts = command[command.index("--allowed-hosts") + 1].split(",")
    assert hosts == ["mlflow.example.com", "mlflow:5000", "localhost:5000", "127.0.0.1:5000"]


@pytest.mark.parametrize("version", ["2.9.2", "3.4.0", "3.17.2"])
def test_gc_and_healthcheck_are_the_same_in_every_version(tmp_path, version):
    # gc reads the server from MLFLOW_TRACKING_URI in every version (3.x also
    # has --tracking-uri, whose default is that variable); /health has no
    # prefix unless --static-prefix is used, which the build never does.
    settings = settings_for(tmp_path, version)
    assert compose.gc_command(settings) == ["mlflow", "gc", "--backend-store-uri", "postgresql://mlflow@postgres:5432/mlflow"]
    service = compose.gc_service(settings, "tag")
    assert service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "/health'" in compose._healthcheck()["test"][-1]


def test_the_scoring_workers_variable_follows_the_scoring_server():
    assert scoring_workers_variable(v("2.20.9")) == "MLFLOW_WORKERS"
    assert scoring_workers_variable(v("2.21.0")) == "MLFLOW_MODELS_WORKERS"
