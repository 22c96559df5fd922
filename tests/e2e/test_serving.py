"""Model serving on the live stack: the seed's registered model as REST endpoints, through nginx.

The build is the e2e project plus MLFLOW_SERVE_MODELS: the seed's
`production-classifier` by alias and by stage, and a reference that names
nothing. Each mlflow-serve-<slug> service runs as a process from its
generated command and environment, against the shared stack's tracking
server; nginx serves the generated vhost.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import time
import urllib.error
import urllib.request

import pytest

from generator.artifacts import nginx as nginx_artifact
from tests.conftest import ROOT
from tests.e2e.conftest import build_out
from tests.e2e.serving import Load, Serving
from tests.test_service_commands import FAKE_DOCKER

REFERENCES = "production-classifier@champion,production-classifier/Production,no-such-model@champion"
SERVED = ["production-classifier-champion", "production-classifier-production"]
MISSING = "no-such-model-champion"


@pytest.fixture(scope="module")
def serving(stack, seeded, e2e_project, image_python_venv, tmp_path_factory):
    project = tmp_path_factory.mktemp("serving") / "project"
    shutil.copytree(e2e_project, project)
    with open(project / ".env", "a") as env:
        env.write(f"MLFLOW_SERVE_MODELS={REFERENCES}\n")
    out = build_out(project, project.parent / "out")
    running = Serving(stack, out, image_python_venv)
    running.project = project
    try:
        yield running.start()
    finally:
        running.stop()


def call(serving: Serving, path: str, body: bytes | None = None, content_type: str = "application/json",
         credentials: bool = True, timeout: float = 60) -> tuple[int, bytes]:
    # The public host name, on loopback: the Host header names it, the connection goes to 127.0.0.1.
    url = f"https://127.0.0.1:{serving.nginx.https_port}{path}"
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    request.add_header("Host", serving.nginx.host)
    if body is not None:
        request.add_header("Content-Type", content_type)
    if credentials:
        username, password = serving.stack.credentials
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode())
    context = ssl.create_default_context(cafile=str(serving.nginx.ca_file))
    context.check_hostname = False
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def predictions(answer: bytes) -> list[int]:
    document = json.loads(answer)
    values = document["predictions"] if isinstance(document, dict) else document
    return [int(value) for value in values]


def bodies(rows: list[list[float]]) -> dict[str, tuple[bytes, str]]:
    columns = [str(index) for index in range(len(rows[0]))]
    records = [dict(zip(columns, row)) for row in rows]
    csv = "\n".join([",".join(columns), *(",".join(map(str, row)) for row in rows)]) + "\n"
    return {
        "dataframe_split": (json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode(),
                            "application/json"),
        "dataframe_records": (json.dumps({"dataframe_records": records}).encode(), "application/json"),
        "instances": (json.dumps({"instances": rows}).encode(), "application/json"),
        "inputs": (json.dumps({"inputs": rows}).encode(), "application/json"),
        "csv": (csv.encode(), "text/csv"),
    }


def test_each_endpoint_logs_the_model_reference_and_resolved_version(serving, seeded):
    version = seeded["registry"]["version"]
    for slug, reference in zip(SERVED, REFERENCES.split(",")):
        (endpoint,) = serving.endpoints[f"mlflow-serve-{slug}"]
        lines = [line for line in endpoint.log_text().splitlines() if line.startswith("mlflow-serve: ")]
        assert f"mlflow-serve: serving {reference}: version {version} (models:/production-classifier/{version})" \
            in lines, lines
        assert "mlflow-serve: requirements: every requirement of the model is installed" in lines, lines


@pytest.mark.parametrize("slug", SERVED)
@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "instances", "inputs", "csv"])
def test_predictions_through_nginx_equal_the_in_memory_model(serving, seeded, slug, form):
    body, content_type = bodies(seeded["tracking"]["test_inputs"])[form]
    status, answer = call(serving, f"/serving/{slug}/invocations", body, content_type)
    assert status == 200, answer[:500]
    assert predictions(answer) == seeded["tracking"]["predictions"]


def test_endpoints_need_the_same_credentials_as_mlflow(serving, seeded):
    body, content_type = bodies(seeded["tracking"]["test_inputs"])["inputs"]
    for slug in SERVED:
        status, _ = call(serving, f"/serving/{slug}/invocations", body, content_type, credentials=False)
        assert status == 401
        status, _ = call(serving, f"/serving/{slug}/ping", credentials=False)
        assert status == 401
        assert call(serving, f"/serving/{slug}/ping")[0] == 200


@pytest.mark.parametrize("body", [b"{not json", json.dumps({"inputs": [[1.0, 2.0]]}).encode(),
                                  json.dumps({"unknown_format": [[1.0]]}).encode()],
                         ids=["malformed-json", "wrong-columns", "unknown-format"])
def test_bad_requests_get_mlflows_json_error_and_the_endpoint_keeps_serving(serving, seeded, body):
    slug = SERVED[0]
    status, answer = call(serving, f"/serving/{slug}/invocations", body)
    assert 400 <= status < 500, (status, answer[:500])
    error = json.loads(answer)
    assert error["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE", "MALFORMED_REQUEST"), error
    good, content_type = bodies(seeded["tracking"]["test_inputs"])["inputs"]
    status, answer = call(serving, f"/serving/{slug}/invocations", good, content_type)
    assert status == 200 and predictions(answer) == seeded["tracking"]["predictions"]


def test_a_reference_that_names_nothing_fails_in_one_line_and_serves_nothing(serving):
    (endpoint,) = serving.endpoints[f"mlflow-serve-{MISSING}"]
    assert endpoint.process.poll() == 1
    lines = [line for line in endpoint.log_text().splitlines() if line.startswith("mlflow-serve: ")]
    assert len(lines) == 1 and lines[0].startswith("mlflow-serve: no-such-model@champion: FAILED: "), lines
    assert "nothing is served" in lines[0] and "cannot ask the tracking server" not in lines[0], lines
    assert "Traceback" not in endpoint.log_text()
    assert call(serving, f"/serving/{MISSING}/ping")[0] == 502


def test_mlflow_routes_and_ui_paths_never_start_with_the_serving_prefix(serving):
    """Every URL rule of the tracking server (Flask, and FastAPI on 3.x) and every UI file, on this version."""
    script = (
        "import json, pathlib, mlflow.server as s\n"
        "rules = [r.rule for r in s.app.url_map.iter_rules()]\n"
        "try:\n"
        "    from mlflow.server.fastapi_app import create_fastapi_app\n"
        "    rules += [getattr(r, 'path', '') for r in create_fastapi_app().routes]\n"
        "except ImportError:\n"
        "    pass\n"
        "ui = pathlib.Path(s.__file__).parent / 'js' / 'build'\n"
        "files = ['/' + p.relative_to(ui).as_posix() for p in ui.rglob('*') if p.is_file()]\n"
        "print(json.dumps({'rules': rules, 'files': files}))\n"
    )
    import subprocess

    result = subprocess.run([serving.venv / "bin/python", "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(found["rules"]) > 20 and found["files"], "nothing was read"
    assert [path for path in found["rules"] + found["files"] if path.startswith("/serving")] == []


def test_an_endpoint_keeps_serving_while_the_tracking_server_restarts(serving, seeded):
    body, content_type = bodies(seeded["tracking"]["test_inputs"])["inputs"]
    serving.stack.stop_mlflow()
    try:
        for slug in SERVED:
            status, answer = call(serving, f"/serving/{slug}/invocations", body, content_type)
            assert status == 200 and predictions(answer) == seeded["tracking"]["predictions"]
    finally:
        serving.stack.start_mlflow()


# -- the operator's commands -------------------------------------------------------

def service_command(serving, *args: str, docker_answers=None, tmp_path=None):
    """`python -m generator service serve …` against the live tracking server; docker, which cannot run
    here, is the recording stand-in, answering `compose logs` with the endpoints' real logs."""
    import os
    import subprocess
    import sys

    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    if docker_answers is not None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "docker").write_text(FAKE_DOCKER.format(python=sys.executable))
        (bin_dir / "docker").chmod(0o755)
        environment.update(PATH=f"{bin_dir}:/usr/bin:/bin", FAKE_DOCKER_LOG=str(tmp_path / "docker.log"),
                           FAKE_DOCKER_ANSWERS=json.dumps(docker_answers))
    return subprocess.run([sys.executable, "-m", "generator", "service", "serve", *args,
                           "--project-dir", str(serving.project), "--url", serving.stack.mlflow_url],
                          env=environment, capture_output=True, text=True, timeout=120)


def docker_answers(serving) -> list:
    answers = []
    for service, endpoints in serving.endpoints.items():
        running = [endpoint for endpoint in endpoints if endpoint.process.poll() is None]
        state = {"Service": service, "State": "running", "Health": "healthy"} if running else \
            {"Service": service, "State": "restarting", "Health": ""}
        answers.append([f"logs --no-color --no-log-prefix {service}", "".join(e.log_text() for e in endpoints)])
        answers.append([f"ps --format json {service}", json.dumps(state) + "\n"])
    return answers


def test_serve_requirements_prints_the_logged_requirements(serving, seeded):
    result = service_command(serving, "requirements", "production-classifier@champion")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"# production-classifier@champion: version {seeded['registry']['version']}"
    names = [line.split("==")[0] for line in result.stdout.splitlines()]
    assert "mlflow" in names and "scikit-learn" in names, result.stdout
    missing = service_command(serving, "requirements", "no-such-model@champion")
    assert missing.returncode == 1 and missing.stderr.strip() == \
        "Error: no-such-model@champion: names no model version in the registry"


def test_serve_status_names_what_each_endpoint_serves_and_which_failed(serving, seeded, tmp_path):
    result = service_command(serving, "status", "--json", docker_answers=docker_answers(serving), tmp_path=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr  # the missing reference
    states = {state["endpoint"]: state for state in json.loads(result.stdout)}
    version = seeded["registry"]["version"]
    for slug in SERVED:
        assert states[f"mlflow-serve-{slug}"]["serving"] == version
        assert states[f"mlflow-serve-{slug}"]["resolves_to"] == version
        assert states[f"mlflow-serve-{slug}"]["problems"] == []
    missing = states[f"mlflow-serve-{MISSING}"]
    assert missing["serving"] is None and missing["resolves_to"] is None
    assert missing["problems"][0].startswith("failed: ") and "restarting" in missing["problems"]


def restore_champion(serving, version: str, to: str) -> None:
    """Put the shared stack's registry back as the seed left it, for the suites that follow."""
    def post(method: str, path: str, payload: dict) -> None:
        request = urllib.request.Request(f"{serving.stack.mlflow_url}/api/2.0/mlflow/{path}", method=method,
                                         data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30):
            pass

    post("DELETE", "model-versions/delete", {"name": "production-classifier", "version": version})
    post("POST", "registered-models/alias", {"name": "production-classifier", "alias": "champion", "version": to})


def test_moving_the_alias_then_reload_serves_the_new_version_without_a_failed_request(serving, seeded, tmp_path):
    inputs = seeded["inputs_file"]
    challenger = serving.stack.run_client("register_challenger.py", inputs)
    try:
        reload_under_load(serving, seeded, challenger, tmp_path)
    finally:
        restore_champion(serving, challenger["version"], seeded["registry"]["version"])


def reload_under_load(serving, seeded, challenger, tmp_path):
    assert challenger["predictions"] != seeded["tracking"]["predictions"]
    slug, service = SERVED[0], f"mlflow-serve-{SERVED[0]}"

    stale = service_command(serving, "status", "--json", docker_answers=docker_answers(serving), tmp_path=tmp_path)
    state = {s["endpoint"]: s for s in json.loads(stale.stdout)}[service]
    assert state["serving"] == seeded["registry"]["version"] and state["resolves_to"] == challenger["version"]
    assert any(problem.startswith("stale") for problem in state["problems"])

    body, content_type = bodies(seeded["tracking"]["test_inputs"])["inputs"]
    started = time.monotonic()
    with Load(lambda: call(serving, f"/serving/{slug}/invocations", body, content_type)[0]) as load:
        time.sleep(2)
        replacement = serving.reload(service, nginx_artifact.RESOLVER_VALID_SECONDS)
        time.sleep(2)
    serving.reload_figures = {"requests": len(load.statuses), "failed": load.failed,
                              "seconds": round(time.monotonic() - started, 1)}
    assert load.failed == 0, (f"{load.failed} of {len(load.statuses)} requests failed during the reload, "
                              f"by status: {load.by_status}; nginx: "
                              f"{[line for line in serving.nginx_errors() if 'connect() failed' not in line][-5:]}")
    assert len(load.statuses) > 20
    assert f"serving production-classifier@champion: version {challenger['version']} " in replacement.log_text()
    status, answer = call(serving, f"/serving/{slug}/invocations", body, content_type)
    assert status == 200 and predictions(answer) == challenger["predictions"]
    # The stage reference did not move: that endpoint serves version 1 still.
    status, answer = call(serving, f"/serving/{SERVED[1]}/invocations", body, content_type)
    assert predictions(answer) == seeded["tracking"]["predictions"]

    fresh = service_command(serving, "status", "--json", docker_answers=docker_answers(serving), tmp_path=tmp_path)
    state = {s["endpoint"]: s for s in json.loads(fresh.stdout)}[service]
    assert state["serving"] == state["resolves_to"] == challenger["version"] and state["problems"] == []
