"""mlflow-init's configuration: environment variables only, set by compose."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


DEFAULT_REGION = "us-east-1"


class ConfigError(Exception):
    """A missing or malformed variable; exit code 2."""


@dataclass(frozen=True)
class InitConfig:
    pg_host: str
    pg_port: str
    admin_user: str
    admin_password: str
    admin_database: str
    db_name: str
    db_user: str
    db_password: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    bucket: str
    sql_file: Path
    # None for an external S3, whose bucket policy belongs to its operator.
    policy_file: Path | None
    timeout: float
    s3_region: str = DEFAULT_REGION
    # The GraphQL views: on when MLFLOW_INIT_GRAPHQL_SQL is set (see docker-compose.mlflow.yml).
    graphql_sql_file: Path | None = None
    graphql_user: str | None = None
    graphql_password: str | None = None
    artifact_root: str | None = None
    # MLflow's users (MLFLOW_AUTH_MODE=mlflow): on when MLFLOW_AUTH_DB_NAME is set.
    auth_db_name: str | None = None
    auth_admin_user: str | None = None
    auth_admin_password: str | None = None

    @property
    def graphql_enabled(self) -> bool:
        return self.graphql_sql_file is not None

    @property
    def auth_enabled(self) -> bool:
        return self.auth_db_name is not None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "InitConfig":
        missing = [name for name in _REQUIRED if not environ.get(name)]
        if missing:
            raise ConfigError(f"not set: {', '.join(missing)} (mlflow-init gets them from docker-compose.mlflow.yml)")
        timeout_text = environ.get("MLFLOW_INIT_TIMEOUT", "120")
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= 3600:
            raise ConfigError(f"MLFLOW_INIT_TIMEOUT must be a number of seconds from 1 to 3600 (got {timeout_text!r})")
        graphql = bool(environ.get("MLFLOW_INIT_GRAPHQL_SQL"))
        if graphql:
            missing = [name for name in _REQUIRED_FOR_GRAPHQL if not environ.get(name)]
            if missing:
                raise ConfigError(f"not set: {', '.join(missing)} (MLFLOW_INIT_GRAPHQL_SQL is set; mlflow-init gets "
                                  "them from docker-compose.mlflow.yml)")
        auth = bool(environ.get("MLFLOW_AUTH_DB_NAME"))
        if auth:
            missing = [name for name in _REQUIRED_FOR_AUTH if not environ.get(name)]
            if missing:
                raise ConfigError(f"not set: {', '.join(missing)} (MLFLOW_AUTH_DB_NAME is set; mlflow-init gets "
                                  "them from docker-compose.mlflow.yml)")
        return cls(
            pg_host=environ["PGHOST"],
            pg_port=environ.get("PGPORT", "5432"),
            admin_user=environ["PGUSER"],
            admin_password=environ["PGPASSWORD"],
            admin_database=environ.get("PGDATABASE", "postgres"),
            db_name=environ["MLFLOW_DB_NAME"],
            db_user=environ["MLFLOW_DB_USER"],
            db_password=environ["MLFLOW_DB_PASSWORD"],
            s3_endpoint=environ["MLFLOW_S3_ENDPOINT_URL"],
            s3_access_key=environ["AWS_ACCESS_KEY_ID"],
            s3_secret_key=environ["AWS_SECRET_ACCESS_KEY"],
            bucket=environ["MLFLOW_ARTIFACTS_BUCKET"],
            sql_file=Path(environ["MLFLOW_INIT_SQL"]),
            policy_file=Path(environ["MLFLOW_INIT_BUCKET_POLICY"]) if environ.get("MLFLOW_INIT_BUCKET_POLICY") else None,
            timeout=timeout,
            s3_region=environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            graphql_sql_file=Path(environ["MLFLOW_INIT_GRAPHQL_SQL"]) if graphql else None,
            graphql_user=environ["MLFLOW_GRAPHQL_DB_USER"] if graphql else None,
            graphql_password=environ["MLFLOW_GRAPHQL_DB_PASSWORD"] if graphql else None,
            artifact_root=environ["MLFLOW_INIT_ARTIFACT_ROOT"] if graphql else None,
            auth_db_name=environ["MLFLOW_AUTH_DB_NAME"] if auth else None,
            auth_admin_user=environ["MLFLOW_AUTH_ADMIN_USERNAME"] if auth else None,
            auth_admin_password=environ["MLFLOW_AUTH_ADMIN_PASSWORD"] if auth else None,
        )


_REQUIRED = (
    "PGHOST",
    "PGUSER",
    "PGPASSWORD",
    "MLFLOW_DB_NAME",
    "MLFLOW_DB_USER",
    "MLFLOW_DB_PASSWORD",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_ARTIFACTS_BUCKET",
    "MLFLOW_INIT_SQL",
)

_REQUIRED_FOR_GRAPHQL = ("MLFLOW_GRAPHQL_DB_USER", "MLFLOW_GRAPHQL_DB_PASSWORD", "MLFLOW_INIT_ARTIFACT_ROOT")

_REQUIRED_FOR_AUTH = ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD")
