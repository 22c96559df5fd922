"""out/postgres/init/mlflow.sql: the single source of the database steps.

mlflow-init applies it (init/psqlscript.py runs the psql subset it uses), and
an operator can apply it by hand with psql.
"""

from __future__ import annotations

from generator.artifacts import auth
from generator.render import render_template
from generator.settings import Settings

PATH = "postgres/init/mlflow.sql"
# pg_advisory_lock key: the first 8 bytes of sha256("nself-mlflow-init").
LOCK_KEY = 9223288186706704020
# init/postgres.py passes the same names (a test holds them together).
PASSWORD_VARIABLE = "mlflow_password"
GRAPHQL_PASSWORD_VARIABLE = "mlflow_graphql_password"


def quote_identifier(name: str) -> str:
    # Names are validated to [a-z_][a-z0-9_]*; quoting still guards against
    # reserved words such as "user".
    return '"' + name.replace('"', '""') + '"'


def databases(settings: Settings) -> list[dict[str, str]]:
    """MLflow's database and, in MLFLOW_AUTH_MODE=mlflow, the auth app's: same owner, same access."""
    found = [{"name": settings.database.name, "ident": quote_identifier(settings.database.name), "comment": ""}]
    if settings.auth.mlflow_mode:
        name = auth.database_name(settings)
        found.append({
            "name": name,
            "ident": quote_identifier(name),
            "comment": "-- MLflow's users and permissions (MLFLOW_AUTH_MODE=mlflow), in a database of their own:\n"
                       "-- up to MLflow 3.5 their migrations share alembic's default version table.",
        })
    return found


def build(settings: Settings) -> dict[str, bytes]:
    database = settings.database
    sql = render_template(
        PATH,
        comment="--",
        role=database.user,
        role_ident=quote_identifier(database.user),
        database=database.name,
        database_ident=quote_identifier(database.name),
        databases=databases(settings),
        lock_key=LOCK_KEY,
        password_variable=PASSWORD_VARIABLE,
        graphql=settings.graphql.enabled,
        graphql_role=settings.graphql.db_user,
        graphql_role_ident=quote_identifier(settings.graphql.db_user),
        graphql_password_variable=GRAPHQL_PASSWORD_VARIABLE,
    )
    return {PATH: sql}
