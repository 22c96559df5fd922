"""`python -m generator service …` against the live stack of the end-to-end suite.

The commands read the example project's env cascade, as `nself service mlflow`
would; `--url` points them at the loopback ports the harness chose.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.api import MlflowApi
from tests.conftest import ROOT
from tests.e2e.stack import Stack


def service(stack: Stack, project: Path, *args: str, path: str | None = None, timeout: float = 900):
    resolver = stack.resolver_environment()
    environment = {**os.environ, **resolver, "PYTHONPATH": f"{ROOT}:{resolver['PYTHONPATH']}"}
    if path is not None:
        environment["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "generator", "service", *args, "--project-dir", str(project)],
        env=environment, capture_output=True, text=True, timeout=timeout,
    )


def public(stack: Stack) -> list[str]:
    return ["--url", stack.public_url, "--ca-file", str(stack.nginx.ca_file)]


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def test_status_is_healthy_and_says_docker_is_not_here(stack, seeded, e2e_project):
    result = service(stack, e2e_project, "status", "--url", stack.mlflow_url, "--public-url", stack.public_url,
                     "--ca-file", str(stack.nginx.ca_file), path="/usr/bin:/bin")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    version = ".".join(map(str, stack.version))
    assert lines[0] == f"MLflow: enabled, MLFLOW_VERSION {version}"
    assert "containers: unknown, no docker CLI on PATH" in lines
    assert f"health (direct, {stack.mlflow_url}): OK" in lines
    assert f"health (public, {stack.public_url}): OK" in lines
    assert f"version: {version}" in lines


def test_status_fails_when_the_server_is_down(stack, e2e_project):
    down = "http://127.0.0.1:9"
    result = service(stack, e2e_project, "status", "--url", down, "--public-url", stack.public_url,
                     "--ca-file", str(stack.nginx.ca_file), path="/usr/bin:/bin")
    assert result.returncode == 1
    assert f"health (direct, {down}): FAILED: cannot reach {down}" in result.stdout
    no_traceback(result)


def test_info_masks_passwords_unless_asked(stack, e2e_project):
    result = service(stack, e2e_project, "info", "--json")
    info = json.loads(result.stdout)
    assert info["ui_url"] == "https://mlflow.example.com"
    assert info["tracking_uri_in_docker_network"] == "http://mlflow:5000"
    assert info["tracking_uri_from_host"] == "http://localhost:5000"
    assert info["database"] == {"host": "postgres", "name": "mlflow", "user": "mlflow", "password": "********"}
    assert info["auth"] == {"enabled": True, "username": "ml-team", "password": "********"}
    assert stack.values["MLFLOW_AUTH_PASSWORD"] not in result.stdout
    shown = json.loads(service(stack, e2e_project, "info", "--json", "--show-secrets").stdout)
    assert shown["auth"]["password"] == stack.values["MLFLOW_AUTH_PASSWORD"]
    table = service(stack, e2e_project, "info").stdout
    assert "https://mlflow.example.com" in table and "********" in table


def test_experiments_lists_names_stages_and_run_counts(stack, seeded, e2e_project):
    result = service(stack, e2e_project, "experiments", "--json", *public(stack))
    assert result.returncode == 0, result.stderr
    found = {e["name"]: e for e in json.loads(result.stdout)}
    assert found["my-classification-model"]["runs"] == 1
    assert found["my-classification-model"]["lifecycle_stage"] == "active"
    assert found["pytorch-image-classifier"]["runs"] == 1
    table = service(stack, e2e_project, "experiments", *public(stack)).stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "STAGE", "RUNS", "LAST", "UPDATE", "(UTC)"]
    assert any(line.split()[:4] == ["1", "my-classification-model", "active", "1"] for line in table)


def test_models_lists_the_production_version(stack, seeded, e2e_project):
    result = service(stack, e2e_project, "models", "--json", *public(stack))
    assert result.returncode == 0, result.stderr
    models = {m["name"]: m for m in json.loads(result.stdout)}
    assert models["production-classifier"]["latest_versions"] == {"Production": "1"}
    table = service(stack, e2e_project, "models", *public(stack)).stdout
    assert "production-classifier  Production: v1" in table


def test_listings_follow_every_page(stack, seeded):
    from service.queries import list_experiments, list_models

    api = MlflowApi(stack.mlflow_url)
    for index in range(3):
        api.post("registered-models/create", {"name": f"paging-model-{index}"})
    small_pages = MlflowApi(stack.mlflow_url, page_size=1)
    experiments = list_experiments(api)
    assert len(experiments) >= 3
    assert list_experiments(small_pages) == experiments
    models = list_models(api)
    assert len(models) >= 4
    assert list_models(small_pages) == models


def test_wrong_credentials_and_an_unreachable_server_are_one_clear_line(stack, e2e_project, tmp_path):
    wrong = tmp_path / "wrong-password"
    wrong.mkdir()
    for name in os.listdir(e2e_project):
        (wrong / name).write_bytes((e2e_project / name).read_bytes())
    with open(wrong / ".env", "a") as env:
        env.write("MLFLOW_AUTH_PASSWORD=not-the-password\n")
    result = service(stack, wrong, "experiments", *public(stack))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"Error: {stack.public_url} answered 401 Unauthorized: check MLFLOW_AUTH_USERNAME "
                                     "and MLFLOW_AUTH_PASSWORD against the server's htpasswd (run nself build)")
    result = service(stack, e2e_project, "models", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot reach http://127.0.0.1:9 (") and "run nself start" in result.stderr
    no_traceback(result)
    result = service(stack, e2e_project, "models", "--url", stack.public_url)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {stack.public_url}: TLS verification failed (")
    assert result.stderr.rstrip().endswith("pass --ca-file with the certificate's CA, or --insecure")
    assert service(stack, e2e_project, "models", "--url", stack.public_url, "--insecure").returncode == 0


def test_gc_local_mode_deletes_a_deleted_run(stack, e2e_project):
    setup = stack.run_client("gc_setup.py")
    store = f"postgresql://mlflow@127.0.0.1:{stack.pg.port}/mlflow"
    result = service(stack, e2e_project, "gc", "--local", "--backend-store-uri", store, "--tracking-uri", stack.mlflow_url,
                     path=f"{stack.venv / 'bin'}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mlflow-gc: finished in" in result.stdout
    api = MlflowApi(stack.mlflow_url)
    assert api.get_optional("runs/get", run_id=setup["deleted_run_id"]) is None
    assert api.get("runs/get", run_id=setup["kept_run_id"])["run"]["info"]["lifecycle_stage"] == "active"


# -- export and import ---------------------------------------------------------

RUNS = int(os.environ.get("NSELF_MLFLOW_EXPORT_RUNS", "100"))
STEPS = int(os.environ.get("NSELF_MLFLOW_EXPORT_STEPS", "1000"))
ARTIFACT_BYTES = int(os.environ.get("NSELF_MLFLOW_EXPORT_ARTIFACT_MB", "20")) * 1_000_000


@pytest.fixture(scope="module")
def big_experiment(stack, tmp_path_factory) -> str:
    """RUNS runs x STEPS metric steps, params, tags and ARTIFACT_BYTES of artifacts in all."""
    api = MlflowApi(stack.mlflow_url)
    name = "export-source"
    experiment_id = api.post("experiments/create", {"name": name, "tags": [{"key": "team", "value": "ml"}]})["experiment_id"]
    files = tmp_path_factory.mktemp("artifacts")
    per_run = ARTIFACT_BYTES // RUNS
    base = 1_700_000_000_000
    for index in range(RUNS):
        info = api.post("runs/create", {"experiment_id": experiment_id, "run_name": f"run-{index:03d}",
                                        "start_time": base + index * 1000,
                                        "tags": [{"key": "index", "value": str(index)}]})["run"]["info"]
        metrics = [{"key": "loss", "value": 1.0 / (step + 1), "timestamp": base + step, "step": step}
                   for step in range(STEPS)]
        for start in range(0, len(metrics), 1000):
            api.post("runs/log-batch", {"run_id": info["run_id"], "metrics": metrics[start:start + 1000]})
        api.post("runs/log-batch", {"run_id": info["run_id"],
                                    "params": [{"key": "lr", "value": "0.01"}, {"key": "index", "value": str(index)}]})
        api.post("runs/log-batch", {"run_id": info["run_id"], "metrics": [
            {"key": "accuracy", "value": index / RUNS, "timestamp": base, "step": 0}]})
        data = files / f"weights-{index}.bin"
        data.write_bytes(os.urandom(per_run))
        api.upload_artifact(info["artifact_uri"], "model/weights.bin", data)
        (files / "notes.txt").write_text(f"run {index}\n")
        api.upload_artifact(info["artifact_uri"], "notes.txt", files / "notes.txt")
        api.post("runs/update", {"run_id": info["run_id"], "status": "FINISHED", "end_time": base + index * 1000 + 500})
    return name


def same_export(first: Path, second: Path) -> None:
    """The two exports hold the same content, apart from ids the servers assigned."""
    a, b = (json.loads((d / "experiment.json").read_text()) for d in (first, second))
    assert a["experiment"]["tags"] == b["experiment"]["tags"]
    assert len(a["runs"]) == len(b["runs"])
    for run_a, run_b in zip(a["runs"], b["runs"]):
        dir_a, dir_b = first / "runs" / run_a, second / "runs" / run_b
        assert json.loads((dir_a / "run.json").read_text()) == json.loads((dir_b / "run.json").read_text())
        artifacts = json.loads((dir_a / "artifacts.json").read_text())
        assert artifacts == json.loads((dir_b / "artifacts.json").read_text())
        for artifact in artifacts:
            assert filecmp.cmp(dir_a / "artifacts" / artifact["path"], dir_b / "artifacts" / artifact["path"], shallow=False)


def test_export_import_export_round_trips(stack, big_experiment, e2e_project, tmp_path, record_property):
    first, second = tmp_path / "first", tmp_path / "second"
    started = time.monotonic()
    result = service(stack, e2e_project, "export", "--experiment", big_experiment, "--output", str(first), *public(stack))
    export_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    manifest = json.loads((first / "experiment.json").read_text())
    assert len(manifest["runs"]) == RUNS
    record = json.loads((first / "runs" / manifest["runs"][0] / "run.json").read_text())
    assert [step for step, _, _ in record["metrics"]["loss"]] == list(range(STEPS)), "the full history, every step"

    started = time.monotonic()
    result = service(stack, e2e_project, "import", "--input", str(first), "--experiment", "export-copy", *public(stack))
    import_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert f"{RUNS} runs imported, 0 already there" in result.stdout

    result = service(stack, e2e_project, "export", "--experiment", "export-copy", "--output", str(second), *public(stack))
    assert result.returncode == 0, result.stderr
    same_export(first, second)
    record_property("export_seconds", round(export_seconds, 1))
    record_property("import_seconds", round(import_seconds, 1))
    print(f"\nexport {RUNS} runs x {STEPS} steps + {ARTIFACT_BYTES / 1e6:.0f} MB: {export_seconds:.1f} s; "
          f"import: {import_seconds:.1f} s")

    # Resumed export: nothing downloaded again, except a file that was cut short.
    run_dir = first / "runs" / manifest["runs"][0] / "artifacts" / "model" / "weights.bin"
    run_dir.write_bytes(run_dir.read_bytes()[:10])
    result = service(stack, e2e_project, "export", "--experiment", big_experiment, "--output", str(first), *public(stack))
    assert f"{RUNS} runs, 1 artifact files downloaded, {2 * RUNS - 1} already there" in result.stdout
    same_export(first, second)

    # Resumed import into the same experiment: every run is already there.
    result = service(stack, e2e_project, "import", "--input", str(first), "--experiment", "export-copy", *public(stack))
    assert result.returncode == 0, result.stderr
    assert f"0 runs imported, {RUNS} already there" in result.stdout


def test_import_refuses_an_existing_experiment_and_a_foreign_directory(stack, seeded, e2e_project, tmp_path):
    (tmp_path / "experiment.json").write_text(json.dumps({
        "format": "nself-mlflow-experiment", "format_version": 1,
        "experiment": {"name": "my-classification-model", "tags": {}},
        "source": {"experiment_id": "1", "server_version": "2.9.2"}, "runs": []}))
    result = service(stack, e2e_project, "import", "--input", str(tmp_path), *public(stack))
    assert result.returncode == 2
    assert "an experiment named 'my-classification-model' already exists" in result.stderr
    (tmp_path / "experiment.json").write_text("{}")
    result = service(stack, e2e_project, "import", "--input", str(tmp_path), *public(stack))
    assert result.returncode == 2 and "is not an nself MLflow export" in result.stderr
    no_traceback(result)
