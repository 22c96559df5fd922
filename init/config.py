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
