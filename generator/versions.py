"""What changes with MLFLOW_VERSION: each rule names the release that changed it."""

from __future__ import annotations

import re
from typing import NamedTuple


class MlflowVersion(NamedTuple):
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_version(text: str) -> MlflowVersion | None:
    match = re.fullmatch(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", text)
    if match is None:
        return None
    return MlflowVersion(*(int(part) for part in match.groups()))


# The seed's 2.9.2 is the oldest release this project builds for; 3.17 is the
# newest 3.x whose packages are all installable where this project is tested.
OLDEST_SUPPORTED = MlflowVersion(2, 9, 0)
NEWEST_SUPPORTED_MINOR = MlflowVersion(3, 17, 0)

# 3.3.0: `mlflow server` runs uvicorn by default; --gunicorn-opts there would
# silently switch back to gunicorn.
UVICORN_SINCE = MlflowVersion(3, 3, 0)
# 3.5.0: the server rejects Host headers not in --allowed-hosts and
# cross-origin POSTs not in --cors-allowed-origins.
HOST_CHECK_SINCE = MlflowVersion(3, 5, 0)
# 3.0.0: 2.x resolves SQLAlchemy 2.1, which 2.x cannot import
# ("cannot import name 'FallbackAsyncAdaptedQueuePool'").
SQLALCHEMY_PIN_BEFORE = MlflowVersion(3, 0, 0)


# 2.21.0: `mlflow models serve` runs uvicorn + FastAPI (mlflow.pyfunc.scoring_server.app),
# and its --workers flag reads MLFLOW_MODELS_WORKERS; before, gunicorn + Flask,
# whose --workers reads MLFLOW_WORKERS and whose --timeout kills a slow worker.
SCORING_UVICORN_SINCE = MlflowVersion(2, 21, 0)


# MLflow's basic-auth app (`mlflow server --app-name basic-auth`), read in the wheels:
# 2.21.0: MLFLOW_FLASK_SERVER_SECRET_KEY is required (before, each worker made
# a random one and ignored the variable), and the signup form imports
# Flask-WTF (`mlflow[auth]`), which the image does not have.
AUTH_FLASK_SECRET_SINCE = MlflowVersion(2, 21, 0)
# 2.22.0: passwords shorter than 12 characters are refused.
AUTH_PASSWORD_POLICY_SINCE = MlflowVersion(2, 22, 0)
# 3.3.x: under uvicorn the auth app answers 500; fixed in 3.4.0.
AUTH_UVICORN_BROKEN = (MlflowVersion(3, 3, 0), MlflowVersion(3, 4, 0))
# 3.10.0: GET /api/2.0/mlflow/users/list (before, users are listed from the auth database).
AUTH_USERS_LIST_SINCE = MlflowVersion(3, 10, 0)
# 3.12.0: auth_cache_max_size / auth_cache_ttl_seconds in the ini cache a
# successful password check per worker, and user changes made through the
# API drop that user's entries.
AUTH_CACHE_SINCE = MlflowVersion(3, 12, 0)
# 3.13.0: permissions are granted through /api/3.0/mlflow/users/permissions/*
# (with a resource_type) instead of the per-experiment and per-model endpoints.
AUTH_PERMISSIONS_API_V3_SINCE = MlflowVersion(3, 13, 0)
# 3.16.1: no shipped admin password; MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD
# override the ini, `admin_password` may be left out of it, and the server
# refuses to start without a password.
AUTH_ADMIN_ENVIRONMENT_SINCE = MlflowVersion(3, 16, 1)


def support_problem(version: MlflowVersion) -> str | None:
    if version < OLDEST_SUPPORTED or (version.major, version.minor) > (
        NEWEST_SUPPORTED_MINOR.major,
        NEWEST_SUPPORTED_MINOR.minor,
    ):
        return (
            f"{version} is outside the supported range; accepted: {OLDEST_SUPPORTED} up to the last 2.x, "
            f"and 3.0.0 up to {NEWEST_SUPPORTED_MINOR.major}.{NEWEST_SUPPORTED_MINOR.minor}.x"
        )
    return None


def uses_uvicorn(version: MlflowVersion) -> bool:
    return version >= UVICORN_SINCE


def checks_host_header(version: MlflowVersion) -> bool:
    return version >= HOST_CHECK_SINCE


def needs_sqlalchemy_pin(version: MlflowVersion) -> bool:
    return version < SQLALCHEMY_PIN_BEFORE


def scoring_server_uses_uvicorn(version: MlflowVersion) -> bool:
    return version >= SCORING_UVICORN_SINCE


def scoring_workers_variable(version: MlflowVersion) -> str:
    """The environment variable `mlflow models serve --workers` reads."""
    return "MLFLOW_MODELS_WORKERS" if scoring_server_uses_uvicorn(version) else "MLFLOW_WORKERS"


def auth_needs_flask_secret(version: MlflowVersion) -> bool:
    """The auth app reads MLFLOW_FLASK_SERVER_SECRET_KEY, and refuses to start without it."""
    return version >= AUTH_FLASK_SECRET_SINCE


def auth_needs_flask_wtf(version: MlflowVersion) -> bool:
    return version >= AUTH_FLASK_SECRET_SINCE


def auth_refuses_short_passwords(version: MlflowVersion) -> bool:
    return version >= AUTH_PASSWORD_POLICY_SINCE


def auth_app_problem(version: MlflowVersion) -> str | None:
    """Why MLflow's auth app cannot run on this release, or None."""
    low, fixed = AUTH_UVICORN_BROKEN
    if low <= version < fixed:
        return f"MLflow {version}'s auth app answers 500 under uvicorn (fixed in {fixed})"
    return None


def auth_has_credential_cache(version: MlflowVersion) -> bool:
    return version >= AUTH_CACHE_SINCE


def auth_permissions_api_v3(version: MlflowVersion) -> bool:
    return version >= AUTH_PERMISSIONS_API_V3_SINCE


def auth_admin_from_environment(version: MlflowVersion) -> bool:
    """The server reads the admin's name and password from MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD."""
    return version >= AUTH_ADMIN_ENVIRONMENT_SINCE


def auth_lists_users(version: MlflowVersion) -> bool:
    return version >= AUTH_USERS_LIST_SINCE
