"""End to end: examples/prod, unmodified, as a live stack on loopback.

PostgreSQL 15, a SeaweedFS S3 server with the example's MinIO credentials,
`python -m init`, `mlflow server` and nginx, each started from what the
generated files say (tests/e2e/stack.py). Every client goes through nginx
over HTTPS with basic auth, as a user's training script would.

The tests share one stack and run in file order; the restart test is last.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml
from botocore import UNSIGNED
from botocore.config import Config

from generator.artifacts import grafana as grafana_artifact
from generator.artifacts import prometheus as prometheus_artifact
from tests.conftest import require_tool
from tests.e2e.stack import Stack
from tests.services import _wait_for_port, free_port
from tests.test_init import outcomes

API = "/api/2.0/mlflow"


def curl(stack: Stack, *args: str, auth: bool = True) -> tuple[int, str]:
    """The seed's curl examples, sent to the public URL with the CA and credentials."""
    require_tool(shutil.which("curl"), "curl (Debian package curl)")
    command = ["curl", "-sS", "--cacert", str(stack.nginx.ca_file), *stack.curl_resolve(),
               "-o", "-", "-w", "\n%{http_code}"]
    if auth:
        command += ["-u", ":".join(stack.credentials)]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, check=True)
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def s3_client(stack: Stack, signed: bool = True):
    if signed:
        return boto3.client("s3", endpoint_url=stack.s3.endpoint, region_name="us-east-1",
                            aws_access_key_id=stack.s3.access_key, aws_secret_access_key=stack.s3.secret_key)
    return boto3.client("s3", endpoint_url=stack.s3.endpoint, region_name="us-east-1",
                        config=Config(signature_version=UNSIGNED))


def object_keys(stack: Stack, prefix: str) -> list[str]:
    bucket = stack.values.get("MLFLOW_ARTIFACTS_BUCKET", "mlflow-artifacts")
    pages = s3_client(stack).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def mlflow_database(stack: Stack) -> psycopg.Connection:
    return psycopg.connect(**stack.pg.dsn(dbname="mlflow"), autocommit=True)


# -- the seed's Python examples ---------------------------------------------

def test_tracking_example_logs_params_metrics_steps_model_and_files(stack, seeded):
    tracking = seeded["tracking"]
    inspected = stack.run_client("inspect_runs.py", tracking["run_id"], tracking["loop_run_id"])["runs"]
    run = inspected[tracking["run_id"]]
    assert run["status"] == "FINISHED"
    assert run["params"] == {"n_estimators": "100", "max_depth": "10", "learning_rate": "0.01"}
    assert run["metrics"] == pytest.approx(tracking["metrics"])
    assert run["metrics"]["accuracy"] > 0.9
    assert {"confusion_matrix.png", "feature_importance.csv"} <= set(run["artifacts"])
    if stack.version < (3,):
        assert {"model/MLmodel", "model/model.pkl"} <= set(run["artifacts"])
    else:
        # 3.x logs models as logged models, outside the run's artifacts.
        assert tracking["model_uri"].startswith("models:/m-")
    for name, digest in tracking["artifact_sha256"].items():
        assert run["artifacts"][name] == digest, f"{name} changed on its way through nginx and S3"
    # Proxied: the client never saw an s3:// URI.
    assert tracking["artifact_uri"].startswith("mlflow-artifacts:/")

    loop = inspected[tracking["loop_run_id"]]
    assert loop["params"] == {"epochs": "50", "batch_size": "32", "optimizer": "Adam", "learning_rate": "0.001"}
    assert loop["histories"]["train_loss"] == [[step, value] for step, value in enumerate(tracking["train_loss"])]
    assert [step for step, _ in loop["histories"]["val_accuracy"]] == list(range(50))


def test_artifacts_are_stored_in_the_bucket_under_the_run(stack, seeded):
    tracking = seeded["tracking"]
    names = {key.rsplit("/", 1)[-1] for key in object_keys(stack, f"{tracking['experiment_id']}/{tracking['run_id']}/")}
    assert {"confusion_matrix.png", "feature_importance.csv"} <= names
    model_prefix = f"{tracking['experiment_id']}/{tracking['run_id']}/" if stack.version < (3,) \
        else f"{tracking['experiment_id']}/models/{tracking['model_uri'].removeprefix('models:/')}/"
    assert {"MLmodel", "model.pkl"} <= {key.rsplit("/", 1)[-1] for key in object_keys(stack, model_prefix)}


def test_registry_example_serves_the_production_model(seeded):
    registry = seeded["registry"]
    assert registry["version"] == "1"
    for uri, predictions in seeded["loaded"]["by_uri"].items():
        assert predictions == seeded["tracking"]["predictions"], uri


# -- the seed's REST examples, exactly as documented ----------------------

def test_rest_list_experiments(stack, seeded):
    status, body = curl(stack, f"{stack.public_url}{API}/experiments/list")
    assert status == 200, body
    names = {experiment["name"] for experiment in json.loads(body)["experiments"]}
    assert {"Default", "my-classification-model", "pytorch-image-classifier"} <= names


def test_rest_search_runs_with_a_filter_and_order(stack, seeded):
    request = {
        "experiment_ids": ["1"],
        "filter": "metrics.accuracy > 0.9",
        "max_results": 10,
        "order_by": ["metrics.accuracy DESC"],
    }
    assert seeded["tracking"]["experiment_id"] == "1"
    status, body = curl(stack, "-X", "POST", f"{stack.public_url}{API}/runs/search",
                        "-H", "Content-Type: application/json", "-d", json.dumps(request))
    assert status == 200, body
    runs = json.loads(body)["runs"]
    assert [run["info"]["run_id"] for run in runs] == [seeded["tracking"]["run_id"]]
    # A filter that matches nothing returns nothing: the filter is applied.
    status, body = curl(stack, "-X", "POST", f"{stack.public_url}{API}/runs/search",
                        "-H", "Content-Type: application/json",
                        "-d", json.dumps({**request, "filter": "metrics.accuracy > 1.5"}))
    assert status == 200 and json.loads(body).get("runs", []) == []


def test_rest_get_run(stack, seeded):
    run_id = seeded["tracking"]["run_id"]
    status, body = curl(stack, f"{stack.public_url}{API}/runs/get?run_id={run_id}")
    assert status == 200, body
    run = json.loads(body)["run"]
    assert run["info"]["run_name"] == "random-forest-v1"
    assert {"key": "n_estimators", "value": "100"} in run["data"]["params"]


def test_rest_list_registered_models(stack, seeded):
    status, body = curl(stack, f"{stack.public_url}{API}/registered-models/list")
    assert status == 200, body
    models = {model["name"]: model for model in json.loads(body)["registered_models"]}
    assert [v["current_stage"] for v in models["production-classifier"]["latest_versions"]] == ["Production"]


def test_rest_get_model_version(stack, seeded):
    status, body = curl(stack, f"{stack.public_url}{API}/model-versions/get?name=production-classifier&version=1")
    assert status == 200, body
    version = json.loads(body)["model_version"]
    assert version["current_stage"] == "Production"
    assert version["run_id"] == seeded["tracking"]["run_id"]


# -- security ------------------------------------------------------------

PROTECTED = [
    ("GET", "/"),
    ("GET", "/static-files/static/js/main.js"),
    ("GET", f"{API}/experiments/list"),
    ("GET", f"{API}/experiments/search?max_results=10"),
    ("POST", f"{API}/runs/search"),
    ("POST", f"{API}/runs/create"),
    ("POST", f"{API}/runs/delete"),
    ("GET", f"{API}/runs/get?run_id=x"),
    ("GET", f"{API}/registered-models/list"),
    ("GET", f"{API}/model-versions/get?name=production-classifier&version=1"),
    ("POST", f"{API}/model-versions/transition-stage"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=1"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/x/artifacts/evil.txt"),
    ("GET", "/ajax-api/2.0/mlflow/experiments/search?max_results=10"),
    ("GET", "/get-artifact?path=MLmodel&run_uuid=x"),
    ("GET", "/model-versions/get-artifact?path=MLmodel&name=production-classifier&version=1"),
    ("GET", "/metrics"),
    ("GET", "/version"),
]


@pytest.mark.parametrize("method,path", PROTECTED)
def test_every_path_needs_credentials(stack, seeded, method, path):
    status, _ = curl(stack, "-X", method, f"{stack.public_url}{path}", auth=False)
    assert status == 401
    status, _ = curl(stack, "-X", method, "-u", f"{stack.credentials[0]}:wrong-password",
                     f"{stack.public_url}{path}", auth=False)
    assert status == 401


def test_health_is_open(stack):
    assert curl(stack, f"{stack.public_url}/health", auth=False) == (200, "OK")


def test_an_anonymous_s3_read_of_an_artifact_is_denied(stack, seeded):
    tracking = seeded["tracking"]
    key = next(k for k in object_keys(stack, f"{tracking['experiment_id']}/{tracking['run_id']}/")
               if k.endswith("confusion_matrix.png"))
    bucket = "mlflow-artifacts"
    assert s3_client(stack).get_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    with pytest.raises(Exception) as denied:
        s3_client(stack, signed=False).get_object(Bucket=bucket, Key=key)
    assert "AccessDenied" in str(denied.value) or "403" in str(denied.value)
    assert anonymous_status(f"{stack.s3.endpoint}/{bucket}/{key}") == 403


def anonymous_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_foreign_host_header_is_rejected_from_3_5(stack, seeded):
    """3.5+ checks Host against --allowed-hosts; 2.x has no such check."""
    url = f"{stack.public_url}{API}/experiments/search?max_results=1"
    assert curl(stack, url)[0] == 200
    status, body = curl(stack, "-H", "Host: evil.example.com", url)
    if stack.version >= (3, 5):
        assert status == 403 and "Invalid Host header" in body, body
    else:
        assert status == 200


def test_the_mlflow_role_is_not_privileged(stack):
    with psycopg.connect(**stack.pg.dsn(), autocommit=True) as connection:
        row = connection.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = 'mlflow'"
        ).fetchone()
    assert row == (False, False, False, False, False)


# -- a large artifact ----------------------------------------------------

LARGE_MIB = 256


def test_a_large_artifact_round_trips_byte_identical(stack, seeded, record_property):
    result = stack.run_client("large_artifact.py", str(LARGE_MIB), timeout=1200)
    assert result["size"] == result["downloaded_size"] == LARGE_MIB * 1024 * 1024
    assert result["downloaded_sha256"] == result["uploaded_sha256"]
    keys = object_keys(stack, f"{result['experiment_id']}/{result['run_id']}/")
    assert [key.rsplit("/", 1)[-1] for key in keys] == ["large.bin"]
    stored = s3_client(stack).head_object(Bucket="mlflow-artifacts", Key=keys[0])
    assert stored["ContentLength"] == LARGE_MIB * 1024 * 1024
    record_property("upload_seconds", result["upload_seconds"])
    record_property("download_seconds", result["download_seconds"])


# -- monitoring ----------------------------------------------------------

MLFLOW_METRIC = re.compile(r"(?<![\w:])mlflow_[a-z0-9_]+")


def metric_names_used(stack: Stack) -> set[str]:
    """The MLflow metric names the generated rules and dashboard query."""
    rules = yaml.safe_load((stack.out / prometheus_artifact.RULES_PATH).read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((stack.out / grafana_artifact.DASHBOARD_PATH).read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    return {name for expr in expressions for name in MLFLOW_METRIC.findall(expr)}


class Prometheus:
    def __init__(self, binary: str, config: dict, root: Path) -> None:
        self.root = root
        self.port = free_port()
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = subprocess.Popen(
            [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=open(root / "prometheus.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        _wait_for_port(self.port, 30, self.process)
        # The port opens before the storage is ready; until then the API answers 503.
        deadline = time.monotonic() + 30
        while anonymous_status(f"http://127.0.0.1:{self.port}/-/ready") != 200:
            assert time.monotonic() < deadline, (root / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)

    def query(self, expr: str) -> list:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)["data"]["result"]

    def metric_names(self) -> set[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/label/__name__/values", timeout=10) as response:
            return set(json.load(response)["data"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


def start_blackbox_exporter(root: Path) -> tuple[subprocess.Popen, str]:
    """The mlflow-blackbox service: the exporter with the image's default module."""
    binary = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    require_tool(binary, "the Prometheus blackbox exporter (Debian package prometheus-blackbox-exporter)")
    (root / "blackbox.yml").write_text(yaml.safe_dump({"modules": {"http_2xx": {"prober": "http"}}}))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={root / 'blackbox.yml'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(root / "blackbox.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    _wait_for_port(port, 30, process)
    return process, f"127.0.0.1:{port}"


def test_prometheus_scrapes_the_live_server_with_the_generated_jobs(stack, seeded, tmp_path):
    binary = shutil.which("prometheus")
    require_tool(binary, "Prometheus (Debian package prometheus)")
    blackbox, blackbox_address = start_blackbox_exporter(tmp_path)
    scrape = yaml.safe_load((stack.out / prometheus_artifact.SCRAPE_PATH).read_text())
    # The jobs that watch MLflow, as generated; only the container addresses
    # change. (The MinIO jobs need MinIO, which cannot run here.)
    jobs = [job for job in scrape["scrape_configs"]
            if job["job_name"] in (prometheus_artifact.MLFLOW_JOB, prometheus_artifact.HEALTH_JOB)]
    text = yaml.safe_dump(jobs).replace(prometheus_artifact.BLACKBOX_ADDRESS, blackbox_address)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        # Loading the generated rules into the real server checks them once more.
        "rule_files": [str(stack.out / prometheus_artifact.RULES_PATH)],
        "scrape_configs": yaml.safe_load(stack.localize(text)),
    }
    prometheus = Prometheus(binary, config, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            up = prometheus.query('up{job=~"mlflow|mlflow-health"} == 1')
            probe = prometheus.query('probe_success{job="mlflow-health"} == 1')
            rates = prometheus.query('sum(rate(mlflow_http_request_total{job="mlflow"}[1m]))')
            if len(up) == 2 and probe and rates:
                break
            # Traffic between scrapes, so the rates have something to count.
            urllib.request.urlopen(f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
            time.sleep(0.5)
        else:
            pytest.fail(f"after 60 s: targets up {up}, /health probe {probe}, request rates {rates}")
        scraped = prometheus.metric_names()
        used = metric_names_used(stack)
        assert {"mlflow_http_request_total", "mlflow_http_request_duration_seconds_bucket"} <= used
        assert used <= scraped, f"used by the rules or dashboard but never scraped: {sorted(used - scraped)}"
        # The expressions the dashboard's latency panels plot give numbers.
        p95 = prometheus.query('histogram_quantile(0.95, sum by (le) (rate(mlflow_http_request_duration_seconds_bucket{job="mlflow"}[1m])))')
        assert p95 and float(p95[0]["value"][1]) >= 0
        # The health probe goes to /health on the server, as the alert expects.
        assert prometheus.query('probe_http_status_code{job="mlflow-health"} == 200')
    finally:
        prometheus.stop()
        blackbox.terminate()
        blackbox.wait(15)


# -- garbage collection ----------------------------------------------------

def run_rows(stack: Stack, run_ids: list[str]) -> dict[str, dict[str, int]]:
    with mlflow_database(stack) as connection:
        return {
            run_id: {
                table: connection.execute(f"SELECT count(*) FROM {table} WHERE run_uuid = %s", (run_id,)).fetchone()[0]
                for table in ("runs", "params", "metrics", "latest_metrics", "tags")
            }
            for run_id in run_ids
        }


def test_gc_deletes_a_deleted_run_from_the_database_and_the_bucket(stack, seeded):
    setup = stack.run_client("gc_setup.py")
    deleted, kept = setup["deleted_run_id"], setup["kept_run_id"]
    prefix = f"{setup['experiment_id']}/"
    other_keys = object_keys(stack, f"{seeded['tracking']['experiment_id']}/")
    assert object_keys(stack, f"{prefix}{deleted}/") and object_keys(stack, f"{prefix}{kept}/")
    before = run_rows(stack, [deleted, kept, seeded["tracking"]["run_id"]])
    assert before[deleted]["runs"] == 1

    # Without the server's address, gc cannot delete proxied artifacts: the
    # failure is reported and nothing is lost.
    failed = stack.run_gc_once(without=("MLFLOW_TRACKING_URI",))
    assert failed.returncode != 0
    assert "mlflow-gc: FAILED with exit code" in failed.stdout
    assert run_rows(stack, [deleted])[deleted]["runs"] == 1

    result = stack.run_gc_once()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("mlflow-gc: ")]
    assert lines[0].startswith("mlflow-gc: starting: ") and lines[-1].startswith("mlflow-gc: finished in ")

    after = run_rows(stack, [deleted, kept, seeded["tracking"]["run_id"]])
    assert after[deleted] == {table: 0 for table in after[deleted]}
    assert after[kept] == before[kept]
    assert after[seeded["tracking"]["run_id"]] == before[seeded["tracking"]["run_id"]]
    assert object_keys(stack, f"{prefix}{deleted}/") == []
    assert [key.rsplit("/", 1)[-1] for key in object_keys(stack, f"{prefix}{kept}/")] == ["kept.txt"]
    assert object_keys(stack, f"{seeded['tracking']['experiment_id']}/") == other_keys


# -- restart durability (last: it restarts the shared stack) ----------------

TABLES = ("experiments", "runs", "params", "metrics", "latest_metrics", "tags",
          "registered_models", "model_versions")


def table_counts(stack: Stack) -> dict[str, int]:
    with mlflow_database(stack) as connection:
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


def test_everything_survives_a_restart_of_mlflow_and_nginx(stack, seeded):
    run_ids = [seeded["tracking"]["run_id"], seeded["tracking"]["loop_run_id"]]
    before = stack.run_client("inspect_runs.py", *run_ids)
    counts, keys = table_counts(stack), object_keys(stack, "")
    assert before["model_versions"] and counts["runs"] >= 2

    stack.stop_mlflow()
    stack.nginx.halt()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{stack.mlflow_url}/health", timeout=2)
    stack.start_mlflow()
    stack.start_nginx()
    init = stack.run_init()
    assert init.returncode == 0, init.stdout
    steps = outcomes(init)
    assert steps and set(steps.values()) == {"unchanged"}, init.stdout

    assert stack.run_client("inspect_runs.py", *run_ids) == before
    assert table_counts(stack) == counts
    assert object_keys(stack, "") == keys
    loaded = stack.run_client("load_production_model.py", seeded["inputs_file"])
    assert loaded["predictions"] == seeded["tracking"]["predictions"]
