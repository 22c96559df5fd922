"""The settings, one model per concern, and one declaration per variable.

Each field is declared once with `setting(NAME, default, doc)`: the name it
is read from, its default as .env text ("" = unset), and what it accepts.
That declaration drives loading (the alias), the defaults, the README's
settings table (`settings_table()`), the unknown-name hints and which values
are secret (a `SecretStr` field is never echoed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from generator.settings import validators as rules
from generator.settings.validators import Boolean, Hostname, Password, Port
from generator.versions import MlflowVersion

DERIVED = "derived"  # a default computed from other settings at load time; see loading._with_defaults


def setting(name: str, default: str, doc: str) -> Any:
    """Declare a field: the variable it is read from, its default as .env text, and what it accepts."""
    return Field(alias=name, description=doc, json_schema_extra={"env_default": default})


def _text(pattern: str, rule: str) -> Any:
    return BeforeValidator(rules.matching(pattern, rule))


def _whole(low: int, high: int, what: str) -> Any:
    return BeforeValidator(rules.integer_between(low, high, what))


def _positive(maximum: float, what: str) -> Any:
    return BeforeValidator(rules.positive_number(maximum, what))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class StackSettings(_Section):
    project_name: Annotated[
        str,
        _text(
            r"[a-z][a-z0-9_-]{0,62}",
            "must be a Docker Compose project name; accepted: 1-63 characters of lowercase letters, "
            "digits, '-' and '_', starting with a letter",
        ),
    ] = setting("PROJECT_NAME", "myproject", "Compose project name: lowercase, starting with a letter")
    base_domain: Hostname = setting("BASE_DOMAIN", "local.nself.org", "DNS name")
    env: str = setting("ENV", "dev", "`dev`, `staging` or `prod` (nself's cascade; `--env` wins)")


class ServerSettings(_Section):
    enabled: Boolean = setting("MLFLOW_ENABLED", "false", "boolean: `true`/`false`/`yes`/`no`/`1`/`0`")
    version: Annotated[MlflowVersion, BeforeValidator(rules.mlflow_version)] = setting(
        "MLFLOW_VERSION", "2.9.2", "a release `MAJOR.MINOR.PATCH`, from 2.9.0 to the last 2.x, or 3.0.0 to 3.17.x"
    )
    version_unsupported_ok: Boolean = setting(
        "MLFLOW_VERSION_UNSUPPORTED_OK", "false", "`true` builds a version outside that range anyway"
    )
    port: Port = setting("MLFLOW_PORT", "5000", "host port, bound to `127.0.0.1`")
    route: Annotated[
        str,
        _text(
            rules.HOSTNAME,
            "must be a subdomain label such as 'mlflow' or a full host such as 'mlflow.example.com'; "
            "accepted: lowercase letters, digits, '-' and '.'",
        ),
    ] = setting(
        "MLFLOW_ROUTE",
        "mlflow",
        "a label (gives `mlflow.<BASE_DOMAIN>`), or a full host such as `mlflow.${BASE_DOMAIN}` "
        "(the domain is not added twice)",
    )
    workers: Annotated[int, _whole(1, 64, "a number of workers")] = setting("MLFLOW_WORKERS", "2", "1–64")
    memory_limit: Annotated[
        str,
        _text(r"[1-9][0-9]*[kmg]", "must be a container memory limit; accepted: a whole number with k, m or g, such as 512m or 2g"),
    ] = setting(
        "MLFLOW_MEMORY_LIMIT", "2g", "the `mlflow` container's `mem_limit` (the seed's production sizing): `512m`, `4g`…"
    )
    telemetry_enabled: Boolean = setting(
        "MLFLOW_TELEMETRY_ENABLED",
        "false",
        "`false` gives every MLflow container `MLFLOW_DISABLE_TELEMETRY=true` and `DO_NOT_TRACK=true`; see [Telemetry](#telemetry)",
    )


class DatabaseSettings(_Section):
    name: Annotated[str, BeforeValidator(rules.database_name)] = setting(
        "MLFLOW_DB_NAME",
        "mlflow",
        "a lowercase PostgreSQL identifier, not `postgres`/`template*`; must differ from `POSTGRES_DB`",
    )
    user: Annotated[str, BeforeValidator(rules.role_name)] = setting(
        "MLFLOW_DB_USER", "mlflow", "a lowercase PostgreSQL identifier, not `postgres`/`pg_*`; must differ from `POSTGRES_USER`"
    )
    password: Password = setting("MLFLOW_DB_PASSWORD", "", "generated (see [Passwords](#passwords)); at least 8 characters")
    admin_user: Annotated[str, BeforeValidator(rules.identifier)] = setting(
        "POSTGRES_USER", "postgres", "the admin role `mlflow-init` connects as"
    )
    # The stack's existing admin password: any printable value, no minimum.
    admin_password: Annotated[SecretStr | None, BeforeValidator(rules.password(1))] = setting(
        "POSTGRES_PASSWORD", "", "required (any printable value): the admin password `mlflow-init` uses"
    )
    # Only compared with MLFLOW_DB_NAME; nself names it after the project.
    main_database: Annotated[
        str, _text(r"[A-Za-z0-9_$-]{1,63}", "must be a database name; accepted: 1-63 letters, digits, '_', '$' or '-'")
    ] = setting("POSTGRES_DB", DERIVED, "the stack's main database; default `PROJECT_NAME`")
    host: Hostname = setting("POSTGRES_HOST", "postgres", "PostgreSQL's host inside the Docker network")
    port: Port = setting("POSTGRES_PORT", "5432", "PostgreSQL's port inside the Docker network")


class StorageSettings(_Section):
    bucket: Annotated[str, BeforeValidator(rules.bucket_name)] = setting(
        "MLFLOW_ARTIFACTS_BUCKET", "mlflow-artifacts", "S3 bucket naming rules"
    )
    artifacts_root: str = setting(
        "MLFLOW_ARTIFACTS_ROOT", DERIVED, "`s3://<bucket>` by default; must point into the bucket (`s3://<bucket>[/prefix]`)"
    )
    default_artifact_root: str = setting(
        "MLFLOW_DEFAULT_ARTIFACT_ROOT",
        "",
        "only with `MLFLOW_SERVE_ARTIFACTS=false`. MLflow silently turns proxying off when it is set, "
        "so the build refuses the combination",
    )
    serve_artifacts: Boolean = setting(
        "MLFLOW_SERVE_ARTIFACTS", "true", "proxy artifacts through the server: clients never need S3 credentials"
    )
    minio_enabled: Boolean = setting(
        "MINIO_ENABLED",
        "false",
        "`true`: nself runs MinIO. Otherwise MLflow turns MinIO on, unless `S3_ENDPOINT` names an external S3 "
        "(see [Artifact storage](#artifact-storage-minio-or-an-external-s3))",
    )
    root_user: Annotated[
        str, _text(r"[A-Za-z0-9._@+=-]{3,128}", "must be a MinIO access key; accepted: 3-128 letters, digits or ._@+=-")
    ] = setting("MINIO_ROOT_USER", "minioadmin", "the S3 access key MLflow and `mlflow-init` use when `S3_ACCESS_KEY` is not set")
    root_password: Password = setting(
        "MINIO_ROOT_PASSWORD",
        "",
        "required with MinIO: the S3 secret key MLflow and `mlflow-init` use when `S3_ACCESS_KEY` is not set; "
        "not needed with an external S3, nor with nself's MinIO and `S3_ACCESS_KEY`",
    )
    minio_version: Annotated[
        str,
        _text(
            r"RELEASE\.[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}-[0-9]{2}-[0-9]{2}Z",
            "must be a MinIO release tag; accepted: RELEASE.YYYY-MM-DDTHH-MM-SSZ",
        ),
    ] = setting("MINIO_VERSION", "RELEASE.2025-04-22T22-12-26Z", "the MinIO image's release tag")
    minio_port: Port = setting("MINIO_PORT", "9000", "MinIO's S3 port")
    minio_console_port: Port = setting("MINIO_CONSOLE_PORT", "9001", "MinIO's console port")
    endpoint: Annotated[
        str, _text(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?", "must be an http(s) URL such as http://minio:9000")
    ] = setting(
        "S3_ENDPOINT",
        "http://minio:9000",
        "the S3 endpoint MLflow and `mlflow-init` use; another than `http://minio:9000` with `MINIO_ENABLED` not true "
        "is an external S3 (see [Artifact storage](#artifact-storage-minio-or-an-external-s3))",
    )
    access_key: Annotated[
        str,
        _text(
            r"([A-Za-z0-9._@+=-]{3,128})?",
            "must be an S3 access key; accepted: 3-128 letters, digits or ._@+=-, or empty to use MINIO_ROOT_USER",
        ),
    ] = setting("S3_ACCESS_KEY", "", "the S3 access key; empty: `MINIO_ROOT_USER` (required with an external S3)")
    # Issued by the S3 service: any printable value.
    secret_key: Annotated[SecretStr | None, BeforeValidator(rules.password(1))] = setting(
        "S3_SECRET_KEY", "", "the S3 secret key, with `S3_ACCESS_KEY`; empty: `MINIO_ROOT_PASSWORD`"
    )
    region: Annotated[
        str,
        _text(
            r"[a-z0-9][a-z0-9_-]{0,62}",
            "must be an S3 region name; accepted: lowercase letters, digits, '-' and '_', such as us-east-1",
        ),
    ] = setting("S3_REGION", "us-east-1", "the region requests are signed for and a missing bucket is created in")


class ProxySettings(_Section):
    nginx_version: Annotated[tuple[int, int, int], BeforeValidator(rules.nginx_version)] = setting(
        "NGINX_VERSION", "1.27", "the nginx the vhost targets: `http2 on;` from 1.25.1, `listen … ssl http2` before"
    )
    allowed_ips: Annotated[tuple[str, ...], BeforeValidator(rules.networks)] = setting(
        "MLFLOW_ALLOWED_IPS", "", "IPs or CIDRs, comma-separated; when set, nginx answers 403 to every other client"
    )
    read_timeout: Annotated[int, _whole(1, 86400, "a number of seconds")] = setting(
        "MLFLOW_PROXY_READ_TIMEOUT",
        "600",
        "seconds nginx waits on MLflow; long enough for multi-GB artifacts and slow searches (it matches gunicorn's timeout)",
    )
    send_timeout: Annotated[int, _whole(1, 86400, "a number of seconds")] = setting(
        "MLFLOW_PROXY_SEND_TIMEOUT", "600", "seconds nginx waits to send to MLflow"
    )


class AuthSettings(_Section):
    enabled: Boolean = setting(
        "MLFLOW_AUTH_ENABLED",
        "false",
        "HTTP basic auth: in nginx, or MLflow's own users with `MLFLOW_AUTH_MODE=mlflow`",
    )
    mode: Annotated[str, BeforeValidator(rules.auth_mode)] = setting(
        "MLFLOW_AUTH_MODE",
        "nginx",
        "`nginx` (one shared account, checked by nginx) or `mlflow` (MLflow's users and permissions; "
        "see [Team accounts](#team-accounts)); only with `MLFLOW_AUTH_ENABLED=true`",
    )
    default_permission: Annotated[str, BeforeValidator(rules.auth_permission)] = setting(
        "MLFLOW_AUTH_DEFAULT_PERMISSION",
        "READ",
        "`mlflow` mode: what a user may do with experiments and models nobody granted them: `READ`, `EDIT`, "
        "`MANAGE` or `NO_PERMISSIONS`",
    )
    hash_scheme: Annotated[str, BeforeValidator(rules.hash_scheme)] = setting(
        "MLFLOW_AUTH_HASH",
        "sha512_crypt",
        "htpasswd scheme: `sha512_crypt`, `sha256_crypt` or `bcrypt`; see [Basic auth and speed](#basic-auth-and-speed)",
    )
    hash_rounds: Annotated[int, _whole(4, 999_999_999, "a number of hash rounds")] = setting(
        "MLFLOW_AUTH_HASH_ROUNDS", DERIVED, "1000 and more for the crypt schemes (default 1000), 4–31 for bcrypt (default 10)"
    )
    hash_salt: Annotated[str | None, BeforeValidator(rules.salt)] = setting(
        "MLFLOW_AUTH_HASH_SALT", "", "generated: the htpasswd salt, saved like a password so rebuilds give the same file"
    )
    username: Annotated[
        str, _text(r"[A-Za-z0-9._@-]{1,64}", "must be a user name; accepted: 1-64 letters, digits or ._@-")
    ] = setting("MLFLOW_AUTH_USERNAME", "admin", "the basic-auth user")
    password: Password = setting(
        "MLFLOW_AUTH_PASSWORD",
        "",
        "generated while auth is on (see [Passwords](#passwords)); at least 8 characters, 12 in `mlflow` mode",
    )
    flask_secret_key: Password = setting(
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "",
        "generated in `mlflow` mode (see [Passwords](#passwords)): the key MLflow's auth app signs its forms with, "
        "the same in every worker; at least 8 characters",
    )

    @property
    def mlflow_mode(self) -> bool:
        """MLflow's own users and permissions check every request (not nginx)."""
        return self.enabled and self.mode == "mlflow"

    @property
    def nginx_mode(self) -> bool:
        return self.enabled and self.mode == "nginx"


class GcSettings(_Section):
    enabled: Boolean = setting("MLFLOW_GC_ENABLED", "true", "adds the `mlflow-gc` service")
    schedule: Annotated[str, BeforeValidator(rules.cron)] = setting(
        "MLFLOW_GC_SCHEDULE", "0 3 * * 0", "a five-field cron expression (UTC), parsed with cronsim"
    )


class MonitoringSettings(_Section):
    enabled: Boolean = setting(
        "MONITORING_ENABLED", "false", "adds the monitoring artifacts (see [Monitoring](#monitoring))"
    )
    p95_latency_seconds: Annotated[float, _positive(3600, "a number of seconds")] = setting(
        "MLFLOW_ALERT_P95_LATENCY_SECONDS", "2", "alert threshold: p95 request latency in seconds"
    )
    error_ratio: Annotated[float, _positive(1, "a ratio of requests")] = setting(
        "MLFLOW_ALERT_ERROR_RATIO", "0.05", "alert threshold: the share of requests answered 5xx"
    )
    bucket_size_gb: Annotated[float, _positive(1_000_000, "a size in GB")] = setting(
        "MLFLOW_ALERT_BUCKET_SIZE_GB", "50", "alert threshold: the artifact bucket's size in GB"
    )


class ServingSettings(_Section):
    models: Annotated[tuple[rules.ModelReference, ...], BeforeValidator(rules.model_references)] = setting(
        "MLFLOW_SERVE_MODELS",
        "",
        "registered models to serve as REST endpoints, comma-separated: `NAME@ALIAS`, `NAME/STAGE` or "
        "`NAME/VERSION`; see [Model serving](#model-serving)",
    )
    workers: Annotated[int, _whole(1, 64, "a number of workers")] = setting(
        "MLFLOW_SERVE_WORKERS", "1", "scoring workers per endpoint, 1–64"
    )
    timeout: Annotated[int, _whole(1, 3600, "a number of seconds")] = setting(
        "MLFLOW_SERVE_TIMEOUT", "60", "seconds one prediction may take, 1–3600"
    )
    memory_limit: Annotated[
        str,
        _text(r"[1-9][0-9]*[kmg]", "must be a container memory limit; accepted: a whole number with k, m or g, such as 512m or 2g"),
    ] = setting("MLFLOW_SERVE_MEMORY_LIMIT", "1g", "each endpoint container's `mem_limit`")
    pip_packages: Annotated[tuple[str, ...], BeforeValidator(rules.pinned_requirements)] = setting(
        "MLFLOW_SERVE_PIP_PACKAGES",
        "",
        "the models' runtime packages, pinned (`scikit-learn==1.5.2`), baked into the serving image",
    )


class GraphqlSettings(_Section):
    enabled: Boolean = setting(
        "MLFLOW_GRAPHQL_ENABLED",
        "false",
        "read-only views of the experiment data for nself's Hasura (see [GraphQL through Hasura](#graphql-through-hasura))",
    )
    db_user: Annotated[str, BeforeValidator(rules.role_name)] = setting(
        "MLFLOW_GRAPHQL_DB_USER",
        DERIVED,
        "the read-only role Hasura connects as; default `<MLFLOW_DB_USER>_graphql`; a lowercase PostgreSQL "
        "identifier, not `postgres`/`pg_*`; must differ from `MLFLOW_DB_USER` and `POSTGRES_USER`",
    )
    db_password: Annotated[SecretStr | None, BeforeValidator(rules.url_safe_password(8))] = setting(
        "MLFLOW_GRAPHQL_DB_PASSWORD",
        "",
        "generated while GraphQL is on (see [Passwords](#passwords)); at least 8 letters, digits or `-._~`, "
        "because it becomes part of Hasura's connection URL",
    )
    role: Annotated[str, BeforeValidator(rules.hasura_role)] = setting(
        "MLFLOW_GRAPHQL_ROLE",
        "user",
        "the Hasura role that may query the views (with aggregations); not `admin`, which already can",
    )


class KubernetesSettings(_Section):
    enabled: Boolean = setting(
        "MLFLOW_KUBERNETES_ENABLED",
        "false",
        "adds `kubernetes/`, a kustomize base for a cluster (see [Running on Kubernetes](#running-on-kubernetes)); "
        "needs an external S3 and PostgreSQL",
    )
    image: Annotated[
        str,
        _text(
            r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*",
            "must be an image repository without a tag, such as registry.example.com/ml/mlflow; accepted: "
            "lowercase letters, digits, '.', '_', '-', '/' and a registry port",
        ),
    ] = setting(
        "MLFLOW_IMAGE_REPOSITORY",
        DERIVED,
        "the registry repository the cluster pulls the image built from `mlflow/` from; default "
        "`<PROJECT_NAME>-mlflow` (only a cluster that has the local image); the tag is the build's",
    )
    replicas: Annotated[int, _whole(1, 100, "a number of replicas")] = setting(
        "MLFLOW_REPLICAS", "2", "`mlflow` pods, 1–100: the Deployment's replicas and the autoscaler's minimum"
    )
    hpa_max_replicas: Annotated[int, _whole(1, 100, "a number of replicas")] = setting(
        "MLFLOW_HPA_MAX_REPLICAS", "3", "the autoscaler's maximum, 1–100, at least `MLFLOW_REPLICAS`"
    )
    hpa_cpu_percent: Annotated[int, _whole(10, 1000, "a CPU utilisation in percent")] = setting(
        "MLFLOW_HPA_CPU_PERCENT", "70", "the autoscaler's target: average CPU use as a percentage of `MLFLOW_CPU_REQUEST`"
    )
    cpu_request: Annotated[
        str, _text(r"[1-9][0-9]{0,5}m|[0-9]{1,3}(\.[0-9]{1,3})?", "must be a CPU quantity; accepted: millicores such as 500m, or cores such as 2 or 1.5")
    ] = setting("MLFLOW_CPU_REQUEST", "500m", "CPU each `mlflow` pod requests (the autoscaler's 100%): `500m`, `2`…")
    cpu_limit: Annotated[
        str,
        _text(
            r"([1-9][0-9]{0,5}m|[0-9]{1,3}(\.[0-9]{1,3})?)?",
            "must be a CPU quantity or empty; accepted: millicores such as 500m, cores such as 2, or empty for none",
        ),
    ] = setting(
        "MLFLOW_CPU_LIMIT", "", "empty: no CPU limit (a throttled worker misses its probes); or a quantity such as `2`"
    )
    ingress_class: Annotated[
        str, _text(rules.LABEL, "must be an IngressClass name; accepted: lowercase letters, digits and '-'")
    ] = setting("MLFLOW_INGRESS_CLASS", "nginx", "the IngressClass; the annotations are ingress-nginx's")
    ingress_namespace: Annotated[
        str, _text(rules.LABEL, "must be a namespace name; accepted: lowercase letters, digits and '-'")
    ] = setting(
        "MLFLOW_INGRESS_NAMESPACE", "ingress-nginx", "the ingress controller's namespace: the NetworkPolicy lets it reach MLflow"
    )
    prometheus_namespace: Annotated[
        str, _text(rules.LABEL, "must be a namespace name; accepted: lowercase letters, digits and '-'")
    ] = setting(
        "MLFLOW_PROMETHEUS_NAMESPACE", "monitoring", "Prometheus's namespace: the NetworkPolicy lets it scrape MLflow"
    )
    tls_secret: Annotated[
        str, _text(rules.HOSTNAME, "must be a Secret name; accepted: lowercase letters, digits, '-' and '.'")
    ] = setting("MLFLOW_TLS_SECRET", "mlflow-tls", "the `kubernetes.io/tls` Secret the Ingress serves (cert-manager or your own)")
    postgres_max_connections: Annotated[int, _whole(1, 262143, "a number of connections")] = setting(
        "POSTGRES_MAX_CONNECTIONS",
        "100",
        "PostgreSQL's `max_connections`; with Kubernetes the build refuses settings that can exceed it "
        "(see [Running on Kubernetes](#running-on-kubernetes))",
    )


SECTIONS: dict[str, type[_Section]] = {
    "stack": StackSettings,
    "server": ServerSettings,
    "database": DatabaseSettings,
    "storage": StorageSettings,
    "proxy": ProxySettings,
    "auth": AuthSettings,
    "gc": GcSettings,
    "monitoring": MonitoringSettings,
    "serving": ServingSettings,
    "graphql": GraphqlSettings,
    "kubernetes": KubernetesSettings,
}


class Settings(_Section):
    stack: StackSettings
    server: ServerSettings
    database: DatabaseSettings
    storage: StorageSettings
    proxy: ProxySettings
    auth: AuthSettings
    gc: GcSettings
    monitoring: MonitoringSettings
    serving: ServingSettings
    graphql: GraphqlSettings
    kubernetes: KubernetesSettings
    minio_auto_enabled: bool
    external_s3: bool = False

    @property
    def s3_credentials(self) -> tuple[str, str, SecretStr | None]:
        """(access key, the variable holding the secret key, its value): S3_ACCESS_KEY/S3_SECRET_KEY
        when set, otherwise MinIO's root keys (never with an external S3: load_settings refuses)."""
        storage = self.storage
        if storage.access_key:
            return storage.access_key, "S3_SECRET_KEY", storage.secret_key
        return storage.root_user, "MINIO_ROOT_PASSWORD", storage.root_password

    @property
    def s3_endpoint_from_host(self) -> str:
        """The store as seen from the nself host: MinIO's published port, or the external endpoint."""
        if self.external_s3:
            return self.storage.endpoint.rstrip("/")
        return f"http://localhost:{self.storage.minio_port}"

    @property
    def public_host(self) -> str:
        route, domain = self.server.route, self.stack.base_domain
        if "." in route:
            return route
        return f"{route}.{domain}"

    @property
    def artifacts_destination(self) -> str:
        return self.storage.default_artifact_root or self.storage.artifacts_root

    @property
    def missing_generated(self) -> tuple[str, ...]:
        """Variables whose random value the CLI must generate and save before a build."""
        missing = []
        if self.database.password is None:
            missing.append("MLFLOW_DB_PASSWORD")
        if self.auth.enabled and self.auth.password is None:
            missing.append("MLFLOW_AUTH_PASSWORD")
        if self.auth.enabled and self.auth.hash_salt is None:
            missing.append("MLFLOW_AUTH_HASH_SALT")
        if self.auth.mlflow_mode and self.auth.flask_secret_key is None:
            missing.append("MLFLOW_FLASK_SERVER_SECRET_KEY")
        if self.graphql.enabled and self.graphql.db_password is None:
            missing.append("MLFLOW_GRAPHQL_DB_PASSWORD")
        return tuple(missing)


@dataclass(frozen=True)
class Variable:
    name: str
    section: str
    field: str
    default: str  # as .env text; "" = unset, DERIVED = computed from other settings
    doc: str
    secret: bool


def _declared() -> dict[str, Variable]:
    variables = {}
    for section, model in SECTIONS.items():
        for field_name, info in model.model_fields.items():
            extra = info.json_schema_extra or {}
            secret = "SecretStr" in repr(info.annotation)
            variables[info.alias] = Variable(
                info.alias, section, field_name, extra["env_default"], info.description or "", secret
            )
    return variables


VARIABLES: dict[str, Variable] = _declared()
SECRET_VARIABLES = frozenset(name for name, variable in VARIABLES.items() if variable.secret)


def settings_table() -> str:
    """The README's settings table, one row per declared variable."""

    def default_text(variable: Variable) -> str:
        if variable.default == DERIVED:
            return "derived"
        if variable.default:
            return f"`{variable.default}`"
        return "generated" if variable.doc.startswith("generated") else "empty"

    rows = ["| variable | default | accepted |", "|---|---|---|"]
    rows += [f"| `{v.name}` | {default_text(v)} | {v.doc} |" for v in VARIABLES.values()]
    return "\n".join(rows) + "\n"
