"""What the compose service and image promise, read from the built artifacts."""

from __future__ import annotations

import json

import pytest
import yaml

from generator.artifacts import compose, image
from generator.envfiles import read_project_env
from generator.settings import load_settings
from tests.conftest import EXAMPLES, MINIMAL_SECRETS, build_profile, write_tree


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


# -- where the artifacts live ------------------------------------------------

EXTERNAL_ENV = (
    "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=false\n"
    "S3_ENDPOINT=https://s3.example.internal\nS3_ACCESS_KEY=mlflow-writer\nS3_REGION=eu-west-3\n"
)
EXTERNAL_SECRETS = "POSTGRES_PASSWORD=postgres-secret-1\nS3_SECRET_KEY=external-secret-1\nMLFLOW_DB_PASSWORD=db-secret-1\n"


def test_an_external_s3_gets_no_minio_service_and_no_dependency_on_it(project):
    write_tree(project, {".env": EXTERNAL_ENV, ".env.secrets": EXTERNAL_SECRETS})
    files = build_profile(project)
    built = yaml.safe_load(files[compose.PATH])["services"]
    assert "minio" not in built
    assert all("minio" not in service.get("depends_on", {}) for service in built.values())
    assert "volumes" not in yaml.safe_load(files[compose.PATH])
    for name in ("mlflow", "mlflow-init"):
        environment = built[name]["environment"]
        assert environment["MLFLOW_S3_ENDPOINT_URL"] == "https://s3.example.internal"
        assert environment["AWS_ACCESS_KEY_ID"] == "mlflow-writer"
        assert environment["AWS_SECRET_ACCESS_KEY"].startswith("${S3_SECRET_KEY:?")
        assert environment["AWS_DEFAULT_REGION"] == "eu-west-3"
    # That bucket's policy is its operator's: no policy file, nothing mounted.
    assert "MLFLOW_INIT_BUCKET_POLICY" not in built["mlflow-init"]["environment"]
    assert not [path for path in files if path.startswith("minio/")]
    assert built["mlflow-init"]["volumes"] == ["./postgres/init/mlflow.sql:/etc/nself-mlflow/mlflow.sql:ro"]


def test_gc_gets_the_external_store_only_when_it_deletes_s3_objects_itself(project):
    write_tree(project, {".env": EXTERNAL_ENV, ".env.secrets": EXTERNAL_SECRETS})
    assert "AWS_SECRET_ACCESS_KEY" not in services(project)["mlflow-gc"]["environment"]
    write_tree(project, {".env": EXTERNAL_ENV + "MLFLOW_SERVE_ARTIFACTS=false\n"
                         "MLFLOW_DEFAULT_ARTIFACT_ROOT=s3://mlflow-artifacts/runs\n"})
    environment = services(project)["mlflow-gc"]["environment"]
    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "https://s3.example.internal"
    assert environment["AWS_ACCESS_KEY_ID"] == "mlflow-writer"
    assert environment["AWS_SECRET_ACCESS_KEY"].startswith("${S3_SECRET_KEY:?")


def test_s3_keys_sign_mlflows_requests_to_minio_too(project):
    """S3_ACCESS_KEY/S3_SECRET_KEY replace MinIO's root keys for MLflow; the MinIO server keeps its root user."""
    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nS3_ACCESS_KEY=mlflow-writer\n",
                         ".env.secrets": MINIMAL_SECRETS + "S3_SECRET_KEY=writer-secret-1\n"})
    files = build_profile(project)
    built = yaml.safe_load(files[compose.PATH])["services"]
    assert built["mlflow"]["environment"]["AWS_ACCESS_KEY_ID"] == "mlflow-writer"
    assert built["mlflow"]["environment"]["AWS_SECRET_ACCESS_KEY"].startswith("${S3_SECRET_KEY:?")
    assert built["mlflow"]["environment"]["AWS_DEFAULT_REGION"] == "us-east-1"
    assert built["minio"]["environment"]["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD:?")
    assert built["mlflow"]["depends_on"]["minio"] == {"condition": "service_healthy"}
    policy = json.loads(files["minio/policies/mlflow-artifacts.json"])
    assert policy["Statement"][0]["Principal"] == {"AWS": ["arn:aws:iam:::user/mlflow-writer"]}


@pytest.mark.parametrize(("env", "secrets", "expected"), [
    ("PROJECT_NAME=demo\nMLFLOW_ENABLED=true\n", MINIMAL_SECRETS,
     "artifact store: MinIO, signed with the MinIO root keys. MINIO_ENABLED is not true"),
    ("PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=true\n", MINIMAL_SECRETS,
     "artifact store: nself's MinIO (MINIO_ENABLED=true) at http://minio:9000, signed with the MinIO root keys"),
    (EXTERNAL_ENV, EXTERNAL_SECRETS,
     "artifact store: external S3 at https://s3.example.internal (S3_ENDPOINT, region eu-west-3), "
     "signed with S3_ACCESS_KEY and S3_SECRET_KEY; no minio service is added"),
], ids=["minio-added", "nself-minio", "external"])
def test_the_build_says_in_one_line_which_store_it_uses(project, tmp_path, env, secrets, expected):
    from tests.conftest import run_generator

    write_tree(project, {".env": env, ".env.secrets": secrets})
    result = run_generator("build", "--project-dir", project, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("artifact store:")]
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "secret-1" not in result.stderr + result.stdout


# -- telemetry ---------------------------------------------------------------

def mlflow_containers(built: dict) -> dict:
    """Every service that runs the generated MLflow image."""
    image_tag = built["mlflow"]["image"]
    return {name: service for name, service in built.items() if service.get("image") == image_tag}


def test_every_mlflow_container_has_telemetry_off_by_default(project):
    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMONITORING_ENABLED=true\n"})
    built = services(project)
    containers = mlflow_containers(built)
    assert set(containers) == {"mlflow", "mlflow-init", "mlflow-gc"}
    for name, service in containers.items():
        assert service["environment"]["MLFLOW_DISABLE_TELEMETRY"] == "true", name
        assert service["environment"]["DO_NOT_TRACK"] == "true", name
    # Not MLflow's: MinIO and the blackbox exporter are left as they are.
    assert "MLFLOW_DISABLE_TELEMETRY" not in built["minio"]["environment"]
    assert "environment" not in built["mlflow-blackbox"]


def test_telemetry_is_mlflows_default_only_when_asked_for(project):
    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMLFLOW_TELEMETRY_ENABLED=true\n"})
    for name, service in mlflow_containers(services(project)).items():
        assert not {"MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"} & set(service["environment"]), name
