"""The init program's parts that need no server: backoff, config, the psql subset."""

from __future__ import annotations

import pytest

from init.config import ConfigError, InitConfig
from init.postgres import scram_matches
from init.psqlscript import ScriptError, StepResult, run_script
from init.wait import MAX_DELAY, PermanentError, until_deadline


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_backoff_grows_and_is_capped_at_a_quarter_second_until_the_deadline():
    clock = FakeClock()

    def never(_left):
        raise ConnectionRefusedError("refused")

    with pytest.raises(TimeoutError, match="refused"):
        until_deadline(never, 20.0, str, lambda e: False, clock=clock, sleep=clock.sleep)

    assert clock.sleeps[:5] == [0.05, 0.1, 0.2, 0.25, 0.25]
    assert max(clock.sleeps) == MAX_DELAY
    assert clock.now == pytest.approx(20.0)


def test_a_permanent_error_stops_at_once():
    clock = FakeClock()

    def denied(_left):
        raise PermissionError("password authentication failed")

    with pytest.raises(PermanentError, match="password authentication failed"):
        until_deadline(denied, 20.0, str, lambda e: isinstance(e, PermissionError), clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


def test_success_after_transient_failures():
    clock = FakeClock()
    attempts = iter([OSError("down"), OSError("down"), "ok"])

    def flaky(_left):
        result = next(attempts)
        if isinstance(result, Exception):
            raise result
        return result

    assert until_deadline(flaky, 5.0, str, lambda e: False, clock=clock, sleep=clock.sleep) == "ok"


def test_config_lists_every_missing_variable():
    with pytest.raises(ConfigError) as error:
        InitConfig.from_environment({"PGHOST": "postgres"})
    assert "PGUSER" in str(error.value) and "MLFLOW_ARTIFACTS_BUCKET" in str(error.value)


def _init_environment(**changes: str) -> dict[str, str]:
    environment = {
        "PGHOST": "postgres", "PGUSER": "postgres", "PGPASSWORD": "p", "MLFLOW_DB_NAME": "mlflow",
        "MLFLOW_DB_USER": "mlflow", "MLFLOW_DB_PASSWORD": "d", "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "MLFLOW_ARTIFACTS_BUCKET": "mlflow-artifacts",
        "MLFLOW_INIT_SQL": "/etc/nself-mlflow/mlflow.sql", "MLFLOW_INIT_BUCKET_POLICY": "/etc/nself-mlflow/policy.json",
        **changes,
    }
    return {name: value for name, value in environment.items() if value != "-"}


def test_config_reads_the_region_and_defaults_to_us_east_1():
    assert InitConfig.from_environment(_init_environment()).s3_region == "us-east-1"
    assert InitConfig.from_environment(_init_environment(AWS_DEFAULT_REGION="eu-central-1")).s3_region == "eu-central-1"


def test_without_a_policy_file_init_leaves_the_bucket_policy_alone():
    """The external S3 case: compose mounts no policy, and the config says so."""
    assert InitConfig.from_environment(_init_environment(MLFLOW_INIT_BUCKET_POLICY="-")).policy_file is None
    assert str(InitConfig.from_environment(_init_environment()).policy_file) == "/etc/nself-mlflow/policy.json"


class RecordingConnection:
    autocommit = True

    def __init__(self):
        self.executed = []

    def execute(self, statement):
        self.executed.append(statement)
        return self


@pytest.mark.parametrize(
    "script",
    ["\\connect other\n", "\\set x 1\n", "\\if :x\n\\endif\n", "SELECT 1\n", "\\else\n", "\\if :{?x}\n"],
)
def test_psql_the_runner_does_not_know_is_refused_not_guessed(script):
    with pytest.raises(ScriptError):
        run_script(RecordingConnection(), script, {})


def test_statements_in_a_false_branch_do_not_run():
    connection = RecordingConnection()
    run_script(connection, "\\if :{?missing}\nSELECT :'missing';\n\\else\nSELECT 2;\n\\endif\n", {})
    assert connection.executed == ["SELECT 2;"]


def test_scram_verifier_check():
    # Built as RFC 5802 defines it; re-runs against the real server cover what PostgreSQL stores.
    import base64
    import hashlib
    import hmac

    salt, iterations = b"0123456789abcdef", 4096
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    verifier = (f"SCRAM-SHA-256${iterations}:{base64.b64encode(salt).decode()}$"
                f"{base64.b64encode(stored).decode()}:{base64.b64encode(server).decode()}")
    assert scram_matches(verifier, "pencil")
    assert not scram_matches(verifier, "pencil2")
    assert not scram_matches("md5abcdef", "pencil")


def test_init_parses_as_python_3_10_the_2x_images_interpreter():
    import ast
    from pathlib import Path

    import init

    for path in Path(init.__file__).parent.glob("*.py"):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


def test_init_passes_the_password_under_the_name_the_sql_file_reads():
    from generator.artifacts.sql import PASSWORD_VARIABLE as read_by_sql
    from init.postgres import PASSWORD_VARIABLE as passed_by_init

    assert passed_by_init == read_by_sql


# -- mlflow db upgrade, bounded ------------------------------------------------------

def test_a_hanging_db_upgrade_is_stopped_at_the_init_timeout_with_one_line():
    import sys
    import time

    from init.schema import SchemaError, run_db_upgrade

    hanging = (sys.executable, "-c", "import time; time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(SchemaError) as raised:
        run_db_upgrade("postgresql://mlflow@postgres:5432/mlflow", "not-shown", 1, mlflow_cli=hanging)
    assert time.monotonic() - started < 10
    assert str(raised.value) == (
        "mlflow db upgrade did not finish within 1 s (MLFLOW_INIT_TIMEOUT) and was stopped; the database is "
        "unchanged or partly migrated, restore the backup before retrying, or raise MLFLOW_INIT_TIMEOUT for a "
        "large database")


def test_a_db_upgrade_that_cannot_start_is_one_line_not_a_traceback(tmp_path):
    from init.schema import SchemaError, run_db_upgrade

    with pytest.raises(SchemaError) as raised:
        run_db_upgrade("postgresql://mlflow@postgres:5432/mlflow", "not-shown", 5,
                       mlflow_cli=(str(tmp_path / "no-python"), "-m", "mlflow"))
    assert str(raised.value) == f"cannot run mlflow db upgrade ({tmp_path / 'no-python'}: No such file or directory)"


def test_a_failing_db_upgrade_reports_its_last_line_and_never_the_password():
    import sys

    from init.schema import SchemaError, run_db_upgrade

    failing = (sys.executable, "-c", "import os, sys; print('Traceback ...', file=sys.stderr); "
               "print('sqlalchemy.exc.OperationalError: connection refused', file=sys.stderr); sys.exit(3)")
    with pytest.raises(SchemaError) as raised:
        run_db_upgrade("postgresql://mlflow@postgres:5432/mlflow", "s3cret-password", 5, mlflow_cli=failing)
    assert str(raised.value).startswith(
        "mlflow db upgrade failed (exit code 3): sqlalchemy.exc.OperationalError: connection refused; ")
    assert "s3cret-password" not in str(raised.value)


# -- the GraphQL views ---------------------------------------------------------------

GRAPHQL_ENVIRONMENT = {
    "PGHOST": "postgres", "PGUSER": "postgres", "PGPASSWORD": "x", "MLFLOW_DB_NAME": "mlflow",
    "MLFLOW_DB_USER": "mlflow", "MLFLOW_DB_PASSWORD": "x", "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
    "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "MLFLOW_ARTIFACTS_BUCKET": "b",
    "MLFLOW_INIT_SQL": "/etc/nself-mlflow/mlflow.sql", "MLFLOW_INIT_BUCKET_POLICY": "/etc/nself-mlflow/p.json",
}


def test_the_views_are_on_only_with_their_sql_file_and_then_need_their_role():
    assert not InitConfig.from_environment(GRAPHQL_ENVIRONMENT).graphql_enabled
    with pytest.raises(ConfigError) as error:
        InitConfig.from_environment({**GRAPHQL_ENVIRONMENT, "MLFLOW_INIT_GRAPHQL_SQL": "/etc/nself-mlflow/g.sql"})
    assert str(error.value).startswith(
        "not set: MLFLOW_GRAPHQL_DB_USER, MLFLOW_GRAPHQL_DB_PASSWORD, MLFLOW_INIT_ARTIFACT_ROOT")
    config = InitConfig.from_environment({
        **GRAPHQL_ENVIRONMENT, "MLFLOW_INIT_GRAPHQL_SQL": "/etc/nself-mlflow/g.sql", "MLFLOW_GRAPHQL_DB_USER": "g",
        "MLFLOW_GRAPHQL_DB_PASSWORD": "y", "MLFLOW_INIT_ARTIFACT_ROOT": "mlflow-artifacts:/"})
    assert config.graphql_enabled and (config.graphql_user, config.artifact_root) == ("g", "mlflow-artifacts:/")


def test_init_and_the_generator_agree_on_the_graphql_names():
    from generator.artifacts import graphql as generated
    from generator.artifacts.sql import GRAPHQL_PASSWORD_VARIABLE as read_by_sql
    from init import graphql as applied
    from init.postgres import GRAPHQL_PASSWORD_VARIABLE as passed_by_init

    assert passed_by_init == read_by_sql
    assert applied.SCHEMA == generated.SCHEMA


def test_a_create_and_an_update_step_of_one_name_report_once_with_what_ran_first():
    class Answering(RecordingConnection):
        def __init__(self, rows):
            super().__init__()
            self.rows = rows

        def fetchall(self):
            return self.rows.pop(0) if self.executed[-1].startswith("SELECT") else []

    script = ("-- step: views [created]\nSELECT 'a'\n\\gexec\n-- step: views [updated]\nSELECT 'b'\n\\gexec\n"
              "-- step: other [updated]\nSELECT 'c'\n\\gexec\n")
    assert run_script(Answering([[("CREATE",)], [("REPLACE",)], []]), script, {}) == [
        StepResult("views", "created"), StepResult("other", "unchanged")]
    assert run_script(Answering([[], [("REPLACE",)], []]), script, {}) == [
        StepResult("views", "updated"), StepResult("other", "unchanged")]
    assert run_script(Answering([[], [], []]), script, {}) == [
        StepResult("views", "unchanged"), StepResult("other", "unchanged")]


def test_creating_the_schema_is_bounded_and_one_line_without_the_password():
    import sys
    import time

    from init.schema import SchemaError, run_create

    hanging = (sys.executable, "-c", "import time; time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(SchemaError) as raised:
        run_create("postgresql://mlflow@postgres:5432/mlflow", "mlflow-artifacts:/", "not-shown", 1, create_cli=hanging)
    assert time.monotonic() - started < 10
    assert "did not finish within 1 s (MLFLOW_INIT_TIMEOUT)" in str(raised.value)

    failing = (sys.executable, "-c", "import os, sys; assert os.environ['PGPASSWORD'] == 's3cret-password'; "
               "print('sqlalchemy.exc.OperationalError: refused', file=sys.stderr); sys.exit(3)")
    with pytest.raises(SchemaError) as raised:
        run_create("postgresql://mlflow@postgres:5432/mlflow", "mlflow-artifacts:/", "s3cret-password", 5,
                   create_cli=failing)
    assert str(raised.value) == ("creating the schema with MLflow's tracking store failed (exit code 3): "
                                 "sqlalchemy.exc.OperationalError: refused")
