"""MLFLOW_AUTH_MODE=mlflow against nginx mode and no auth, on 2.9.2 and 3.17.2: `python -m bench --only auth`.

For each version, two stacks run side by side (tests/e2e/stack.py): examples/prod
(nginx mode: the generated vhost checks the htpasswd) and examples/team-accounts
(mlflow mode: nginx passes the credentials on and MLflow's auth app checks them,
with the per-worker cache the build configures). "No auth" is a TLS-only vhost
in front of the nginx-mode stack's MLflow. Clients log `log_metric` through
nginx over HTTPS, sequentially and 8 at a time, in interleaved rounds; the CPU
per call of the MLflow workers and nginx is read from /proc. A last,
shorter measurement restarts the mlflow-mode server without the cache, to show
what the cache is for.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Row, median, print_rows
from bench.proxy import _cpu_seconds, _group, _nginx_workers
from generator.artifacts import nginx as nginx_artifact
from generator.envfiles import read_project_env
from generator.settings import load_settings
from tests.conftest import EXAMPLES
from tests.e2e.conftest import DEFAULT_VERSION, NEWEST_3X, build_out, fresh_servers, make_project
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.stack import Stack
from tests.nginx_harness import NginxServer

CLIENTS = Path(__file__).resolve().parent / "clients"
SEQUENTIAL_CALLS = 400
ROUNDS = 2
CONCURRENT_CLIENTS = 8
CONCURRENT_CALLS = 100  # per client
UNCACHED_CALLS = 60
TARGET = 0.8  # mlflow mode against nginx mode


class Side:
    """One stack of the comparison, and where its clients go."""

    def __init__(self, root: Path, version: str, example: Path) -> None:
        self.root = root
        self.project = make_project(root, version, example)
        self.out = build_out(self.project, root / "out")
        self.postgres, self.s3 = fresh_servers()
        values = read_project_env(self.project).values
        self.stack = Stack(self.out, values, self.postgres, self.s3, image_venv(self.out / "mlflow" / "Dockerfile"))
        init = self.stack.run_init()
        if init.returncode != 0:
            raise SystemExit(init.stdout + init.stderr)
        self.stack.start_mlflow()
        self.stack.start_nginx()
        self.settings = load_settings(read_project_env(self.project))
        self.extra: list[NginxServer] = []

    def tls_only(self) -> NginxServer:
        """The generated vhost without auth, in front of this stack's MLflow."""
        auth = self.settings.auth.model_copy(update={"enabled": False})
        vhost = nginx_artifact.vhost(self.settings.model_copy(update={"auth": auth})).decode()
        server = NginxServer(vhost, self.stack.public_host, f"127.0.0.1:{self.stack.mlflow_port}", None).start()
        self.extra.append(server)
        return server

    def environment(self, server: NginxServer | None = None, credentials: bool = True) -> dict[str, str]:
        environment = self.stack.client_environment()
        if server is not None:
            environment["MLFLOW_TRACKING_URI"] = f"https://{server.host}:{server.https_port}"
            environment["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(server.ca_file)
            environment["NSELF_TEST_HOSTS"] = f"{server.host}=127.0.0.1"
        if not credentials:
            environment.pop("MLFLOW_TRACKING_USERNAME")
            environment.pop("MLFLOW_TRACKING_PASSWORD")
        return environment

    def server_pids(self) -> list[int]:
        pids = _group(self.stack.mlflow_process.pid) + _nginx_workers(self.stack.nginx)
        for server in self.extra:
            pids += _nginx_workers(server)
        return pids

    def stop(self) -> None:
        for server in self.extra:
            server.stop()
        self.stack.stop()
        self.s3.stop()
        self.postgres.remove()


def _client(side: Side, args: list[str], environment: dict[str, str]) -> subprocess.Popen:
    workdir = tempfile.mkdtemp(dir=side.root)
    return subprocess.Popen([side.stack.venv / "bin/python", CLIENTS / "log_metrics.py", *args], cwd=workdir,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sequential(side: Side, environment: dict[str, str], calls: int) -> tuple[float, float]:
    """(calls/s, server CPU ms per call: MLflow's workers and nginx)."""
    process = _client(side, [str(calls)], environment)
    # The client's imports and warm-up are not timed; the CPU counters are read around the whole client,
    # so the server CPU includes its few set-up calls too (a handful against `calls`).
    pids = side.server_pids()
    before = _cpu_seconds(pids)
    out, err = process.communicate(timeout=3600)
    after = _cpu_seconds(pids)
    if process.returncode != 0:
        raise SystemExit(f"log_metrics.py failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    if result["errors"]:
        raise SystemExit(f"{result['errors']} log_metric calls failed")
    return calls / (result["end"] - result["start"]), (after - before) / calls * 1000


def _concurrent(side: Side, environment: dict[str, str]) -> tuple[float, float]:
    start_file = side.root / f"start-{time.monotonic_ns()}"
    processes = [_client(side, [str(CONCURRENT_CALLS), str(start_file)], environment)
                 for _ in range(CONCURRENT_CLIENTS)]
    for process in processes:
        if process.stdout.readline().strip() != "ready":
            raise SystemExit(f"a client did not start: {process.stderr.read()[-2000:]}")
    pids = side.server_pids()
    before = _cpu_seconds(pids)
    start_file.touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise SystemExit(f"a concurrent client failed:\n{err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    after = _cpu_seconds(pids)
    calls = sum(r["calls"] for r in results)
    if sum(r["errors"] for r in results):
        raise SystemExit("concurrent log_metric calls failed")
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return calls / span, (after - before) / calls * 1000


def _uncached(side: Side) -> tuple[float, float]:
    """The mlflow-mode server restarted with MLflow's own check and no cache: every request pays the hash."""
    ini = Path(side.stack.environment("mlflow")["MLFLOW_AUTH_CONFIG_PATH"])
    text = ini.read_text()
    text = re.sub(r"^authorization_function = .*$", "", text, flags=re.M)
    text = re.sub(r"^auth_cache_ttl_seconds = .*$", "auth_cache_ttl_seconds = 0", text, flags=re.M)
    plain = side.root / "basic_auth-uncached.ini"
    plain.write_text(text)
    original = side.stack.environment
    side.stack.environment = lambda service: {**original(service), "MLFLOW_AUTH_CONFIG_PATH": str(plain)} \
        if service == "mlflow" else original(service)
    side.stack.stop_mlflow()
    side.stack.start_mlflow()
    try:
        return _sequential(side, side.environment(), UNCACHED_CALLS)
    finally:
        side.stack.environment = original
        side.stack.stop_mlflow()
        side.stack.start_mlflow()


def _version(version: str) -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-auth-{version}-"))
    nginx_side = Side(root / "nginx", version, EXAMPLES / "prod")
    mlflow_side = Side(root / "mlflow", version, EXAMPLES / "team-accounts")
    try:
        plain = nginx_side.tls_only()
        variants = {
            "no auth": (nginx_side, nginx_side.environment(plain, credentials=False)),
            "nginx mode": (nginx_side, nginx_side.environment()),
            "mlflow mode": (mlflow_side, mlflow_side.environment()),
        }
        sequential = {name: [] for name in variants}
        concurrent = {name: [] for name in variants}
        for _ in range(ROUNDS):
            for name, (side, environment) in variants.items():
                sequential[name].append(_sequential(side, environment, SEQUENTIAL_CALLS))
            for name, (side, environment) in variants.items():
                concurrent[name].append(_concurrent(side, environment))
        uncached = _uncached(mlflow_side)
    finally:
        nginx_side.stop()
        mlflow_side.stop()
    rows = []
    for label, samples, calls in (("sequential", sequential, f"{SEQUENTIAL_CALLS} sequential"),
                                  ("concurrent", concurrent, f"{CONCURRENT_CLIENTS} clients × {CONCURRENT_CALLS}")):
        rate = {name: median([s[0] for s in values]) for name, values in samples.items()}
        cpu = {name: median([s[1] for s in values]) for name, values in samples.items()}
        ratio = rate["mlflow mode"] / rate["nginx mode"]
        rows.append(Row(
            f"MLflow {version}: {calls} `log_metric` through nginx (HTTPS), median of {ROUNDS} interleaved rounds",
            f"nginx mode: {rate['nginx mode']:.0f} calls/s; no auth: {rate['no auth']:.0f} calls/s",
            f"mlflow mode: {rate['mlflow mode']:.0f} calls/s = {ratio:.2f}× nginx mode, "
            f"{rate['mlflow mode'] / rate['no auth']:.2f}× no auth",
            f"≥ {TARGET}× nginx mode", ratio >= TARGET,
            "server CPU per call (MLflow workers + nginx): " + ", ".join(
                f"{name} {value:.1f} ms" for name, value in cpu.items()),
        ))
    rows.append(Row(
        f"MLflow {version}: {UNCACHED_CALLS} sequential `log_metric` in mlflow mode without the credential cache",
        f"with it: {median([s[0] for s in sequential['mlflow mode']]):.0f} calls/s",
        f"{uncached[0]:.1f} calls/s, server CPU per call {uncached[1]:.0f} ms", "—", None,
        "MLflow's own check: werkzeug's scrypt on every authenticate_request() of the request"))
    return rows


def run() -> list[Row]:
    rows = []
    for version in (DEFAULT_VERSION, NEWEST_3X):
        rows += _version(version)
    return rows


def main() -> None:
    print_rows("MLFLOW_AUTH_MODE=mlflow against nginx mode and no auth", run())


if __name__ == "__main__":
    main()
