"""The GraphQL views in the MLflow database: made after the MLflow schema, dropped before it migrates.

postgres/init/mlflow-graphql.sql is the single source of the views and of
their role's privileges; this module applies it, as the MLflow role, in the
MLflow database. Views on MLflow's tables make some of MLflow's ALTER TABLEs
fail, so the schema that holds them is dropped right before a migration (the
file makes it again afterwards), and whenever the views are switched off.
"""

from __future__ import annotations

import psycopg

from init.config import InitConfig
from init.postgres import set_deadline
from init.psqlscript import StepResult, run_script

SCHEMA = "mlflow_graphql"  # generator/artifacts/graphql.py makes it (a test holds them together)
STEP = "graphql views"


def connect(config: InitConfig, deadline: float) -> psycopg.Connection:
    """The MLflow role in its own database: it owns the tables, so it can own views of them."""
    connection = psycopg.connect(host=config.pg_host, port=config.pg_port, user=config.db_user,
                                 password=config.db_password, dbname=config.db_name, connect_timeout=10,
                                 application_name="mlflow-init", autocommit=True)
    set_deadline(connection, deadline)
    return connection


def remove(config: InitConfig, deadline: float) -> bool:
    """Drop the schema and its views, if there; whether there was one."""
    with connect(config, deadline) as connection:
        if connection.execute("SELECT to_regnamespace(%s)", (SCHEMA,)).fetchone()[0] is None:
            return False
        connection.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        return True


def apply(config: InitConfig, deadline: float, echo) -> list[StepResult]:
    script = config.graphql_sql_file.read_text(encoding="utf-8")
    with connect(config, deadline) as connection:
        return run_script(connection, script, {}, echo=echo)
