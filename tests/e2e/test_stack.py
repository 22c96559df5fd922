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
import tempfile
import time
import urllib.error
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

API = "/api/2.0/mlflow"


def curl(stack: Stack, *args: str, auth: bool = True) -> tuple[int, str]:
    """The seed's curl examples, sent to the public URL with the CA and credentials."""
    command = ["curl", "-sS", "--cacert", str(stack.nginx.ca_file), "-o", "-", "-w", "\n%{http_code}"]
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
    assert {"model/MLmodel", "model/model.pkl", "confusion_matrix.png", "feature_importance.csv"} <= set(run["artifacts"])
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
    keys = object_keys(stack, f"{tracking['experiment_id']}/{tracking['run_id']}/")
    names = {key.rsplit("/", 1)[-1] for key in keys}
    assert {"MLmodel", "model.pkl", "confusion_matrix.png", "feature_importance.csv"} <= names


def test_registry_example_serves_the_production_model(seeded):
    registry = seeded["registry"]
    assert registry["version"] == "1"
    assert registry["predictions"] == seeded["tracking"]["predictions"]


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
    assert [model["name"] for model in json.loads(body)["registered_models"]] == ["production-classifier"]


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


def test_the_mlflow_role_is_not_privileged(stack):
    with psycopg.connect(**stack.pg.dsn(), autocommit=True) as connection:
        row = connection.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = 'mlflow'"
        ).fetchone()
    assert row == (False, False, False, False, False)
