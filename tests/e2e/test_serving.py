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
import re
import shutil
import ssl
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import build_out
from tests.e2e.serving import Serving

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
