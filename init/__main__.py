"""python -m init: provision PostgreSQL and the artifact bucket, then exit.

Exit codes: 0 done (every step created, updated or unchanged), 1 a service
failed (one line naming it and what to check), 2 bad configuration.
"""

from __future__ import annotations

import sys
import time

from init.config import ConfigError, InitConfig
from init.wait import PermanentError


def log(message: str) -> None:
    print(f"mlflow-init: {message}", flush=True)


def log_step(step) -> None:
    log(f"{step.name}: {step.outcome}")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _schema_and_views(config, deadline: float, where: str) -> int | None:
    """Views off: removed. Then the MLflow schema, with the views dropped before a migration; then the views."""
    import psycopg

    from init import graphql, schema
    from init.psqlscript import ScriptError

    step = graphql.STEP
    try:
        if not config.graphql_enabled and graphql.remove(config, deadline):
            log(f"{graphql.STEP}: removed (MLFLOW_GRAPHQL_ENABLED is off)")

        def before_migration() -> None:
            if config.graphql_enabled and graphql.remove(config, deadline):
                log(f"{graphql.STEP}: dropped for the migration (views block some of MLflow's ALTER TABLEs); "
                    "made again after it")

        step = schema.STEP
        migrated = schema.upgrade(config, echo=log, before_migration=before_migration)
        if migrated is not None:
            log_step(migrated)
        step = graphql.STEP
        if config.graphql_enabled:
            for result in graphql.apply(config, deadline, echo=log):
                log_step(result)
    except schema.SchemaError as error:
        log(f"{where}: {step}: {error}")
        return 1
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as error:
        log(f"{where}: {step}: did not finish by the deadline ({_first_line(error)}); "
            "is another session (Hasura's, say) holding a lock on them?")
        return 1
    except (psycopg.Error, ScriptError, OSError) as error:
        log(f"{where}: {step}: {_first_line(error)}")
        return 1
    return None


def _auth(config, where: str) -> int | None:
    """MLflow's users: the auth database's tables, then the admin (created, or its password rotated)."""
    from init import auth

    try:
        for result in auth.apply(config):
            log_step(result)
    except Exception as error:  # the store raises SQLAlchemy, alembic and MLflow errors alike
        log(f"{where}: auth database {config.auth_db_name}: {type(error).__name__}: {_first_line(error)}")
        return 1
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["--help"], ["-h"]):
        print(__doc__.strip())
        print("\nIt reads its configuration from the environment, which docker-compose.mlflow.yml sets.")
        return 0
    if args:
        log(f"usage: python -m init (no arguments; got {' '.join(args)!r}); see python -m init --help")
        return 2
    started = time.monotonic()
    try:
        config = InitConfig.from_environment()
    except ConfigError as error:
        log(f"configuration: {error}")
        return 2
    deadline = started + config.timeout

    # Imported here so a configuration error answers without loading drivers.
    import psycopg
    from botocore.exceptions import BotoCoreError, ClientError

    from init import bucket, postgres
    from init.psqlscript import ScriptError

    where = f"PostgreSQL at {config.pg_host}:{config.pg_port}"
    try:
        connection = postgres.connect(config, deadline)
    except PermanentError as error:
        log(f"{where}: {error}; check POSTGRES_USER and POSTGRES_PASSWORD")
        return 1
    except TimeoutError as error:
        log(f"{where}: not ready after {config.timeout:g} s ({error}); is the postgres service up?")
        return 1
    # The admin session holds the SQL file's advisory lock until it closes:
    # concurrent inits take turns through the schema and view steps too.
    with connection:
        try:
            for result in postgres.apply(connection, config, deadline, echo=log):
                log_step(result)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as error:
            log(f"{where}: applying {config.sql_file} did not finish by the deadline ({_first_line(error)}); "
                "is another session holding a lock on the MLflow role or database?")
            return 1
        except (psycopg.Error, ScriptError, OSError) as error:
            log(f"{where}: applying {config.sql_file} failed: {_first_line(error)}")
            return 1
        failed = _schema_and_views(config, deadline, where)
        if failed is not None:
            return failed
        if config.auth_enabled:
            failed = _auth(config, where)
            if failed is not None:
                return failed

    where = f"S3 at {config.s3_endpoint}"
    try:
        s3, exists = bucket.wait_until_reachable(config, deadline)
    except PermanentError as error:
        log(f"{where}: {error}")
        return 1
    except TimeoutError as error:
        log(f"{where}: not reachable after {config.timeout:g} s ({error}); is the S3 service (minio, or S3_ENDPOINT's) up?")
        return 1
    try:
        log_step(bucket.ensure_bucket(s3, config, exists))
        if config.policy_file is None:
            log(f"bucket {config.bucket} policy: not managed (an external S3's bucket policy is its operator's)")
        else:
            log_step(bucket.ensure_policy(s3, config))
    except (BotoCoreError, ClientError, OSError, ValueError) as error:
        log(f"{where}: bucket {config.bucket}: {_first_line(error)}")
        return 1

    log(f"done in {time.monotonic() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
