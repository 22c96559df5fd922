"""out/docker-compose.mlflow.yml: the services nself merges into its stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from generator.artifacts import auth, bucket, graphql, image, serving, sql
from generator.render import to_yaml
from generator.settings import Settings
from generator.versions import auth_admin_from_environment, auth_needs_flask_secret, checks_host_header, uses_uvicorn

PATH = "docker-compose.mlflow.yml"
SOURCE = "generator/artifacts/compose.py"

CONTAINER_PORT = 5000
TRACKING_URI = f"http://mlflow:{CONTAINER_PORT}"  # the server as the other services see it
METRICS_DIR = "/run/mlflow-metrics"
# gunicorn's default 30 s kills large artifact uploads and slow searches.
GUNICORN_OPTS = "--timeout 600 --graceful-timeout 30"
UVICORN_OPTS = "--timeout-keep-alive 75"
INIT_TIMEOUT_SECONDS = 120
INIT_FILES_DIR = "/etc/nself-mlflow"
# Per worker: pool + overflow connections. Budget = workers x 10.
POOL_SIZE = 5
POOL_MAX_OVERFLOW = 5
MINIO_IMAGE = "quay.io/minio/minio"
BLACKBOX_IMAGE = "quay.io/prometheus/blackbox-exporter:v0.25.0"


@dataclass(frozen=True)
class EnvRef:
    """A value Compose substitutes from the env files at `up` (secrets only)."""

    name: str
    reason: str

    def render(self) -> str:
        return f"${{{self.name}:?{self.name} is not set: {self.reason}}}"


@dataclass(frozen=True)
class EnvTemplate:
    """Literal text around one substituted secret, such as a connection URL."""

    before: str
    reference: EnvRef
    after: str

    def render(self) -> str:
        return _escape(self.before) + self.reference.render() + _escape(self.after)


MLFLOW_DB_PASSWORD = EnvRef("MLFLOW_DB_PASSWORD", "run nself build to generate it")
MLFLOW_AUTH_PASSWORD = EnvRef("MLFLOW_AUTH_PASSWORD", "run nself build to generate it")
MLFLOW_FLASK_SERVER_SECRET_KEY = EnvRef("MLFLOW_FLASK_SERVER_SECRET_KEY", "run nself build to generate it")
MLFLOW_GRAPHQL_DB_PASSWORD = EnvRef("MLFLOW_GRAPHQL_DB_PASSWORD", "run nself build to generate it")
POSTGRES_PASSWORD = EnvRef("POSTGRES_PASSWORD", "set it in .env.secrets")
MINIO_ROOT_PASSWORD = EnvRef("MINIO_ROOT_PASSWORD", "set it in .env.secrets")
S3_SECRET_KEY = EnvRef("S3_SECRET_KEY", "set it in .env.secrets")
SECRET_REFS = {ref.name: ref for ref in (MINIO_ROOT_PASSWORD, S3_SECRET_KEY)}


def _escape(value: Any) -> Any:
    """Literal strings must reach the container as written: '$' becomes '$$'."""
    if isinstance(value, (EnvRef, EnvTemplate)):
        return value.render()
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {key: _escape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escape(item) for item in value]
    return value


def network_name(settings: Settings) -> str:
    return f"{settings.stack.project_name}_network"


def backend_store_uri(settings: Settings) -> str:
    # No password here: libpq reads PGPASSWORD, so the URI needs no encoding
    # and never shows a secret in `ps` or `docker inspect` of the command.
    database = settings.database
    return f"postgresql://{database.user}@{database.host}:{database.port}/{database.name}"


def server_command(settings: Settings, extra_hosts: tuple[str, ...] = ()) -> list[str]:
    version = settings.server.version
    command = [
        "mlflow",
        "server",
        "--host",
        "0.0.0.0",
        "--port",
        str(CONTAINER_PORT),
        "--workers",
        str(settings.server.workers),
    ]
    if settings.storage.serve_artifacts:
        command += ["--serve-artifacts", "--artifacts-destination", settings.storage.artifacts_root]
    else:
        command += ["--no-serve-artifacts", "--default-artifact-root", settings.artifacts_destination]
    if uses_uvicorn(version):
        command += ["--uvicorn-opts", UVICORN_OPTS]
    else:
        command += ["--gunicorn-opts", GUNICORN_OPTS]
    if checks_host_header(version):
        command += ["--allowed-hosts", ",".join([*allowed_hosts(settings), *extra_hosts])]
        command += ["--cors-allowed-origins", f"https://{settings.public_host}"]
    command += ["--expose-prometheus", METRICS_DIR]
    if settings.auth.mlflow_mode:
        command += ["--app-name", "basic-auth"]
    return command


def default_artifact_root(settings: Settings) -> str:
    """The root `mlflow server` resolves from server_command's options: its Default experiment lives below it."""
    if settings.storage.serve_artifacts:
        return "mlflow-artifacts:/"  # MLflow's DEFAULT_ARTIFACTS_URI, for --serve-artifacts without a root
    return settings.artifacts_destination


def allowed_hosts(settings: Settings) -> list[str]:
    """Host headers 3.5+ accepts: matching is exact, including the port."""
    port = settings.server.port
    hosts = [
        settings.public_host,  # through nginx, which forwards $host (no port)
        f"mlflow:{CONTAINER_PORT}",  # other services and mlflow-gc
        f"localhost:{port}",  # from the host, through the published port
        f"127.0.0.1:{port}",
        f"localhost:{CONTAINER_PORT}",  # inside the container: the healthcheck
        f"127.0.0.1:{CONTAINER_PORT}",
    ]
    return list(dict.fromkeys(hosts))  # MLFLOW_PORT=5000 would list two twice


def _s3_environment(settings: Settings) -> dict[str, Any]:
    access_key, secret_variable, _secret = settings.s3_credentials
    return {
        "MLFLOW_S3_ENDPOINT_URL": settings.storage.endpoint.rstrip("/"),
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": SECRET_REFS[secret_variable],
        # boto3 signs with it; MinIO accepts any, AWS and others need theirs.
        "AWS_DEFAULT_REGION": settings.storage.region,
    }


# MLflow 3.x reports usage from the server, its clients and the UI unless one
# of these is set (mlflow/telemetry/utils.py reads both); 2.x has no telemetry.
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def _telemetry_environment(settings: Settings) -> dict[str, Any]:
    """Every MLflow container: nothing leaves a self-hosted stack unless MLFLOW_TELEMETRY_ENABLED=true."""
    return {} if settings.server.telemetry_enabled else dict(TELEMETRY_OFF)


def _server_auth_environment(settings: Settings) -> dict[str, Any]:
    """mlflow mode: the auth app's ini, its signing key and, where the release reads them, the admin's."""
    if not settings.auth.mlflow_mode:
        return {}
    version = settings.server.version
    environment: dict[str, Any] = {"MLFLOW_AUTH_CONFIG_PATH": auth.IN_CONTAINER}
    if auth_needs_flask_secret(version):
        environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] = MLFLOW_FLASK_SERVER_SECRET_KEY
    if auth_admin_from_environment(version):
        environment["MLFLOW_AUTH_ADMIN_USERNAME"] = settings.auth.username
        environment["MLFLOW_AUTH_ADMIN_PASSWORD"] = MLFLOW_AUTH_PASSWORD
    return environment


def client_credentials(settings: Settings) -> dict[str, Any]:
    """mlflow mode: what a service of the stack sends to the tracking server (the admin's login)."""
    if not settings.auth.mlflow_mode:
        return {}
    return {"MLFLOW_TRACKING_USERNAME": settings.auth.username, "MLFLOW_TRACKING_PASSWORD": MLFLOW_AUTH_PASSWORD}


def _storage_dependency(settings: Settings) -> dict[str, Any]:
    """MinIO, when it runs in this stack; an external S3 is no service of the stack."""
    if settings.external_s3:
        return {}
    return {"minio": {"condition": "service_healthy"}}


def _healthcheck() -> dict[str, Any]:
    return image.http_healthcheck(CONTAINER_PORT, "/health", interval="30s", start_period="60s")


def _image(tag: str) -> dict[str, Any]:
    return {"build": {"context": f"./{image.BUILD_CONTEXT}", "dockerfile": "Dockerfile"}, "image": tag}


def server_environment(settings: Settings) -> dict[str, Any]:
    """The `mlflow server` container's environment (compose and Kubernetes); secrets are EnvRefs."""
    return {
        "MLFLOW_BACKEND_STORE_URI": backend_store_uri(settings),
        "PGPASSWORD": MLFLOW_DB_PASSWORD,
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(POOL_SIZE),
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(POOL_MAX_OVERFLOW),
        **_s3_environment(settings),
        **_server_auth_environment(settings),
        **_telemetry_environment(settings),
    }


def mlflow_service(settings: Settings, tag: str) -> dict[str, Any]:
    project = settings.stack.project_name
    return {
        **_image(tag),
        "container_name": f"{project}_mlflow",
        "restart": "unless-stopped",
        "init": True,
        "command": server_command(settings),
        "environment": server_environment(settings),
        "ports": [f"127.0.0.1:{settings.server.port}:{CONTAINER_PORT}"],
        **({"volumes": [f"./{auth.PATH}:{auth.IN_CONTAINER}:ro"]} if settings.auth.mlflow_mode else {}),
        # The seed's production sizing; the memory alert measures against it.
        "mem_limit": settings.server.memory_limit,
        "tmpfs": [METRICS_DIR],
        "healthcheck": _healthcheck(),
        "depends_on": {
            "postgres": {"condition": "service_healthy"},
            **_storage_dependency(settings),
            "mlflow-init": {"condition": "service_completed_successfully"},
        },
        "networks": [network_name(settings)],
    }


INIT_COMMAND = ["python", "-m", "init"]


def init_files(settings: Settings) -> dict[str, str]:
    """The generated files init reads: their path in out/ -> where they are mounted read-only."""
    files = {sql.PATH: f"{INIT_FILES_DIR}/mlflow.sql"}
    if not settings.external_s3:  # an external S3's bucket policy is its operator's: init leaves it alone
        files[bucket.path(settings)] = f"{INIT_FILES_DIR}/bucket-policy.json"
    if settings.graphql.enabled:
        files[graphql.SQL_PATH] = f"{INIT_FILES_DIR}/mlflow-graphql.sql"
    return files


def init_environment(settings: Settings) -> dict[str, Any]:
    """The `mlflow-init` container's environment (compose and Kubernetes); secrets are EnvRefs."""
    database = settings.database
    policy_environment = {}
    if not settings.external_s3:
        policy_environment = {"MLFLOW_INIT_BUCKET_POLICY": f"{INIT_FILES_DIR}/bucket-policy.json"}
    return {
        # libpq's own variables: the admin connection that provisions.
        "PGHOST": database.host,
        "PGPORT": str(database.port),
        "PGUSER": database.admin_user,
        "PGPASSWORD": POSTGRES_PASSWORD,
        "PGDATABASE": "postgres",
        "MLFLOW_DB_NAME": database.name,
        "MLFLOW_DB_USER": database.user,
        "MLFLOW_DB_PASSWORD": MLFLOW_DB_PASSWORD,
        **_s3_environment(settings),
        "MLFLOW_ARTIFACTS_BUCKET": settings.storage.bucket,
        "MLFLOW_INIT_TIMEOUT": str(INIT_TIMEOUT_SECONDS),
        "MLFLOW_INIT_SQL": f"{INIT_FILES_DIR}/mlflow.sql",
        **policy_environment,
        **_init_graphql_environment(settings),
        **_init_auth_environment(settings),
        **_telemetry_environment(settings),
    }


def init_service(settings: Settings, tag: str) -> dict[str, Any]:
    project = settings.stack.project_name
    return {
        **_image(tag),
        "container_name": f"{project}_mlflow_init",
        "restart": "no",
        "command": INIT_COMMAND,
        "environment": init_environment(settings),
        "volumes": [f"./{source}:{target}:ro" for source, target in init_files(settings).items()],
        "labels": {
            "nself.type": "init-container",
            "nself.service": "mlflow",
            "nself.auto-remove": "true",
        },
        "depends_on": {
            "postgres": {"condition": "service_healthy"},
            **_storage_dependency(settings),
        },
        "networks": [network_name(settings)],
    }


def _init_graphql_environment(settings: Settings) -> dict[str, Any]:
    """What init needs for the GraphQL views; without MLFLOW_INIT_GRAPHQL_SQL it removes them."""
    if not settings.graphql.enabled:
        return {}
    return {
        "MLFLOW_GRAPHQL_DB_USER": settings.graphql.db_user,
        "MLFLOW_GRAPHQL_DB_PASSWORD": MLFLOW_GRAPHQL_DB_PASSWORD,
        "MLFLOW_INIT_GRAPHQL_SQL": f"{INIT_FILES_DIR}/mlflow-graphql.sql",
        # On an empty database init creates MLflow's schema (the views need it),
        # and with it the Default experiment, below the root the server uses.
        "MLFLOW_INIT_ARTIFACT_ROOT": default_artifact_root(settings),
    }


def _init_auth_environment(settings: Settings) -> dict[str, Any]:
    """mlflow mode: init creates the admin in the auth database, or brings its password up to date."""
    if not settings.auth.mlflow_mode:
        return {}
    return {
        "MLFLOW_AUTH_DB_NAME": auth.database_name(settings),
        "MLFLOW_AUTH_ADMIN_USERNAME": settings.auth.username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": MLFLOW_AUTH_PASSWORD,
    }


def hasura_service(settings: Settings) -> dict[str, Any]:
    """Merged by Compose into nself's own hasura service: the connection URL of the `mlflow` source."""
    before, after = graphql.database_url(settings)
    return {"environment": {graphql.DATABASE_URL_VARIABLE: EnvTemplate(before, MLFLOW_GRAPHQL_DB_PASSWORD, after)}}


GC_RUNNER = ["python", "-m", "init.gc"]


def gc_command(settings: Settings) -> list[str]:
    # 2.9.2 has no env var for the store; --backend-store-uri exists in every
    # supported version. The password comes from PGPASSWORD, as for the server.
    return ["mlflow", "gc", "--backend-store-uri", backend_store_uri(settings)]


def gc_environment(settings: Settings) -> dict[str, Any]:
    """The gc container's environment (compose and Kubernetes) without its schedule; secrets are EnvRefs."""
    environment: dict[str, Any] = {
        # Proxied artifacts (mlflow-artifacts:/) are deleted only through the
        # server; without this gc fails on the 'file' scheme and deletes
        # nothing. In nginx mode the server needs no credentials inside the
        # network; in mlflow mode gc logs in as the admin.
        "MLFLOW_TRACKING_URI": TRACKING_URI,
        **client_credentials(settings),
        "PGPASSWORD": MLFLOW_DB_PASSWORD,
        **_telemetry_environment(settings),
    }
    if not settings.storage.serve_artifacts:
        environment.update(_s3_environment(settings))  # gc deletes s3:// artifacts itself
    return environment


def gc_service(settings: Settings, tag: str) -> dict[str, Any]:
    environment = {"MLFLOW_GC_SCHEDULE": settings.gc.schedule, **gc_environment(settings)}
    return {
        **_image(tag),
        "container_name": f"{settings.stack.project_name}_mlflow_gc",
        "restart": "unless-stopped",
        "init": True,
        "command": [*GC_RUNNER, "--", *gc_command(settings)],
        "environment": environment,
        # Unhealthy while the last run failed, so `nself status` shows it.
        "healthcheck": {
            "test": ["CMD", "python", "-m", "init.gc", "--healthcheck"],
            "interval": "60s",
            "timeout": "10s",
            "retries": 1,
        },
        "depends_on": {"mlflow": {"condition": "service_healthy"}},
        "networks": [network_name(settings)],
    }


def minio_service(settings: Settings) -> dict[str, Any]:
    """Only when MLflow turned MinIO on: nself's own stack then has none."""
    storage = settings.storage
    return {
        "image": f"{MINIO_IMAGE}:{storage.minio_version}",
        "container_name": f"{settings.stack.project_name}_minio",
        "restart": "unless-stopped",
        "command": ["server", "/data", "--console-address", ":9001"],
        "environment": {
            "MINIO_ROOT_USER": storage.root_user,
            "MINIO_ROOT_PASSWORD": MINIO_ROOT_PASSWORD,
            # Lets Prometheus read bucket usage without a bearer token.
            **({"MINIO_PROMETHEUS_AUTH_TYPE": "public"} if settings.monitoring.enabled else {}),
        },
        "volumes": ["minio_data:/data"],
        "ports": [f"127.0.0.1:{storage.minio_port}:9000", f"127.0.0.1:{storage.minio_console_port}:9001"],
        # The MinIO image ships mc but no curl.
        "healthcheck": {
            "test": ["CMD", "mc", "ready", "local"],
            "interval": "10s",
            "timeout": "5s",
            "retries": 5,
            "start_period": "10s",
        },
        "networks": [network_name(settings)],
    }


def blackbox_service(settings: Settings) -> dict[str, Any]:
    """Probes MLflow's /health for Prometheus (the mlflow-health scrape job)."""
    return {
        "image": BLACKBOX_IMAGE,
        "container_name": f"{settings.stack.project_name}_mlflow_blackbox",
        "restart": "unless-stopped",
        "networks": [network_name(settings)],
    }


def build(settings: Settings, image_files: dict[str, bytes], serving_files: dict[str, bytes]) -> dict[str, bytes]:
    tag = image.image_tag(settings, image_files)
    services: dict[str, Any] = {
        "mlflow": mlflow_service(settings, tag),
        "mlflow-init": init_service(settings, tag),
    }
    document: dict[str, Any] = {"services": services}
    if settings.gc.enabled:
        services["mlflow-gc"] = gc_service(settings, tag)
    services.update(serving.services(settings, network_name(settings), TRACKING_URI, serving_files,
                                     {**client_credentials(settings), **_telemetry_environment(settings)}))
    if settings.monitoring.enabled:
        services["mlflow-blackbox"] = blackbox_service(settings)
    if settings.graphql.enabled:
        services["hasura"] = hasura_service(settings)
    if settings.minio_auto_enabled:
        services["minio"] = minio_service(settings)
        document["volumes"] = {"minio_data": {}}
    network = network_name(settings)
    document["networks"] = {network: {"name": network}}
    return {PATH: to_yaml(_escape(document), SOURCE)}
