"""python -m init against a real PostgreSQL 15 and a real S3 server (SeaweedFS).

Each test builds a small project, reads the generated mlflow-init service
from out/docker-compose.mlflow.yml, and runs `python -m init` from the copy
in out/mlflow/ (as the image does) with that service's environment, its
addresses mapped to the loopback servers. INIT_PYTHON picks another
interpreter for init, such as the image's Python 3.10 in a venv with its pins.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml
from botocore import UNSIGNED
from botocore.config import Config

from generator import artifacts
from generator.envfiles import read_project_env
from generator.settings import load_settings
from tests.compose_values import service_environment
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY, write_tree
from tests.services import PostgresServer, free_port

_numbers = itertools.count(1)


def make_project(tmp_path: Path, pg: PostgresServer, db_password: str = "mlflow-Password-1", **extra: str) -> Path:
    """A project with names of its own, so tests sharing one server never collide."""
    n = next(_numbers)
    env = {
        "PROJECT_NAME": "demo",
        "MLFLOW_ENABLED": "true",
        "MINIO_ENABLED": "true",
        "MLFLOW_DB_NAME": f"mlflow_{n}",
        "MLFLOW_DB_USER": f"mlflow_{n}",
        "MLFLOW_ARTIFACTS_BUCKET": f"mlflow-artifacts-{n}",
        "MINIO_ROOT_USER": S3_ACCESS_KEY,
        **extra,
    }
    secrets = (
        f"POSTGRES_PASSWORD={pg.admin_password}\n"
        f"MINIO_ROOT_PASSWORD={S3_SECRET_KEY}\n"
        f"MLFLOW_DB_PASSWORD='{db_password}'\n"
    )
    return write_tree(tmp_path / f"project{n}", {
        ".env": "".join(f"{key}={value}\n" for key, value in env.items()),
        ".env.secrets": secrets,
    })


def build(project: Path) -> Path:
    out = project / "out"
    for path, content in artifacts.build(load_settings(read_project_env(project))).items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(content)
    return out


def init_environment(project: Path, pg: PostgresServer, s3_endpoint: str) -> dict[str, str]:
    out = project / "out"
    service = yaml.safe_load((out / "docker-compose.mlflow.yml").read_text())["services"]["mlflow-init"]
    environment = service_environment(out, service, read_project_env(project).values)
    assert environment["PGHOST"] == "postgres" and environment["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    environment.update(PGHOST="127.0.0.1", PGPORT=str(pg.port), MLFLOW_S3_ENDPOINT_URL=s3_endpoint)
    return environment


def run_init(project: Path, pg: PostgresServer, s3_endpoint: str, **overrides: str) -> subprocess.CompletedProcess:
    environment = {**init_environment(project, pg, s3_endpoint), **overrides}
    return subprocess.run(
        [os.environ.get("INIT_PYTHON", sys.executable), "-m", "init"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(project / "out" / "mlflow"), **environment},
        cwd=project,
        capture_output=True,
        text=True,
        timeout=180,
    )


def outcomes(result: subprocess.CompletedProcess) -> dict[str, str]:
    found = {}
    for line in result.stdout.splitlines():
        match = re.fullmatch(r"mlflow-init: (.+): (created|updated|unchanged)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def settings_of(project: Path):
    return load_settings(read_project_env(project))


def admin(pg: PostgresServer, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**pg.dsn(dbname=dbname), autocommit=True)


@pytest.fixture
def fresh(tmp_path, postgres_server, s3_server):
    project = make_project(tmp_path, postgres_server)
    build(project)
    return project


def test_a_fresh_stack_gets_a_least_privileged_role_and_its_own_database(fresh, postgres_server, s3_server):
    result = run_init(fresh, postgres_server, s3_server.endpoint)

    assert result.returncode == 0, result.stdout + result.stderr
    settings = settings_of(fresh)
    role, database = settings.database.user, settings.database.name
    assert outcomes(result)[f"role {role}"] == "created"
    assert outcomes(result)[f"database {database}"] == "created"
    assert outcomes(result)[f"bucket {settings.storage.bucket}"] == "created"
    assert "mlflow-Password-1" not in result.stdout + result.stderr

    with psycopg.connect(**postgres_server.dsn(role, "mlflow-Password-1", database), autocommit=True) as own:
        own.execute("CREATE TABLE experiments_probe (id int)")
        own.execute("INSERT INTO experiments_probe VALUES (1)")
        assert own.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
                           ).fetchone() == (False, False, False)


@pytest.fixture(scope="module")
def app_database(postgres_server):
    """Another service's database on the same server, with its defaults untouched."""
    with admin(postgres_server) as connection:
        connection.execute("DROP DATABASE IF EXISTS app")
        connection.execute("CREATE DATABASE app")
    with admin(postgres_server, "app") as connection:
        connection.execute("CREATE TABLE customers (name text)")
        connection.execute("INSERT INTO customers VALUES ('alice')")
    return "app"


def test_the_role_can_neither_read_nor_create_in_another_database(fresh, postgres_server, s3_server, app_database):
    assert run_init(fresh, postgres_server, s3_server.endpoint).returncode == 0
    role = settings_of(fresh).database.user
    with psycopg.connect(**postgres_server.dsn(role, "mlflow-Password-1", app_database), autocommit=True) as other:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            other.execute("SELECT * FROM customers")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            other.execute("CREATE TABLE intruder (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            other.execute("CREATE SCHEMA intruder")


def test_other_roles_cannot_connect_to_the_mlflow_database(fresh, postgres_server, s3_server):
    assert run_init(fresh, postgres_server, s3_server.endpoint).returncode == 0
    with admin(postgres_server) as connection:
        connection.execute("DROP ROLE IF EXISTS bystander")
        connection.execute("CREATE ROLE bystander LOGIN PASSWORD 'bystander-pw'")
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(**postgres_server.dsn("bystander", "bystander-pw", settings_of(fresh).database.name))


def test_re_runs_change_nothing(fresh, postgres_server, s3_server):
    assert run_init(fresh, postgres_server, s3_server.endpoint).returncode == 0
    for _ in range(3):
        result = run_init(fresh, postgres_server, s3_server.endpoint)
        assert result.returncode == 0, result.stdout + result.stderr
        assert outcomes(result) and set(outcomes(result).values()) == {"unchanged"}, result.stdout


def test_two_inits_at_once_leave_one_of_everything(fresh, postgres_server, s3_server):
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(run_init(fresh, postgres_server, s3_server.endpoint)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [result.returncode for result in results] == [0, 0], [r.stdout + r.stderr for r in results]
    settings = settings_of(fresh)
    with admin(postgres_server) as connection:
        assert connection.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s",
                                  (settings.database.user,)).fetchone() == (1,)
        assert connection.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                                  (settings.database.name,)).fetchone() == (1,)
    s3 = s3_client(s3_server)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]].count(settings.storage.bucket) == 1


def test_password_rotation(fresh, postgres_server, s3_server):
    assert run_init(fresh, postgres_server, s3_server.endpoint).returncode == 0
    secrets = (fresh / ".env.secrets").read_text().replace("mlflow-Password-1", "rotated-Password-2")
    (fresh / ".env.secrets").write_text(secrets)
    build(fresh)

    result = run_init(fresh, postgres_server, s3_server.endpoint)

    assert result.returncode == 0, result.stdout + result.stderr
    settings = settings_of(fresh)
    assert outcomes(result)[f"role {settings.database.user} password"] == "updated"
    psycopg.connect(**postgres_server.dsn(settings.database.user, "rotated-Password-2", settings.database.name)).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**postgres_server.dsn(settings.database.user, "mlflow-Password-1", settings.database.name))


def test_init_waits_for_postgres_that_starts_late(tmp_path, s3_server):
    late = PostgresServer().initdb()
    try:
        project = make_project(tmp_path, late)
        build(project)
        starter = threading.Timer(5, late.start)
        started = time.monotonic()
        starter.start()

        result = run_init(project, late, s3_server.endpoint, MLFLOW_INIT_TIMEOUT="60")

        starter.join()
        assert result.returncode == 0, result.stdout + result.stderr
        assert time.monotonic() - started >= 5
        assert outcomes(result)[f"role {settings_of(project).database.user}"] == "created"
    finally:
        late.remove()


def test_a_wrong_admin_password_fails_fast_with_a_clear_message(fresh, postgres_server, s3_server):
    started = time.monotonic()
    result = run_init(fresh, postgres_server, s3_server.endpoint, PGPASSWORD="not-the-password")
    elapsed = time.monotonic() - started

    assert result.returncode == 1
    assert elapsed < 2, elapsed
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "PostgreSQL at 127.0.0.1" in lines[0] and "POSTGRES_PASSWORD" in lines[0]
    assert "Traceback" not in result.stderr and "not-the-password" not in result.stdout


def test_wrong_s3_credentials_fail_fast(fresh, postgres_server, s3_server):
    started = time.monotonic()
    result = run_init(fresh, postgres_server, s3_server.endpoint, AWS_SECRET_ACCESS_KEY="wrong-secret-key")
    assert result.returncode == 1
    assert time.monotonic() - started < 2
    assert "S3 at" in result.stdout and "MINIO_ROOT_PASSWORD" in result.stdout
    assert "Traceback" not in result.stderr and "wrong-secret-key" not in result.stdout


def test_an_s3_endpoint_that_is_down_fails_at_the_deadline(fresh, postgres_server):
    closed = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_init(fresh, postgres_server, closed, MLFLOW_INIT_TIMEOUT="3")
    elapsed = time.monotonic() - started

    assert result.returncode == 1
    assert 3 <= elapsed < 8, elapsed
    assert "S3 at" in result.stdout and "not reachable after 3 s" in result.stdout
    assert "Traceback" not in result.stderr


def s3_client(s3_server, anonymous: bool = False):
    config = Config(signature_version=UNSIGNED) if anonymous else None
    return boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1", config=config,
                        aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)


def test_the_bucket_is_never_readable_or_listable_anonymously(fresh, postgres_server, s3_server):
    assert run_init(fresh, postgres_server, s3_server.endpoint).returncode == 0
    bucket = settings_of(fresh).storage.bucket
    owner = s3_client(s3_server)
    owner.put_object(Bucket=bucket, Key="1/run/artifacts/model.pkl", Body=b"weights")
    assert owner.get_object(Bucket=bucket, Key="1/run/artifacts/model.pkl")["Body"].read() == b"weights"

    for url in (f"{s3_server.endpoint}/{bucket}/1/run/artifacts/model.pkl", f"{s3_server.endpoint}/{bucket}?list-type=2"):
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=5)
        assert denied.value.code == 403, url
    policy = json.loads(owner.get_bucket_policy(Bucket=bucket)["Policy"])
    principals = [statement["Principal"] for statement in policy["Statement"]]
    assert "*" not in json.dumps(principals)


def test_init_replaces_a_public_policy(fresh, postgres_server, s3_server):
    assert run_init(fresh, postgres_server, s3_server.endpoint).returncode == 0
    bucket = settings_of(fresh).storage.bucket
    owner = s3_client(s3_server)
    owner.put_object(Bucket=bucket, Key="leak.txt", Body=b"x")
    public = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"],
                                                      "Resource": [f"arn:aws:s3:::{bucket}/*"]}]}
    owner.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public))
    assert urllib.request.urlopen(f"{s3_server.endpoint}/{bucket}/leak.txt", timeout=5).status == 200

    result = run_init(fresh, postgres_server, s3_server.endpoint)

    assert outcomes(result)[f"bucket {bucket} policy"] == "updated"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{s3_server.endpoint}/{bucket}/leak.txt", timeout=5)


HOSTILE_PASSWORDS = [
    "it's a pass",  # ' and spaces (unquoted in the file)
    'dq"back\\slash 100%',  # " \ % (single-quoted)
    "dollar$HOME ${X} $$",  # $ (single-quoted)
]


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_hostile_passwords_work(tmp_path, postgres_server, s3_server, password):
    project = make_project(tmp_path, postgres_server)
    line = f"MLFLOW_DB_PASSWORD={password}" if "'" in password else f"MLFLOW_DB_PASSWORD='{password}'"
    secrets = re.sub(r"^MLFLOW_DB_PASSWORD=.*$", lambda _: line, (project / ".env.secrets").read_text(), flags=re.M)
    (project / ".env.secrets").write_text(secrets)
    assert read_project_env(project).values["MLFLOW_DB_PASSWORD"] == password
    build(project)

    result = run_init(project, postgres_server, s3_server.endpoint)

    assert result.returncode == 0, result.stdout + result.stderr
    settings = settings_of(project)
    psycopg.connect(**postgres_server.dsn(settings.database.user, password, settings.database.name)).close()
    assert password not in result.stdout + result.stderr


def test_the_sql_file_applied_by_hand_with_psql_converges_with_init(tmp_path, postgres_server, s3_server):
    """The README's psql command: same result as init, and init then finds nothing to do."""
    project = make_project(tmp_path, postgres_server)
    out = build(project)
    settings = settings_of(project)
    command = [
        "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "mlflow_password=mlflow-Password-1",
        "-h", "127.0.0.1", "-p", str(postgres_server.port), "-U", "postgres", "-d", "postgres",
        "-f", str(out / "postgres/init/mlflow.sql"),
    ]
    by_hand = subprocess.run(command, env={**os.environ, "PGPASSWORD": postgres_server.admin_password},
                             capture_output=True, text=True, timeout=60)
    assert by_hand.returncode == 0, by_hand.stderr
    psycopg.connect(**postgres_server.dsn(settings.database.user, "mlflow-Password-1", settings.database.name)).close()

    result = run_init(project, postgres_server, s3_server.endpoint)

    assert result.returncode == 0, result.stdout + result.stderr
    database_steps = {name: outcome for name, outcome in outcomes(result).items() if not name.startswith("bucket")}
    # psql stored the server's own verifier for the same password: nothing to do.
    assert set(database_steps.values()) == {"unchanged"}, result.stdout


def test_without_the_password_variable_psql_creates_the_role_and_skips_the_password(tmp_path, postgres_server):
    """As an image's docker-entrypoint-initdb.d would run it."""
    project = make_project(tmp_path, postgres_server)
    out = build(project)
    command = [
        "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(postgres_server.port),
        "-U", "postgres", "-d", "postgres", "-f", str(out / "postgres/init/mlflow.sql"),
    ]
    result = subprocess.run(command, env={**os.environ, "PGPASSWORD": postgres_server.admin_password},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "mlflow_password is not set" in result.stdout


def test_a_held_lock_ends_at_the_deadline_not_never(fresh, postgres_server, s3_server):
    from generator.artifacts.sql import LOCK_KEY

    with admin(postgres_server) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        started = time.monotonic()
        result = run_init(fresh, postgres_server, s3_server.endpoint, MLFLOW_INIT_TIMEOUT="3")
        elapsed = time.monotonic() - started
        holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))

    assert result.returncode == 1
    assert elapsed < 8, elapsed
    assert "did not finish by the deadline" in result.stdout and "Traceback" not in result.stderr


def test_an_s3_endpoint_that_never_answers_fails_at_the_deadline(fresh, postgres_server):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        started = time.monotonic()
        result = run_init(fresh, postgres_server, f"http://127.0.0.1:{silent.getsockname()[1]}",
                          MLFLOW_INIT_TIMEOUT="3")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.returncode == 1
    assert 3 <= elapsed < 7, elapsed
    assert "not reachable after 3 s" in result.stdout


def test_a_malformed_s3_endpoint_is_one_clear_line(fresh, postgres_server):
    result = run_init(fresh, postgres_server, "minio:9000")
    assert result.returncode == 1
    assert "S3 at minio:9000" in result.stdout and "Traceback" not in result.stderr
