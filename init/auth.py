"""MLflow's users (MLFLOW_AUTH_MODE=mlflow): the auth database's tables and the admin.

Runs MLflow's own auth store (mlflow.server.auth.sqlalchemy_store) from the
image, so the tables, migrations and password hashes are exactly the
server's. The admin is created when missing, and its password brought back
to MLFLOW_AUTH_PASSWORD when it differs (rotation); the password only ever
travels in this process's memory.
"""

from __future__ import annotations

from init.config import InitConfig
from init.psqlscript import StepResult

# The version tables the auth migrations use: alembic's default up to 3.5, their own from 3.6.
_VERSION_TABLES = ("alembic_version_auth", "alembic_version")


def database_url(config: InitConfig):
    """The auth database as the MLflow role, with its password (a URL object: never printed)."""
    from sqlalchemy.engine import URL

    return URL.create(
        "postgresql", username=config.db_user, password=config.db_password,
        host=config.pg_host, port=int(config.pg_port), database=config.auth_db_name,
    )


def _revision(engine) -> tuple[bool, str | None]:
    """(whether the users table exists, the auth schema's alembic revision)."""
    from sqlalchemy import inspect, text

    tables = set(inspect(engine).get_table_names())
    for table in _VERSION_TABLES:
        if table in tables:
            with engine.connect() as connection:
                return "users" in tables, connection.execute(text(f"SELECT version_num FROM {table}")).scalar()
    return "users" in tables, None


def ensure_tables(config: InitConfig):
    """Create or migrate the auth tables with MLflow's own migrations; returns (step, store)."""
    import sqlalchemy
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    url = database_url(config)
    probe = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        had_users, before = _revision(probe)
        store = SqlAlchemyStore()
        # init_db takes a URL string: it stays in this process's memory.
        store.init_db(url.render_as_string(hide_password=False))
        _had, after = _revision(probe)
    finally:
        probe.dispose()
    name = f"auth database {config.auth_db_name} tables"
    if not had_users:
        return StepResult(name, "created"), store
    return StepResult(name, "updated" if before != after else "unchanged"), store


def ensure_admin(config: InitConfig, store) -> list[StepResult]:
    """The admin exists, is an admin, and has MLFLOW_AUTH_PASSWORD as its password."""
    username, password = config.auth_admin_user, config.auth_admin_password
    name = f"auth admin {username}"
    if not store.has_user(username):
        store.create_user(username, password, is_admin=True)
        return [StepResult(name, "created")]
    results = []
    if not store.get_user(username).is_admin:
        store.update_user(username, is_admin=True)
        results.append(StepResult(f"{name} admin flag", "updated"))
    else:
        results.append(StepResult(f"{name} admin flag", "unchanged"))
    if store.authenticate_user(username, password):
        results.append(StepResult(f"{name} password", "unchanged"))
    else:
        store.update_user(username, password=password)
        results.append(StepResult(f"{name} password", "updated"))
    return results


def apply(config: InitConfig) -> list[StepResult]:
    step, store = ensure_tables(config)
    try:
        return [step, *ensure_admin(config, store)]
    finally:
        store.engine.dispose()
