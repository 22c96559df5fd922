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
