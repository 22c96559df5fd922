"""MLFLOW_AUTH_MODE=mlflow live: examples/team-accounts on 2.9.2 and on 3.17.2, one stack per version.

The stack runs the generated `mlflow server --app-name basic-auth` with the
generated basic_auth.ini, `python -m init` (which creates the admin), nginx
without auth_basic, and the gc runner, exactly as examples/prod's stack does
(tests/e2e/stack.py). The users are made with `service users`, and every
permission is checked by MLflow itself, through nginx and on its own port.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from generator.artifacts import auth as auth_artifact
from generator.envfiles import read_project_env
from tests.conftest import EXAMPLES, require_tool
from tests.e2e.conftest import build_out, fresh_servers, make_project
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.stack import Stack
from tests.test_init import outcomes

TEAM_PROJECT = EXAMPLES / "team-accounts"
API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def team(mlflow_version, tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp(f"team-{mlflow_version}"), mlflow_version, TEAM_PROJECT)
    out = build_out(project, project.parent / "out")
    postgres, s3 = fresh_servers()
    running = Stack(out, read_project_env(project).values, postgres, s3, image_venv(out / "mlflow" / "Dockerfile"))
    running.project = project
    try:
        init = running.run_init()
        assert init.returncode == 0, init.stdout + init.stderr
        running.first_init = init
        running.start_mlflow()
        running.start_nginx()
        yield running
    finally:
        running.stop()
        s3.stop()
        postgres.remove()


def request(stack: Stack, method: str, path: str, user: tuple[str, str] | None = None,
            body: dict | None = None, via: str = "nginx") -> tuple[int, str, dict]:
    """One HTTP request with curl, through nginx (HTTPS, the public host) or straight to MLflow's port."""
    require_tool(shutil.which("curl"), "curl (Debian package curl)")
    base = stack.public_url if via == "nginx" else stack.mlflow_url
    command = ["curl", "-sS", "-X", method, "-o", "-", "-D", "/dev/stderr", "-w", "\n%{http_code}"]
    if via == "nginx":
        command += ["--cacert", str(stack.nginx.ca_file), *stack.curl_resolve()]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    if user is not None:
        # In a private config file, not in curl's argv.
        config = stack.root / "curl-user.conf"
        config.write_text(f'user = "{user[0]}:{user[1]}"\n')
        config.chmod(0o600)
        command += ["-K", str(config)]
    result = subprocess.run([*command, f"{base}{path}"], input=json.dumps(body) if body is not None else None,
                            capture_output=True, text=True, timeout=60, check=True)
    text, _, status = result.stdout.rpartition("\n")
    headers = {}
    for line in result.stderr.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(status), text, headers


def admin(stack: Stack) -> tuple[str, str]:
    return stack.credentials


# -- the build and init -------------------------------------------------------

def test_init_creates_the_auth_database_and_the_admin(team):
    steps = outcomes(team.first_init)
    assert steps[f"database {auth_artifact.database_name_of('mlflow')}"] == "created"
    assert steps["auth database mlflow_auth tables"] == "created"
    assert steps[f"auth admin {team.credentials[0]}"] == "created"
    again = team.run_init()
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(outcomes(again).values()) == {"unchanged"}, again.stdout


# -- who gets in --------------------------------------------------------------

ANONYMOUS = [("GET", "/"), ("GET", f"{API}/experiments/search?max_results=10"), ("POST", f"{API}/runs/create"),
             ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=1"), ("GET", "/metrics")]


@pytest.mark.parametrize("via", ["nginx", "direct"])
@pytest.mark.parametrize("method,path", ANONYMOUS)
def test_no_credentials_get_401_with_a_challenge(team, via, method, path):
    status, _body, headers = request(team, method, path, via=via)
    assert status == 401
    assert headers.get("www-authenticate", "").startswith("Basic")
    status, _body, _headers = request(team, method, path, user=(team.credentials[0], "wrong-password-123"), via=via)
    assert status == 401


@pytest.mark.parametrize("via", ["nginx", "direct"])
def test_health_is_open(team, via):
    status, body, _headers = request(team, "GET", "/health", via=via)
    assert (status, body) == (200, "OK")


@pytest.mark.parametrize("via", ["nginx", "direct"])
def test_the_admin_gets_in(team, via):
    status, body, _headers = request(team, "GET", f"{API}/experiments/search?max_results=10", user=admin(team), via=via)
    assert status == 200, body
    status, _body, _headers = request(team, "GET", "/", user=admin(team), via=via)
    assert status == 200
