"""GraphQL through Hasura, end to end: the views, their role and their metadata against a live stack.

Per MLflow version, examples/graphql (examples/prod with MLFLOW_GRAPHQL_ENABLED=true)
runs as a stack of its own on the session's PostgreSQL and S3 servers, under
names of its own (database, role, bucket) and with one MLflow worker, beside
the shared stack. The seed's tracking and registry examples run through
nginx, plus a few REST calls for what they do not make: a deleted run with a
NaN metric, a deleted model version. Then:

- every view returns what MLflow's REST API returns for the same data;
- the GraphQL role reads every view and nothing else;
- every tracked view, column and relationship of the generated Hasura
  metadata exists in the live database, readable by that role;
- init re-runs report `unchanged`, the role's password rotates, privileges
  granted beyond the views are revoked, the SQL file applied with psql gives
  what init gives, a backup leaves the views out and init makes them again;
- last, on 2.9.2 only: the upgrade to 3.17.2 with the views present.

No Hasura server runs here (it cannot be installed): the SQL it would send is
not run, but everything it reads is checked as the role it connects as.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from generator.artifacts import graphql
from generator.envfiles import read_project_env
from tests.conftest import EXAMPLES
from tests.e2e.conftest import DEFAULT_VERSION, NEWEST_3X, build_out, make_project
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.stack import Stack
from tests.e2e.test_backup import service
from tests.e2e.test_stack import curl
from tests.test_graphql_metadata import add_mlflow_source, exported_metadata, mlflow_source, nself_metadata
from tests.test_init import outcomes

API = "/api/2.0/mlflow"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# -- the stack ---------------------------------------------------------------------------------

def names(mlflow_version: str) -> dict[str, str]:
    suffix = mlflow_version.replace(".", "_")
    return {"MLFLOW_DB_NAME": f"mlflow_gql_{suffix}", "MLFLOW_DB_USER": f"mlflow_gql_{suffix}",
            "MLFLOW_ARTIFACTS_BUCKET": f"mlflow-gql-{suffix.replace('_', '-')}"}


@pytest.fixture(scope="module")
def gproject(mlflow_version, tmp_path_factory) -> Path:
    lines = "".join(f"{name}={value}\n" for name, value in names(mlflow_version).items()) + "MLFLOW_WORKERS=1\n"
    return make_project(tmp_path_factory.mktemp(f"graphql-{mlflow_version}"), mlflow_version,
                        example=EXAMPLES / "graphql", extra=lines)


@pytest.fixture(scope="module")
def gstack(gproject, postgres_server, s3_server):
    out = build_out(gproject, gproject.parent / "out")
    running = Stack(out, read_project_env(gproject).values, postgres_server, s3_server,
                    image_venv(out / "mlflow" / "Dockerfile"))
    try:
        running.first_init = running.run_init()
        assert running.first_init.returncode == 0, running.first_init.stdout + running.first_init.stderr
        running.start_mlflow()
        running.start_nginx()
        yield running
    finally:
        running.stop()


def rest(stack: Stack, method: str, path: str, body: dict | None = None, **query: str) -> dict:
    """MLflow's REST API through nginx, as a user's client calls it."""
    args = ["-X", method, f"{stack.public_url}{API}/{path}"]
    if query:
        args = ["-G", *itertools.chain.from_iterable(("--data-urlencode", f"{k}={v}") for k, v in query.items()),
                *args]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    status, text = curl(stack, *args)
    assert status == 200, f"{method} {path}: {status} {text}"
    return json.loads(text)


@pytest.fixture(scope="module")
def gseeded(gstack: Stack) -> dict:
    """The seed's examples, then a deleted run with a NaN metric and a deleted model version."""
    tracking = gstack.run_client("seed_tracking.py")
    registry = gstack.run_client("seed_registry.py", tracking["run_id"])
    experiment = rest(gstack, "POST", "experiments/create", {"name": "graphql-edge-cases"})["experiment_id"]
    now = int(time.time() * 1000)
    run = rest(gstack, "POST", "runs/create", {"experiment_id": experiment, "run_name": "diverged",
                                                  "start_time": now})["run"]["info"]["run_id"]
    # Protobuf's JSON writes NaN as a string; MLflow reads a bare NaN as 0 at step 0.
    rest(gstack, "POST", "runs/log-metric", {"run_id": run, "key": "loss", "value": "NaN",
                                              "timestamp": now, "step": 3})
    rest(gstack, "POST", "runs/log-parameter", {"run_id": run, "key": "lr", "value": "10"})
    rest(gstack, "POST", "runs/delete", {"run_id": run})
    first = rest(gstack, "GET", "model-versions/get", name="production-classifier",
                 version=registry["version"])["model_version"]
    same = {"source": first["source"], "run_id": first["run_id"]}
    if first["source"].startswith("models:/"):
        same["model_id"] = first["source"].removeprefix("models:/")  # 3.x: a logged model, named by its id too
    second = rest(gstack, "POST", "model-versions/create", {"name": "production-classifier", **same})["model_version"]
    rest(gstack, "DELETE", "model-versions/delete", {"name": "production-classifier", "version": second["version"]})
    return {"tracking": tracking, "registry": registry, "deleted_run": run, "deleted_version": second["version"]}


def graphql_role(stack: Stack) -> tuple[str, str]:
    """The role and password the generated files give mlflow-init (and Hasura)."""
    environment = stack.environment("mlflow-init")
    return environment["MLFLOW_GRAPHQL_DB_USER"], environment["MLFLOW_GRAPHQL_DB_PASSWORD"]


def as_graphql_role(stack: Stack, dbname: str | None = None) -> psycopg.Connection:
    user, password = graphql_role(stack)
    return psycopg.connect(**stack.pg.dsn(user, password, dbname or stack.values["MLFLOW_DB_NAME"]), autocommit=True,
                           row_factory=dict_row)


def as_admin(stack: Stack, dbname: str | None = None) -> psycopg.Connection:
    return psycopg.connect(**stack.pg.dsn(dbname=dbname or stack.values["MLFLOW_DB_NAME"]), autocommit=True)


def _comparable(row: dict) -> dict:
    # NaN is not equal to itself; the rows are compared whole.
    return {key: "NaN" if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}


def view_rows(stack: Stack) -> dict[str, list[dict]]:
    """Every row of every view, as the GraphQL role reads them."""
    with as_graphql_role(stack) as connection:
        return {view.name: sorted(map(_comparable, connection.execute(f"SELECT * FROM {view.qualified}")), key=repr)
                for view in graphql.VIEWS}


# -- comparing with the REST API ------------------------------------------------------------------

def ms(value: datetime | None) -> int | None:
    return None if value is None else (value - EPOCH) // timedelta(milliseconds=1)


def text(value) -> str | None:
    """The REST API leaves empty strings out; the tables hold NULL or ''."""
    return value if value not in ("", None) else None


def number(value) -> int | None:
    return None if value is None else int(value)


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def metric(row: dict) -> tuple:
    return row["key"], row["step"], row["timestamp"], float(row["value"])


def rest_metric(item: dict) -> tuple:
    return item["key"], number(item.get("step", 0)), number(item["timestamp"]), float(item["value"])


def assert_same_metrics(ours: list[dict], theirs: list[dict], where: str) -> None:
    ours = sorted((key, step, ms(timestamp), value) for key, step, timestamp, value in map(metric, ours))
    theirs = sorted(map(rest_metric, theirs))
    assert [m[:3] for m in ours] == [m[:3] for m in theirs], where
    assert all(same_float(a[3], b[3]) for a, b in zip(ours, theirs)), (where, ours, theirs)


def test_init_made_the_schema_the_views_and_the_role(gstack, mlflow_version):
    steps = outcomes(gstack.first_init)
    role, _ = graphql_role(gstack)
    assert steps["mlflow schema"] == "created"
    assert steps["graphql views"] == "created"
    assert steps[f"role {role}"] == "created"
    assert "back up the database first" not in gstack.first_init.stdout
    # The Default experiment init made is the one `mlflow server` makes: MLflow's own resolver agrees.
    resolver = ("from mlflow.utils.server_cli_utils import resolve_default_artifact_root as r; "
                "print(r(True, None, 'postgresql://u@h/d'))")
    resolved = subprocess.run([gstack.venv / "bin/python", "-c", resolver], capture_output=True, text=True,
                              timeout=120, env={"PATH": os.environ["PATH"], "HOME": str(gstack.root)}, check=True)
    assert resolved.stdout.strip() == gstack.environment("mlflow-init")["MLFLOW_INIT_ARTIFACT_ROOT"]
    default = rest(gstack, "GET", "experiments/get", experiment_id="0")["experiment"]
    assert default["name"] == "Default" and default["artifact_location"] == "mlflow-artifacts:/0"


def test_every_view_returns_what_the_rest_api_returns(gstack, gseeded):
    views = view_rows(gstack)

    experiments = rest(gstack, "POST", "experiments/search", {"max_results": 1000, "view_type": "ALL"})["experiments"]
    assert len(experiments) == 4  # Default, the seed's two, the edge cases'
    assert sorted(e["experiment_id"] for e in views["experiments"]) == sorted(e["experiment_id"] for e in experiments)
    for view, item in zip(sorted(views["experiments"], key=lambda e: e["experiment_id"]),
                          sorted(experiments, key=lambda e: e["experiment_id"])):
        assert (view["experiment_id"], view["name"], view["artifact_location"], view["lifecycle_stage"]) == (
            item["experiment_id"], item["name"], item["artifact_location"], item["lifecycle_stage"])
        assert (ms(view["creation_time"]), ms(view["last_update_time"])) == (
            number(item.get("creation_time")), number(item.get("last_update_time")))

    runs = rest(gstack, "POST", "runs/search", {"experiment_ids": [e["experiment_id"] for e in experiments],
                                                 "run_view_type": "ALL", "max_results": 1000})["runs"]
    assert len(runs) == 3 and gseeded["deleted_run"] in {run["info"]["run_id"] for run in runs}
    by_run = {row["run_id"]: row for row in views["runs"]}
    assert set(by_run) == {run["info"]["run_id"] for run in runs}
    for run in runs:
        info, data, run_id = run["info"], run["data"], run["info"]["run_id"]
        row = by_run[run_id]
        assert {key: row[key] for key in ("experiment_id", "run_name", "status", "lifecycle_stage", "artifact_uri")} == {
            "experiment_id": info["experiment_id"], "run_name": info["run_name"], "status": info["status"],
            "lifecycle_stage": info["lifecycle_stage"], "artifact_uri": info["artifact_uri"]}, run_id
        assert text(row["user_id"]) == text(info.get("user_id"))
        assert (ms(row["start_time"]), ms(row["end_time"])) == (number(info.get("start_time")),
                                                                number(info.get("end_time"))), run_id
        params = sorted((p["key"], p["value"]) for p in views["params"] if p["run_id"] == run_id)
        assert params == sorted((p["key"], p["value"]) for p in data.get("params", [])), run_id
        tags = sorted((t["key"], t["value"]) for t in views["run_tags"] if t["run_id"] == run_id)
        assert tags == sorted((t["key"], t["value"]) for t in data.get("tags", [])), run_id
        latest = [m for m in views["metrics"] if m["run_id"] == run_id]
        assert_same_metrics(latest, data.get("metrics", []), f"{run_id} latest metrics")
        for key in {m["key"] for m in latest}:
            history = rest(gstack, "GET", "metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
            assert_same_metrics([m for m in views["metric_history"] if m["run_id"] == run_id and m["key"] == key],
                                history, f"{run_id} {key} history")
    loop_history = [m for m in views["metric_history"] if m["run_id"] == gseeded["tracking"]["loop_run_id"]]
    assert len(loop_history) == 100  # two metrics, 50 epochs each
    nan = [m for m in views["metrics"] if m["run_id"] == gseeded["deleted_run"]]
    assert len(nan) == 1 and math.isnan(float(nan[0]["value"]))

    models = rest(gstack, "GET", "registered-models/search", max_results="1000")["registered_models"]
    assert [(m["name"], text(m.get("description")), number(m["creation_timestamp"]),
             number(m["last_updated_timestamp"])) for m in models] == [
        (m["name"], text(m["description"]), ms(m["creation_time"]), ms(m["last_updated_time"]))
        for m in views["registered_models"]]
    assert sorted((a["alias"], int(a["version"])) for m in models for a in m.get("aliases", [])) == sorted(
        (a["alias"], a["version"]) for a in views["model_aliases"]) == [("champion", 1)]

    versions = rest(gstack, "GET", "model-versions/search", max_results="1000")["model_versions"]
    assert [int(v["version"]) for v in versions] == [1]  # version 2 was deleted: the API and the view hide it
    assert [row["version"] for row in views["model_versions"]] == [1]
    version, row = versions[0], views["model_versions"][0]
    assert {key: row[key] for key in ("name", "stage", "status", "source", "run_id")} == {
        "name": version["name"], "stage": version["current_stage"], "status": version["status"],
        "source": version["source"], "run_id": version["run_id"]}
    assert row["run_id"] == gseeded["tracking"]["run_id"] and row["stage"] == "Production"
    for key, rest_key in (("user_id", "user_id"), ("description", "description"), ("run_link", "run_link"),
                          ("status_message", "status_message")):
        assert text(row[key]) == text(version.get(rest_key)), key
    assert (ms(row["creation_time"]), ms(row["last_updated_time"])) == (
        number(version["creation_timestamp"]), number(version["last_updated_timestamp"]))


# -- the role --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_database(gstack) -> str:
    """The app database nself's Hasura serves, on the same server."""
    name = f"app_{gstack.values['MLFLOW_DB_NAME']}"
    with as_admin(gstack, "postgres") as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name}")
        connection.execute(f"CREATE DATABASE {name}")
    with as_admin(gstack, name) as connection:
        connection.execute("CREATE TABLE customers (name text)")
        connection.execute("INSERT INTO customers VALUES ('alice')")
    return name


def refused(connection: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        connection.execute(statement)


def write_refused(connection: psycopg.Connection, statement: str) -> None:
    """An INSERT or UPDATE of view columns that are expressions fails before privileges are checked."""
    with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported,
                        psycopg.errors.ObjectNotInPrerequisiteState)):
        connection.execute(statement)


def test_the_graphql_role_reads_every_view_and_nothing_else(gstack, gseeded, other_database):
    with as_admin(gstack) as admin:
        tables = [row[0] for row in admin.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public'")]
        sequences = [row[0] for row in admin.execute(
            "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences WHERE schemaname = 'public'")]
        attributes = admin.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
                                   "rolcanlogin FROM pg_roles WHERE rolname = %s", (graphql_role(gstack)[0],)).fetchone()
    assert len(tables) >= 15 and "public.runs" in tables
    assert attributes == (False, False, False, False, False, True)

    with as_graphql_role(gstack) as connection:
        for view in graphql.VIEWS:
            assert connection.execute(f"SELECT count(*) AS n FROM {view.qualified}").fetchone()["n"] >= 1, view.name
        for table in tables:
            refused(connection, f"SELECT * FROM {table} LIMIT 1")
            refused(connection, f"DELETE FROM {table}")
        for sequence in sequences:
            refused(connection, f"SELECT nextval('{sequence}')")
        for view in graphql.VIEWS:
            first = view.columns[0].name
            write_refused(connection, f"INSERT INTO {view.qualified} ({first}) VALUES (NULL)")
            write_refused(connection, f"UPDATE {view.qualified} SET {first} = {first}")
            # A view of one table is updatable: a DELETE reaches MLflow's table unless the privilege stops it.
            refused(connection, f"DELETE FROM {view.qualified}")
        refused(connection, "CREATE TABLE public.intruder (id int)")
        refused(connection, f"CREATE TABLE {graphql.SCHEMA}.intruder (id int)")
        refused(connection, "CREATE SCHEMA intruder")
        refused(connection, "CREATE TEMPORARY TABLE intruder (id int)")
        refused(connection, f"CREATE VIEW {graphql.SCHEMA}.intruder AS SELECT 1")
        refused(connection, f"SET ROLE {gstack.values['MLFLOW_DB_USER']}")

    # Another database: the app's. The role may connect (PUBLIC may, there) but reads nothing.
    with as_graphql_role(gstack, other_database) as connection:
        refused(connection, "SELECT * FROM customers")
        refused(connection, "CREATE TABLE intruder (id int)")
    # MLflow's database of the shared stack, and every other one on the server: not a table readable.
    with as_admin(gstack, "postgres") as admin:
        databases = [row[0] for row in admin.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> %s",
            (gstack.values["MLFLOW_DB_NAME"],))]
    for database in databases:
        try:
            connection = as_graphql_role(gstack, database)
        except psycopg.OperationalError as error:
            assert "permission denied" in str(error), database
            continue
        with connection, as_admin(gstack, database) as admin:
            for (table,) in admin.execute("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                                          "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"):
                refused(connection, f"SELECT * FROM {table} LIMIT 1")


def test_every_tracked_view_column_and_relationship_exists_in_the_live_database(gstack, gseeded, tmp_path):
    """What Hasura reads when it loads the source, read as its role."""
    metadata = nself_metadata(tmp_path / "nself")
    add_mlflow_source(metadata, gstack.out)
    source = mlflow_source(exported_metadata(metadata))
    with as_graphql_role(gstack) as connection:
        live = {}
        for row in connection.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                                      "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
                                      (graphql.SCHEMA,)):
            live.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
        comments = {row["name"]: row["doc"] for row in connection.execute(
            "SELECT c.relname AS name, obj_description(c.oid, 'pg_class') AS doc FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s", (graphql.SCHEMA,))}
        tracked = {table["table"]["name"]: table for table in source["tables"]}
        assert set(tracked) == set(live) and all(table["table"]["schema"] == graphql.SCHEMA for table in tracked.values())
        assert all(comments[name] for name in tracked)  # Hasura shows them as type descriptions
        for name, table in tracked.items():
            for permission in table["select_permissions"]:
                assert permission["permission"]["columns"] == list(live[name]), name
            for kind in ("object_relationships", "array_relationships"):
                for relationship in table.get(kind, []):
                    manual = relationship["using"]["manual_configuration"]
                    target = manual["remote_table"]["name"]
                    mapping = manual["column_mapping"]
                    for mine, theirs in mapping.items():
                        assert live[name][mine] == live[target][theirs], (name, relationship["name"])
                    condition = " AND ".join(f"v.{mine} = t.{theirs}" for mine, theirs in mapping.items())
                    joined = connection.execute(
                        f"SELECT count(*) AS n FROM {graphql.SCHEMA}.{name} v JOIN {graphql.SCHEMA}.{target} t "
                        f"ON {condition}").fetchone()["n"]
                    assert joined > 0, (name, relationship["name"])
                    if kind == "object_relationships":
                        # An object relationship points at one row at most.
                        columns = ", ".join(mapping.values())
                        assert connection.execute(
                            f"SELECT count(*) = count(DISTINCT ({columns}, true)) AS unique FROM "
                            f"{graphql.SCHEMA}.{target}").fetchone()["unique"], (name, relationship["name"])


# -- init, again ------------------------------------------------------------------------------

def test_init_reruns_report_unchanged(gstack, gseeded):
    before = view_rows(gstack)
    for _ in range(2):
        result = gstack.run_init()
        assert result.returncode == 0, result.stdout + result.stderr
        steps = outcomes(result)
        assert steps and set(steps.values()) == {"unchanged"}, result.stdout
        assert "graphql views" in steps and "removed" not in result.stdout and "dropped" not in result.stdout
    assert view_rows(gstack) == before


def test_the_graphql_role_password_rotates(gstack, gseeded):
    role, old = graphql_role(gstack)
    new = "rotated-Graphql-Password-2"
    gstack.values["MLFLOW_GRAPHQL_DB_PASSWORD"] = new
    result = gstack.run_init()
    assert result.returncode == 0, result.stdout + result.stderr
    assert outcomes(result)[f"role {role} password"] == "updated"
    assert new not in result.stdout + result.stderr
    as_graphql_role(gstack).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**gstack.pg.dsn(role, old, gstack.values["MLFLOW_DB_NAME"]))
    again = gstack.run_init()
    assert set(outcomes(again).values()) == {"unchanged"}, again.stdout


def test_privileges_granted_beyond_the_views_are_revoked(gstack, gseeded):
    role, _ = graphql_role(gstack)
    database, owner = gstack.values["MLFLOW_DB_NAME"], gstack.values["MLFLOW_DB_USER"]
    with as_admin(gstack) as admin:
        for grant in (f"GRANT SELECT ON public.runs TO {role}", f"GRANT SELECT (name) ON public.experiments TO {role}",
                      f"GRANT INSERT, DELETE ON {graphql.SCHEMA}.runs TO {role}", f"GRANT CREATE ON SCHEMA public TO {role}",
                      f"GRANT {owner} TO {role}", f"GRANT CREATE, TEMPORARY ON DATABASE {database} TO {role}",
                      f"REVOKE SELECT ON {graphql.SCHEMA}.params FROM {role}"):
            admin.execute(grant)
    with as_graphql_role(gstack) as connection:
        assert connection.execute("SELECT count(*) AS n FROM public.runs").fetchone()["n"] > 0  # the grant works

    result = gstack.run_init()

    assert result.returncode == 0, result.stdout + result.stderr
    steps = outcomes(result)
    for step in ("memberships", "database access", "reads the views", "reads nothing else"):
        assert steps[f"role {role} {step}"] == "updated", result.stdout
    with as_graphql_role(gstack) as connection:
        refused(connection, "SELECT * FROM public.runs")
        refused(connection, "SELECT name FROM public.experiments")
        refused(connection, f"DELETE FROM {graphql.SCHEMA}.runs")
        refused(connection, "CREATE TABLE public.intruder (id int)")
        refused(connection, "CREATE TEMPORARY TABLE intruder (id int)")
        refused(connection, f"SET ROLE {owner}")
        assert connection.execute(f"SELECT count(*) AS n FROM {graphql.SCHEMA}.params").fetchone()["n"] > 0
    assert set(outcomes(gstack.run_init()).values()) == {"unchanged"}


def test_the_sql_file_applied_with_psql_gives_what_init_gives(gstack, gseeded):
    before = view_rows(gstack)
    with as_admin(gstack) as admin:
        admin.execute(f"DROP SCHEMA {graphql.SCHEMA} CASCADE")
    command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(gstack.pg.port),
               "-U", "postgres", "-d", gstack.values["MLFLOW_DB_NAME"], "-f", str(gstack.out / graphql.SQL_PATH)]
    by_hand = subprocess.run(command, env={**os.environ, "PGPASSWORD": gstack.pg.admin_password},
                             capture_output=True, text=True, timeout=60)
    assert by_hand.returncode == 0, by_hand.stderr
    assert view_rows(gstack) == before

    result = gstack.run_init()

    assert set(outcomes(result).values()) == {"unchanged"}, result.stdout


def test_a_backup_leaves_the_views_out_and_init_makes_them_again(gstack, gseeded, gproject, tmp_path):
    before = view_rows(gstack)
    archive = tmp_path / "graphql-backup.tar"
    backed_up = service(gstack, gproject, "backup", "--output", archive)
    assert backed_up.returncode == 0, backed_up.stderr
    import tarfile

    with tarfile.open(archive) as opened:
        (tmp_path / "database.pgdump").write_bytes(opened.extractfile("database.pgdump").read())
    listing = subprocess.run([shutil.which("pg_restore") or "pg_restore", "--list", tmp_path / "database.pgdump"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert " runs " in listing and graphql.SCHEMA not in listing

    gstack.stop_mlflow()
    try:
        restored = service(gstack, gproject, "restore", "--input", archive, "--force")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        with as_admin(gstack) as admin:  # the restore dropped MLflow's tables, and the views with them
            assert admin.execute("SELECT count(*) FROM pg_views WHERE schemaname = %s",
                                 (graphql.SCHEMA,)).fetchone()[0] == 0
        result = gstack.run_init()
        assert result.returncode == 0, result.stdout + result.stderr
        assert outcomes(result)["graphql views"] == "updated", result.stdout
        assert view_rows(gstack) == before
    finally:
        gstack.start_mlflow()


# -- last: the upgrade, with the views present (2.9.2 only) ---------------------------------------

@pytest.mark.only_on(DEFAULT_VERSION)  # the upgrade starts from it
def test_an_upgrade_with_the_views_present_migrates_and_brings_them_back(gstack, gseeded, gproject, mlflow_version):
    before = view_rows(gstack)
    assert all(before.values())
    gstack.stop_mlflow()
    with open(gproject / ".env", "a") as env:
        env.write(f"MLFLOW_VERSION={NEWEST_3X}\n")
    out = build_out(gproject, gproject.parent / "out-3x")
    upgraded = Stack(out, read_project_env(gproject).values, gstack.pg, gstack.s3, image_venv(out / "mlflow" / "Dockerfile"))
    try:
        assert upgraded.version == tuple(int(part) for part in NEWEST_3X.split("."))

        result = upgraded.run_init()

        assert result.returncode == 0, result.stdout + result.stderr
        steps = outcomes(result)
        assert steps["mlflow schema"] == "updated" and steps["graphql views"] == "created", result.stdout
        dropped = [line for line in result.stdout.splitlines() if "dropped for the migration" in line]
        migrating = [line for line in result.stdout.splitlines() if "migrating from revision" in line]
        assert len(dropped) == len(migrating) == 1, result.stdout
        assert result.stdout.index(migrating[0]) < result.stdout.index(dropped[0])
        assert view_rows(upgraded) == before

        again = upgraded.run_init()
        assert set(outcomes(again).values()) == {"unchanged"}, again.stdout
    finally:
        upgraded.stop()
