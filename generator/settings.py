"""Validated settings: one model per concern, built from the merged env files.

Every variable is parsed on its own, so one pass reports every problem. Error
lines name the variable, the rule and what is accepted; a secret's value is
never part of them.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Callable

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr, ValidationError
from pydantic_core import PydanticCustomError

from generator.envfiles import SECRETS_FILE, EnvValue, ProjectEnv
from generator.errors import UserError
from generator.versions import MlflowVersion, parse_version, support_problem


def _rule(rule: str) -> PydanticCustomError:
    return PydanticCustomError("rule", rule)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise _rule("must be a boolean; accepted: true, false, yes, no, 1, 0")


def _integer_between(low: int, high: int, what: str) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        text = str(value).strip()
        if not re.fullmatch(r"[0-9]+", text) or not low <= int(text) <= high:
            raise _rule(f"must be {what}; accepted: a whole number from {low} to {high}")
        return int(text)

    return parse


def _matching(pattern: str, rule: str) -> Callable[[Any], str]:
    compiled = re.compile(pattern)

    def parse(value: Any) -> str:
        text = str(value).strip()
        if not compiled.fullmatch(text):
            raise _rule(rule)
        return text

    return parse


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = rf"{_LABEL}(?:\.{_LABEL})*"


def _bucket_name(value: Any) -> str:
    text = str(value).strip()
    accepted = (
        "must follow the S3 bucket naming rules; accepted: 3-63 characters of lowercase letters, "
        "digits, '.' and '-', starting and ending with a letter or digit, no '..', not an IP address"
    )
    if (
        not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", text)
        or ".." in text
        or ".-" in text
        or "-." in text
        or text.startswith(("xn--", "sthree-"))
        or text.endswith(("-s3alias", "--ol-s3"))
    ):
        raise _rule(accepted)
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return text
    raise _rule(accepted)


_RESERVED_DATABASES = {"postgres", "template0", "template1"}
_RESERVED_ROLES = {"postgres", "public", "none", "current_user", "session_user", "current_role"}


def _database_name(value: Any) -> str:
    text = _identifier(value)
    if text in _RESERVED_DATABASES:
        raise _rule(f"must not be a PostgreSQL system database ({', '.join(sorted(_RESERVED_DATABASES))})")
    return text


def _role_name(value: Any) -> str:
    text = _identifier(value)
    if text in _RESERVED_ROLES or text.startswith("pg_"):
        raise _rule("must not be a reserved PostgreSQL role name (postgres, public, pg_*)")
    return text


_identifier = _matching(
    r"[a-z_][a-z0-9_]{0,62}",
    "must be a safe PostgreSQL identifier; accepted: 1-63 characters of lowercase letters, "
    "digits and '_', not starting with a digit",
)


def _cron(value: Any) -> str:
    text = " ".join(str(value).split())
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as error:
        raise _rule(
            f"must be a cron expression ({error}); accepted: five fields 'minute hour day month weekday', "
            "for example '0 3 * * 0'"
        ) from None
    return text


def _version(value: Any) -> MlflowVersion:
    version = parse_version(str(value).strip())
    if version is None:
        raise _rule("must be an MLflow release number; accepted: MAJOR.MINOR.PATCH such as 2.9.2 or 3.1.0")
    return version


def _password(minimum: int) -> Callable[[Any], SecretStr | None]:
    def parse(value: Any) -> SecretStr | None:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or value == "":
            return None
        if not value.isprintable():
            raise _rule("must contain printable characters only (no tabs, newlines or control characters)")
        if len(value) < minimum:
            raise _rule(f"is too short; accepted: at least {minimum} characters")
        return SecretStr(value)

    return parse


def _networks(value: Any) -> tuple[str, ...]:
    entries = [entry for entry in re.split(r"[,\s]+", str(value).strip()) if entry]
    networks = []
    for entry in entries:
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise _rule(
                "each entry must be an IP address or CIDR; accepted: a comma-separated list such as "
                "'10.0.0.0/8, 192.168.1.7'"
            ) from None
    return tuple(networks)


def _positive_number(maximum: float, what: str) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            number = -1.0
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) or not 0 < number <= maximum:
            raise _rule(f"must be {what}; accepted: a number greater than 0 and at most {maximum:g}")
        return number

    return parse


def _nginx_version(value: Any) -> tuple[int, int, int]:
    text = str(value).strip()
    match = re.fullmatch(r"([0-9]+)\.([0-9]+)(?:\.([0-9]+))?", text)
    if not match:
        raise _rule("must be an nginx version; accepted: MAJOR.MINOR or MAJOR.MINOR.PATCH such as 1.27 or 1.22.1")
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


# (lowest, highest, default) rounds. nginx checks the hash on every request, so
# the default is the cheapest crypt(3) allows: safe for generated passwords.
HASH_SCHEMES = {"sha512_crypt": (1000, 999_999_999, 1000), "sha256_crypt": (1000, 999_999_999, 1000), "bcrypt": (4, 31, 10)}
SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _hash_scheme(value: Any) -> str:
    text = str(value).strip()
    if text not in HASH_SCHEMES:
        raise _rule(f"must be a password hash scheme; accepted: {', '.join(HASH_SCHEMES)}")
    return text


def _salt(value: Any) -> str | None:
    text = str(value).strip()
    if not text:
        return None
    # 22 characters fit bcrypt, whose last salt character carries 2 bits only.
    if not re.fullmatch(r"[./0-9A-Za-z]{21}[.Oeu]", text):
        raise _rule("must be a salt as the build generates it; accepted: 22 characters of ./0-9A-Za-z, or empty")
    return text


Boolean = Annotated[bool, BeforeValidator(_boolean)]
Port = Annotated[int, BeforeValidator(_integer_between(1, 65535, "a TCP port number"))]
Password = Annotated[SecretStr | None, BeforeValidator(_password(8))]
Hostname = Annotated[
    str,
    BeforeValidator(
        _matching(_HOSTNAME, "must be a DNS name; accepted: lowercase labels of letters, digits and '-' joined by '.'")
    ),
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class StackSettings(_Section):
    project_name: Annotated[
        str,
        BeforeValidator(
            _matching(
                r"[a-z][a-z0-9_-]{0,62}",
                "must be a Docker Compose project name; accepted: 1-63 characters of lowercase letters, "
                "digits, '-' and '_', starting with a letter",
            )
        ),
    ]
    base_domain: Hostname
    env: str


class ServerSettings(_Section):
    enabled: Boolean
    version: Annotated[MlflowVersion, BeforeValidator(_version)]
    version_unsupported_ok: Boolean
    port: Port
    route: Annotated[
        str,
        BeforeValidator(
            _matching(
                _HOSTNAME,
                "must be a subdomain label such as 'mlflow' or a full host such as 'mlflow.example.com'; "
                "accepted: lowercase letters, digits, '-' and '.'",
            )
        ),
    ]
    workers: Annotated[int, BeforeValidator(_integer_between(1, 64, "a number of workers"))]
    memory_limit: Annotated[
        str,
        BeforeValidator(
            _matching(
                r"[1-9][0-9]*[kmg]",
                "must be a container memory limit; accepted: a whole number with k, m or g, such as 512m or 2g",
            )
        ),
    ]
    telemetry_enabled: Boolean


class DatabaseSettings(_Section):
    name: Annotated[str, BeforeValidator(_database_name)]
    user: Annotated[str, BeforeValidator(_role_name)]
    password: Password
    admin_user: Annotated[str, BeforeValidator(_identifier)]
    # The stack's existing admin password: any printable value, no minimum.
    admin_password: Annotated[SecretStr | None, BeforeValidator(_password(1))]
    # Only compared with MLFLOW_DB_NAME; nself names it after the project.
    main_database: Annotated[
        str,
        BeforeValidator(_matching(r"[A-Za-z0-9_$-]{1,63}", "must be a database name; accepted: 1-63 letters, digits, '_', '$' or '-'")),
    ]
    host: Hostname
    port: Port


class StorageSettings(_Section):
    bucket: Annotated[str, BeforeValidator(_bucket_name)]
    artifacts_root: str
    default_artifact_root: str
    serve_artifacts: Boolean
    minio_enabled: Boolean
    root_user: Annotated[
        str,
        BeforeValidator(
            _matching(r"[A-Za-z0-9._@+=-]{3,128}", "must be a MinIO access key; accepted: 3-128 letters, digits or ._@+=-")
        ),
    ]
    root_password: Password
    minio_version: Annotated[
        str,
        BeforeValidator(
            _matching(r"RELEASE\.[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}-[0-9]{2}-[0-9]{2}Z", "must be a MinIO release tag; accepted: RELEASE.YYYY-MM-DDTHH-MM-SSZ")
        ),
    ]
    minio_port: Port
    minio_console_port: Port
    endpoint: Annotated[
        str,
        BeforeValidator(
            _matching(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?", "must be an http(s) URL such as http://minio:9000")
        ),
    ]
    access_key: Annotated[
        str,
        BeforeValidator(
            _matching(
                r"([A-Za-z0-9._@+=-]{3,128})?",
                "must be an S3 access key; accepted: 3-128 letters, digits or ._@+=-, or empty to use MINIO_ROOT_USER",
            )
        ),
    ]
    # Issued by the S3 service: any printable value.
    secret_key: Annotated[SecretStr | None, BeforeValidator(_password(1))]
    region: Annotated[
        str,
        BeforeValidator(
            _matching(
                r"[a-z0-9][a-z0-9_-]{0,62}",
                "must be an S3 region name; accepted: lowercase letters, digits, '-' and '_', such as us-east-1",
            )
        ),
    ]


class ProxySettings(_Section):
    nginx_version: Annotated[tuple[int, int, int], BeforeValidator(_nginx_version)]
    allowed_ips: Annotated[tuple[str, ...], BeforeValidator(_networks)]
    read_timeout: Annotated[int, BeforeValidator(_integer_between(1, 86400, "a number of seconds"))]
    send_timeout: Annotated[int, BeforeValidator(_integer_between(1, 86400, "a number of seconds"))]


class AuthSettings(_Section):
    enabled: Boolean
    hash_scheme: Annotated[str, BeforeValidator(_hash_scheme)]
    hash_rounds: Annotated[int, BeforeValidator(_integer_between(4, 999_999_999, "a number of hash rounds"))]
    hash_salt: Annotated[str | None, BeforeValidator(_salt)]
    username: Annotated[
        str,
        BeforeValidator(
            _matching(r"[A-Za-z0-9._@-]{1,64}", "must be a user name; accepted: 1-64 letters, digits or ._@-")
        ),
    ]
    password: Password


class GcSettings(_Section):
    enabled: Boolean
    schedule: Annotated[str, BeforeValidator(_cron)]


class MonitoringSettings(_Section):
    enabled: Boolean
    p95_latency_seconds: Annotated[float, BeforeValidator(_positive_number(3600, "a number of seconds"))]
    error_ratio: Annotated[float, BeforeValidator(_positive_number(1, "a ratio of requests"))]
    bucket_size_gb: Annotated[float, BeforeValidator(_positive_number(1_000_000, "a size in GB"))]


class Settings(_Section):
    stack: StackSettings
    server: ServerSettings
    database: DatabaseSettings
    storage: StorageSettings
    proxy: ProxySettings
    auth: AuthSettings
    gc: GcSettings
    monitoring: MonitoringSettings
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
        return tuple(missing)


# Each variable: the section and field it fills, and its default ("" = unset).
# MLFLOW_ARTIFACTS_ROOT's default follows the bucket; see _defaults().
VARIABLES: dict[str, tuple[str, str, str]] = {
    "PROJECT_NAME": ("stack", "project_name", "myproject"),
    "BASE_DOMAIN": ("stack", "base_domain", "local.nself.org"),
    "ENV": ("stack", "env", "dev"),
    "MLFLOW_ENABLED": ("server", "enabled", "false"),
    "MLFLOW_VERSION": ("server", "version", "2.9.2"),
    "MLFLOW_VERSION_UNSUPPORTED_OK": ("server", "version_unsupported_ok", "false"),
    "MLFLOW_PORT": ("server", "port", "5000"),
    "MLFLOW_ROUTE": ("server", "route", "mlflow"),
    "MLFLOW_WORKERS": ("server", "workers", "2"),
    "MLFLOW_MEMORY_LIMIT": ("server", "memory_limit", "2g"),
    "MLFLOW_TELEMETRY_ENABLED": ("server", "telemetry_enabled", "false"),
    "MLFLOW_DB_NAME": ("database", "name", "mlflow"),
    "MLFLOW_DB_USER": ("database", "user", "mlflow"),
    "MLFLOW_DB_PASSWORD": ("database", "password", ""),
    "POSTGRES_USER": ("database", "admin_user", "postgres"),
    "POSTGRES_PASSWORD": ("database", "admin_password", ""),
    "POSTGRES_DB": ("database", "main_database", ""),
    "POSTGRES_HOST": ("database", "host", "postgres"),
    "POSTGRES_PORT": ("database", "port", "5432"),
    "MLFLOW_ARTIFACTS_BUCKET": ("storage", "bucket", "mlflow-artifacts"),
    "MLFLOW_ARTIFACTS_ROOT": ("storage", "artifacts_root", ""),
    "MLFLOW_DEFAULT_ARTIFACT_ROOT": ("storage", "default_artifact_root", ""),
    "MLFLOW_SERVE_ARTIFACTS": ("storage", "serve_artifacts", "true"),
    "MINIO_ENABLED": ("storage", "minio_enabled", "false"),
    "MINIO_ROOT_USER": ("storage", "root_user", "minioadmin"),
    "MINIO_ROOT_PASSWORD": ("storage", "root_password", ""),
    "MINIO_VERSION": ("storage", "minio_version", "RELEASE.2025-04-22T22-12-26Z"),
    "MINIO_PORT": ("storage", "minio_port", "9000"),
    "MINIO_CONSOLE_PORT": ("storage", "minio_console_port", "9001"),
    "S3_ENDPOINT": ("storage", "endpoint", "http://minio:9000"),
    "S3_ACCESS_KEY": ("storage", "access_key", ""),
    "S3_SECRET_KEY": ("storage", "secret_key", ""),
    "S3_REGION": ("storage", "region", "us-east-1"),
    "MLFLOW_AUTH_ENABLED": ("auth", "enabled", "false"),
    "MLFLOW_AUTH_USERNAME": ("auth", "username", "admin"),
    "MLFLOW_AUTH_PASSWORD": ("auth", "password", ""),
    "MLFLOW_AUTH_HASH": ("auth", "hash_scheme", "sha512_crypt"),
    "MLFLOW_AUTH_HASH_ROUNDS": ("auth", "hash_rounds", ""),
    "MLFLOW_AUTH_HASH_SALT": ("auth", "hash_salt", ""),
    "NGINX_VERSION": ("proxy", "nginx_version", "1.27"),
    "MLFLOW_ALLOWED_IPS": ("proxy", "allowed_ips", ""),
    "MLFLOW_PROXY_READ_TIMEOUT": ("proxy", "read_timeout", "600"),
    "MLFLOW_PROXY_SEND_TIMEOUT": ("proxy", "send_timeout", "600"),
    "MLFLOW_GC_ENABLED": ("gc", "enabled", "true"),
    "MLFLOW_GC_SCHEDULE": ("gc", "schedule", "0 3 * * 0"),
    "MONITORING_ENABLED": ("monitoring", "enabled", "false"),
    "MLFLOW_ALERT_P95_LATENCY_SECONDS": ("monitoring", "p95_latency_seconds", "2"),
    "MLFLOW_ALERT_ERROR_RATIO": ("monitoring", "error_ratio", "0.05"),
    "MLFLOW_ALERT_BUCKET_SIZE_GB": ("monitoring", "bucket_size_gb", "50"),
}

SECRET_VARIABLES = frozenset({"MLFLOW_DB_PASSWORD", "MLFLOW_AUTH_PASSWORD", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "S3_SECRET_KEY"})

# Values that Docker Compose substitutes from the env files into the
# containers; they must read the same to Compose as to this generator.
COMPOSE_SUBSTITUTED = SECRET_VARIABLES

# MLFLOW_* names that MLflow's own client and server read. They belong to
# custom services and scripts in the same .env, so they are not typos.
MLFLOW_CLIENT_VARIABLES = frozenset(
    {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_INSECURE_TLS",
        "MLFLOW_TRACKING_SERVER_CERT_PATH",
        "MLFLOW_TRACKING_CLIENT_CERT_PATH",
        "MLFLOW_REGISTRY_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_RUN_ID",
        "MLFLOW_S3_ENDPOINT_URL",
        "MLFLOW_S3_IGNORE_TLS",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
        "MLFLOW_DISABLE_TELEMETRY",
    }
)

_REQUIRED_WHEN_ENABLED = {
    "POSTGRES_PASSWORD": "mlflow-init connects as POSTGRES_USER to create the MLflow database and role",
    "MINIO_ROOT_PASSWORD": "MLflow and mlflow-init use the MinIO root credentials for the artifact bucket",
}


class SettingsError(UserError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"Invalid MLflow configuration ({len(problems)} problem(s)):\n{lines}")


def mlflow_enabled(project_env: ProjectEnv) -> bool:
    try:
        return _boolean(project_env.values.get("MLFLOW_ENABLED", "false"))
    except PydanticCustomError as error:
        raise SettingsError([f"MLFLOW_ENABLED: {error.message()}"]) from None


def load_settings(project_env: ProjectEnv) -> Settings:
    """Validate every variable at once; raise SettingsError listing each problem."""
    values = _with_defaults(project_env.values)
    hidden = hidden_variables(project_env)
    problems: dict[str, str] = {}

    for name in sorted(project_env.values):
        if name.startswith("MLFLOW_") and name not in VARIABLES and name not in MLFLOW_CLIENT_VARIABLES:
            problems[name] = _unknown_variable(name)

    sections: dict[str, dict[str, Any]] = {}
    for name, (section, field, _default) in VARIABLES.items():
        sections.setdefault(section, {})[field] = values[name]

    models = {
        "stack": StackSettings,
        "server": ServerSettings,
        "database": DatabaseSettings,
        "storage": StorageSettings,
        "proxy": ProxySettings,
        "auth": AuthSettings,
        "gc": GcSettings,
        "monitoring": MonitoringSettings,
    }
    variable_of = {(section, field): name for name, (section, field, _d) in VARIABLES.items()}
    built: dict[str, BaseModel] = {}
    for section, model in models.items():
        try:
            built[section] = model(**sections[section])
        except ValidationError as error:
            for detail in error.errors():
                name = variable_of[(section, str(detail["loc"][0]))]
                problems.setdefault(name, _describe(name, detail, project_env, hidden))

    external_s3 = _external_s3(values)
    for name, reason in _REQUIRED_WHEN_ENABLED.items():
        if name == "MINIO_ROOT_PASSWORD" and not _signs_with_minio_root(values):
            continue
        if name not in problems and not values[name]:
            problems[name] = f"{name}: is required when MLFLOW_ENABLED=true ({reason}); set it in {SECRETS_FILE}"

    for name in sorted(COMPOSE_SUBSTITUTED):
        origin = project_env.origins.get(name)
        if name not in problems and origin is not None:
            problem = compose_quoting_problem(name, origin)
            if problem:
                problems[name] = problem

    problems.update(_cross_checks(values, problems, hidden))
    problems.update(_s3_key_checks(values, problems, external_s3))

    if problems:
        raise SettingsError([problems[name] for name in sorted(problems)])

    storage: StorageSettings = built["storage"]  # type: ignore[assignment]
    minio_auto_enabled = not storage.minio_enabled and not external_s3
    settings = Settings(
        **built,  # type: ignore[arg-type]
        minio_auto_enabled=minio_auto_enabled,
        external_s3=external_s3,
    )
    if minio_auto_enabled:
        settings = settings.model_copy(update={"storage": storage.model_copy(update={"minio_enabled": True})})
    return settings


def _with_defaults(raw: dict[str, str]) -> dict[str, str]:
    values = {name: raw.get(name, "") for name in VARIABLES}
    for name, (_section, _field, default) in VARIABLES.items():
        if not values[name].strip():
            values[name] = default
    if not values["MLFLOW_ARTIFACTS_ROOT"]:
        values["MLFLOW_ARTIFACTS_ROOT"] = f"s3://{values['MLFLOW_ARTIFACTS_BUCKET']}"
    if not values["POSTGRES_DB"]:
        values["POSTGRES_DB"] = values["PROJECT_NAME"]
    if not values["MLFLOW_AUTH_HASH_ROUNDS"]:
        scheme = HASH_SCHEMES.get(values["MLFLOW_AUTH_HASH"].strip())
        values["MLFLOW_AUTH_HASH_ROUNDS"] = str(scheme[2]) if scheme else "5000"
    for name in ("MLFLOW_ARTIFACTS_ROOT", "MLFLOW_DEFAULT_ARTIFACT_ROOT"):
        values[name] = values[name].strip()
    return values


def _describe(name: str, detail: Any, project_env: ProjectEnv, hidden: frozenset[str]) -> str:
    # Rule messages never embed the value; it is appended only when it may be shown.
    message = detail["msg"] if detail["type"] == "rule" else "has an unexpected value"
    origin = project_env.origins.get(name)
    where = f" (in {origin.source} line {origin.line})" if origin else ""
    shown = project_env.values.get(name)
    got = _got(name, shown, hidden) if shown is not None else ""
    return f"{name}{where}: {message}{got}"


def hidden_variables(project_env: ProjectEnv) -> frozenset[str]:
    """Secrets, and every setting that pulls a secret in through ${...}: never echoed."""
    hidden = set(SECRET_VARIABLES)
    changed = True
    while changed:
        changed = False
        for name, origin in project_env.origins.items():
            if name in hidden or origin.quoting == "'":
                continue
            if any(reference in hidden for reference in _REFERENCE_NAME.findall(origin.raw)):
                hidden.add(name)
                changed = True
    return frozenset(hidden)


_REFERENCE_NAME = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _got(name: str, value: str, hidden: frozenset[str]) -> str:
    return "" if name in hidden else f" (got {value!r})"


def _unknown_variable(name: str) -> str:
    known = sorted(n for n in VARIABLES if n.startswith("MLFLOW_"))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; known names: {', '.join(known)}"
    return f"{name}: is not an MLflow setting{hint}"


def compose_quoting_problem(name: str, origin: EnvValue) -> str | None:
    """Refuse values that Docker Compose would read differently from us.

    Compared with python-dotenv, Compose expands '$' in unquoted and
    double-quoted values, and keeps the backslash of "\\'" in double
    quotes; in single quotes it keeps both characters of '\\\\' and
    "\\'". Every other form reads the same to both (tests prove it).
    """
    text = origin.raw_text
    where = f"{name} (in {origin.source} line {origin.line})"
    if origin.quoting == "'":
        if "\\\\" in text or "\\'" in text:
            return (
                f"{where}: a backslash before '\\' or \"'\" inside single quotes is read differently "
                "by Docker Compose; accepted: a value without those sequences"
            )
        return None
    if "$" in text:
        return (
            f"{where}: contains '$', which Docker Compose would expand; accepted: the value in single quotes, "
            f"for example {name}='...'"
        )
    if origin.quoting == '"' and "\\'" in text:
        return (
            f"{where}: \"\\'\" inside double quotes is read differently by Docker Compose; "
            "accepted: a plain ' without the backslash"
        )
    return None


def _cross_checks(values: dict[str, str], problems: dict[str, str], hidden: frozenset[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    bucket = values["MLFLOW_ARTIFACTS_BUCKET"]
    root = values["MLFLOW_ARTIFACTS_ROOT"]
    if "MLFLOW_ARTIFACTS_BUCKET" not in problems and not re.fullmatch(
        rf"s3://{re.escape(bucket)}(/[A-Za-z0-9._/-]*)?", root
    ):
        found["MLFLOW_ARTIFACTS_ROOT"] = (
            f"MLFLOW_ARTIFACTS_ROOT: must point into MLFLOW_ARTIFACTS_BUCKET; accepted: s3://{bucket} "
            f"or s3://{bucket}/PREFIX{_got('MLFLOW_ARTIFACTS_ROOT', root, hidden)}"
        )
    serve = values["MLFLOW_SERVE_ARTIFACTS"].strip().lower() in ("true", "yes", "1")
    default_root = values["MLFLOW_DEFAULT_ARTIFACT_ROOT"]
    if default_root and serve:
        found["MLFLOW_DEFAULT_ARTIFACT_ROOT"] = (
            "MLFLOW_DEFAULT_ARTIFACT_ROOT: cannot be combined with MLFLOW_SERVE_ARTIFACTS=true, because an "
            "explicit default artifact root silently turns artifact proxying off; accepted: leave it empty, "
            "or set MLFLOW_SERVE_ARTIFACTS=false"
        )
    elif default_root and not re.fullmatch(rf"s3://{re.escape(bucket)}(/[A-Za-z0-9._/-]*)?", default_root):
        found["MLFLOW_DEFAULT_ARTIFACT_ROOT"] = (
            f"MLFLOW_DEFAULT_ARTIFACT_ROOT: must point into MLFLOW_ARTIFACTS_BUCKET; accepted: s3://{bucket} "
            f"or s3://{bucket}/PREFIX{_got('MLFLOW_DEFAULT_ARTIFACT_ROOT', default_root, hidden)}"
        )
    if "MLFLOW_DB_USER" not in problems and values["MLFLOW_DB_USER"] == values["POSTGRES_USER"]:
        found["MLFLOW_DB_USER"] = (
            "MLFLOW_DB_USER: must differ from POSTGRES_USER; MLflow gets its own least-privileged role "
            f"{_got('MLFLOW_DB_USER', values['MLFLOW_DB_USER'], hidden)}"
        )
    if "MLFLOW_DB_NAME" not in problems and values["MLFLOW_DB_NAME"] == values["POSTGRES_DB"]:
        found["MLFLOW_DB_NAME"] = (
            "MLFLOW_DB_NAME: must differ from POSTGRES_DB, the stack's main database; MLflow keeps its tables "
            f"in a database of its own{_got('MLFLOW_DB_NAME', values['MLFLOW_DB_NAME'], hidden)}"
        )
    scheme = HASH_SCHEMES.get(values["MLFLOW_AUTH_HASH"].strip())
    rounds = values["MLFLOW_AUTH_HASH_ROUNDS"].strip()
    if scheme and "MLFLOW_AUTH_HASH_ROUNDS" not in problems and rounds.isdigit():
        low, high, _default = scheme
        if not low <= int(rounds) <= high:
            found["MLFLOW_AUTH_HASH_ROUNDS"] = (
                f"MLFLOW_AUTH_HASH_ROUNDS: out of range for {values['MLFLOW_AUTH_HASH'].strip()}; "
                f"accepted: {low} to {high}{_got('MLFLOW_AUTH_HASH_ROUNDS', rounds, hidden)}"
            )
    if "MLFLOW_VERSION" not in problems:
        version = parse_version(values["MLFLOW_VERSION"])
        override = values["MLFLOW_VERSION_UNSUPPORTED_OK"].strip().lower() in ("true", "yes", "1")
        unsupported = support_problem(version) if version is not None else None
        if unsupported and not override:
            found["MLFLOW_VERSION"] = f"MLFLOW_VERSION: {unsupported}; set MLFLOW_VERSION_UNSUPPORTED_OK=true to try it anyway"
    return found


BUNDLED_S3_ENDPOINT = "http://minio:9000"


def _external_s3(values: dict[str, str]) -> bool:
    """MINIO_ENABLED is not true and S3_ENDPOINT names another service: MLflow then runs no MinIO."""
    minio_enabled = values["MINIO_ENABLED"].strip().lower() in ("true", "yes", "1")
    return not minio_enabled and values["S3_ENDPOINT"].strip().rstrip("/") != BUNDLED_S3_ENDPOINT


def _signs_with_minio_root(values: dict[str, str]) -> bool:
    """The MinIO MLflow adds always needs its root password; another store only without S3_ACCESS_KEY."""
    minio_enabled = values["MINIO_ENABLED"].strip().lower() in ("true", "yes", "1")
    if _external_s3(values):
        return False
    return not minio_enabled or not values["S3_ACCESS_KEY"].strip()


def _s3_key_checks(values: dict[str, str], problems: dict[str, str], external_s3: bool) -> dict[str, str]:
    """S3_ACCESS_KEY and S3_SECRET_KEY come as a pair; an external S3 needs them (MinIO's root keys
    are never sent to another service, and MINIO_ROOT_USER has a default)."""
    found: dict[str, str] = {}
    access_key, secret_key = values["S3_ACCESS_KEY"].strip(), values["S3_SECRET_KEY"]
    if external_s3:
        why = (
            f"is required with an external S3 (S3_ENDPOINT is not {BUNDLED_S3_ENDPOINT} and MINIO_ENABLED is not "
            "true), because MLflow never signs with MinIO's root keys there"
        )
        if not access_key:
            found["S3_ACCESS_KEY"] = f"S3_ACCESS_KEY: {why}; set it in .env"
        if not secret_key:
            found["S3_SECRET_KEY"] = f"S3_SECRET_KEY: {why}; set it in {SECRETS_FILE}"
    elif access_key and not secret_key:
        found["S3_SECRET_KEY"] = f"S3_SECRET_KEY: is required when S3_ACCESS_KEY is set; set it in {SECRETS_FILE}"
    elif secret_key and not access_key:
        found["S3_ACCESS_KEY"] = (
            "S3_ACCESS_KEY: is required when S3_SECRET_KEY is set; accepted: the access key that goes with it, "
            "or neither, to use MinIO's root keys"
        )
    return {name: problem for name, problem in found.items() if name not in problems}
