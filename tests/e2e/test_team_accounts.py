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
from tests.e2e.conftest import DEFAULT_VERSION, NEWEST_3X, build_out, fresh_servers, make_project
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
    generated_argv = running.server_argv

    def server_argv(metrics_dir):
        # A browser's Origin carries the port; a user's is 443 and matches the generated
        # --cors-allowed-origins as it is, the harness's nginx port does not: it is added (3.5+).
        argv = generated_argv(metrics_dir)
        if "--cors-allowed-origins" in argv and running.nginx is not None:
            position = argv.index("--cors-allowed-origins") + 1
            argv[position] += f",{running.public_url}"
        return argv

    running.server_argv = server_argv
    try:
        init = running.run_init()
        assert init.returncode == 0, init.stdout + init.stderr
        running.first_init = init
        running.start_nginx()
        running.start_mlflow()
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


# -- service users, and what MLflow then allows ---------------------------------

def service(stack: Stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m generator service …` against MLflow's own port, as the cascade's admin."""
    import os
    import sys

    from tests.conftest import ROOT

    return subprocess.run(
        [sys.executable, "-m", "generator", "service", *args, "--project-dir", str(stack.project)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, input=stdin, capture_output=True, text=True, timeout=300,
    )


def users(stack: Stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = service(stack, "users", *args, "--url", stack.mlflow_url, stdin=stdin)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def direct_database(stack: Stack) -> list[str]:
    from tests.services import PG_BIN

    return ["--direct", "--db-host", "127.0.0.1", "--db-port", str(stack.pg.port), "--pg-bindir", str(PG_BIN)]


BOB_PASSWORD = "bob-chose-this-password-1"


@pytest.fixture(scope="module")
def people(team):
    """alice (a generated password) and bob (his own, from stdin), added by the admin."""
    added = users(team, "add", "alice")
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    assert len(lines) == 1 and len(lines[0]) == 43, "the generated password, printed once"
    assert "user alice added" in added.stderr
    bob = users(team, "add", "bob", "--password-stdin", stdin=BOB_PASSWORD + "\n")
    assert bob.returncode == 0, bob.stderr
    assert bob.stdout == "", "a password given on stdin is not printed"
    return {"alice": ("alice", lines[0]), "bob": ("bob", BOB_PASSWORD)}


def test_users_list_shows_the_admin_and_the_new_users(team, people):
    listed = users(team, "list", "--json", *direct_database(team))
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == sorted(
        [{"username": team.credentials[0], "is_admin": True}, {"username": "alice", "is_admin": False},
         {"username": "bob", "is_admin": False}], key=lambda user: user["username"])


@pytest.fixture(scope="module")
def alice_work(team, people, tmp_path_factory):
    """The seed's tracking and registry examples, logged by alice with her own credentials."""
    tracking = team.run_client("seed_tracking.py", credentials=people["alice"])
    registry = team.run_client("seed_registry.py", tracking["run_id"], credentials=people["alice"])
    return {"tracking": tracking, "registry": registry}


EXPERIMENT = "my-classification-model"
MODEL = "production-classifier"


def can_read_experiment(stack, user, experiment_id, run_id) -> tuple[int, int]:
    experiment = request(stack, "GET", f"{API}/experiments/get?experiment_id={experiment_id}", user=user)[0]
    run = request(stack, "GET", f"{API}/runs/get?run_id={run_id}", user=user)[0]
    return experiment, run


def log_metric(stack, user, run_id) -> int:
    return request(stack, "POST", f"{API}/runs/log-metric", user=user,
                   body={"run_id": run_id, "key": "bob_was_here", "value": 1.0, "timestamp": 1, "step": 0})[0]


def test_bob_reads_alices_experiment_only_with_read_and_logs_only_with_edit(team, people, alice_work):
    bob = people["bob"]
    experiment_id, run_id = alice_work["tracking"]["experiment_id"], alice_work["tracking"]["run_id"]
    # MLFLOW_AUTH_DEFAULT_PERMISSION=NO_PERMISSIONS: nothing of alice's is bob's to see.
    assert can_read_experiment(team, bob, experiment_id, run_id) == (403, 403)
    assert log_metric(team, bob, run_id) == 403

    granted = users(team, "grant", "bob", "experiment", EXPERIMENT, "READ")
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.strip() == f"bob: READ on experiment '{EXPERIMENT}' granted"
    assert can_read_experiment(team, bob, experiment_id, run_id) == (200, 200)
    assert log_metric(team, bob, run_id) == 403

    granted = users(team, "grant", "bob", "experiment", EXPERIMENT, "EDIT")
    assert granted.returncode == 0, granted.stderr
    assert log_metric(team, bob, run_id) == 200
    # Also on MLflow's own port: the same users, the same answers.
    assert request(team, "GET", f"{API}/runs/get?run_id={run_id}", user=bob, via="direct")[0] == 200


def test_bob_reads_alices_model_only_with_read_and_changes_it_only_with_edit(team, people, alice_work):
    bob = people["bob"]

    def read() -> int:
        return request(team, "GET", f"{API}/registered-models/get?name={MODEL}", user=bob)[0]

    def change() -> int:
        return request(team, "PATCH", f"{API}/registered-models/update", user=bob,
                       body={"name": MODEL, "description": "edited by bob"})[0]

    assert (read(), change()) == (403, 403)
    assert users(team, "grant", "bob", "model", MODEL, "READ").returncode == 0
    assert (read(), change()) == (200, 403)
    assert users(team, "grant", "bob", "model", MODEL, "EDIT").returncode == 0
    assert (read(), change()) == (200, 200)


def test_permissions_name_the_creator_and_the_grants(team, people, alice_work):
    alice = users(team, "permissions", "alice", "--json")
    assert alice.returncode == 0, alice.stderr
    granted = {(row["kind"], row["target"]): row["permission"] for row in json.loads(alice.stdout)["permissions"]}
    # MLflow gives whoever creates an experiment or a model MANAGE on it: that is the record of who made it.
    assert granted[("experiment", EXPERIMENT)] == "MANAGE"
    assert granted[("model", MODEL)] == "MANAGE"
    bob = json.loads(users(team, "permissions", "bob", "--json").stdout)
    assert {(row["kind"], row["target"]): row["permission"] for row in bob["permissions"]} == {
        ("experiment", EXPERIMENT): "EDIT", ("model", MODEL): "EDIT"}
    assert bob["default_permission"] == "NO_PERMISSIONS"


def test_revoke_returns_bob_to_the_default(team, people, alice_work):
    bob = people["bob"]
    experiment_id, run_id = alice_work["tracking"]["experiment_id"], alice_work["tracking"]["run_id"]
    wrong = users(team, "revoke", "bob", "experiment", EXPERIMENT, "READ")
    assert wrong.returncode == 2 and "has EDIT" in wrong.stderr
    revoked = users(team, "revoke", "bob", "experiment", EXPERIMENT)
    assert revoked.returncode == 0, revoked.stderr
    assert can_read_experiment(team, bob, experiment_id, run_id) == (403, 403)


def test_an_admin_flag_opens_everything_and_closes_again(team, people, alice_work):
    bob = people["bob"]
    experiment_id, run_id = alice_work["tracking"]["experiment_id"], alice_work["tracking"]["run_id"]
    assert users(team, "admin", "bob", "on").returncode == 0
    assert can_read_experiment(team, bob, experiment_id, run_id) == (200, 200)
    assert users(team, "admin", "bob", "off").returncode == 0
    assert can_read_experiment(team, bob, experiment_id, run_id) == (403, 403)


def test_passwd_changes_bobs_password(team, people):
    old = people["bob"]
    changed = users(team, "passwd", "bob")
    assert changed.returncode == 0, changed.stderr
    new = ("bob", changed.stdout.strip())
    assert len(new[1]) == 43
    # Every worker: the password is checked anew (a cached success of the old one lasts at most the TTL).
    statuses = {request(team, "GET", "/", user=new)[0] for _ in range(6)}
    assert statuses == {200}
    people["bob"] = new
    assert request(team, "GET", f"{API}/experiments/search?max_results=1", user=old)[0] in (200, 401)


def test_the_cascades_admin_is_refused_to_the_users_commands(team):
    name = team.credentials[0]
    for args in (("passwd", name), ("remove", name), ("admin", name, "off")):
        result = users(team, *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "MLFLOW_AUTH_" in result.stderr


def test_a_removed_user_is_refused(team, people):
    removed = users(team, "remove", "bob")
    assert removed.returncode == 0, removed.stderr
    # A worker that accepted bob's password within the cache's TTL still takes it for his, but MLflow then
    # looks him up for every request and finds nobody (2.9.2 answers 404 then): never a 200.
    statuses = {request(team, "GET", f"{API}/experiments/search?max_results=1", user=people["bob"], via="direct")[0]
                for _ in range(6)}
    assert statuses <= {401, 404}, statuses
    missing = users(team, "permissions", "bob")
    assert missing.returncode == 1 and "no such user" in missing.stderr


class Browser:
    """Debian's chromium, headless, driven over the DevTools protocol.

    It answers HTTP auth challenges with `credentials` (Fetch.authRequired), as a user typing them into the
    browser's prompt: credentials in the URL would not do, since 3.x's UI uses fetch(), which refuses URLs
    that carry them.
    """

    def __init__(self, stack: Stack, credentials: tuple[str, str] | None) -> None:
        import itertools
        import time
        import urllib.request

        import websocket

        from tests.services import free_port

        binary = shutil.which("chromium")
        require_tool(binary, "chromium (Debian package chromium)")
        self.credentials = credentials
        self.ids = itertools.count(1)
        port = free_port()
        profile = stack.root / f"chromium-{port}"
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
             # The harness's own CA, and the public host on loopback, as for every other client.
             "--ignore-certificate-errors", f"--host-resolver-rules=MAP {stack.public_host} 127.0.0.1",
             f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                    pages = [page for page in json.load(response) if page.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and self.process.poll() is None, "chromium did not start"
            time.sleep(0.2)
        self.socket = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.send("Fetch.enable", handleAuthRequests=True)

    def send(self, method: str, **params) -> int:
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        return number

    def _handle(self, message: dict) -> None:
        params = message.get("params", {})
        if message.get("method") == "Fetch.requestPaused":
            self.send("Fetch.continueRequest", requestId=params["requestId"])
        elif message.get("method") == "Fetch.authRequired":
            answer = ({"response": "ProvideCredentials", "username": self.credentials[0],
                       "password": self.credentials[1]} if self.credentials else {"response": "CancelAuth"})
            self.send("Fetch.continueWithAuth", requestId=params["requestId"], authChallengeResponse=answer)

    def call(self, method: str, **params) -> dict:
        number = self.send(method, **params)
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == number:
                return message.get("result", {})
            self._handle(message)

    def dom_when(self, url: str, wanted: str, seconds: float = 30) -> str:
        """Open `url`; the page's HTML once it contains `wanted`, or after `seconds`."""
        import time

        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + seconds
        html = ""
        while time.monotonic() < deadline:
            result = self.call("Runtime.evaluate", expression="document.documentElement.outerHTML")
            html = result.get("result", {}).get("value", "")
            if wanted in html:
                break
            time.sleep(0.5)
        return html

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(15)


def test_the_ui_loads_for_alice_in_a_real_browser(team, people, alice_work):
    url = f"{team.public_url}/"
    browser = Browser(team, people["alice"])
    try:
        # The UI's own requests (answered with alice's credentials) list her experiment.
        signed_in = browser.dom_when(url, EXPERIMENT)
    finally:
        browser.close()
    assert EXPERIMENT in signed_in, signed_in[-3000:]
    # Without credentials MLflow's 401 stands: no UI, no experiment.
    browser = Browser(team, None)
    try:
        anonymous = browser.dom_when(url, EXPERIMENT, seconds=5)
    finally:
        browser.close()
    assert EXPERIMENT not in anonymous and "You are not authenticated" in anonymous, anonymous[-2000:]


# -- the stack's other consumers -------------------------------------------------

def test_gc_deletes_a_deleted_runs_artifacts_logged_in_as_the_admin(team, people):
    from tests.e2e.test_stack import object_keys

    setup = team.run_client("gc_setup.py", credentials=people["alice"])
    prefix = f"{setup['experiment_id']}/"
    deleted, kept = setup["deleted_run_id"], setup["kept_run_id"]
    assert object_keys(team, f"{prefix}{deleted}/") and object_keys(team, f"{prefix}{kept}/")

    # Without the admin's password the server refuses gc, which says so and deletes nothing.
    refused = team.run_gc_once(without=("MLFLOW_TRACKING_PASSWORD",))
    assert refused.returncode != 0
    assert "mlflow-gc: FAILED with exit code" in refused.stdout
    assert object_keys(team, f"{prefix}{deleted}/")

    result = team.run_gc_once()
    assert result.returncode == 0, result.stdout + result.stderr
    assert object_keys(team, f"{prefix}{deleted}/") == []
    assert [key.rsplit("/", 1)[-1] for key in object_keys(team, f"{prefix}{kept}/")] == ["kept.txt"]


def test_prometheus_scrapes_metrics_with_the_admins_password_file_and_probes_health_without(team, alice_work,
                                                                                           tmp_path):
    import time

    import yaml

    from generator.artifacts import prometheus as prometheus_artifact
    from tests.e2e.test_stack import Prometheus, start_blackbox_exporter

    binary = shutil.which("prometheus")
    require_tool(binary, "Prometheus (Debian package prometheus)")
    scrape = yaml.safe_load((team.out / prometheus_artifact.SCRAPE_PATH).read_text())
    jobs = [job for job in scrape["scrape_configs"]
            if job["job_name"] in (prometheus_artifact.MLFLOW_JOB, prometheus_artifact.HEALTH_JOB)]
    # The file the operator mounts where the job says: here, beside the test's Prometheus.
    password_file = tmp_path / "mlflow-auth-password"
    password_file.write_text(team.credentials[1])
    blackbox, blackbox_address = start_blackbox_exporter(tmp_path)
    text = (yaml.safe_dump(jobs).replace(prometheus_artifact.BLACKBOX_ADDRESS, blackbox_address)
            .replace(prometheus_artifact.METRICS_PASSWORD_FILE, str(password_file)))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": yaml.safe_load(team.localize(text))}
    prometheus = Prometheus(binary, config, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            up = prometheus.query('up{job=~"mlflow|mlflow-health"} == 1')
            probe = prometheus.query('probe_success{job="mlflow-health"} == 1')
            if len(up) == 2 and probe:
                break
            time.sleep(1)
        assert len(up) == 2 and probe, (up, probe)
        assert "mlflow_http_request_total" in prometheus.metric_names()
    finally:
        prometheus.stop()
        blackbox.terminate()
        blackbox.wait(10)


# -- rotation and switching modes (last: they rebuild and restart the stack) -----------

def rebuild_and_restart(stack: Stack) -> subprocess.CompletedProcess:
    """`nself build`, then what `nself start` does: init, and a new mlflow and nginx where their files changed."""
    before_server, before_vhost = stack.environment("mlflow"), stack.nginx.vhost
    command_before = stack.command("mlflow")
    build_out(stack.project, stack.out)
    stack.values = read_project_env(stack.project).values
    init = stack.run_init()
    assert init.returncode == 0, init.stdout + init.stderr
    if stack.environment("mlflow") != before_server or stack.command("mlflow") != command_before:
        stack.stop_mlflow()
        stack.start_mlflow()
    if stack.nginx_for(stack.out).vhost != before_vhost or (stack.out / "nginx/includes/mlflow.htpasswd").exists():
        stack.nginx.stop()
        stack.nginx = None
        stack.start_nginx()
    return init


def run_ids(stack: Stack, experiment_id: str, user) -> set[str]:
    status, body, _headers = request(stack, "POST", f"{API}/runs/search", user=user,
                                     body={"experiment_ids": [experiment_id], "max_results": 100})
    assert status == 200, body
    return {run["info"]["run_id"] for run in json.loads(body).get("runs", [])}


def test_rotating_the_admin_password_in_the_env_files(team, alice_work):
    import time

    old = team.credentials
    new_password = "rotated-admin-password-0123456789"
    with open(team.project / ".env.secrets", "a") as secrets_file:
        secrets_file.write(f"MLFLOW_AUTH_PASSWORD={new_password}\n")
    restarted_before = team.mlflow_process
    init = rebuild_and_restart(team)
    assert outcomes(init)[f"auth admin {old[0]} password"] == "updated"
    assert team.credentials == (old[0], new_password)
    if team.mlflow_process is restarted_before:
        # Nothing of the mlflow service changed (before 3.16.1 it does not get the password), so Compose
        # leaves it running: a worker that accepted the old password trusts it until the cache's TTL ends.
        time.sleep(auth_artifact.CACHE_TTL_SECONDS + 1)
    for via in ("nginx", "direct"):
        assert {request(team, "GET", f"{API}/experiments/search?max_results=1", user=old, via=via)[0]
                for _ in range(6)} == {401}
        assert {request(team, "GET", f"{API}/experiments/search?max_results=1", user=team.credentials, via=via)[0]
                for _ in range(6)} == {200}
    again = team.run_init()
    assert set(outcomes(again).values()) == {"unchanged"}, again.stdout


# What changes is the build's (the argv, the vhost), the same on both versions; the two restarts of a
# 3.x server would cost about 90 s of the suite.
@pytest.mark.only_on(DEFAULT_VERSION)
def test_switching_to_nginx_mode_and_back_keeps_every_run_and_every_user(team, people, alice_work, mlflow_version):
    experiment_id = alice_work["tracking"]["experiment_id"]
    runs = run_ids(team, experiment_id, team.credentials)
    assert alice_work["tracking"]["run_id"] in runs
    env_file = team.project / ".env"
    original = env_file.read_text()
    env_file.write_text(original + "MLFLOW_AUTH_MODE=nginx\nMLFLOW_AUTH_DEFAULT_PERMISSION=\n")
    try:
        rebuild_and_restart(team)
        assert "--app-name" not in team.command("mlflow")
        assert run_ids(team, experiment_id, team.credentials) == runs
        # nginx's one account: alice's own password no longer opens the public URL.
        assert request(team, "GET", "/", user=people["alice"])[0] == 401
    finally:
        env_file.write_text(original)
    rebuild_and_restart(team)
    assert "--app-name" in team.command("mlflow")
    assert run_ids(team, experiment_id, people["alice"]) == runs
    alice = json.loads(users(team, "permissions", "alice", "--json").stdout)
    assert {(row["kind"], row["target"]): row["permission"] for row in alice["permissions"]}[
        ("experiment", EXPERIMENT)] == "MANAGE"


# -- backup and restore, upgrade (last) ----------------------------------------------

def backup_service(stack: Stack, action: str, *args: str) -> subprocess.CompletedProcess:
    from tests.services import PG_BIN

    extra = ["--mlflow-python", str(stack.venv / "bin/python")] if action == "restore" else []
    return service(stack, action, *args, "--direct", "--db-host", "127.0.0.1", "--db-port", str(stack.pg.port),
                   "--pg-bindir", str(PG_BIN), "--s3-endpoint", stack.s3.endpoint, *extra)


def test_backup_and_restore_carry_the_users_and_their_permissions(team, people, alice_work, tmp_path):
    import tarfile

    archive = tmp_path / "team.tar"
    made = backup_service(team, "backup", "--output", str(archive))
    assert made.returncode == 0, made.stdout + made.stderr
    assert "the users of database mlflow_auth" in made.stdout
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert "auth-database.pgdump" in names and manifest["auth"]["database"] == "mlflow_auth"

    # A user added after the backup is gone after the restore; alice and her permissions are back.
    assert users(team, "add", "carol").returncode == 0
    team.stop_mlflow()
    restored = backup_service(team, "restore", "--input", str(archive), "--force")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    init = team.run_init()
    assert init.returncode == 0, init.stdout + init.stderr
    team.start_mlflow()
    listed = json.loads(users(team, "list", "--json", *direct_database(team)).stdout)
    assert "carol" not in {user["username"] for user in listed} and "alice" in {user["username"] for user in listed}
    alice = json.loads(users(team, "permissions", "alice", "--json").stdout)
    assert {(row["kind"], row["target"]): row["permission"] for row in alice["permissions"]}[
        ("experiment", EXPERIMENT)] == "MANAGE"
    assert alice_work["tracking"]["run_id"] in run_ids(team, alice_work["tracking"]["experiment_id"],
                                                       people["alice"])


@pytest.mark.only_on(DEFAULT_VERSION)  # the upgrade starts from 2.9.2
def test_upgrading_2_9_2_to_3_17_2_keeps_users_and_permissions(team, people, alice_work, mlflow_version):
    assert users(team, "add", "dave", "--password-stdin", stdin="dave-password-0123\n").returncode == 0
    assert users(team, "grant", "dave", "experiment", EXPERIMENT, "READ").returncode == 0
    dave = ("dave", "dave-password-0123")
    experiment_id, run_id = alice_work["tracking"]["experiment_id"], alice_work["tracking"]["run_id"]

    with open(team.project / ".env", "a") as env_file:
        env_file.write(f"MLFLOW_VERSION={NEWEST_3X}\n")
    build_out(team.project, team.out)
    team.values = read_project_env(team.project).values
    team.stop_mlflow()
    team.venv = image_venv(team.out / "mlflow" / "Dockerfile")
    init = team.run_init()
    assert init.returncode == 0, init.stdout + init.stderr
    steps = outcomes(init)
    assert steps["mlflow schema"] == "updated"
    assert steps["auth database mlflow_auth tables"] == "updated"
    team.start_mlflow()
    assert team.version[:2] == (3, 17)

    assert can_read_experiment(team, dave, experiment_id, run_id) == (200, 200)
    assert log_metric(team, dave, run_id) == 403
    listed = json.loads(users(team, "permissions", "dave", "--json").stdout)
    assert [(row["kind"], row["target"], row["permission"]) for row in listed["permissions"]] == [
        ("experiment", EXPERIMENT, "READ")]
    alice = json.loads(users(team, "permissions", "alice", "--json").stdout)
    assert ("model", MODEL, "MANAGE") in {(row["kind"], row["target"], row["permission"]) for row in alice["permissions"]}
    assert run_id in run_ids(team, experiment_id, people["alice"])
