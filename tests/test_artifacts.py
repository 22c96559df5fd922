"""What the compose service and image promise, read from the built artifacts."""

from __future__ import annotations

import yaml

from generator.artifacts import compose, image
from generator.envfiles import read_project_env
from generator.settings import load_settings
from tests.conftest import EXAMPLES, build_profile, write_tree


def services(project_dir):
    return yaml.safe_load(build_profile(project_dir)[compose.PATH])["services"]


def test_server_argv_proxies_artifacts_without_a_default_root():
    command = services(EXAMPLES / "prod")["mlflow"]["command"]
    assert command[:8] == ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--workers", "4"]
    assert command[command.index("--artifacts-destination") + 1] == "s3://mlflow-artifacts"
    assert "--serve-artifacts" in command and "--default-artifact-root" not in command
    assert command[command.index("--expose-prometheus") + 1] in services(EXAMPLES / "prod")["mlflow"]["tmpfs"]


def test_no_password_on_the_command_line_or_in_the_store_uri():
    mlflow = services(EXAMPLES / "prod")["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"] == "postgresql://mlflow@postgres:5432/mlflow"
    assert "--backend-store-uri" not in mlflow["command"]
    assert mlflow["environment"]["PGPASSWORD"].startswith("${MLFLOW_DB_PASSWORD:?")


def test_serving_off_uses_the_default_artifact_root(project):
    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=true\n"
                         "MLFLOW_SERVE_ARTIFACTS=false\nMLFLOW_DEFAULT_ARTIFACT_ROOT=s3://mlflow-artifacts/runs\n"})
    command = services(project)["mlflow"]["command"]
    assert "--no-serve-artifacts" in command and "--artifacts-destination" not in command
    assert command[command.index("--default-artifact-root") + 1] == "s3://mlflow-artifacts/runs"


def test_every_network_address_comes_from_an_environment_variable():
    """A test harness can point both services at loopback through their environment."""
    built = services(EXAMPLES / "prod")
    # 2.9.2's `mlflow gc` reads its store from the command line only.
    gc_command = built["mlflow-gc"].pop("command")
    assert gc_command[gc_command.index("--backend-store-uri") + 1] == built["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    flat = yaml.safe_dump({name: {k: v for k, v in svc.items() if k != "environment"} for name, svc in built.items()})
    for address in ("postgres:5432", "minio:9000", "http://minio"):
        assert address not in flat
    assert built["mlflow-init"]["environment"]["PGHOST"] == "postgres"
    assert built["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_healthcheck_uses_python_urllib_on_health():
    check = services(EXAMPLES / "dev")["mlflow"]["healthcheck"]
    assert check["test"][:3] == ["CMD", "python", "-c"]
    assert "urllib" in check["test"][3] and "/health" in check["test"][3]
    assert (check["interval"], check["timeout"], check["retries"]) == ("30s", "10s", 3)


def test_the_route_accepts_a_full_host_without_doubling_the_domain(project):
    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nBASE_DOMAIN=example.com\n"
                         "MLFLOW_ROUTE=mlflow.${BASE_DOMAIN}\n"})
    assert load_settings(read_project_env(project)).public_host == "mlflow.example.com"
    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nBASE_DOMAIN=example.com\nMLFLOW_ROUTE=ml\n"})
    assert load_settings(read_project_env(project)).public_host == "ml.example.com"


def test_the_seeds_defaults(project):
    settings = load_settings(read_project_env(project))
    assert str(settings.server.version) == "2.9.2"
    assert (settings.server.port, settings.server.route, settings.server.workers) == (5000, "mlflow", 2)
    assert (settings.database.name, settings.database.user) == ("mlflow", "mlflow")
    assert settings.storage.bucket == "mlflow-artifacts"
    assert settings.storage.artifacts_root == "s3://mlflow-artifacts"
    assert settings.storage.serve_artifacts is True
    assert (settings.auth.enabled, settings.auth.username) == (False, "admin")
    assert (settings.gc.enabled, settings.gc.schedule) == (True, "0 3 * * 0")
    assert settings.public_host == "mlflow.local.nself.org"


def test_minio_is_turned_on_with_a_one_line_notice(project, tmp_path):
    from tests.conftest import run_generator

    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\n"})
    result = run_generator("build", "--project-dir", project, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "MinIO" in line]
    assert len(notices) == 1 and "MINIO_ENABLED" in notices[0]
    assert "minio" in services(project)


def test_the_image_carries_every_init_module_below_a_header():
    from tests.conftest import ROOT

    files = build_profile(EXAMPLES / "dev")
    copied = {path: content for path, content in files.items() if path.startswith("mlflow/init/")}
    sources = sorted((ROOT / "init").glob("*.py"))
    assert sorted(copied) == [f"mlflow/init/{path.name}" for path in sources]
    for path in sources:
        first, second, body = copied[f"mlflow/init/{path.name}"].split(b"\n", 2)
        assert first == f"# Generated by nself-mlflow from init/{path.name}.".encode()
        assert second.startswith(b"# Do not edit")
        assert body == path.read_bytes()


def test_the_image_tag_changes_with_the_build_context(project):
    settings = load_settings(read_project_env(project))
    files = image.build(settings)
    changed = {**files, "mlflow/Dockerfile": files["mlflow/Dockerfile"] + b"# edit\n"}
    assert image.image_tag(settings, files) != image.image_tag(settings, changed)
    assert image.image_tag(settings, files) == image.image_tag(settings, dict(files))


def test_gc_service_runs_the_scheduler_against_the_server():
    built = services(EXAMPLES / "prod")
    gc = built["mlflow-gc"]
    assert gc["command"][:4] == ["python", "-m", "init.gc", "--"]
    assert gc["command"][4:6] == ["mlflow", "gc"]
    assert gc["environment"]["MLFLOW_GC_SCHEDULE"] == "0 3 * * 0"
    # Proxied artifacts are deleted only through the server.
    assert gc["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert gc["environment"]["PGPASSWORD"].startswith("${MLFLOW_DB_PASSWORD:?")
    assert "AWS_SECRET_ACCESS_KEY" not in gc["environment"]
    assert gc["image"] == built["mlflow"]["image"]
    assert gc["healthcheck"]["test"] == ["CMD", "python", "-m", "init.gc", "--healthcheck"]


def test_gc_off_has_no_gc_service():
    assert "mlflow-gc" not in services(EXAMPLES / "gc-off")
