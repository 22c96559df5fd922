"""The generated nginx in front of a live MLflow: overhead, concurrency, auth schemes, a 1 GiB artifact.

Run alone: .venv/bin/python -m bench.proxy   (after ./run test has built the image venv)

The end-to-end harness starts examples/prod (PostgreSQL 15, SeaweedFS, init,
MLflow 2.9.2 with the generated argv, nginx with the generated vhost and a
harness-made certificate). Every figure is measured against the same MLflow
in the same run: "direct" is http://127.0.0.1:<mlflow port> without nginx.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from bench.common import Row, median, print_rows
from generator.artifacts import nginx as nginx_artifact
from generator.envfiles import read_project_env
from generator.settings import load_settings
from tests.e2e.conftest import DEFAULT_VERSION, build_out, fresh_servers, make_project
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.stack import Stack
from tests.nginx_harness import NginxServer

CLIENTS = Path(__file__).resolve().parent / "clients"
SEQUENTIAL_CALLS = 1000
ROUNDS = 3
CONCURRENT_CLIENTS = 8
CONCURRENT_CALLS = 250  # per client
AUTH_CALLS = 600
AUTH_ROUNDS = 3
BCRYPT_CALLS = 200  # about 50 ms each
CONCURRENT_ROUNDS = 2
BIG_MIB = 1024
BIG_ROUNDS = 1


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.project = make_project(root, DEFAULT_VERSION)
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
        self.extra_nginx: list[NginxServer] = []

    def stop(self) -> None:
        for server in self.extra_nginx:
            server.stop()
        self.stack.stop()
        self.s3.stop()
        self.postgres.remove()

    # -- where a client goes ---------------------------------------------------
    def direct(self) -> dict[str, str]:
        environment = self.stack.client_environment()
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_SERVER_CERT_PATH"):
            environment.pop(name)
        environment["MLFLOW_TRACKING_URI"] = self.stack.mlflow_url
        return environment

    def through(self, server: NginxServer | None = None, credentials: tuple[str, str] | None = None) -> dict[str, str]:
        environment = self.stack.client_environment()
        if server is not None:
            environment["MLFLOW_TRACKING_URI"] = f"https://{server.host}:{server.https_port}"
            environment["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(server.ca_file)
            if credentials is None:
                environment.pop("MLFLOW_TRACKING_USERNAME")
                environment.pop("MLFLOW_TRACKING_PASSWORD")
            else:
                environment["MLFLOW_TRACKING_USERNAME"], environment["MLFLOW_TRACKING_PASSWORD"] = credentials
        return environment

    def client(self, script: str, *args: str, environment: dict[str, str], **popen) -> subprocess.Popen:
        workdir = tempfile.mkdtemp(dir=self.root)
        return subprocess.Popen([self.stack.venv / "bin/python", CLIENTS / script, *args], cwd=workdir,
                                env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)

    def run_client(self, script: str, *args: str, environment: dict[str, str]) -> dict:
        process = self.client(script, *args, environment=environment)
        out, err = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise SystemExit(f"{script} failed:\n{err[-3000:]}")
        return json.loads(out.strip().splitlines()[-1])

    def rate(self, environment: dict[str, str], calls: int) -> float:
        result = self.run_client("log_metrics.py", str(calls), environment=environment)
        if result["errors"]:
            raise SystemExit(f"{result['errors']} log_metric calls failed")
        return calls / (result["end"] - result["start"])

    def concurrent_rate(self, environment: dict[str, str]) -> tuple[float, int]:
        start_file = self.root / f"start-{time.monotonic_ns()}"
        processes = [self.client("log_metrics.py", str(CONCURRENT_CALLS), str(start_file), environment=environment)
                     for _ in range(CONCURRENT_CLIENTS)]
        for process in processes:
            if process.stdout.readline().strip() != "ready":
                raise SystemExit(f"a client did not start: {process.stderr.read()[-2000:]}")
        start_file.touch()
        results = []
        for process in processes:
            out, err = process.communicate(timeout=600)
            if process.returncode != 0:
                raise SystemExit(f"a concurrent client failed:\n{err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        span = max(r["end"] for r in results) - min(r["start"] for r in results)
        return sum(r["calls"] for r in results) / span, sum(r["errors"] for r in results)

    # -- extra vhosts in front of the same MLflow -------------------------------
    def nginx_with(self, auth_enabled: bool, scheme: str | None = None, rounds: int | None = None) -> NginxServer:
        auth = self.settings.auth.model_copy(update={"enabled": auth_enabled})
        if scheme is not None:
            auth = auth.model_copy(update={"hash_scheme": scheme, "hash_rounds": rounds})
        # The project's NGINX_VERSION is the installed nginx's, as for the stack's own vhost.
        vhost = nginx_artifact.vhost(self.settings.model_copy(update={"auth": auth})).decode()
        htpasswd = None
        if auth_enabled:
            htpasswd = nginx_artifact.htpasswd(auth.username, auth.password.get_secret_value(), auth.hash_scheme,
                                               auth.hash_rounds, auth.hash_salt)
        server = NginxServer(vhost, self.stack.public_host, f"127.0.0.1:{self.stack.mlflow_port}", htpasswd).start()
        self.extra_nginx.append(server)
        return server


def _mlflow_connections(bench: Bench, stop: threading.Event, peak: list[int]) -> None:
    with psycopg.connect(**bench.postgres.dsn(), autocommit=True) as connection:
        while not stop.is_set():
            count = connection.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'mlflow'").fetchone()[0]
            peak[0] = max(peak[0], count)
            time.sleep(0.1)


def _nginx_workers(server: NginxServer) -> list[int]:
    master = (server.prefix / "nginx.pid").read_text().strip()
    return [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _parent(int(pid)) == int(master)]


def _parent(pid: int) -> int | None:
    try:
        return int(re.search(r"PPid:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])
    except (OSError, TypeError):
        return None


def _memory(pid: int, field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())[1]) * 1024


def _watch_temp(server: NginxServer, stop: threading.Event, seen: list[str]) -> None:
    temp = server.prefix / "temp"
    while not stop.is_set():
        for path in temp.rglob("*"):
            if path.is_file():
                seen.append(str(path))
        time.sleep(0.05)


def run() -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    bench = Bench(root)
    rows = []
    try:
        rows += _sequential(bench)
        rows += _concurrent(bench)
        rows += _auth_schemes(bench)
        rows += _big_artifact(bench)
    finally:
        bench.stop()
    return rows


def _sequential(bench: Bench) -> list[Row]:
    direct, proxied = [], []
    for _ in range(ROUNDS):
        direct.append(bench.rate(bench.direct(), SEQUENTIAL_CALLS))
        proxied.append(bench.rate(bench.through(), SEQUENTIAL_CALLS))
    base, measured = median(direct), median(proxied)
    return [Row(
        f"{SEQUENTIAL_CALLS} sequential `log_metric` through nginx (TLS + auth), median of {ROUNDS} interleaved rounds",
        f"direct to MLflow: {base:.0f} calls/s", f"{measured:.0f} calls/s = {measured / base:.2f}×", "≥ 0.85×",
        measured / base >= 0.85,
    )]


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _group(pgid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getpgid(int(name)) == pgid:
                    found.append(int(name))
            except OSError:
                pass
    return found


def _concurrent(bench: Bench) -> list[Row]:
    """Direct, through nginx without auth (TLS only) and through the generated vhost, with CPU per call.

    Everything shares this machine's cores, so under load the throughput is
    bounded by the CPU each call costs, wherever that CPU is spent.
    """
    plain = bench.nginx_with(False)
    variants = [("direct", bench.direct()), ("nginx, TLS only", bench.through(plain, None)),
                ("nginx, TLS + auth (generated vhost)", bench.through())]
    stop, peak = threading.Event(), [0]
    watcher = threading.Thread(target=_mlflow_connections, args=(bench, stop, peak), daemon=True)
    watcher.start()
    samples: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name, _ in variants}
    failed = 0
    try:
        for _ in range(CONCURRENT_ROUNDS):
            for name, environment in variants:
                nginx_pids = _nginx_workers(plain) + _nginx_workers(bench.stack.nginx)
                mlflow_pids = _group(bench.stack.mlflow_process.pid)
                before = (resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_seconds(nginx_pids),
                          _cpu_seconds(mlflow_pids))
                rate, errors = bench.concurrent_rate(environment)
                after = (resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_seconds(nginx_pids),
                         _cpu_seconds(mlflow_pids))
                calls = CONCURRENT_CLIENTS * CONCURRENT_CALLS
                clients = after[0].ru_utime + after[0].ru_stime - before[0].ru_utime - before[0].ru_stime
                samples[name].append((rate, clients / calls * 1000, (after[1] - before[1]) / calls * 1000,
                                      (after[2] - before[2]) / calls * 1000))
                failed += errors
    finally:
        stop.set()
        watcher.join()
    measured = {name: tuple(median([sample[i] for sample in values]) for i in range(4))
                for name, values in samples.items()}
    log = (bench.stack.root / "mlflow.log").read_text(errors="replace")
    pg_errors = len(re.findall(r"OperationalError|too many clients|QueuePool limit|remaining connection slots", log))
    service = bench.stack.services["mlflow"]
    command = [str(word) for word in service["command"]]
    workers = int(command[command.index("--workers") + 1])
    environment = service["environment"]
    pool = int(environment["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]) + int(environment["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"])
    with psycopg.connect(**bench.postgres.dsn(), autocommit=True) as connection:
        max_connections = int(connection.execute("SHOW max_connections").fetchone()[0])
        reserved = int(connection.execute("SHOW superuser_reserved_connections").fetchone()[0])
        role_limit = connection.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'mlflow'").fetchone()[0]
    budget = workers * pool + 2  # + mlflow-init and mlflow-gc, one connection each
    direct = measured["direct"][0]
    proxied = measured["nginx, TLS + auth (generated vhost)"][0]
    cpu = "; ".join(f"{name}: {rate:.0f} calls/s, CPU per call: clients {client:.1f} ms, nginx {proxy:.1f} ms, "
                    f"MLflow {server:.1f} ms" for name, (rate, client, proxy, server) in measured.items())
    return [
        Row(f"{CONCURRENT_CLIENTS} concurrent clients × {CONCURRENT_CALLS} `log_metric` through nginx, "
            f"median of {CONCURRENT_ROUNDS} interleaved rounds",
            f"direct to MLflow: {direct:.0f} calls/s", f"{proxied:.0f} calls/s = {proxied / direct:.2f}×", "≥ 0.85×",
            proxied / direct >= 0.85, cpu),
        Row("PostgreSQL connection errors during the concurrent runs", "—",
            f"{failed} failed calls; {pg_errors} connection errors in the MLflow log; "
            f"peak {peak[0]} connections of the mlflow role", "none", failed + pg_errors == 0),
        Row("connection budget: workers × (pool + overflow) + init + gc", f"max_connections {max_connections} "
            f"(− {reserved} reserved), role limit {role_limit}",
            f"{workers} × ({pool}) + 2 = {budget}", "fits max_connections",
            budget <= max_connections - reserved and (role_limit < 0 or budget <= role_limit),
            "nself's other services (Hasura, auth …) share max_connections: keep their pools in the sum"),
    ]


def _auth_schemes(bench: Bench) -> list[Row]:
    variants = [("no auth", bench.nginx_with(False), None)]
    auth = bench.settings.auth
    credentials = (auth.username, auth.password.get_secret_value())
    variants.append((f"default ({auth.hash_scheme}, {auth.hash_rounds} rounds)", bench.nginx_with(True), credentials))
    variants.append(("bcrypt, cost 10", bench.nginx_with(True, "bcrypt", 10), credentials))
    rates: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for round_number in range(AUTH_ROUNDS):
        for name, server, given in variants:
            if name.startswith("bcrypt"):
                if not round_number:  # one short round: each call costs about 50 ms
                    rates[name].append(bench.rate(bench.through(server, given), BCRYPT_CALLS))
                continue
            rates[name].append(bench.rate(bench.through(server, given), AUTH_CALLS))
    base = median(rates["no auth"])
    rows = []
    for name, _, _ in variants[1:]:
        measured = median(rates[name])
        cost = 1 - measured / base
        is_default = name.startswith("default")
        rows.append(Row(
            f"auth scheme {name}: sequential `log_metric` through nginx"
            + ("" if name.startswith("bcrypt") else f", median of {AUTH_ROUNDS} interleaved rounds"),
            f"same vhost without auth: {base:.0f} calls/s",
            f"{measured:.0f} calls/s, costs {cost:.1%} of throughput",
            "≤ 10%" if is_default else "reported", cost <= 0.10 if is_default else None,
        ))
    return rows


def _big_artifact(bench: Bench) -> list[Row]:
    source = bench.root / "big.bin"
    with open(source, "wb") as handle:
        for _ in range(BIG_MIB):
            handle.write(os.urandom(1 << 20))
    server = bench.stack.nginx
    workers = _nginx_workers(server)
    before = sum(_memory(pid, "VmRSS") for pid in workers)
    stop, spooled = threading.Event(), []
    watcher = threading.Thread(target=_watch_temp, args=(server, stop, spooled), daemon=True)
    watcher.start()
    results: dict[str, list[dict]] = {"direct": [], "nginx": []}
    try:
        for _ in range(BIG_ROUNDS):
            results["direct"].append(bench.run_client("big_artifact.py", str(source), environment=bench.direct()))
            results["nginx"].append(bench.run_client("big_artifact.py", str(source), environment=bench.through()))
    finally:
        stop.set()
        watcher.join()
        source.unlink()
    peak = sum(_memory(pid, "VmHWM") for pid in workers)
    buffered = "buffered to a temporary file" in (server.prefix / "logs" / "error.log").read_text(errors="replace")
    if not all(r["identical"] for runs in results.values() for r in runs):
        raise SystemExit("a 1 GiB artifact did not come back identical")
    rows = []
    for step in ("upload", "download"):
        direct = BIG_MIB / median([r[step] for r in results["direct"]])
        proxied = BIG_MIB / median([r[step] for r in results["nginx"]])
        rows.append(Row(f"1 GiB artifact {step} through nginx ({BIG_ROUNDS} run each, byte-identical)",
                        f"direct to MLflow: {direct:.0f} MiB/s", f"{proxied:.0f} MiB/s = {proxied / direct:.2f}×",
                        "≥ 0.9×", proxied / direct >= 0.9))
    growth = (peak - before) / 1e6
    rows.append(Row("nginx memory during the 1 GiB transfers", f"workers' RSS before: {before / 1e6:.1f} MB",
                    f"peak RSS (VmHWM) {peak / 1e6:.1f} MB: grew {growth:.1f} MB", "< 50 MB", growth < 50))
    rows.append(Row("nginx spooling to disk during the 1 GiB transfers", "—",
                    f"{len(set(spooled))} temp files seen; 'buffered to a temporary file' in the log: {buffered}",
                    "nothing spooled", not spooled and not buffered))
    return rows


def main() -> None:
    print_rows("nginx in front of MLflow", run())


if __name__ == "__main__":
    main()
