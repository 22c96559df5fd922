"""Model serving: out/mlflow-serve/ (the serving image) and one mlflow-serve-<slug> service per model.

Each reference in MLFLOW_SERVE_MODELS gets a service running `python -m
init.serve`, which resolves the reference once at start, logs the version,
and hands over to `mlflow models serve`. nginx proxies /serving/<slug>/ to it.
"""

from __future__ import annotations

from typing import Any

from generator.artifacts import image
from generator.render import render_template
from generator.settings import Settings
from generator.settings.validators import ModelReference
from generator.versions import scoring_workers_variable

BUILD_CONTEXT = "mlflow-serve"
SCORING_PORT = 8080
# The launcher and the package marker: the serving image needs nothing else of init/.
INIT_FILES = ("__init__.py", "serve.py")
# Loading a model (download and unpickling) comes before the first /ping.
HEALTH_START_PERIOD = "180s"


def service_name(reference: ModelReference) -> str:
    return f"mlflow-serve-{reference.slug}"


def internal_url(reference: ModelReference) -> str:
    return f"http://{service_name(reference)}:{SCORING_PORT}"


def public_path(reference: ModelReference) -> str:
    return f"/serving/{reference.slug}/"


def requirements(settings: Settings) -> list[str]:
    return [*image.requirements(settings.server.version), *settings.serving.pip_packages]


def build(settings: Settings) -> dict[str, bytes]:
    """The serving image's build context; nothing when no model is served."""
    if not settings.serving.models:
        return {}
    dockerfile = render_template(
        f"{BUILD_CONTEXT}/Dockerfile",
        base_image=image.base_image(settings.server.version),
        requirements=requirements(settings),
        init_dir=image.INIT_DIR_IN_IMAGE,
    )
    sources = image.init_sources()
    files = {f"{BUILD_CONTEXT}/Dockerfile": dockerfile}
    for name in INIT_FILES:
        files[f"{BUILD_CONTEXT}/init/{name}"] = sources[f"{image.BUILD_CONTEXT}/init/{name}"]
    return files


def command(reference: ModelReference) -> list[str]:
    return ["python", "-m", "init.serve", "--name", reference.name, f"--{reference.kind}", reference.target,
            "--host", "0.0.0.0", "--port", str(SCORING_PORT)]


def healthcheck() -> dict[str, Any]:
    # /ping answers 200 once the model is loaded.
    return image.http_healthcheck(SCORING_PORT, "/ping", interval="15s", start_period=HEALTH_START_PERIOD)


def services(settings: Settings, network: str, tracking_uri: str, context_files: dict[str, bytes],
             common_environment: dict[str, str] | None = None) -> dict[str, Any]:
    """One service per reference, with the environment every MLflow container gets (telemetry off).
    No container_name: `service serve reload` starts a second container of the same service before
    it stops the first."""
    if not settings.serving.models:
        return {}
    version = settings.server.version
    tag = image.image_tag(settings, context_files, "mlflow-serve")
    serving = settings.serving
    found = {}
    for reference in serving.models:
        found[service_name(reference)] = {
            "build": {"context": f"./{BUILD_CONTEXT}", "dockerfile": "Dockerfile"},
            "image": tag,
            "restart": "unless-stopped",
            "init": True,
            "command": command(reference),
            "environment": {
                # The model is downloaded through the tracking server's artifact
                # proxy: in the network it needs no credentials in nginx mode,
                # and the admin's (common_environment) in mlflow mode.
                "MLFLOW_TRACKING_URI": tracking_uri,
                scoring_workers_variable(version): str(serving.workers),
                "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(serving.timeout),
                **(common_environment or {}),
            },
            "mem_limit": serving.memory_limit,
            "healthcheck": healthcheck(),
            "labels": {"nself.service": "mlflow", "nself.mlflow.model": reference.text},
            "depends_on": {"mlflow": {"condition": "service_healthy"}},
            "networks": [network],
        }
    return found
