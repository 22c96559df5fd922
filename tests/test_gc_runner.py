"""python -m init.gc: the mlflow-gc service's runner, with real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT


def run_gc(*args: str, status: Path, env: dict[str, str] | None = None, timeout: float = 30):
    return subprocess.run(
        [sys.executable, "-m", "init.gc", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_GC_STATUS_FILE": str(status), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def status(tmp_path: Path) -> Path:
    return tmp_path / "gc.status"


def test_once_runs_the_command_and_logs_start_and_end(status: Path):
    result = run_gc("--once", "--", sys.executable, "-c", "print('gc output')", status=status)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("mlflow-gc: starting: ")
    assert "gc output" in lines
    assert lines[-1].startswith("mlflow-gc: finished in ")
    assert run_gc("--healthcheck", status=status).returncode == 0


def test_a_failed_run_is_reported_in_the_exit_code_the_log_and_the_healthcheck(status: Path):
    result = run_gc("--once", "--", sys.executable, "-c", "raise SystemExit(3)", status=status)
    assert result.returncode == 3
    assert "mlflow-gc: FAILED with exit code 3" in result.stdout
    health = run_gc("--healthcheck", status=status)
    assert health.returncode == 1
    assert "exit code 3" in health.stderr
    # A later successful run makes the service healthy again.
    assert run_gc("--once", "--", sys.executable, "-c", "pass", status=status).returncode == 0
    assert run_gc("--healthcheck", status=status).returncode == 0


def test_a_missing_program_is_a_failure_not_a_crash(status: Path):
    result = run_gc("--once", "--", "/nonexistent/mlflow", "gc", status=status)
    assert result.returncode == 127
    assert "FAILED: cannot run /nonexistent/mlflow" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_healthy_before_the_first_run(status: Path):
    assert run_gc("--healthcheck", status=status).returncode == 0


@pytest.mark.parametrize("args", [[], ["--once"], ["--once", "--"], ["--every-minute", "--", "true"]])
def test_bad_usage_exits_2(args: list[str], status: Path):
    result = run_gc(*args, status=status)
    assert result.returncode == 2
    assert "usage: python -m init.gc" in result.stderr


@pytest.mark.parametrize("schedule", ["", "every sunday", "61 3 * * 0"])
def test_a_bad_schedule_names_the_variable(schedule: str, status: Path):
    result = run_gc("--", "true", status=status, env={"MLFLOW_GC_SCHEDULE": schedule})
    assert result.returncode == 2
    assert "MLFLOW_GC_SCHEDULE must be a cron expression" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_the_scheduler_runs_on_the_schedule_and_keeps_going_after_a_failure(status: Path, tmp_path: Path):
    # Every minute: wait for the first run at the next full minute.
    marker = tmp_path / "runs"
    script = f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(1)"
    process = subprocess.Popen(
        [sys.executable, "-m", "init.gc", "--", sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_GC_STATUS_FILE": str(status), "MLFLOW_GC_SCHEDULE": "* * * * *"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 75
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.read_text() == "x"
        time.sleep(0.5)
        assert process.poll() is None, "the scheduler must keep running after a failed run"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    lines = output.splitlines()
    assert lines[0] == "mlflow-gc: schedule '* * * * *' (UTC)"
    assert lines[1].startswith("mlflow-gc: next run at ") and lines[1].endswith(":00Z")
    assert any(line.startswith("mlflow-gc: FAILED with exit code 1") for line in lines)
    assert lines[-1] == "mlflow-gc: stopping"
