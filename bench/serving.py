"""Model serving: the generated vhost in front of a scoring server, MLflow 2.9.2.

Run alone: .venv/bin/python -m bench.serving   (after ./run test has built the image venv)

The end-to-end harness starts examples/prod as bench/proxy.py does
(PostgreSQL 15, SeaweedFS, init, MLflow 2.9.2, nginx); the seed's tracking and
registry examples register `production-classifier` with the alias champion.
The same project plus MLFLOW_SERVE_MODELS=production-classifier@champion is
built, and its mlflow-serve-<slug> service runs as tests/e2e/serving.py runs
it: the service's command as a process on its own loopback address, nginx
with the generated vhost in front, a loopback DNS answering for the service
name. Every figure is measured against the same scoring server in the same
run: "direct" is http://<its address>:8080 (no TLS, no auth), "through nginx"
is https://<public host>/serving/<slug>/ with basic auth. Both use keep-alive
connections (http.client); the scoring server itself closes every connection.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.common import Row, median, print_rows
from bench.proxy import _cpu_seconds, _group, _nginx_workers, _parent
from generator.artifacts import nginx as nginx_artifact
from generator.artifacts import serving as serving_artifact
from generator.envfiles import read_project_env
from tests.e2e.conftest import DEFAULT_VERSION, build_out, fresh_servers, make_project
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.serving import Endpoint, Load, Serving
from tests.e2e.stack import Stack
from tests.nginx_harness import NginxServer

CLIENTS = Path(__file__).resolve().parent / "clients"
REFERENCE = "production-classifier@champion"
SLUG = "production-classifier-champion"
SERVICE = f"mlflow-serve-{SLUG}"
TARGET = 0.9
SEQUENTIAL_CALLS = 150
ROUNDS = 6
CONCURRENT_CLIENTS = 8
CONCURRENT_CALLS = 30  # per client
CONCURRENT_ROUNDS = 4
LARGE_ROWS = 1000
LARGE_CALLS = 100
LARGE_ROUNDS = 2
COLD_STARTS = 3  # the endpoint's own first start and two more
RELOAD_CLIENTS = 4
# Iris-shaped: four measurements in centimetres, as the seed's model was trained on.
IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def _body(rows: list[list[float]]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}}).encode()


def _percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.project = make_project(root, DEFAULT_VERSION)
        self.out = build_out(self.project, root / "out")
        self.serving: Serving | None = None
        self.tls_only: NginxServer | None = None
        self.postgres, self.s3 = fresh_servers()
        self.stack = Stack(self.out, read_project_env(self.project).values, self.postgres, self.s3,
                           image_venv(self.out / "mlflow" / "Dockerfile"))
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    def start(self) -> None:
        root = self.root
        init = self.stack.run_init()
        if init.returncode != 0:
            raise SystemExit(init.stdout + init.stderr)
        self.stack.start_mlflow()
        self.stack.start_nginx()
        # The seed's "Tracking Experiments" and "Registering a Model" examples, through nginx.
        tracking = self.stack.run_client("seed_tracking.py")
        self.stack.run_client("seed_registry.py", tracking["run_id"])
        inputs = tracking["test_inputs"]
        self.small = root / "one-row.json"
        self.small.write_bytes(_body(inputs[:1]))
        self.large = root / f"{LARGE_ROWS}-rows.json"
        self.large.write_bytes(_body([inputs[index % len(inputs)] for index in range(LARGE_ROWS)]))
        # The same project, serving the seed's model.
        serving_project = root / "serving" / "project"
        shutil.copytree(self.project, serving_project)
        with open(serving_project / ".env", "a") as env:
            env.write(f"MLFLOW_SERVE_MODELS={REFERENCE}\n")
        self.serving_out = build_out(serving_project, serving_project.parent / "out")
        self.serving = Serving(self.stack, self.serving_out, self.stack.venv)
        assert self.serving.services() == [SERVICE], self.serving.services()

    def stop(self) -> None:
        if self.tls_only is not None:
            self.tls_only.stop()
        if self.serving is not None:
            self.serving.stop()
        self.stack.stop()
        self.s3.stop()
        self.postgres.remove()

    # -- the endpoint ----------------------------------------------------------
    @property
    def endpoint(self) -> Endpoint:
        (endpoint,) = self.serving.endpoints[SERVICE]
        return endpoint

    def new_endpoint(self) -> Endpoint:
        """One more process of the service on a free address, not published to nginx."""
        # The harness's own loopback /24: nothing else listens there.
        address = f"{self.serving.network}{self.serving.next_address}"
        self.serving.next_address += 1
        return Endpoint(SERVICE, address, self.stack, self.serving_out, self.serving.venv,
                        self.stack.root / f"{SERVICE}-{address}.log")

    def start_tls_only(self) -> None:
        """A second nginx with the same vhost minus basic auth: what TLS and proxying cost without the hash."""
        vhost = self.serving.nginx.vhost
        for line in re.findall(r"^\s*auth_basic(?:_user_file)?\s+[^;]*;\n", vhost, re.MULTILINE):
            if "off" not in line:
                vhost = vhost.replace(line, "")
        assert "auth_basic_user_file" not in vhost
        self.tls_only = NginxServer(vhost, self.serving.nginx.host, self.serving.nginx.upstream).start()

    # -- where a client goes ---------------------------------------------------
    def direct(self) -> tuple[str, dict[str, str]]:
        return f"{self.endpoint.url}/invocations", {}

    def through(self, server: NginxServer | None = None) -> tuple[str, dict[str, str]]:
        """The generated vhost with the stack's credentials, or SERVER (no auth)."""
        nginx = server or self.serving.nginx
        extra = {"BENCH_CA": str(nginx.ca_file), "BENCH_HOST": nginx.host}
        if server is None:
            username, password = self.stack.credentials
            extra["BENCH_AUTH"] = f"{username}:{password}"
        return f"https://127.0.0.1:{nginx.https_port}/serving/{SLUG}/invocations", extra

    def client(self, target: tuple[str, dict[str, str]], body: Path, calls: int, start_file: Path) -> subprocess.Popen:
        url, extra = target
        argv = [sys.executable, CLIENTS / "invoke.py", url, body, str(calls), start_file]
        environment = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **extra}
        return subprocess.Popen(argv, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def result(process: subprocess.Popen) -> dict:
        out, err = process.communicate(timeout=600)
        if process.returncode != 0:
            raise SystemExit(f"a client failed:\n{err[-2000:]}")
        result = json.loads(out.strip().splitlines()[-1])
        if result["errors"]:
            raise SystemExit(f"{result['errors']} of {result['calls']} calls failed:\n{err[-2000:]}")
        return result

    def run_clients(self, target: tuple[str, dict[str, str]], body: Path, calls: int, clients: int) -> dict:
        """CLIENTS processes, started together; their calls per second over the whole span, with CPU per call."""
        start_file = self.root / f"start-{time.monotonic_ns()}"
        processes = [self.client(target, body, calls, start_file) for _ in range(clients)]
        for process in processes:
            if process.stdout.readline().strip() != "ready":
                raise SystemExit(f"a client did not start: {process.stderr.read()[-2000:]}")
        # The server side's CPU across the timed calls only (the clients have done their warm-up calls).
        server_pids = _group(self.endpoint.process.pid)
        nginx_pids = [pid for server in (self.serving.nginx, self.tls_only) if server is not None
                      for pid in _nginx_workers(server)]
        before = (_cpu_seconds(server_pids), _cpu_seconds(nginx_pids))
        start_file.touch()
        results = [self.result(process) for process in processes]
        after = (_cpu_seconds(server_pids), _cpu_seconds(nginx_pids))
        total = sum(r["calls"] for r in results)
        span = max(r["end"] for r in results) - min(r["start"] for r in results)
        return {
            "rate": total / span,
            "latencies": [value for r in results for value in r["latencies"]],
            "connections": sum(r["connections"] for r in results),
            "calls": total,
            # milliseconds of CPU per call
            "client": sum(r["cpu"] for r in results) / total * 1000,
            "server": (after[0] - before[0]) / total * 1000,
            "nginx": (after[1] - before[1]) / total * 1000,
        }


def _wait_for_ping(endpoint: Endpoint, started: float, timeout: float = 300) -> tuple[float, dict[str, float]]:
    """Seconds from `started` to the first 200 on /ping, and when each step of the start showed in the log.

    The log is watched from a thread of its own: once gunicorn listens, a /ping waits in its backlog until
    the worker has loaded the model, and the steps logged meanwhile must not wait with it.
    """
    steps = {"reference resolved": "mlflow-serve: serving ", "requirements checked": "mlflow-serve: requirements",
             "gunicorn listening": "Listening at:"}
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() and len(seen) < len(steps):
            text = endpoint.log_text()
            for step, marker in steps.items():
                if step not in seen and marker in text:
                    seen[step] = time.monotonic() - started
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    deadline = started + timeout
    try:
        while time.monotonic() < deadline:
            if endpoint.process.poll() is not None:
                raise SystemExit(f"{endpoint.service} ended:\n{endpoint.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{endpoint.url}/ping", timeout=10) as response:
                    if response.status == 200:
                        elapsed = time.monotonic() - started
                        _check_own(endpoint)
                        return elapsed, dict(seen)
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
    finally:
        done.set()
        watcher.join()
    raise SystemExit(f"{endpoint.service} not ready after {timeout} s:\n{endpoint.log_text()[-3000:]}")


def _check_own(endpoint: Endpoint) -> None:
    """The answer came from this process: its gunicorn logged that it listens on the address."""
    if f"Listening at: {endpoint.url} " not in endpoint.log_text():
        raise SystemExit(f"something else answers at {endpoint.url}:\n{endpoint.log_text()[-3000:]}")


def _start_first(bench: Bench) -> tuple[float, dict[str, float]]:
    """What Serving.start() does, with the first start timed: the endpoint, its name published, nginx."""
    started = time.monotonic()
    endpoint = bench.serving.add_process(SERVICE)
    timing = _wait_for_ping(endpoint, started)
    bench.serving.publish(SERVICE)
    bench.serving.start_nginx()
    bench.start_tls_only()
    return timing


def run() -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    load = os.getloadavg()
    bench = Bench(root)
    rows = []
    try:
        first_start = _start_first(bench)
        rows += _sequential(bench, load)
        rows += _concurrent(bench)
        rows += _large(bench)
        rows += _memory(bench)
        rows += _cold_start(bench, first_start)
        rows += _reload(bench)
    finally:
        bench.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rows


def _cpu_note(name: str, measured: dict) -> str:
    return (f"{name}: CPU per call: client {measured['client']:.2f} ms, nginx {measured['nginx']:.2f} ms, "
            f"scoring server {measured['server']:.2f} ms; new client connections during the timed calls: "
            f"{measured['connections']} for {measured['calls']} calls")


def _medians(samples: list[dict]) -> dict:
    merged = {key: median([sample[key] for sample in samples]) for key in ("rate", "client", "server", "nginx")}
    merged["connections"] = samples[0]["connections"]
    merged["calls"] = samples[0]["calls"]
    merged["latencies"] = [value for sample in samples for value in sample["latencies"]]
    return merged


def _interleaved(bench: Bench, variants: list[tuple[str, tuple[str, dict[str, str]]]], body: Path, calls: int,
                 clients: int, rounds: int) -> dict[str, dict]:
    """Each variant in turn, the order rotated every round (A B, B A, …), so drift on the machine cancels."""
    samples: dict[str, list[dict]] = {name: [] for name, _ in variants}
    for round_number in range(rounds):
        first = round_number % len(variants)
        for name, target in variants[first:] + variants[:first]:
            samples[name].append(bench.run_clients(target, body, calls, clients))
    return {name: _medians(values) for name, values in samples.items()}


def _latency(measured: dict) -> tuple[float, float]:
    return median(measured["latencies"]), _percentile(measured["latencies"], 95)


def _sequential(bench: Bench, load: tuple[float, float, float]) -> list[Row]:
    measured = _interleaved(bench, [("direct", bench.direct()), ("TLS only", bench.through(bench.tls_only)),
                                    ("nginx", bench.through())], bench.small, SEQUENTIAL_CALLS, 1, ROUNDS)
    direct, tls_only, nginx = measured["direct"], measured["TLS only"], measured["nginx"]
    ratio, tls_ratio = nginx["rate"] / direct["rate"], tls_only["rate"] / direct["rate"]
    latency = {name: _latency(values) for name, values in measured.items()}
    return [
        Row(f"{SEQUENTIAL_CALLS} sequential 1-row `POST /invocations` through nginx (TLS + auth, keep-alive), "
            f"median of {ROUNDS} interleaved rounds",
            f"direct to the scoring server: {direct['rate']:.0f} calls/s",
            f"{nginx['rate']:.0f} calls/s = {ratio:.2f}×", f"≥ {TARGET}×", ratio >= TARGET,
            f"{_cpu_note('direct', direct)} (gunicorn's sync worker closes each); {_cpu_note('through nginx', nginx)}"
            " (the warm-up's is kept alive; nginx opens one to the scoring server per call); load average when the "
            f"section started: {' '.join(f'{value:.2f}' for value in load)}"),
        Row("the same through nginx without basic auth (TLS only), in the same rounds",
            f"direct to the scoring server: {direct['rate']:.0f} calls/s",
            f"{tls_only['rate']:.0f} calls/s = {tls_ratio:.2f}×; with auth {nginx['rate'] / tls_only['rate']:.2f}× "
            "of this", "reported", None, _cpu_note("TLS only", tls_only)),
        Row(f"1-row latency p50 / p95 ({ROUNDS} × {SEQUENTIAL_CALLS} sequential calls each way)",
            f"direct: {latency['direct'][0]:.1f} / {latency['direct'][1]:.1f} ms",
            f"through nginx: {latency['nginx'][0]:.1f} / {latency['nginx'][1]:.1f} ms "
            f"(p50 {latency['nginx'][0] - latency['direct'][0]:+.1f} ms); TLS only: "
            f"{latency['TLS only'][0]:.1f} / {latency['TLS only'][1]:.1f} ms", "reported", None),
    ]


def _concurrent(bench: Bench) -> list[Row]:
    measured = _interleaved(bench, [("direct", bench.direct()), ("nginx", bench.through())], bench.small,
                            CONCURRENT_CALLS, CONCURRENT_CLIENTS, CONCURRENT_ROUNDS)
    direct, nginx = measured["direct"], measured["nginx"]
    ratio = nginx["rate"] / direct["rate"]
    workers = bench.serving.stack.services_of(bench.serving_out)[SERVICE]["environment"]["MLFLOW_WORKERS"]
    return [Row(
        f"{CONCURRENT_CLIENTS} concurrent clients × {CONCURRENT_CALLS} 1-row calls through nginx, "
        f"median of {CONCURRENT_ROUNDS} interleaved rounds",
        f"direct to the scoring server: {direct['rate']:.0f} calls/s",
        f"{nginx['rate']:.0f} calls/s = {ratio:.2f}×", f"≥ {TARGET}×", ratio >= TARGET,
        f"MLFLOW_SERVE_WORKERS={workers} (the default: one gunicorn sync worker); "
        f"{_cpu_note('direct', direct)}; {_cpu_note('through nginx', nginx)}",
    )]


def _large(bench: Bench) -> list[Row]:
    measured = _interleaved(bench, [("direct", bench.direct()), ("nginx", bench.through())], bench.large,
                            LARGE_CALLS, 1, LARGE_ROUNDS)
    direct, nginx = _latency(measured["direct"]), _latency(measured["nginx"])
    size = bench.large.stat().st_size / 1000
    return [Row(
        f"{LARGE_ROWS}-row latency p50 / p95 ({size:.0f} kB body; {LARGE_ROUNDS} × {LARGE_CALLS} sequential calls "
        "each way, interleaved)",
        f"direct: {direct[0]:.1f} / {direct[1]:.1f} ms",
        f"through nginx: {nginx[0]:.1f} / {nginx[1]:.1f} ms (p50 {nginx[0] - direct[0]:+.1f} ms)", "reported", None,
        f"{_cpu_note('direct', measured['direct'])}; {_cpu_note('through nginx', measured['nginx'])}",
    )]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            parent = _parent(int(name))
            if parent is not None:
                children.setdefault(parent, []).append(int(name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue += children.get(current, [])
    return found


def _kib(pid: int, path: str, field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/{path}").read_text(), re.MULTILINE)[1])


def _memory(bench: Bench) -> list[Row]:
    """After the throughput runs: RSS and PSS (shared pages divided among their sharers) of each process."""
    root = bench.endpoint.process.pid
    tree = _descendants(root)
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in tree}
    masters = [pid for pid in tree if "gunicorn" in commands[pid] and "gunicorn" not in commands.get(_parent(pid), "")]
    workers = [pid for pid in tree if _parent(pid) in masters]
    if len(masters) != 1 or len(workers) != 1:
        raise SystemExit(f"expected one gunicorn master and one worker: {commands}")
    worker = workers[0]
    rss = {pid: _kib(pid, "status", "VmRSS") / 1024 for pid in tree}
    pss = {pid: _kib(pid, "smaps_rollup", "Pss") / 1024 for pid in tree}
    limit = bench.serving.stack.services_of(bench.serving_out)[SERVICE]["mem_limit"]
    limit_mib = int(limit[:-1]) * {"k": 1 / 1024, "m": 1, "g": 1024}[limit[-1].lower()]
    roles = {root: "`mlflow models serve` (downloads the model, then waits on gunicorn)", masters[0]: "gunicorn master",
             worker: "gunicorn worker"}
    parts = "; ".join(f"{roles.get(pid, commands[pid][:40])}: RSS {rss[pid]:.0f} MiB, PSS {pss[pid]:.0f} MiB"
                      for pid in tree)
    return [Row(
        "memory of the serving worker after warm-up (the gunicorn worker: the master's child, "
        "which loaded the model)",
        "—",
        f"worker: RSS {rss[worker]:.0f} MiB, PSS {pss[worker]:.0f} MiB; whole endpoint ({len(tree)} processes): "
        f"RSS {sum(rss.values()):.0f} MiB, PSS {sum(pss.values()):.0f} MiB",
        f"endpoint within mem_limit {limit}", sum(pss.values()) < limit_mib, parts,
    )]


def _cold_start(bench: Bench, first: tuple[float, dict[str, float]]) -> list[Row]:
    """From the process start to the first 200 on /ping, with the tracking server up and idle."""
    timings = [first]
    for _ in range(COLD_STARTS - 1):
        endpoint = bench.new_endpoint()
        started = time.monotonic()
        endpoint.start()
        try:
            timings.append(_wait_for_ping(endpoint, started))
        finally:
            endpoint.stop()
    seconds = [total for total, _ in timings]
    steps = [step for step in timings[0][1] if all(step in seen for _, seen in timings)]
    breakdown = ", ".join(f"{step} at {median([seen[step] for _, seen in timings]):.1f} s" for step in steps)
    start_period = int(serving_artifact.HEALTH_START_PERIOD.rstrip("s"))
    return [Row(
        f"cold start: process start to the first 200 on `/ping`, median of {COLD_STARTS} starts",
        "—", f"{median(seconds):.1f} s (each: {', '.join(f'{value:.1f}' for value in seconds)} s)",
        f"< healthcheck start_period {start_period} s", median(seconds) < start_period,
        f"medians from the log: {breakdown}, then the gunicorn worker imports the scoring server and loads the "
        f"model: /ping 200 at {median(seconds):.1f} s. The tracking server was idle; a container adds its own "
        "creation and start, not measured here",
    )]


def _reload(bench: Bench) -> list[Row]:
    """`service serve reload` (Serving.reload) while RELOAD_CLIENTS keep-alive clients call through nginx.

    The load runs from 2 s before the reload until nginx's cached answer for the service name has expired
    after the old process stopped, so every moment nginx could still pick the old address is covered.
    """
    url, extra = bench.through()
    path = url.split(str(bench.serving.nginx.https_port), 1)[1]
    body = bench.small.read_bytes()
    headers = {"Host": extra["BENCH_HOST"], "Content-Type": "application/json",
               "Authorization": "Basic " + base64.b64encode(extra["BENCH_AUTH"].encode()).decode()}
    context = ssl.create_default_context(cafile=extra["BENCH_CA"])
    context.check_hostname = False
    local = threading.local()
    latencies: list[float] = []

    def send() -> int:
        if getattr(local, "connection", None) is None:
            local.connection = http.client.HTTPSConnection("127.0.0.1", bench.serving.nginx.https_port,
                                                           context=context, timeout=60)
        before = time.perf_counter()
        try:
            local.connection.request("POST", path, body=body, headers=headers)
            response = local.connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            local.connection.close()
            local.connection = None
            status = 0
        latencies.append((time.perf_counter() - before) * 1000)
        return status

    error_log = bench.serving.nginx.prefix / "logs" / "error.log"
    offset = error_log.stat().st_size
    started = time.monotonic()
    with Load(send, clients=RELOAD_CLIENTS) as load:
        time.sleep(2)
        replacement = bench.serving.reload(SERVICE, nginx_artifact.RESOLVER_VALID_SECONDS)
        _check_own(replacement)
        time.sleep(nginx_artifact.RESOLVER_VALID_SECONDS + 2)
    seconds = time.monotonic() - started
    with open(error_log, "rb") as handle:
        handle.seek(offset)
        logged = handle.read().decode(errors="replace").splitlines()
    # What nginx met on the way to the stopped process, e.g. "connect() failed (111: Connection refused)".
    kinds: dict[str, int] = {}
    for line in logged:
        if "[error]" in line and "upstream" in line:
            found = re.search(r"\*\d+ (.*?)(?: while |,)", line)
            kind = found[1] if found else line[-80:]
            kinds[kind] = kinds.get(kind, 0) + 1
    statuses = {status: load.statuses.count(status) for status in sorted(set(load.statuses))}
    return [Row(
        f"requests failing during `service serve reload` (emulated: second process, wait, stop the first), "
        f"{RELOAD_CLIENTS} keep-alive clients through nginx",
        "—", f"{load.failed} failed of {len(load.statuses)} in {seconds:.0f} s", "none", load.failed == 0,
        f"answers by status: {statuses}; longest answer {max(latencies):.0f} ms; nginx's log: "
        f"{sum(kinds.values())} upstream errors ({'; '.join(f'{n}× {kind}' for kind, n in kinds.items()) or 'none'})"
        + (", each sent on to the other process (proxy_next_upstream), since no request failed" if kinds and not
           load.failed else ""),
    )]


def main() -> None:
    print_rows("model serving: nginx in front of a scoring server, MLflow 2.9.2", run())


if __name__ == "__main__":
    main()
