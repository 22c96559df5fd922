"""The MLflow image: out/mlflow/Dockerfile plus the init program it carries."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from generator.render import header, render_template
from generator.settings import Settings
from generator.versions import MlflowVersion, auth_needs_flask_wtf, needs_sqlalchemy_pin

# The init package rides along in the image: it is read from the installed
# package (importlib.resources), as a wheel install has no source tree.
INIT_PACKAGE = "init"
INIT_DIR_IN_IMAGE = "/opt/nself-mlflow"
BUILD_CONTEXT = "mlflow"

# Exact pins keep the image reproducible; each installs on the image's Python
# (3.10 for the 2.x images). MLflow's SQLAlchemy store needs psycopg2: with
# psycopg 3, 2.x fails on `experiment_id = $1::VARCHAR` (mlflow#9151).
SERVER_DRIVER = "psycopg2-binary==2.9.13"
BOTO3 = "boto3==1.44.8"
EXPORTER = "prometheus-flask-exporter==0.23.2"
INIT_DRIVER = "psycopg[binary]==3.3.9"
SQLALCHEMY_FOR_2X = "sqlalchemy<2.1"
GC_SCHEDULER = "cronsim==2.8"
# What `mlflow[auth]` adds (Flask-WTF<2), for the auth app's signup form.
AUTH_FORMS = "Flask-WTF==1.3.0"


def base_image(version: MlflowVersion) -> str:
    return f"ghcr.io/mlflow/mlflow:v{version}"


def requirements(version: MlflowVersion, mlflow_auth: bool = False) -> list[str]:
    pins = [SERVER_DRIVER, BOTO3, EXPORTER, INIT_DRIVER, GC_SCHEDULER]
    if needs_sqlalchemy_pin(version):
        pins.append(SQLALCHEMY_FOR_2X)
    if mlflow_auth and auth_needs_flask_wtf(version):
        pins.append(AUTH_FORMS)
    return pins


def init_sources() -> dict[str, bytes]:
    """The init package, copied into the build context below a do-not-edit header."""
    files = {}
    for relative, content in _python_files(resources.files(INIT_PACKAGE), ""):
        files[f"{BUILD_CONTEXT}/init/{relative}"] = header(f"init/{relative}").encode() + content
    return dict(sorted(files.items()))


def _python_files(folder, prefix: str):
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name != "__pycache__":
            yield from _python_files(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".py"):
            yield f"{prefix}{entry.name}", entry.read_bytes()


def build(settings: Settings) -> dict[str, bytes]:
    version = settings.server.version
    dockerfile = render_template(
        f"{BUILD_CONTEXT}/Dockerfile",
        base_image=base_image(version),
        requirements=requirements(version, settings.auth.mlflow_mode),
        init_dir=INIT_DIR_IN_IMAGE,
    )
    return {f"{BUILD_CONTEXT}/Dockerfile": dockerfile, **init_sources()}


def image_tag(settings: Settings, context_files: dict[str, bytes], name: str = "mlflow") -> str:
    """A tag that changes whenever the build context does, so compose rebuilds."""
    digest = hashlib.sha256()
    for path in sorted(context_files):
        digest.update(path.encode() + b"\0" + context_files[path] + b"\0")
    return f"{settings.stack.project_name}-{name}:{settings.server.version}-{digest.hexdigest()[:12]}"


def http_healthcheck(port: int, path: str, interval: str, start_period: str) -> dict[str, Any]:
    """A compose healthcheck for a server in these images: they have no curl or wget, python's urllib is there."""
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=5)"
    return {
        "test": ["CMD", "python", "-c", probe],
        "interval": interval,
        "timeout": "10s",
        "retries": 3,
        "start_period": start_period,
    }
