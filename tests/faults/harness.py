"""The fault suite's load, probe and checker, on a stack of tests/e2e/stack.py.

- `Load`: N client processes (clients/load_client.py) in the image's venv,
  logging through nginx over TLS with basic auth; their records are read back.
- `Probe`: one cheap write every 0.2 s through nginx, from this process, with
  no retries and no backoff: it tells when the stack answers again after a
  fault, which the clients' backoff would blur.
- `check`: every acknowledged write is in PostgreSQL (queried directly) and in
  the bucket with the same bytes; the only runs nobody was told about come
  from create_run calls that were retried or failed.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
import psycopg

from tests.e2e.serving import ServiceNames, loopback_network
from tests.e2e.stack import Stack

CLIENTS = Path(__file__).resolve().parent / "clients"
BUCKET = "mlflow-artifacts"
API = "/api/2.0/mlflow"
# The client's retry settings, as a training script would set them: six
# retries with a backoff factor of 1 wait 0+2+4+8+16+32 s, longer than any
# fault here lasts. 2.9.2's defaults (5, factor 2) differ from 3.x's (7, 2).
CLIENT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "120"}


# -- the stack -------------------------------------------------------------

@dataclass
class FaultStack(Stack):
    """The e2e stack, with nginx finding MLflow by its service name, as in compose.

    The vhost keeps `mlflow:5000` and its resolver; a DNS server on loopback
    (tests/e2e/serving.py's) answers for `mlflow` with the address the server
    listens on, one of a loopback /24 of this stack's own, on port 5000. A
    restart may put the server on a new address, as a recreated container
    gets a new IP: nginx must find it again through its resolver.
    """

    network: str = field(default_factory=loopback_network)
    mlflow_host: str = ""
    names: ServiceNames | None = None
    addresses_used: int = 1

    def __post_init__(self) -> None:
        self.mlflow_port = 5000
        self.names = ServiceNames(self.root)
        self.move_mlflow()

    def move_mlflow(self) -> None:
        """The next start listens on a new address, and the service name resolves to it."""
        self.addresses_used += 1
        self.mlflow_host = f"{self.network}{self.addresses_used}"
        self.names.set("mlflow", [self.mlflow_host])

    def server_argv(self, metrics_dir: Path) -> list[str]:
        argv = super().server_argv(metrics_dir)
        argv[argv.index("--host") + 1] = self.mlflow_host
        return argv

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.mlflow_host}:{self.mlflow_port}"

    def start_nginx(self):
        if self.nginx is None:
            self.nginx = self.nginx_for(self.out, resolver=f"127.0.0.1:{self.names.port}")
            self.nginx.upstream = "mlflow:5000"  # as generated: resolved per request
        return self.nginx.start()

    def stop(self) -> None:
        super().stop()
        self.names.stop()


# -- the load --------------------------------------------------------------

@dataclass
class Load:
    stack: Stack
    experiment_id: str
    seconds: float
    clients: int = 8
    pause: float = 0.05
    environment: dict[str, str] = field(default_factory=dict)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="load-")))
    processes: list[subprocess.Popen] = field(default_factory=list)
    started: float = 0.0

    def start(self) -> "Load":
        environment = {**self.stack.client_environment(), **CLIENT_RETRIES, **self.environment}
        go = self.directory / "go"
        for number in range(self.clients):
            workdir = self.directory / f"client-{number}"
            workdir.mkdir()
            self.processes.append(subprocess.Popen(
                [self.stack.venv / "bin/python", CLIENTS / "load_client.py", str(number), self.experiment_id,
                 self.directory / f"records-{number}.jsonl", self.directory / f"ready-{number}", go,
                 str(self.seconds), str(self.pause)],
                cwd=workdir, env=environment, stdout=open(workdir / "output.log", "wb"),
                stderr=subprocess.STDOUT, start_new_session=True,
            ))
        deadline = time.monotonic() + 120
        while not all((self.directory / f"ready-{number}").exists() for number in range(self.clients)):
            for process in self.processes:
                assert process.poll() is None, self.output()
            assert time.monotonic() < deadline, "the load clients did not start within 120 s"
            time.sleep(0.1)
        self.started = time.time()
        go.touch()
        return self

    def wait(self) -> list[dict]:
        """Every record, once every client has finished (bounded: the run's time plus the retries')."""
        for process in self.processes:
            try:
                process.wait(self.seconds + 240)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                raise AssertionError(f"a load client was still running {self.seconds + 240:.0f} s after it began")
            assert process.returncode == 0, self.output()
        return self.records()

    def records(self) -> list[dict]:
        return [json.loads(line) for path in sorted(self.directory.glob("records-*.jsonl"))
                for line in path.read_text().splitlines() if line.strip()]

    def output(self) -> str:
        return "\n".join(path.read_text(errors="replace")[-2000:] for path in self.directory.glob("client-*/output.log"))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait(10)


# -- REST through nginx, from this process -----------------------------------

def rest(stack: Stack, method: str, path: str, body: bytes | dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """One request through nginx with the credentials; no retry."""
    connection = stack.nginx.connection(timeout=timeout)
    headers = {"Host": stack.nginx.host,
               "Authorization": "Basic " + base64.b64encode(":".join(stack.credentials).encode()).decode()}
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def create_experiment(stack: Stack, name: str) -> str:
    status, body = rest(stack, "POST", f"{API}/experiments/create", {"name": name})
    assert status == 200, body
    return json.loads(body)["experiment_id"]


def create_run(stack: Stack, experiment_id: str) -> str:
    status, body = rest(stack, "POST", f"{API}/runs/create", {"experiment_id": experiment_id,
                                                              "start_time": int(time.time() * 1000)})
    assert status == 200, body
    return json.loads(body)["run"]["info"]["run_id"]


class Probe:
    """A metric and a small artifact written every 0.2 s through nginx, each answer recorded with its time."""

    def __init__(self, stack: Stack, experiment_id: str, direct_s3: bool = False) -> None:
        self.stack = stack
        # With direct_s3, also a PUT straight to the bucket: when S3 itself took uploads again.
        self.s3 = s3_client(stack, retries=False) if direct_s3 else None
        self.experiment_id = experiment_id
        self.run_id = create_run(stack, experiment_id)
        self.answers: list[tuple[float, str, int | str]] = []  # (end time, what, status or exception)
        self.first_failure: dict[str, str] = {}  # what -> the first failed answer, with its body
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Probe":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join(30)

    def _ask(self, what: str, method: str, path: str, body) -> None:
        try:
            status, answer = rest(self.stack, method, path, body, timeout=15)
        except OSError as error:
            status, answer = type(error).__name__, b""
        if status != 200:
            self.first_failure.setdefault(what, f"{status} {answer[:300].decode(errors='replace')}")
        self.answers.append((time.time(), what, status))

    def _loop(self) -> None:
        step, deadline = 0, time.monotonic() + 900
        while self.running and time.monotonic() < deadline:
            self._ask("metric", "POST", f"{API}/runs/log-metric",
                      {"run_id": self.run_id, "key": "probe", "value": step, "timestamp": int(time.time() * 1000),
                       "step": step})
            self._ask("artifact", "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{self.experiment_id}/{self.run_id}"
                      f"/artifacts/probe/{step}.txt", f"probe {step}\n".encode())
            if self.s3 is not None:
                try:
                    self.s3.put_object(Bucket=BUCKET, Key=f"probe-direct/{step}.txt", Body=f"probe {step}\n".encode())
                    status = 200
                except Exception as error:  # botocore's errors are not OSErrors
                    status = type(error).__name__
                self.answers.append((time.time(), "s3", status))
            step += 1
            time.sleep(0.2)

    def recovered_after(self, moment: float, what: str = "metric") -> float | None:
        """Seconds from `moment` to the first 200 of `what` after every failure that followed it."""
        after = [(at, status) for at, kind, status in self.answers if kind == what and at >= moment]
        failures = [at for at, status in after if status != 200]
        if not failures:
            return 0.0
        good = [at for at, status in after if status == 200 and at > failures[-1]]
        return round(good[0] - moment, 1) if good else None

    def failures(self, what: str | None = None) -> collections.Counter:
        return collections.Counter(str(status) for _, kind, status in self.answers
                                   if status != 200 and (what is None or kind == what))


def s3_client(stack: Stack, retries: bool = True):
    config = None if retries else Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2,
                                         read_timeout=5)
    return boto3.client("s3", endpoint_url=stack.s3.endpoint, region_name="us-east-1", config=config,
                        aws_access_key_id=stack.s3.access_key, aws_secret_access_key=stack.s3.secret_key)


# -- the check -------------------------------------------------------------

def label(record: dict) -> str:
    """What a failed call ended with: the last status or exception the HTTP layer saw, else the error."""
    if record["retries"]:
        last = record["retries"][-1]
        return str(last.get("status") or last.get("error"))
    return record["error"].split(":", 1)[0]


def summarize(records: list[dict]) -> dict:
    failed = [record for record in records if not record["ok"]]
    retried_statuses = collections.Counter(str(seen.get("status") or seen.get("error"))
                                           for record in records for seen in record["retries"])
    return {
        "calls": len(records),
        "acknowledged": sum(1 for record in records if record["ok"]),
        "failed": dict(sorted(collections.Counter(label(record) for record in failed).items())),
        "retried_calls": sum(1 for record in records if record["retries"]),
        "retried_statuses": dict(sorted(retried_statuses.items())),
        "longest_call_s": round(max((record["end"] - record["start"] for record in records), default=0), 1),
    }


def check(stack: Stack, experiment_id: str, records: list[dict]) -> dict:
    """What was acknowledged and is not in PostgreSQL or the bucket, and runs nobody asked for."""
    with psycopg.connect(**stack.pg.dsn(dbname="mlflow"), autocommit=True) as connection:
        runs = {row[0] for row in connection.execute(
            "SELECT run_uuid FROM runs WHERE experiment_id = %s", (int(experiment_id),))}
        ids = list(runs)
        metrics = set(connection.execute(
            "SELECT run_uuid, key, value, timestamp, step FROM metrics WHERE run_uuid = ANY(%s)", (ids,)))
        params = set(connection.execute("SELECT run_uuid, key, value FROM params WHERE run_uuid = ANY(%s)", (ids,)))
        tags = set(connection.execute("SELECT run_uuid, key, value FROM tags WHERE run_uuid = ANY(%s)", (ids,)))
    s3 = s3_client(stack)
    objects = {item["Key"]: item["Size"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{experiment_id}/") for item in page.get("Contents", [])}

    # Each object once: the clients' artifacts are small.
    digests = {key: hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest()
               for key in objects if "/artifacts/load/" in key}
    lost: list[str] = []
    acknowledged = [record for record in records if record["ok"]]
    acknowledged_runs = {record["run_id"] for record in acknowledged if record["op"] == "create_run"}
    lost += [f"run {run_id}" for run_id in sorted(acknowledged_runs - runs)]
    attempted_digests = {record["sha256"] for record in records if record["op"] == "log_artifact"}
    for record in acknowledged:
        run_id = record.get("run_id")
        if record["op"] == "log_batch":
            lost += [f"metric {run_id} {m}" for m in record["metrics"] if (run_id, m[0], m[1], m[2], m[3]) not in metrics]
            lost += [f"param {run_id} {p}" for p in record["params"] if (run_id, *p) not in params]
            lost += [f"tag {run_id} {t}" for t in record["tags"] if (run_id, *t) not in tags]
        elif record["op"] == "log_artifact":
            key = f"{experiment_id}/{run_id}/artifacts/{record['path']}"
            if key not in objects:
                lost.append(f"artifact {key}")
            elif digests[key] != record["sha256"]:
                lost.append(f"artifact {key} (other bytes)")
    # No object in the bucket is a torn upload: each holds bytes some client sent.
    torn = sorted(key for key, digest in digests.items() if digest not in attempted_digests)
    # A create_run the server committed but whose answer the client never saw,
    # then retried (or gave up on), leaves a run nobody knows: a duplicate.
    unsure_creates = sum(1 for record in records if record["op"] == "create_run" and (record["retries"] or not record["ok"]))
    extra_runs = sorted(runs - acknowledged_runs)
    return {"lost": lost, "torn": torn, "extra_runs": len(extra_runs), "unsure_creates": unsure_creates}


# -- processes ---------------------------------------------------------------

def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return table


def descendants(pid: int, table: dict | None = None) -> list[int]:
    table = table or process_table()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, (ppid, _) in table.items() if ppid == parent]
        found += children
        frontier += children
    return found


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def server_workers(root: int) -> tuple[int, list[int]]:
    """The gunicorn or uvicorn master under `mlflow server`, and its worker processes.

    3.x also starts a job runner with huey consumers beside the server: they are no workers.
    """
    table = process_table()
    tree = [root, *descendants(root, table)]
    server = re.compile(r"(^|\s|/)(gunicorn|uvicorn)(\s|$)")  # `-m uvicorn …`, `…/bin/gunicorn …`
    masters = [pid for pid in tree if server.search(table[pid][1])
               and not server.search(table.get(table[pid][0], (0, ""))[1])]
    if len(masters) != 1:
        return 0, []  # none (it died) or, for a moment, a new one forking
    workers = [pid for pid in tree if table[pid][0] == masters[0] and "resource_tracker" not in table[pid][1]]
    return masters[0], sorted(workers)
