"""Faults under load: every acknowledged write survives, and the stack recovers on its own.

Each scenario runs the load of harness.Load (8 clients through nginx) on the
shared stack of its MLflow version, injects one fault, and then checks every
acknowledged write against PostgreSQL and the bucket. Only the worker death
differs between the versions (gunicorn on 2.9.2, uvicorn on 3.17.2), so only
it runs on both; the rest runs on 3.17.2. The soak runs last, on the stack
the faults have been through.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import psycopg
import pytest
import yaml

from generator.artifacts import prometheus as prometheus_artifact
from tests.conftest import require_tool
from tests.e2e.conftest import DEFAULT_VERSION, NEWEST_3X
from tests.e2e.stack import Stack
from tests.faults.harness import (Load, Probe, check, create_experiment, descendants, rss_bytes, server_workers,
                                  summarize)
from tests.services import PG_BIN, _as_postgres, _wait_for_port

RETRYABLE = {"500", "502", "503", "504"}
on_3x = pytest.mark.parametrize("fault_stack", [NEWEST_3X], indirect=True)
on_both = pytest.mark.parametrize("fault_stack", [DEFAULT_VERSION, NEWEST_3X], indirect=True)


def version_of(stack: Stack) -> str:
    return ".".join(map(str, stack.version))


def run_scenario(stack: Stack, report, key: str, fault, seconds: float, probe_kind: str = "metric",
                 direct_s3: bool = False, **load) -> dict:
    """The load for `seconds`, `fault(load)` during it (it returns when the fault ended), then the check."""
    experiment = create_experiment(stack, f"faults-{key}-{uuid.uuid4().hex[:8]}")
    with Probe(stack, create_experiment(stack, f"probe-{key}-{uuid.uuid4().hex[:8]}"), direct_s3) as probe:
        running = Load(stack, experiment, seconds, **load).start()
        try:
            fault_end = fault(running)
            records = running.wait()
        finally:
            running.stop()
        time.sleep(1)  # the probe's answers after the last client call
    figures = {**summarize(records), **check(stack, experiment, records),
               "recovery_s": probe.recovered_after(fault_end, probe_kind) if fault_end else None,
               "probe_failures": dict(probe.failures(probe_kind)),
               "probe_first_failure": probe.first_failure.get(probe_kind),
               "s3_recovery_s": probe.recovered_after(fault_end, "s3") if direct_s3 and fault_end else None,
               "probe_failure_times": [round(at - running.started, 1) for at, kind, status in probe.answers
                                       if kind == probe_kind and status != 200]}
    print(key, version_of(stack), {name: value for name, value in figures.items() if name != "lost"})
    report.add(key, version_of(stack), figures)
    return figures


def assert_nothing_lost(figures: dict) -> None:
    assert figures["lost"] == [], f"{len(figures['lost'])} acknowledged writes lost: {figures['lost'][:10]}"
    assert figures["torn"] == [], f"objects no client sent: {figures['torn'][:10]}"
    assert figures["extra_runs"] <= figures["unsure_creates"], figures
    assert figures["failed"] == {}, f"calls that failed after the client's retries: {figures['failed']}"


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


# -- 5. nginx reload -------------------------------------------------------

def reload_nginx(stack: Stack) -> None:
    nginx = stack.nginx
    subprocess.run([nginx.nginx, "-c", nginx.prefix / "nginx.conf", "-p", nginx.prefix, "-s", "reload"],
                   check=True, capture_output=True, timeout=30)


@on_3x
def test_nginx_reload_under_load_fails_no_request(fault_stack, report):
    def fault(load: Load) -> float:
        for moment in range(3, 15, 3):
            wait_until(load.started + moment)
            reload_nginx(fault_stack)
        return 0.0

    figures = run_scenario(fault_stack, report, "reload", fault, seconds=15)
    assert_nothing_lost(figures)
    assert not RETRYABLE & set(figures["retried_statuses"]), figures["retried_statuses"]
    assert figures["probe_failures"] == {}


# -- 3. MLflow killed ----------------------------------------------------------

def health_alert_expression(stack: Stack) -> str:
    rules = yaml.safe_load((stack.out / prometheus_artifact.RULES_PATH).read_text())
    alert = next(rule for group in rules["groups"] for rule in group["rules"]
                 if rule.get("alert") == "MLflowHealthCheckFailing")
    return alert["expr"]


def promtool_says_the_alert_expression_fired(stack: Stack, samples: list[int], tmp_path) -> None:
    """The blackbox probe's series as this test observed it, one sample a second, through promtool."""
    promtool = shutil.which("promtool")
    require_tool(promtool, "promtool (Debian package prometheus)")
    shutil.copy(stack.out / prometheus_artifact.RULES_PATH, tmp_path / "mlflow.rules.yml")
    expression = health_alert_expression(stack)
    down = samples.index(0)
    up_again = len(samples) - 1
    series = 'probe_success{job="mlflow-health", instance="mlflow:5000"}'
    tests = {"rule_files": ["mlflow.rules.yml"], "evaluation_interval": "1s", "tests": [{
        "interval": "1s",
        "input_series": [{"series": series, "values": " ".join(map(str, samples))}],
        "promql_expr_test": [
            {"expr": expression, "eval_time": f"{down}s",
             "exp_samples": [{"labels": series, "value": 0}]},
            {"expr": expression, "eval_time": f"{up_again}s", "exp_samples": []},
        ],
    }]}
    (tmp_path / "observed.test.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool, "test", "rules", "observed.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def probe_health(stack: Stack) -> int:
    """What the blackbox exporter's probe_success would be for the server's own /health."""
    try:
        with urllib.request.urlopen(f"{stack.mlflow_url}/health", timeout=1) as response:
            return int(response.status == 200)
    except (urllib.error.URLError, OSError):
        return 0


@on_3x
def test_mlflow_killed_and_restarted_loses_no_acknowledged_write(fault_stack, report, tmp_path):
    stack = fault_stack
    nginx_master = int((stack.nginx.prefix / "nginx.pid").read_text())
    health: list[int] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            health.append(probe_health(stack))
            time.sleep(max(0.0, 1 - time.time() % 1))

    def fault(load: Load) -> float:
        wait_until(load.started + 6)
        os.killpg(stack.mlflow_process.pid, signal.SIGKILL)
        stack.mlflow_process.wait(10)
        restarted = time.time()
        stack.move_mlflow()
        stack.start_mlflow()
        return restarted

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        figures = run_scenario(stack, report, "mlflow", fault, seconds=25)
    finally:
        watching.set()
        watcher.join(10)
    assert_nothing_lost(figures)
    # nginx answered 502 while nothing listened, and came back by itself.
    assert set(figures["probe_failures"]) == {"502"}, figures["probe_failures"]
    assert set(figures["retried_statuses"]) <= RETRYABLE, figures["retried_statuses"]
    assert figures["recovery_s"] is not None and figures["recovery_s"] < 60, figures
    figures["note"] = ("nginx answered only 502 during the gap; the recovery time holds MLflow's start and up to 10 s "
                       "of nginx's resolver cache (`valid=10s`): the server came back on a new address, as a "
                       "recreated container would. The health alert's expression held for the gap in the series "
                       "of `/health` probes taken every second (checked with `promtool test rules`)")
    assert int((stack.nginx.prefix / "nginx.pid").read_text()) == nginx_master
    promtool_says_the_alert_expression_fired(stack, health, tmp_path)


# -- 4. one worker killed ----------------------------------------------------

@on_both
def test_a_killed_worker_is_replaced_and_loses_nothing(fault_stack, report):
    stack = fault_stack
    master, workers = server_workers(stack.mlflow_process.pid)
    expected = int(stack.command("mlflow")[stack.command("mlflow").index("--workers") + 1])
    assert master and len(workers) == expected, (master, workers)
    replaced: list[int] = []

    def fault(load: Load) -> float:
        wait_until(load.started + 5)
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now_master, now_workers = server_workers(stack.mlflow_process.pid)
            if now_master == master and len(now_workers) == expected and victim not in now_workers:
                replaced.extend(now_workers)
                break
            time.sleep(0.2)
        return killed

    figures = run_scenario(stack, report, "worker", fault, seconds=15)
    assert replaced, f"the master {master} did not replace the killed worker within 60 s"
    assert set(replaced) - set(workers), replaced
    assert_nothing_lost(figures)
    # Only what the dead worker held failed, and the client retried it.
    assert set(figures["retried_statuses"]) <= RETRYABLE, figures["retried_statuses"]
    assert sum(figures["probe_failures"].values()) <= 2, figures["probe_failures"]


# -- 1. PostgreSQL restarts ----------------------------------------------------

@on_3x
def test_postgres_restart_gives_retryable_errors_and_loses_nothing(fault_stack, report):
    stack = fault_stack
    mlflow = stack.mlflow_process

    def fault(load: Load) -> float:
        wait_until(load.started + 6)
        subprocess.run([*_as_postgres(), PG_BIN / "pg_ctl", "-D", stack.pg.data_dir, "-m", "fast", "-w", "stop"],
                       check=True, capture_output=True, timeout=60)
        time.sleep(5)
        restarted = time.time()
        stack.pg.start()
        return restarted

    figures = run_scenario(stack, report, "postgres", fault, seconds=20)
    assert_nothing_lost(figures)
    # During the gap the clients saw 5xx they retry, never a hang to the proxy's timeout.
    assert set(figures["retried_statuses"]) <= RETRYABLE, figures["retried_statuses"]
    assert set(figures["probe_failures"]) <= RETRYABLE, figures["probe_failures"]
    assert figures["probe_failures"], "the probe saw no error: was PostgreSQL stopped at all?"
    assert figures["longest_call_s"] < 60, figures
    # MLflow recovered by itself, without a restart.
    assert stack.mlflow_process is mlflow and mlflow.poll() is None
    assert figures["recovery_s"] is not None and figures["recovery_s"] < 15, figures
    answer = figures["probe_first_failure"]
    code = re.search(r'"error_code": "(\w+)"', answer)
    figures["note"] = (f"during the gap MLflow answered `{answer.split()[0]}{' ' + code[1] if code else ''}` at once, "
                       "which the client retries; MLflow's pool checks connections before use (`pool_pre_ping`, "
                       "hard-coded in both versions), so no request met a dead connection after the restart")


# -- 2. S3 unreachable ---------------------------------------------------------

def stop_s3(stack: Stack) -> None:
    """SeaweedFS down, its data kept (SeaweedS3.stop would delete it)."""
    process = stack.s3.process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(2)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def start_s3(stack: Stack) -> None:
    """The same `weed server` command again, on the same data and ports."""
    s3 = stack.s3
    s3.process = subprocess.Popen(s3.process.args, stdout=open(s3.root / "weed.log", "ab"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
    _wait_for_port(s3.port, 60, s3.process)
    s3._wait_until_serving(60)


@on_3x
def test_s3_unreachable_fails_uploads_clearly_and_loses_nothing(fault_stack, report):
    stack = fault_stack
    mlflow = stack.mlflow_process

    def fault(load: Load) -> float:
        wait_until(load.started + 5)
        stop_s3(stack)
        time.sleep(10)
        restarted = time.time()
        start_s3(stack)
        return restarted

    figures = run_scenario(stack, report, "s3", fault, seconds=20, probe_kind="artifact", direct_s3=True)
    assert_nothing_lost(figures)
    assert figures["probe_failures"], "no upload failed: was S3 stopped at all?"
    assert set(figures["probe_failures"]) <= RETRYABLE, figures["probe_failures"]
    assert set(figures["retried_statuses"]) <= RETRYABLE, figures["retried_statuses"]
    assert stack.mlflow_process is mlflow and mlflow.poll() is None
    assert figures["recovery_s"] is not None and figures["recovery_s"] < 45, figures
    figures["note"] = (f"uploads failed with `{figures['probe_first_failure'].strip()}` from MLflow; a PUT straight to "
                       f"SeaweedFS succeeded again {figures['s3_recovery_s']} s after its restart, so the recovery "
                       "time is SeaweedFS's own start, not MLflow's")


# -- 6. mlflow-init twice at once ---------------------------------------------

@on_3x
def test_two_inits_at_once_while_serving_both_succeed_and_disturb_nothing(fault_stack, report):
    stack = fault_stack
    results: list[subprocess.CompletedProcess] = []

    def fault(load: Load) -> float:
        wait_until(load.started + 4)
        threads = [threading.Thread(target=lambda: results.append(stack.run_init())) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(200)
        return 0.0

    figures = run_scenario(stack, report, "init", fault, seconds=15)
    assert len(results) == 2
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr
    assert_nothing_lost(figures)
    assert figures["retried_calls"] == 0, figures["retried_statuses"]
    assert figures["probe_failures"] == {}


# -- 7. soak -------------------------------------------------------------------

SOAK_SECONDS = 600
SOAK_INTERVAL = 5
SOAK_PAUSE = 0.4  # per client between calls: a steady, moderate rate
# Lines that report an error, per log.
ERROR_LINES = {
    "mlflow": re.compile(r"\bERROR\b|Traceback|\bCRITICAL\b"),
    "nginx": re.compile(r"\[(error|crit|alert|emerg)\]"),
    "postgres": re.compile(r"\b(ERROR|FATAL|PANIC):"),
    "seaweedfs": re.compile(r"^[EF]\d{4} "),  # glog: E (error) and F (fatal) lines
}


def stack_logs(stack: Stack) -> dict:
    return {"mlflow": stack.root / "mlflow.log", "nginx": stack.nginx.prefix / "logs" / "error.log",
            "postgres": stack.pg.root / "server.log", "seaweedfs": stack.s3.root / "weed.log"}


def log_sizes(stack: Stack) -> dict:
    return {name: path.stat().st_size if path.exists() else 0 for name, path in stack_logs(stack).items()}


def error_lines_since(stack: Stack, sizes: dict) -> list[str]:
    found = []
    for name, path in stack_logs(stack).items():
        with open(path, "rb") as log:
            log.seek(sizes[name])
            text = log.read().decode(errors="replace")
        found += [f"{name}: {line}" for line in text.splitlines() if ERROR_LINES[name].search(line)]
    return found


def mlflow_connections(stack: Stack) -> int:
    with psycopg.connect(**stack.pg.dsn(), autocommit=True) as connection:
        return connection.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'mlflow'").fetchone()[0]


def connection_budget(stack: Stack) -> int:
    """workers × (pool + overflow), from the generated service."""
    command, environment = stack.command("mlflow"), stack.environment("mlflow")
    workers = int(command[command.index("--workers") + 1])
    return workers * (int(environment["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"])
                      + int(environment["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]))


def median_between(samples: list[tuple], start: float, end: float, index: int) -> float:
    return statistics.median(sample[index] for sample in samples if start <= sample[0] < end)


@on_3x
def test_soak_memory_connections_and_logs_stay_flat(fault_stack, report):
    stack = fault_stack
    experiment = create_experiment(stack, f"soak-{uuid.uuid4().hex[:8]}")
    samples: list[tuple[float, int, int, int]] = []  # (seconds, mlflow rss, nginx rss, connections)
    sampling = threading.Event()
    sizes = log_sizes(stack)

    def sample(started: float) -> None:
        while not sampling.is_set():
            nginx_master = int((stack.nginx.prefix / "nginx.pid").read_text())
            mlflow_root = stack.mlflow_process.pid
            samples.append((time.time() - started, rss_bytes([mlflow_root, *descendants(mlflow_root)]),
                            rss_bytes([nginx_master, *descendants(nginx_master)]), mlflow_connections(stack)))
            sampling.wait(SOAK_INTERVAL)

    load = Load(stack, experiment, SOAK_SECONDS, pause=SOAK_PAUSE).start()
    sampler = threading.Thread(target=sample, args=(load.started,), daemon=True)
    sampler.start()
    try:
        records = load.wait()
    finally:
        load.stop()
        sampling.set()
        sampler.join(30)
    figures = {**summarize(records), **check(stack, experiment, records)}
    errors = error_lines_since(stack, sizes)
    end = samples[-1][0]
    first = [median_between(samples, 60, 60 + 4 * SOAK_INTERVAL, index) for index in (1, 2)]
    last = [median_between(samples, end - 4 * SOAK_INTERVAL, end + 1, index) for index in (1, 2)]
    soak = {
        "version": version_of(stack), "minutes": SOAK_SECONDS / 60, "clients": load.clients,
        "rate": figures["calls"] / SOAK_SECONDS, "interval": SOAK_INTERVAL, "samples": samples,
        "mlflow_rss": (first[0], last[0]), "nginx_rss": (first[1], last[1]),
        "mlflow_change": last[0] / first[0] - 1, "nginx_change": last[1] / first[1] - 1,
        "connections_max": max(sample[3] for sample in samples), "budget": connection_budget(stack),
        "calls": figures["calls"], "acknowledged": figures["acknowledged"],
        "failed_total": sum(figures["failed"].values()), "lost": figures["lost"], "log_errors": len(errors),
    }
    report.soak = soak
    print("soak", {name: value for name, value in soak.items() if name != "samples"}, errors[:20])
    assert_nothing_lost(figures)
    assert abs(soak["mlflow_change"]) <= 0.10, soak
    assert abs(soak["nginx_change"]) <= 0.10, soak
    assert soak["connections_max"] <= soak["budget"], soak
    assert errors == [], "\n".join(errors[:20])
