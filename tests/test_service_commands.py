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
from tests.snapshot_files import SNAPSHOTS_DIR, error_extension, error_golden
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
# pg_restore and `psql -f -` read their input to the end, as the real ones do.
if "pg_restore" in sys.argv or sys.argv[-2:] == ["-f", "-"]:
    sys.stdin.buffer.read()
# Failures: the first needle found in the argv exits with its code and message.
for needle, code, message in json.loads(os.environ.get("FAKE_DOCKER_FAILURES", "[]")):
    if needle in " ".join(sys.argv):
        print(message, file=sys.stderr)
        sys.exit(code)
# Canned answers for commands run in containers: the first needle found in the argv.
for needle, answer in json.loads(os.environ.get("FAKE_DOCKER_ANSWERS", "[]")):
    if needle in " ".join(sys.argv):
        sys.stdout.write(answer)
        break
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

    def run(project: Path, *args: str, stdin: str = "", **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        log.write_text("")
        result = subprocess.run(
            [sys.executable, "-m", "generator", "service", *args, "--project-dir", str(project)],
            env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_DOCKER_LOG": str(log),
                 **env},
            input=stdin, capture_output=True, text=True, timeout=60,
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
    assert result.stderr == ("Error: MLFLOW_ENABLED (not set in the project's env files): MLflow is not enabled "
                             "in this project; set MLFLOW_ENABLED=true\n")


def test_status_reports_a_bad_setting_as_such_not_as_not_enabled(tmp_path, docker):
    (tmp_path / "broken").mkdir()
    # MLflow is on, but the admin password its init needs is missing: the
    # message mentions MLFLOW_ENABLED=true, and still is not "not enabled".
    (tmp_path / "broken" / ".env").write_text("PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ROOT_PASSWORD=s3-secret-1\n")
    result, calls = docker(tmp_path / "broken", "status")
    assert result.returncode == 2 and calls == [] and "not enabled" not in result.stdout
    assert "POSTGRES_PASSWORD: is required when MLFLOW_ENABLED=true" in result.stderr


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
    from service import commands

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


# -- backup, restore and db-dump through compose ----------------------------------

BACKUP_BUCKET = "compose-backup-test"
REVISION = "acf3f17fdcc7"


def postgres_answers(**overrides: str) -> str:
    """What psql and pg_dump print in the postgres container, as the backup asks."""
    answers = {"SHOW server_version": "15.8", "to_regclass": "t", "version_num": REVISION,
               "FROM pg_class": "0", "pg_stat_activity": "0", "pg_dump": "PGDMP not a real dump", **overrides}
    return json.dumps(list(answers.items()))


@pytest.fixture
def backup_project(prod_project, s3_server):
    """The prod project with a bucket of its own on the shared S3 server, holding two objects."""
    with open(prod_project / ".env", "a") as env:
        env.write(f"MLFLOW_ARTIFACTS_BUCKET={BACKUP_BUCKET}\n")
    assert run_generator("build", "--project-dir", prod_project).returncode == 0
    s3 = s3_server_client(s3_server)
    if BACKUP_BUCKET not in [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BACKUP_BUCKET)
    for key in [item["Key"] for item in s3.list_objects_v2(Bucket=BACKUP_BUCKET).get("Contents", [])]:
        s3.delete_object(Bucket=BACKUP_BUCKET, Key=key)
    s3.put_object(Bucket=BACKUP_BUCKET, Key="1/abc/artifacts/model.pkl", Body=b"model bytes")
    s3.put_object(Bucket=BACKUP_BUCKET, Key="1/abc/artifacts/plot.png", Body=b"\x89PNG plot")
    return prod_project


def s3_server_client(server):
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)


def exec_postgres(project: Path, *command: str) -> list[str]:
    return [*compose_prefix(project), "exec", "-T", "postgres", *command]


def test_db_dump_runs_pg_dump_in_the_postgres_container(prod_project, docker, tmp_path, compose_bin):
    output = tmp_path / "mlflow-backup.sql"
    result, calls = docker(prod_project, "db-dump", "--output", str(output),
                           FAKE_DOCKER_ANSWERS=postgres_answers(pg_dump="-- PostgreSQL database dump\n"))
    assert result.returncode == 0, result.stderr
    assert calls == [["info", "--format", "{{.ServerVersion}}"],
                     exec_postgres(prod_project, "pg_dump", "-U", "postgres", "--format=plain", "--no-owner",
                                   "--no-privileges", "--exclude-schema", "mlflow_graphql", "--dbname", "mlflow")]
    assert output.read_text() == "-- PostgreSQL database dump\n"
    config = subprocess.run([compose_bin, *calls[1][1:calls[1].index("exec")], "config", "-q"],
                            capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stderr


def test_db_dump_fails_plainly_without_a_daemon(prod_project, docker, tmp_path):
    output = tmp_path / "mlflow-backup.sql"
    result, _ = docker(prod_project, "db-dump", "--output", str(output), FAKE_DOCKER_DAEMON="down")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "docker compose is not usable here" in result.stderr and "--direct" in result.stderr
    assert not output.exists()


def backup_through_compose(project, docker, s3_server, archive):
    result, calls = docker(project, "backup", "--output", str(archive), "--s3-endpoint", s3_server.endpoint,
                           FAKE_DOCKER_ANSWERS=postgres_answers())
    assert result.returncode == 0, result.stderr
    return calls


def test_backup_dumps_in_the_postgres_container_and_reads_the_bucket(backup_project, docker, s3_server, tmp_path):
    archive = tmp_path / "backup.tar"
    calls = backup_through_compose(backup_project, docker, s3_server, archive)
    assert exec_postgres(backup_project, "pg_dump", "-U", "postgres", "--format=custom",
                         "--exclude-schema", "mlflow_graphql", "--dbname", "mlflow") in calls
    import tarfile

    with tarfile.open(archive) as opened:
        manifest = json.load(opened.extractfile("manifest.json"))
        assert opened.extractfile("database.pgdump").read() == b"PGDMP not a real dump"
    assert manifest["postgres"]["version"] == "15.8" and manifest["mlflow"]["schema_revision"] == REVISION
    assert [entry["key"] for entry in manifest["bucket"]["objects"]] == ["1/abc/artifacts/model.pkl",
                                                                         "1/abc/artifacts/plot.png"]


def test_restore_checks_the_schema_in_the_image_and_stops_nothing_when_it_refuses(backup_project, docker, s3_server,
                                                                                  tmp_path):
    archive = tmp_path / "backup.tar"
    backup_through_compose(backup_project, docker, s3_server, archive)
    check = [*compose_prefix(backup_project), "run", "--rm", "--no-deps", "-T", "mlflow-init",
             "python", "-m", "init.schema", "check", REVISION]

    answers = postgres_answers(**{"init.schema check": f"newer dc11669786a5 2.9.2\n"})
    result, calls = docker(backup_project, "restore", "--input", str(archive), "--s3-endpoint", s3_server.endpoint,
                           "--force", FAKE_DOCKER_ANSWERS=answers)
    assert result.returncode == 1 and "MLflow cannot downgrade" in result.stderr
    assert check in calls and not [call for call in calls if "stop" in call or "pg_restore" in call]

    answers = postgres_answers(**{"init.schema check": f"current {REVISION} 2.9.2\n", "FROM pg_class": "31"})
    result, calls = docker(backup_project, "restore", "--input", str(archive), "--s3-endpoint", s3_server.endpoint,
                           FAKE_DOCKER_ANSWERS=answers)
    assert result.returncode == 1 and "refusing to overwrite the non-empty database mlflow and bucket" in result.stderr
    assert not [call for call in calls if "stop" in call or "pg_restore" in call]


def test_restore_stops_mlflow_restores_in_the_container_and_starts_it_again(backup_project, docker, s3_server,
                                                                            tmp_path):
    archive = tmp_path / "backup.tar"
    backup_through_compose(backup_project, docker, s3_server, archive)
    s3 = s3_server_client(s3_server)
    s3.delete_object(Bucket=BACKUP_BUCKET, Key="1/abc/artifacts/plot.png")
    s3.put_object(Bucket=BACKUP_BUCKET, Key="2/extra", Body=b"not in the backup")

    answers = postgres_answers(**{"init.schema check": f"current {REVISION} 2.9.2\n"})
    result, calls = docker(backup_project, "restore", "--input", str(archive), "--s3-endpoint", s3_server.endpoint,
                           "--force", FAKE_DOCKER_ANSWERS=answers)
    assert result.returncode == 0, result.stderr
    stop = calls.index([*compose_prefix(backup_project), "stop", "mlflow", "mlflow-gc"])
    restore = calls.index(exec_postgres(backup_project, "pg_restore", "-U", "postgres", "--no-owner",
                                        "--no-privileges", "--file", "-"))
    load = calls.index(exec_postgres(backup_project, "psql", "-U", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                                     "-d", "mlflow", "-f", "-"))
    start = calls.index([*compose_prefix(backup_project), "up", "-d", "mlflow", "mlflow-gc"])
    assert stop < min(load, restore) and max(load, restore) < start  # the two run side by side
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BACKUP_BUCKET)["Contents"])
    assert keys == ["1/abc/artifacts/model.pkl", "1/abc/artifacts/plot.png"]
    assert s3.get_object(Bucket=BACKUP_BUCKET, Key="1/abc/artifacts/plot.png")["Body"].read() == b"\x89PNG plot"


def test_a_failed_restore_whose_restart_fails_too_reports_both_the_restore_first(backup_project, docker, s3_server,
                                                                                   tmp_path):
    archive = tmp_path / "backup.tar"
    backup_through_compose(backup_project, docker, s3_server, archive)
    answers = postgres_answers(**{"init.schema check": f"current {REVISION} 2.9.2\n"})
    failures = json.dumps([["pg_restore", 1, "pg_restore: error: could not read from input file: end of file"],
                           ["up -d", 1, "Error response from daemon: port 5000 is already allocated"]])
    result, calls = docker(backup_project, "restore", "--input", str(archive), "--s3-endpoint", s3_server.endpoint,
                           "--force", FAKE_DOCKER_ANSWERS=answers, FAKE_DOCKER_FAILURES=failures)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and "pg_restore: error: could not read from input file" in lines[0], lines
    assert lines[1] == ("then starting mlflow, mlflow-gc again failed too: docker compose up -d mlflow mlflow-gc failed: "
                        "Error response from daemon: port 5000 is already allocated"), lines
    assert [*compose_prefix(backup_project), "up", "-d", "mlflow", "mlflow-gc"] in calls


# -- every refusal that needs no live server, golden-tested whole ---------------------

REFUSALS = {
    # id: (arguments, environment of the stand-in docker, expected exit code)
    "logs-bad-tail": (["logs", "--tail", "lots"], {}, 2),
    "gc-bad-older-than": (["gc", "--older-than", "soon"], {}, 2),
    "gc-uri-without-local": (["gc", "--backend-store-uri", "postgresql://x@y/z"], {}, 2),
    "gc-local-without-uri": (["gc", "--local"], {}, 2),
    "db-dump-daemon-down": (["db-dump", "--output", "{tmp}/dump.sql"], {"FAKE_DOCKER_DAEMON": "down"}, 1),
    "backup-daemon-down": (["backup", "--output", "{tmp}/backup.tar"], {"FAKE_DOCKER_DAEMON": "down"}, 1),
    "backup-output-is-a-directory": (["backup", "--direct", "--output", "{tmp}"], {}, 2),
    "backup-output-folder-missing": (["backup", "--direct", "--output", "{tmp}/missing/backup.tar"], {}, 2),
    "restore-direct-without-mlflow-python": (["restore", "--direct", "--input", "{tmp}/backup.tar"], {}, 2),
    "export-needs-experiment": (["export", "--output", "{tmp}/export"], {}, 2),
    "unknown-command": (["frobnicate"], {}, 2),
    "serve-status-no-models": (["serve", "status"], {}, 2),
    "serve-reload-no-models": (["serve", "reload"], {}, 2),
    "serve-requirements-bad-reference": (["serve", "requirements", "churn"], {}, 2),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_matches_its_golden_file(prod_project, docker, tmp_path, case, snapshot):
    arguments, environment, code = REFUSALS[case]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # A fixed width: usage errors are drawn in a box as wide as the terminal.
    result, _calls = docker(prod_project, *[argument.format(tmp=scratch) for argument in arguments], COLUMNS="80",
                            **environment)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip()
    golden = error_golden(result.stderr, scratch, prod_project)
    assert golden == snapshot(extension_class=error_extension("service", case))


# `service users` refusals: in a project without MLflow's users, and before any request in one with them.
USERS_REFUSALS = {
    # id: (project, arguments, stdin)
    "users-nginx-mode": ("prod", ["users", "list"], ""),
    "users-grant-bad-kind": ("team-accounts", ["users", "grant", "bob", "run", "x", "READ"], ""),
    "users-grant-bad-permission": ("team-accounts", ["users", "grant", "bob", "experiment", "x", "WRITE"], ""),
    "users-admin-bad-state": ("team-accounts", ["users", "admin", "bob", "maybe"], ""),
    "users-passwd-the-admin": ("team-accounts", ["users", "passwd", "ml-team"], ""),
    "users-remove-the-admin": ("team-accounts", ["users", "remove", "ml-team"], ""),
    "users-add-short-password": ("team-accounts", ["users", "add", "carol", "--password-stdin"], "Secret-11ch\n"),
}


@pytest.mark.parametrize("case", sorted(USERS_REFUSALS))
def test_each_users_refusal_matches_its_golden_file(docker, tmp_path, case, snapshot):
    example, arguments, stdin = USERS_REFUSALS[case]
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / example, project)
    assert run_generator("build", "--project-dir", project).returncode == 0
    result, calls = docker(project, *arguments, stdin=stdin, COLUMNS="80")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Secret-11ch" not in result.stderr + result.stdout
    assert calls == []
    assert error_golden(result.stderr, tmp_path, project) == snapshot(extension_class=error_extension("service", case))


def test_every_service_error_golden_file_belongs_to_a_case():
    present = {path.stem for path in (SNAPSHOTS_DIR / "errors" / "service").glob("*.txt")}
    assert present == set(REFUSALS) | set(USERS_REFUSALS)
