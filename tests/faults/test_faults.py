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


def run_scenario(stack: Stack, report, key: str, fault, seconds: float, probe_kind: str = "metric", **load) -> dict:
    """The load for `seconds`, `fault(load)` during it (it returns when the fault ended), then the check."""
    experiment = create_experiment(stack, f"faults-{key}-{uuid.uuid4().hex[:8]}")
    with Probe(stack, create_experiment(stack, f"probe-{key}-{uuid.uuid4().hex[:8]}")) as probe:
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
        for moment in range(3, 19, 3):
            wait_until(load.started + moment)
            reload_nginx(fault_stack)
        return 0.0

    figures = run_scenario(fault_stack, report, "reload", fault, seconds=20)
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
        wait_until(load.started + 8)
        os.killpg(stack.mlflow_process.pid, signal.SIGKILL)
        stack.mlflow_process.wait(10)
        restarted = time.time()
        stack.move_mlflow()
        stack.start_mlflow()
        return restarted

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        figures = run_scenario(stack, report, "mlflow", fault, seconds=30)
    finally:
        watching.set()
        watcher.join(10)
    assert_nothing_lost(figures)
    # nginx answered 502 while nothing listened, and came back by itself.
    assert set(figures["probe_failures"]) == {"502"}, figures["probe_failures"]
    assert set(figures["retried_statuses"]) <= RETRYABLE, figures["retried_statuses"]
    assert figures["recovery_s"] is not None and figures["recovery_s"] < 60, figures
    assert int((stack.nginx.prefix / "nginx.pid").read_text()) == nginx_master
    promtool_says_the_alert_expression_fired(stack, health, tmp_path)
