"""The service commands that drive Docker: the exact `docker compose …` argv.

No Docker engine runs here, so a recording stand-in for the `docker`
executable on PATH logs every argv and answers `docker info` and
`compose ps`. The recorded argv is then replayed against the real Compose v2
binary with `config -q`, which proves that its files and env files resolve.
The live commands (status, experiments, export …) are tested against a real
server in tests/e2e/test_service.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES, ROOT, run_generator
from tests.test_compose_tool import nself_base

FAKE_DOCKER = """\
#!{python}
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:2] == ["info"]:
    if os.environ.get("FAKE_DOCKER_DAEMON") == "down":
        print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.", file=sys.stderr)
        sys.exit(1)
    print("27.3.1")
    sys.exit(0)
if "ps" in sys.argv:
    print(os.environ.get("FAKE_DOCKER_PS", ""))
sys.exit(int(os.environ.get("FAKE_DOCKER_EXIT", "0")))
"""


@pytest.fixture
def prod_project(tmp_path: Path) -> Path:
    """examples/prod, built, beside a stand-in for nself's own docker-compose.yml."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "prod", project)
    (project / "docker-compose.yml").write_text(yaml.safe_dump(nself_base("demo", with_minio=True)))
    assert run_generator("build", "--project-dir", project).returncode == 0
    return project


@pytest.fixture
def docker(tmp_path: Path):
    """A recording `docker` on PATH; returns a function that runs a service command."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "docker.log"

    def run(project: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        log.write_text("")
        result = subprocess.run(
            [sys.executable, "-m", "generator", "service", *args, "--project-dir", str(project)],
            env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_DOCKER_LOG": str(log),
                 **env},
            capture_output=True, text=True, timeout=60,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return result, calls

    return run


def compose_prefix(project: Path) -> list[str]:
    return [
        "compose", "--project-name", "demo", "--project-directory", str(project / "out"),
        "-f", str(project / "docker-compose.yml"), "-f", str(project / "out" / "docker-compose.mlflow.yml"),
        "--env-file", str(project / ".env.prod"), "--env-file", str(project / ".env.secrets"),
        "--env-file", str(project / ".env"),
    ]


def test_logs_runs_compose_logs_for_the_mlflow_service(prod_project, docker):
    result, calls = docker(prod_project, "logs", "--follow", "--tail", "100")
    assert result.returncode == 0, result.stderr
    assert calls == [[*compose_prefix(prod_project), "logs", "--follow", "--tail", "100", "mlflow"]]


def test_logs_passes_the_exit_code_on(prod_project, docker):
    result, calls = docker(prod_project, "logs", FAKE_DOCKER_EXIT="17")
    assert result.returncode == 17
    assert calls == [[*compose_prefix(prod_project), "logs", "mlflow"]]


def test_logs_refuses_a_bad_tail(prod_project, docker):
    result, calls = docker(prod_project, "logs", "--tail", "lots")
    assert result.returncode == 2 and calls == []
    assert "--tail: 'lots' must be a number of lines or 'all'" in result.stderr


def test_gc_runs_the_gc_service_command_once_through_compose(prod_project, docker):
    result, calls = docker(prod_project, "gc", "--older-than", "30d", FAKE_DOCKER_EXIT="3")
    assert result.returncode == 3, "gc's failure must reach the caller"
    service = yaml.safe_load((prod_project / "out" / "docker-compose.mlflow.yml").read_text())["services"]["mlflow-gc"]
    scheduled = service["command"]
    assert calls == [[*compose_prefix(prod_project), "run", "--rm", "mlflow-gc",
                      *scheduled[:3], "--once", *scheduled[3:], "--older-than", "30d"]]
    assert calls[0][-11:] == ["python", "-m", "init.gc", "--once", "--", "mlflow", "gc", "--backend-store-uri",
                              "postgresql://mlflow@postgres:5432/mlflow", "--older-than", "30d"]


@pytest.mark.parametrize("args,message", [
    (["gc", "--older-than", "a month"], "--older-than: 'a month' must be a duration in #d#h#m#s form"),
    (["gc", "--local"], "--local needs --backend-store-uri"),
    (["gc", "--tracking-uri", "http://x"], "--backend-store-uri and --tracking-uri go with --local"),
])
def test_gc_refuses_bad_options(prod_project, docker, args, message):
    result, calls = docker(prod_project, *args)
    assert result.returncode == 2 and calls == []
    assert message in result.stderr


def test_the_recorded_argv_is_one_real_compose_accepts(prod_project, docker, compose_bin):
    _, calls = docker(prod_project, "logs")
    argv = calls[0]
    assert argv[0] == "compose"
    config = subprocess.run([compose_bin, *argv[1:-2], "config", "-q"], capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stderr
    # Without the env files the secrets are missing and Compose refuses: the
    # env files in the argv are what make it work.
    without, words = [], iter(argv[1:-2])
    for word in words:
        if word == "--env-file":
            next(words)
        else:
            without.append(word)
    refused = subprocess.run([compose_bin, *without, "config", "-q"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "is not set" in refused.stderr


PS_LINES = [
    {"Service": "mlflow", "State": "running", "Health": "healthy", "ExitCode": 0},
    {"Service": "mlflow-init", "State": "exited", "Health": "", "ExitCode": 0},
    {"Service": "mlflow-gc", "State": "running", "Health": "unhealthy", "ExitCode": 0},
]


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_status_reports_container_states(prod_project, docker, layout):
    output = "\n".join(json.dumps(line) for line in PS_LINES) if layout == "lines" else json.dumps(PS_LINES)
    result, calls = docker(prod_project, "status", "--url", "http://127.0.0.1:9", "--public-url", "http://127.0.0.1:9",
                           FAKE_DOCKER_PS=output)
    assert calls[0] == ["info", "--format", "{{.ServerVersion}}"]
    assert calls[1] == [*compose_prefix(prod_project), "ps", "--all", "--format", "json", "mlflow", "mlflow-init", "mlflow-gc"]
    lines = result.stdout.splitlines()
    assert "container mlflow: running (healthy)" in lines
    assert "container mlflow-init: exited (exit code 0)" in lines
    assert "container mlflow-gc: running (unhealthy)" in lines
    assert result.returncode == 1


def test_status_is_healthy_containers_and_a_removed_init_container(prod_project, docker):
    running = [line for line in PS_LINES if line["Service"] != "mlflow-init"]
    running[1] = {**running[1], "Health": "healthy"}
    result, _ = docker(prod_project, "status", "--url", "http://127.0.0.1:9", "--public-url", "http://127.0.0.1:9",
                       FAKE_DOCKER_PS="\n".join(json.dumps(line) for line in running))
    lines = result.stdout.splitlines()
    assert "container mlflow-init: removed after it ran (nself removes init containers)" in lines
    assert "container mlflow-gc: running (healthy)" in lines
    # Healthy containers, but the server itself does not answer.
    assert result.returncode == 1


def test_status_says_plainly_when_the_daemon_is_down(prod_project, docker):
    result, calls = docker(prod_project, "status", "--url", "http://127.0.0.1:9", "--public-url", "http://127.0.0.1:9",
                           FAKE_DOCKER_DAEMON="down")
    assert calls == [["info", "--format", "{{.ServerVersion}}"]]
    assert ("containers: unknown, the docker daemon is not reachable "
            "(Cannot connect to the Docker daemon at unix:///var/run/docker.sock.)") in result.stdout.splitlines()
    assert result.returncode == 1


def test_status_of_a_project_without_mlflow(tmp_path, docker):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / ".env").write_text("PROJECT_NAME=demo\n")
    result, calls = docker(tmp_path / "plain", "status")
    assert result.returncode == 1 and calls == []
    assert result.stdout.strip() == "MLflow: not enabled (MLFLOW_ENABLED is not true)"
    result, _ = docker(tmp_path / "plain", "info")
    assert result.returncode == 2
    assert "MLFLOW_ENABLED: MLflow is not enabled in this project" in result.stderr


def test_open_uses_the_browser_or_prints_the_url(prod_project, docker, tmp_path):
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f"#!/bin/sh\necho \"$1\" > {opened}\n")
    browser.chmod(0o755)
    result, _ = docker(prod_project, "open", BROWSER=str(browser))
    assert result.returncode == 0
    assert result.stdout.strip() == "https://mlflow.example.com"
    assert opened.read_text().strip() == "https://mlflow.example.com"
    result, _ = docker(prod_project, "open", BROWSER="", DISPLAY="", WAYLAND_DISPLAY="")
    assert result.returncode == 0
    assert result.stdout.strip() == "https://mlflow.example.com"


def test_every_command_has_help(prod_project, docker):
    for command in ("status", "info", "experiments", "models", "open", "gc", "logs", "export", "import"):
        result, _ = docker(prod_project, command, "--help")
        assert result.returncode == 0, command
        assert "Usage:" in result.stdout


def test_progress_is_drawn_on_a_terminal_only(monkeypatch, capsys):
    from generator.service import commands

    class Terminal:
        def __init__(self, tty: bool) -> None:
            self.tty, self.text = tty, ""

        def isatty(self) -> bool:
            return self.tty

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", Terminal(tty=False))
    assert commands._progress() is None
    terminal = Terminal(tty=True)
    monkeypatch.setattr(sys, "stderr", terminal)
    report = commands._progress()
    report(0, 4, "exporting runs")
    report(2, 4, "exporting runs")
    report(4, 4, "exporting runs")
    assert terminal.text.split("\r")[1:] == [
        "exporting runs [..............................] 0/4",
        "exporting runs [###############...............] 2/4",
        "exporting runs [##############################] 4/4\n",
    ]
