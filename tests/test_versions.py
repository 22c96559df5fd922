"""Version rules, tested at the releases where the behaviour changed."""

from __future__ import annotations

import pytest

from generator.artifacts import compose, image
from generator.envfiles import read_project_env
from generator.settings import load_settings
from generator.versions import (
    auth_admin_from_environment,
    auth_app_problem,
    auth_has_credential_cache,
    auth_lists_users,
    auth_needs_flask_secret,
    auth_needs_flask_wtf,
    auth_permissions_api_v3,
    auth_refuses_short_passwords,
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
        (auth_needs_flask_secret, "2.20.9", "2.21.0"),
        (auth_needs_flask_wtf, "2.20.9", "2.21.0"),
        (auth_refuses_short_passwords, "2.21.9", "2.22.0"),
        (auth_lists_users, "3.9.9", "3.10.0"),
        (auth_has_credential_cache, "3.11.9", "3.12.0"),
        (auth_permissions_api_v3, "3.12.9", "3.13.0"),
        (auth_admin_from_environment, "3.16.0", "3.16.1"),
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


@pytest.mark.parametrize(("text", "broken"), [("3.2.9", False), ("3.3.0", True), ("3.3.9", True), ("3.4.0", False)])
def test_the_auth_app_is_refused_on_3_3_only(text, broken):
    assert (auth_app_problem(v(text)) is not None) == broken


def mlflow_mode(tmp_path, version):
    return settings_for(tmp_path, version, MLFLOW_AUTH_ENABLED="true", MLFLOW_AUTH_MODE="mlflow",
                        MLFLOW_AUTH_PASSWORD="admin-password-1", MLFLOW_AUTH_HASH_SALT="a" * 21 + ".",
                        MLFLOW_FLASK_SERVER_SECRET_KEY="flask-secret-1")


@pytest.mark.parametrize(("before", "since"), [("2.20.9", "2.21.0")])
def test_the_auth_app_gets_flask_wtf_and_its_secret_key_from_2_21(tmp_path, before, since):
    old, new = mlflow_mode(tmp_path / "old", before), mlflow_mode(tmp_path / "new", since)
    assert image.AUTH_FORMS not in image.requirements(old.server.version, True)
    assert image.AUTH_FORMS in image.requirements(new.server.version, True)
    assert image.AUTH_FORMS not in image.requirements(new.server.version, False)
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY" not in compose.mlflow_service(old, "tag")["environment"]
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY" in compose.mlflow_service(new, "tag")["environment"]


def test_the_admin_reaches_the_server_by_environment_from_3_16_1(tmp_path):
    from generator.artifacts import auth

    old, new = mlflow_mode(tmp_path / "old", "3.16.0"), mlflow_mode(tmp_path / "new", "3.16.1")
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in compose.mlflow_service(old, "tag")["environment"]
    assert compose.mlflow_service(new, "tag")["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == compose.MLFLOW_AUTH_PASSWORD
    assert "admin_password =" in auth.build(old)[auth.PATH].decode()
    assert "admin_password" not in auth.build(new)[auth.PATH].decode()


def test_the_credential_cache_is_mlflows_from_3_12_and_ours_before(tmp_path):
    from generator.artifacts import auth

    old, new = auth.build(mlflow_mode(tmp_path / "old", "3.11.9"))[auth.PATH].decode(), \
        auth.build(mlflow_mode(tmp_path / "new", "3.12.0"))[auth.PATH].decode()
    assert f"authorization_function = {auth.CACHED_AUTHORIZATION_FUNCTION}" in old and "auth_cache" not in old
    assert f"auth_cache_ttl_seconds = {auth.CACHE_TTL_SECONDS}" in new and "authorization_function" not in new
