"""Loading: the merged env files in, validated Settings out, or every problem at once.

Every variable is parsed on its own, so one pass reports every problem. Error
lines name the variable, where it came from, the rule and what is accepted; a
secret's value is never part of them.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from generator.envfiles import SECRETS_FILE, EnvValue, ProjectEnv
from generator.errors import NotEnabledError, UserError
from generator.settings import validators as rules
from generator.settings.models import DERIVED, SECRET_VARIABLES, SECTIONS, VARIABLES, Settings, StorageSettings
from generator.versions import auth_app_problem, parse_version, support_problem


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
        return rules.boolean(project_env.values.get("MLFLOW_ENABLED", "false"))
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

    built: dict[str, BaseModel] = {}
    for section, model in SECTIONS.items():
        # Fields are read by their variable names (the declared aliases).
        names = [info.alias for info in model.model_fields.values()]
        try:
            built[section] = model(**{name: values[name] for name in names})
        except ValidationError as error:
            for detail in error.errors():
                name = str(detail["loc"][0])
                problems.setdefault(name, _describe(name, detail, project_env, hidden))

    if "MLFLOW_DB_USER" in problems and not project_env.values.get("MLFLOW_GRAPHQL_DB_USER", "").strip():
        # The default role name is derived from MLFLOW_DB_USER: its problem is reported once, there.
        problems.pop("MLFLOW_GRAPHQL_DB_USER", None)

    if "PROJECT_NAME" in problems and not project_env.values.get("MLFLOW_IMAGE_REPOSITORY", "").strip():
        # The default repository is derived from PROJECT_NAME: its problem is reported once, there.
        problems.pop("MLFLOW_IMAGE_REPOSITORY", None)

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

    problems.update(_cross_checks(values, problems, hidden, project_env))
    problems.update(_s3_key_checks(values, problems, external_s3))
    if "kubernetes" in built and built["kubernetes"].enabled:  # type: ignore[attr-defined]
        problems.update(_kubernetes_checks(values, problems, external_s3, project_env))

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
    for name, variable in VARIABLES.items():
        if not values[name].strip():
            values[name] = "" if variable.default == DERIVED else variable.default
    # The DERIVED defaults:
    if not values["MLFLOW_ARTIFACTS_ROOT"]:
        values["MLFLOW_ARTIFACTS_ROOT"] = f"s3://{values['MLFLOW_ARTIFACTS_BUCKET']}"
    if not values["POSTGRES_DB"]:
        values["POSTGRES_DB"] = values["PROJECT_NAME"]
    if not values["MLFLOW_IMAGE_REPOSITORY"]:
        values["MLFLOW_IMAGE_REPOSITORY"] = f"{values['PROJECT_NAME'].strip()}-mlflow"
    if not values["MLFLOW_GRAPHQL_DB_USER"]:
        # Cut so that the name stays within PostgreSQL's 63 characters.
        values["MLFLOW_GRAPHQL_DB_USER"] = f"{values['MLFLOW_DB_USER'].strip()[:55]}_graphql"
    if not values["MLFLOW_AUTH_HASH_ROUNDS"]:
        scheme = rules.HASH_SCHEMES.get(values["MLFLOW_AUTH_HASH"].strip())
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


def _cross_checks(
    values: dict[str, str], problems: dict[str, str], hidden: frozenset[str], project_env: ProjectEnv
) -> dict[str, str]:
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
    graphql_on = values["MLFLOW_GRAPHQL_ENABLED"].strip().lower() in ("true", "yes", "1")
    graphql_user = values["MLFLOW_GRAPHQL_DB_USER"]
    if graphql_on and "MLFLOW_GRAPHQL_DB_USER" not in problems:
        for other in ("MLFLOW_DB_USER", "POSTGRES_USER"):
            if graphql_user == values[other]:
                origin = project_env.origins.get("MLFLOW_GRAPHQL_DB_USER")
                where = f" (in {origin.source} line {origin.line})" if origin and origin.raw_text.strip() else ""
                found["MLFLOW_GRAPHQL_DB_USER"] = (
                    f"MLFLOW_GRAPHQL_DB_USER{where}: must differ from {other}, because Hasura gets a read-only role "
                    f"of its own; accepted: any other role name"
                    f"{_got('MLFLOW_GRAPHQL_DB_USER', graphql_user, hidden)}"
                )
                break
    scheme = rules.HASH_SCHEMES.get(values["MLFLOW_AUTH_HASH"].strip())
    rounds = values["MLFLOW_AUTH_HASH_ROUNDS"].strip()
    if scheme and "MLFLOW_AUTH_HASH_ROUNDS" not in problems and rounds.isdigit():
        low, high, _default = scheme
        if not low <= int(rounds) <= high:
            found["MLFLOW_AUTH_HASH_ROUNDS"] = (
                f"MLFLOW_AUTH_HASH_ROUNDS: out of range for {values['MLFLOW_AUTH_HASH'].strip()}; "
                f"accepted: {low} to {high}{_got('MLFLOW_AUTH_HASH_ROUNDS', rounds, hidden)}"
            )
    found.update(_auth_mode_checks(values, problems, project_env))
    if "MLFLOW_VERSION" not in problems:
        version = parse_version(values["MLFLOW_VERSION"])
        override = values["MLFLOW_VERSION_UNSUPPORTED_OK"].strip().lower() in ("true", "yes", "1")
        unsupported = support_problem(version) if version is not None else None
        if unsupported and not override:
            found["MLFLOW_VERSION"] = f"MLFLOW_VERSION: {unsupported}; set MLFLOW_VERSION_UNSUPPORTED_OK=true to try it anyway"
    return found


# MLflow 2.22+ refuses shorter passwords; one rule on every version keeps an
# upgrade from locking the admin out.
MLFLOW_MODE_PASSWORD_MINIMUM = 12
AUTH_DATABASE_SUFFIX = "_auth"  # generator/artifacts/auth.py names the users' database so


def _auth_mode_checks(values: dict[str, str], problems: dict[str, str], project_env: ProjectEnv) -> dict[str, str]:
    """MLFLOW_AUTH_MODE and the settings that only mean something with it."""
    found: dict[str, str] = {}
    if any(name in problems for name in ("MLFLOW_AUTH_ENABLED", "MLFLOW_AUTH_MODE")):
        return found

    def where(name: str) -> str:
        origin = project_env.origins.get(name)
        return f" (in {origin.source} line {origin.line})" if origin and origin.raw_text.strip() else ""

    enabled = values["MLFLOW_AUTH_ENABLED"].strip().lower() in ("true", "yes", "1")
    mode = values["MLFLOW_AUTH_MODE"].strip()
    if mode == "mlflow" and not enabled and where("MLFLOW_AUTH_MODE"):
        found["MLFLOW_AUTH_MODE"] = (
            f"MLFLOW_AUTH_MODE{where('MLFLOW_AUTH_MODE')}: mlflow needs MLFLOW_AUTH_ENABLED=true (MLflow's users check "
            "every request only while auth is on); accepted: set MLFLOW_AUTH_ENABLED=true, or remove MLFLOW_AUTH_MODE"
        )
        return found
    mlflow_mode = enabled and mode == "mlflow"
    if not mlflow_mode and where("MLFLOW_AUTH_DEFAULT_PERMISSION") and "MLFLOW_AUTH_DEFAULT_PERMISSION" not in problems:
        found["MLFLOW_AUTH_DEFAULT_PERMISSION"] = (
            f"MLFLOW_AUTH_DEFAULT_PERMISSION{where('MLFLOW_AUTH_DEFAULT_PERMISSION')}: has no effect without "
            "MLFLOW_AUTH_MODE=mlflow (nginx mode has one shared account); accepted: set MLFLOW_AUTH_MODE=mlflow, "
            "or remove it"
        )
    if not mlflow_mode:
        return found
    password = values["MLFLOW_AUTH_PASSWORD"]
    if "MLFLOW_AUTH_PASSWORD" not in problems and password and len(password) < MLFLOW_MODE_PASSWORD_MINIMUM:
        found["MLFLOW_AUTH_PASSWORD"] = (
            f"MLFLOW_AUTH_PASSWORD{where('MLFLOW_AUTH_PASSWORD')}: is too short for MLFLOW_AUTH_MODE=mlflow "
            f"(MLflow 2.22 and later refuse passwords under {MLFLOW_MODE_PASSWORD_MINIMUM} characters); accepted: at "
            f"least {MLFLOW_MODE_PASSWORD_MINIMUM} characters, or empty to have the build generate one"
        )
    database = values["MLFLOW_DB_NAME"].strip()
    if "MLFLOW_DB_NAME" not in problems and len(database) + len(AUTH_DATABASE_SUFFIX) > 63:
        found["MLFLOW_DB_NAME"] = (
            f"MLFLOW_DB_NAME{where('MLFLOW_DB_NAME')}: is too long for MLFLOW_AUTH_MODE=mlflow, whose users live in "
            f"the database <MLFLOW_DB_NAME>{AUTH_DATABASE_SUFFIX}; accepted: at most {63 - len(AUTH_DATABASE_SUFFIX)} "
            "characters"
        )
    version = parse_version(values["MLFLOW_VERSION"].strip()) if "MLFLOW_VERSION" not in problems else None
    problem = auth_app_problem(version) if version is not None else None
    if problem:
        found["MLFLOW_AUTH_MODE"] = (
            f"MLFLOW_AUTH_MODE{where('MLFLOW_AUTH_MODE')}: mlflow cannot be used with MLFLOW_VERSION={version}: "
            f"{problem}; accepted: MLFLOW_VERSION before 3.3.0 or from 3.4.0, or MLFLOW_AUTH_MODE=nginx"
        )
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


def _on(values: dict[str, str], name: str) -> bool:
    return values.get(name, "").strip().lower() in ("true", "yes", "1")


def kubernetes_secret_variables(values: dict[str, str]) -> tuple[str, ...]:
    """The secrets the Kubernetes manifests read from the Secret generated from .env.secrets."""
    names = ["POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "S3_SECRET_KEY"]
    if _on(values, "MLFLOW_GRAPHQL_ENABLED"):
        names.append("MLFLOW_GRAPHQL_DB_PASSWORD")
    return tuple(names)


def kustomize_env_value(written: str, name: str) -> str | None:
    """What kustomize's secretGenerator (`envs:`) reads for `name` from this assignment: the text after the
    first '=' as it is, quotes and spaces included (checked against kubectl kustomize in the tests)."""
    if "\n" in written:
        return None  # a value over several lines: kustomize reads each line on its own
    line = written.lstrip()
    key, equals, value = line.partition("=")
    if not equals or key != name:
        return None  # `export NAME=…` or `NAME =…` name another key for kustomize
    return value


def _kubernetes_checks(
    values: dict[str, str], problems: dict[str, str], external_s3: bool, project_env: ProjectEnv
) -> dict[str, str]:
    """A cluster reaches S3 and PostgreSQL as managed services, reads secrets with kustomize from
    .env.secrets as written, and must fit its connections into max_connections."""
    found: dict[str, str] = {}
    if not external_s3:
        found["MLFLOW_KUBERNETES_ENABLED"] = (
            f"MLFLOW_KUBERNETES_ENABLED{_where('MLFLOW_KUBERNETES_ENABLED', project_env)}: needs an external S3, because nothing runs MinIO in the cluster; "
            f"accepted: S3_ENDPOINT set to your S3 service (not {BUNDLED_S3_ENDPOINT}) with MINIO_ENABLED not true"
        )
    if _on(values, "MLFLOW_AUTH_ENABLED") and values["MLFLOW_AUTH_MODE"].strip() == "mlflow":
        # The manifests give the Ingress nginx's basic auth; the auth app's ini, its
        # admin secrets and a scrape with credentials are not rendered for a cluster.
        found["MLFLOW_AUTH_MODE"] = (
            f"MLFLOW_AUTH_MODE{_where('MLFLOW_AUTH_MODE', project_env)}: mlflow is not rendered for Kubernetes; "
            "accepted: nginx (the Ingress's basic auth) with MLFLOW_KUBERNETES_ENABLED=true"
        )
    replicas, maximum = values["MLFLOW_REPLICAS"].strip(), values["MLFLOW_HPA_MAX_REPLICAS"].strip()
    counts_valid = not {"MLFLOW_REPLICAS", "MLFLOW_HPA_MAX_REPLICAS", "MLFLOW_WORKERS", "POSTGRES_MAX_CONNECTIONS"} & set(
        problems
    )
    if counts_valid and int(maximum) < int(replicas):
        found["MLFLOW_HPA_MAX_REPLICAS"] = (
            f"MLFLOW_HPA_MAX_REPLICAS{_where('MLFLOW_HPA_MAX_REPLICAS', project_env)}: must be at least "
            f"MLFLOW_REPLICAS ({replicas}), the autoscaler's minimum (got {maximum!r})"
        )
    elif counts_valid:
        from generator.artifacts.kubernetes import connection_budget  # the manifests' own arithmetic

        budget = connection_budget(int(maximum), int(values["MLFLOW_WORKERS"].strip()), _on(values, "MLFLOW_GC_ENABLED"))
        limit = int(values["POSTGRES_MAX_CONNECTIONS"].strip())
        if budget.total > limit:
            found["POSTGRES_MAX_CONNECTIONS"] = (
                f"POSTGRES_MAX_CONNECTIONS{_where('POSTGRES_MAX_CONNECTIONS', project_env)}: {limit} is less than "
                f"the {budget.total} connections MLflow on Kubernetes can open ({budget.formula}); accepted: the "
                f"server's max_connections if it is higher, or lower MLFLOW_HPA_MAX_REPLICAS or MLFLOW_WORKERS"
            )
    for name in kubernetes_secret_variables(values):
        origin = project_env.origins.get(name)
        if name in problems or origin is None or not values[name]:
            continue  # unset: reported above, or generated by the build
        where = f"{name} (in {origin.source} line {origin.line})"
        if origin.source != SECRETS_FILE:
            found[name] = (
                f"{where}: must be set in {SECRETS_FILE} with MLFLOW_KUBERNETES_ENABLED=true, because the cluster's "
                f"Secret is generated from that file alone; accepted: move the line there"
            )
        elif kustomize_env_value(origin.written, name) != values[name]:
            found[name] = (
                f"{where}: kustomize's secretGenerator would read another value from this line, since it keeps "
                "quotes, spaces, comments and ${...} as written; accepted: NAME=value on one line, unquoted, "
                "without ${...} or a comment"
            )
    return {name: problem for name, problem in found.items() if name not in problems}


def _where(name: str, project_env: ProjectEnv) -> str:
    origin = project_env.origins.get(name)
    return f" (in {origin.source} line {origin.line})" if origin else ""


def require_enabled(project_env: ProjectEnv) -> None:
    """The service commands operate a running MLflow: refuse a project where it is off."""
    if not mlflow_enabled(project_env):
        origin = project_env.origins.get("MLFLOW_ENABLED")
        where = f" (in {origin.source} line {origin.line})" if origin else " (not set in the project's env files)"
        raise NotEnabledError(f"MLFLOW_ENABLED{where}: MLflow is not enabled in this project; set MLFLOW_ENABLED=true")
