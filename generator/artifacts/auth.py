"""out/mlflow/basic_auth.ini: MLflow's auth app configuration in MLFLOW_AUTH_MODE=mlflow.

It holds no secret. The auth database's URL names no password (libpq reads
PGPASSWORD, as the tracking store does); the admin is created and its
password kept up to date by mlflow-init, and from 3.16.1 the server reads it
from MLFLOW_AUTH_ADMIN_PASSWORD, a compose ${...} reference.
"""

from __future__ import annotations

from generator.render import render_template
from generator.settings import Settings
from generator.versions import auth_admin_from_environment, auth_has_credential_cache

PATH = "mlflow/basic_auth.ini"
# Where compose mounts it, beside mlflow-init's files.
IN_CONTAINER = "/etc/nself-mlflow/basic_auth.ini"
# Our verifier, shipped in the image's init package, for releases without MLflow's own cache.
CACHED_AUTHORIZATION_FUNCTION = "init.authcache:authenticate_request_basic_auth"
# How long one worker trusts a password it has checked (both caches). See the README's "Team accounts".
CACHE_TTL_SECONDS = 30
CACHE_MAX_SIZE = 10000


def database_name_of(mlflow_database: str) -> str:
    """Its own database: up to 3.5 the auth migrations use alembic's default version table, and
    would break a database shared with the tracking store."""
    from generator.settings.loading import AUTH_DATABASE_SUFFIX

    return f"{mlflow_database}{AUTH_DATABASE_SUFFIX}"


def database_name(settings: Settings) -> str:
    return database_name_of(settings.database.name)


def database_uri(settings: Settings) -> str:
    database = settings.database
    return f"postgresql://{database.user}@{database.host}:{database.port}/{database_name(settings)}"


def build(settings: Settings) -> dict[str, bytes]:
    if not settings.auth.mlflow_mode:
        return {}
    version = settings.server.version
    text = render_template(
        PATH,
        version=str(version),
        default_permission=settings.auth.default_permission,
        database_uri=database_uri(settings),
        admin_username=settings.auth.username,
        admin_password_key=not auth_admin_from_environment(version),
        builtin_cache=auth_has_credential_cache(version),
        cache_max_size=CACHE_MAX_SIZE,
        cache_ttl=CACHE_TTL_SECONDS,
        authorization_function=CACHED_AUTHORIZATION_FUNCTION,
    )
    return {PATH: text}
