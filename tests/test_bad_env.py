"""Bad .env files through the real CLI: exit 2, a clear message, no secret shown.

Each case is a small nself project whose .env.secrets holds distinctive
passwords. A rejected build must name the offending variable (or, for a line
that does not parse, the file and line), print no traceback, echo no secret
value, write nothing to out/ and leave .env.secrets as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_generator, write_tree
from tests.snapshot_files import error_extension, error_golden

BASE_ENV = """\
PROJECT_NAME=demo
MLFLOW_ENABLED=true
MINIO_ENABLED=true
"""

# Every secret value carries this marker, so a leak of any part of one shows.
SECRET_MARKER = "Secret-Value"


def base_secrets(n: int) -> dict[str, str]:
    return {
        "POSTGRES_PASSWORD": f"Sup3r-Secret-Value-{n}-pg",
        "MINIO_ROOT_PASSWORD": f"Sup3r-Secret-Value-{n}-minio",
        "MLFLOW_DB_PASSWORD": f"Sup3r-Secret-Value-{n}-db",
        "MLFLOW_AUTH_PASSWORD": f"Sup3r-Secret-Value-{n}-auth",
    }


@dataclass(frozen=True)
class Case:
    id: str
    env: str = ""  # lines appended to BASE_ENV; "<n>" is replaced by the case number
    secrets: str = ""  # lines appended to .env.secrets (later lines win)
    drop: tuple[str, ...] = ()  # base secrets left out of .env.secrets
    names: tuple[str, ...] = ()  # the offending variables: each must be named in stderr
    also: tuple[str, ...] = ()  # further text stderr must contain
    secret_values: tuple[str, ...] = ()  # secret values in `secrets` that must not be shown


# An external S3 (lines 4-7 of .env), which Kubernetes needs, and its secret key.
K8S_ENV = (
    "MINIO_ENABLED=false\nS3_ENDPOINT=https://s3.example.internal\nS3_ACCESS_KEY=mlflow-writer\n"
    "MLFLOW_KUBERNETES_ENABLED=true\n"
)
K8S_SECRET = "S3_SECRET_KEY=Sup3r-Secret-Value-<n>-s3\n"

CASES = [
    # ports and counts
    Case("port-text", env="MLFLOW_PORT=http\n", names=("MLFLOW_PORT",)),
    Case("port-zero", env="MLFLOW_PORT=0\n", names=("MLFLOW_PORT",)),
    Case("port-too-big", env="MLFLOW_PORT=70000\n", names=("MLFLOW_PORT",)),
    Case("port-negative", env="MLFLOW_PORT=-1\n", names=("MLFLOW_PORT",)),
    Case("postgres-port-text", env="POSTGRES_PORT=five\n", names=("POSTGRES_PORT",)),
    Case("workers-zero", env="MLFLOW_WORKERS=0\n", names=("MLFLOW_WORKERS",)),
    Case("workers-65", env="MLFLOW_WORKERS=65\n", names=("MLFLOW_WORKERS",)),
    Case("workers-fraction", env="MLFLOW_WORKERS=2.5\n", names=("MLFLOW_WORKERS",)),
    # booleans
    Case("auth-enabled-maybe", env="MLFLOW_AUTH_ENABLED=maybe\n", names=("MLFLOW_AUTH_ENABLED",)),
    Case("gc-enabled-on", env="MLFLOW_GC_ENABLED=on\n", names=("MLFLOW_GC_ENABLED",)),
    Case("mlflow-enabled-maybe", env="MLFLOW_ENABLED=maybe\n", names=("MLFLOW_ENABLED",)),
    Case("telemetry-enabled-off", env="MLFLOW_TELEMETRY_ENABLED=off\n", names=("MLFLOW_TELEMETRY_ENABLED (in .env line 4)",),
         also=("accepted: true, false",)),
    # versions
    Case("version-two-parts", env="MLFLOW_VERSION=2.9\n", names=("MLFLOW_VERSION",)),
    Case("version-latest", env="MLFLOW_VERSION=latest\n", names=("MLFLOW_VERSION",)),
    Case("version-v-prefix", env="MLFLOW_VERSION=v2.9.2\n", names=("MLFLOW_VERSION",)),
    Case(
        "version-unsupported",
        env="MLFLOW_VERSION=1.30.0\n",
        names=("MLFLOW_VERSION",),
        also=("MLFLOW_VERSION_UNSUPPORTED_OK",),
    ),
    Case("version-override-maybe", env="MLFLOW_VERSION_UNSUPPORTED_OK=maybe\n", names=("MLFLOW_VERSION_UNSUPPORTED_OK",)),
    # bucket names
    Case("bucket-upper-case", env="MLFLOW_ARTIFACTS_BUCKET=Upper_Case\n", names=("MLFLOW_ARTIFACTS_BUCKET",)),
    Case("bucket-too-short", env="MLFLOW_ARTIFACTS_BUCKET=ab\n", names=("MLFLOW_ARTIFACTS_BUCKET",)),
    Case("bucket-ip-address", env="MLFLOW_ARTIFACTS_BUCKET=192.168.1.1\n", names=("MLFLOW_ARTIFACTS_BUCKET",)),
    Case("bucket-double-dots", env="MLFLOW_ARTIFACTS_BUCKET=bad..dots\n", names=("MLFLOW_ARTIFACTS_BUCKET",)),
    # database and role names
    Case("db-name-leading-digit", env="MLFLOW_DB_NAME=1abc\n", names=("MLFLOW_DB_NAME",)),
    Case("db-name-dash", env="MLFLOW_DB_NAME=my-db\n", names=("MLFLOW_DB_NAME",)),
    Case("db-name-system", env="MLFLOW_DB_NAME=postgres\n", names=("MLFLOW_DB_NAME",)),
    Case("db-name-is-main-db", env="POSTGRES_DB=appdb\nMLFLOW_DB_NAME=appdb\n", names=("MLFLOW_DB_NAME",), also=("POSTGRES_DB",)),
    Case("db-user-reserved-prefix", env="MLFLOW_DB_USER=pg_admin\n", names=("MLFLOW_DB_USER",)),
    Case("db-user-public", env="MLFLOW_DB_USER=public\n", names=("MLFLOW_DB_USER",)),
    Case(
        "db-user-is-admin",
        env="POSTGRES_USER=stackadmin\nMLFLOW_DB_USER=stackadmin\n",
        names=("MLFLOW_DB_USER",),
        also=("POSTGRES_USER",),
    ),
    # stack
    Case("project-name-spaces", env="PROJECT_NAME=My Project\n", names=("PROJECT_NAME",)),
    Case("base-domain-underscore", env="BASE_DOMAIN=my_domain.com\n", names=("BASE_DOMAIN",)),
    Case("route-upper-case", env="MLFLOW_ROUTE=MLflow\n", names=("MLFLOW_ROUTE",)),
    Case("env-unknown", env="ENV=qa\n", names=("ENV",)),
    # cron
    Case("cron-minute-61", env="MLFLOW_GC_SCHEDULE=61 * * * *\n", names=("MLFLOW_GC_SCHEDULE",)),
    Case("cron-three-fields", env="MLFLOW_GC_SCHEDULE=0 3 *\n", names=("MLFLOW_GC_SCHEDULE",)),
    # model serving
    Case("serve-no-form", env="MLFLOW_SERVE_MODELS=production-classifier\n", names=("MLFLOW_SERVE_MODELS",),
         also=("NAME@ALIAS",)),
    Case("serve-empty-name", env="MLFLOW_SERVE_MODELS=@champion\n", names=("MLFLOW_SERVE_MODELS",),
         also=("empty model name",)),
    Case("serve-unknown-stage", env="MLFLOW_SERVE_MODELS=churn/Prod\n", names=("MLFLOW_SERVE_MODELS",)),
    Case("serve-duplicate-slug", env="MLFLOW_SERVE_MODELS=churn@Champion,churn@champion\n",
         names=("MLFLOW_SERVE_MODELS",), also=("mlflow-serve-churn-champion",)),
    Case("serve-empty-entry", env="MLFLOW_SERVE_MODELS=churn/1,,churn/2\n", names=("MLFLOW_SERVE_MODELS",)),
    Case("serve-slug-too-long", env=f"MLFLOW_SERVE_MODELS={'m' * 50}@champion\n", names=("MLFLOW_SERVE_MODELS",)),
    Case("serve-unpinned-package", env="MLFLOW_SERVE_PIP_PACKAGES=scikit-learn>=1.5\n",
         names=("MLFLOW_SERVE_PIP_PACKAGES",)),
    Case("serve-workers-zero", env="MLFLOW_SERVE_WORKERS=0\n", names=("MLFLOW_SERVE_WORKERS",)),
    Case("serve-timeout-text", env="MLFLOW_SERVE_TIMEOUT=1m\n", names=("MLFLOW_SERVE_TIMEOUT",)),
    Case("serve-memory-bytes", env="MLFLOW_SERVE_MEMORY_LIMIT=1024\n", names=("MLFLOW_SERVE_MEMORY_LIMIT",)),
    # unknown names
    Case("unknown-typo", env="MLFLOW_WORKER=2\n", names=("MLFLOW_WORKER",), also=("did you mean MLFLOW_WORKERS",)),
    Case("unknown-name", env="MLFLOW_FOO_BAR_BAZ=1\n", names=("MLFLOW_FOO_BAR_BAZ",)),
    # artifact locations
    Case(
        "default-root-while-serving",
        env="MLFLOW_DEFAULT_ARTIFACT_ROOT=s3://mlflow-artifacts/runs\n",
        names=("MLFLOW_DEFAULT_ARTIFACT_ROOT",),
        also=("MLFLOW_SERVE_ARTIFACTS",),
    ),
    Case(
        "default-root-other-bucket",
        env="MLFLOW_SERVE_ARTIFACTS=false\nMLFLOW_DEFAULT_ARTIFACT_ROOT=s3://elsewhere/runs\n",
        names=("MLFLOW_DEFAULT_ARTIFACT_ROOT",),
    ),
    Case(
        "artifacts-root-other-bucket",
        env="MLFLOW_ARTIFACTS_ROOT=s3://other-bucket/mlflow\n",
        names=("MLFLOW_ARTIFACTS_ROOT",),
        also=("MLFLOW_ARTIFACTS_BUCKET",),
    ),
    Case("s3-endpoint-not-url", env="S3_ENDPOINT=minio:9000\n", names=("S3_ENDPOINT",)),
    # an external S3 and its keys
    Case(
        "external-s3-without-keys",
        env="MINIO_ENABLED=false\nS3_ENDPOINT=https://s3.example.internal\n",
        names=("S3_ACCESS_KEY", "S3_SECRET_KEY"),
        also=("external S3", ".env.secrets"),
    ),
    Case(
        "external-s3-secret-without-access-key",
        env="MINIO_ENABLED=false\nS3_ENDPOINT=https://s3.example.internal\n",
        secrets="S3_SECRET_KEY=Sup3r-Secret-Value-<n>-s3\n",
        names=("S3_ACCESS_KEY",),
        secret_values=("Sup3r-Secret-Value-<n>-s3",),
    ),
    Case("s3-access-key-without-secret", env="S3_ACCESS_KEY=mlflow-writer\n", names=("S3_SECRET_KEY",)),
    Case(
        "s3-secret-without-access-key",
        secrets="S3_SECRET_KEY=Sup3r-Secret-Value-<n>-s3\n",
        names=("S3_ACCESS_KEY",),
        secret_values=("Sup3r-Secret-Value-<n>-s3",),
    ),
    Case("s3-access-key-spaces", env="S3_ACCESS_KEY=my key\n", names=("S3_ACCESS_KEY (in .env line 4)",),
         also=("3-128 letters",)),
    Case("s3-region-upper-case", env="S3_REGION=EU-West-1\n", names=("S3_REGION (in .env line 4)",),
         also=("us-east-1",)),
    Case(
        "s3-secret-dollar-unquoted",
        env="S3_ACCESS_KEY=mlflow-writer\n",
        secrets="S3_SECRET_KEY=Sup3r$Secret-Value-<n>-s3\n",
        names=("S3_SECRET_KEY (in .env.secrets line 5)",),
        also=("single quotes",),
        secret_values=("Sup3r$Secret-Value-<n>-s3",),
    ),
    Case(
        "s3-secret-with-tab",
        env="S3_ACCESS_KEY=mlflow-writer\n",
        secrets="S3_SECRET_KEY='Sup3r\tSecret-Value-<n>-s3'\n",
        names=("S3_SECRET_KEY (in .env.secrets line 5)",),
        secret_values=("Sup3r\tSecret-Value-<n>-s3",),
    ),
    # secrets
    Case("postgres-password-missing", drop=("POSTGRES_PASSWORD",), names=("POSTGRES_PASSWORD",), also=(".env.secrets",)),
    Case("minio-password-missing", drop=("MINIO_ROOT_PASSWORD",), names=("MINIO_ROOT_PASSWORD",)),
    Case(
        "secret-dollar-unquoted",
        secrets="MLFLOW_DB_PASSWORD=Sup3r$Secret-Value-<n>-dollar\n",
        names=("MLFLOW_DB_PASSWORD",),
        also=("single quotes",),
        secret_values=("Sup3r$Secret-Value-<n>-dollar",),
    ),
    Case(
        "secret-reference-double-quoted",
        secrets='POSTGRES_PASSWORD="Sup3r-${PWD}-Secret-Value-<n>-ref"\n',
        names=("POSTGRES_PASSWORD",),
        also=("single quotes",),
        secret_values=("Sup3r--Secret-Value-<n>-ref",),
    ),
    Case(
        "secret-escaped-quote-double-quoted",
        # Compose keeps the backslash of \' in double quotes; python-dotenv drops it.
        secrets="MINIO_ROOT_PASSWORD=\"Sup3r\\'Secret-Value-<n>-sq\"\n",
        names=("MINIO_ROOT_PASSWORD",),
        secret_values=("Sup3r'Secret-Value-<n>-sq", "Sup3r\\'Secret-Value-<n>-sq"),
    ),
    Case(
        "auth-password-too-short",
        env="MLFLOW_AUTH_ENABLED=true\n",
        secrets="MLFLOW_AUTH_PASSWORD=short1\n",
        names=("MLFLOW_AUTH_PASSWORD",),
        secret_values=("short1",),
    ),
    Case(
        "db-password-too-short",
        secrets="MLFLOW_DB_PASSWORD=sh0rt\n",
        names=("MLFLOW_DB_PASSWORD",),
        secret_values=("sh0rt",),
    ),
    Case(
        "auth-password-with-tab",
        env="MLFLOW_AUTH_ENABLED=true\n",
        secrets="MLFLOW_AUTH_PASSWORD='Sup3r\tSecret-Value-<n>-tab'\n",
        names=("MLFLOW_AUTH_PASSWORD",),
        secret_values=("Sup3r\tSecret-Value-<n>-tab",),
    ),
    Case(
        "postgres-password-with-newline-escape",
        secrets='POSTGRES_PASSWORD="Sup3r\\nSecret-Value-<n>-nl"\n',
        names=("POSTGRES_PASSWORD",),
        secret_values=("Sup3r\nSecret-Value-<n>-nl",),
    ),
    Case(
        "secret-referenced-by-a-setting",
        # A setting that borrows a secret must not print it back in "got ...".
        env="MLFLOW_PORT=${POSTGRES_PASSWORD}\n",
        names=("MLFLOW_PORT",),
    ),
    Case(
        "empty-password-hides-generated-one",
        env="MLFLOW_DB_PASSWORD=\n",
        drop=("MLFLOW_DB_PASSWORD",),
        names=("MLFLOW_DB_PASSWORD",),
    ),
    Case(
        "reference-cycle",
        env="MLFLOW_ROUTE=${ROUTE_ALIAS}\nROUTE_ALIAS=${MLFLOW_ROUTE}\n",
        names=("MLFLOW_ROUTE", "ROUTE_ALIAS"),
    ),
    # GraphQL through Hasura
    Case("graphql-enabled-maybe", env="MLFLOW_GRAPHQL_ENABLED=maybe\n", names=("MLFLOW_GRAPHQL_ENABLED",)),
    Case(
        "graphql-user-is-mlflow-user",
        env="MLFLOW_GRAPHQL_ENABLED=true\nMLFLOW_GRAPHQL_DB_USER=mlflow\n",
        names=("MLFLOW_GRAPHQL_DB_USER",),
        also=("MLFLOW_DB_USER",),
    ),
    Case("graphql-user-reserved-prefix", env="MLFLOW_GRAPHQL_DB_USER=pg_reader\n", names=("MLFLOW_GRAPHQL_DB_USER",)),
    Case(
        "graphql-password-not-url-safe",
        env="MLFLOW_GRAPHQL_ENABLED=true\n",
        secrets="MLFLOW_GRAPHQL_DB_PASSWORD=Sup3r@Secret-Value-<n>-at\n",
        names=("MLFLOW_GRAPHQL_DB_PASSWORD",),
        also=("connection URL",),
        secret_values=("Sup3r@Secret-Value-<n>-at",),
    ),
    Case(
        "graphql-password-too-short",
        env="MLFLOW_GRAPHQL_ENABLED=true\n",
        secrets="MLFLOW_GRAPHQL_DB_PASSWORD=g0-sh\n",
        names=("MLFLOW_GRAPHQL_DB_PASSWORD",),
        secret_values=("g0-sh",),
    ),
    # team accounts (MLFLOW_AUTH_MODE=mlflow)
    Case("auth-mode-unknown", env="MLFLOW_AUTH_ENABLED=true\nMLFLOW_AUTH_MODE=ldap\n", names=("MLFLOW_AUTH_MODE",),
         also=("accepted: nginx, mlflow",)),
    Case("auth-mode-mlflow-without-auth", env="MLFLOW_AUTH_MODE=mlflow\n", names=("MLFLOW_AUTH_MODE (in .env line 4)",),
         also=("MLFLOW_AUTH_ENABLED=true",)),
    Case("auth-default-permission-unknown",
         env="MLFLOW_AUTH_ENABLED=true\nMLFLOW_AUTH_MODE=mlflow\nMLFLOW_AUTH_DEFAULT_PERMISSION=WRITE\n",
         names=("MLFLOW_AUTH_DEFAULT_PERMISSION",), also=("NO_PERMISSIONS",)),
    Case("auth-default-permission-in-nginx-mode", env="MLFLOW_AUTH_ENABLED=true\nMLFLOW_AUTH_DEFAULT_PERMISSION=READ\n",
         names=("MLFLOW_AUTH_DEFAULT_PERMISSION (in .env line 5)",), also=("MLFLOW_AUTH_MODE=mlflow",)),
    Case(
        "auth-password-short-for-mlflow-mode",
        env="MLFLOW_AUTH_ENABLED=true\nMLFLOW_AUTH_MODE=mlflow\n",
        secrets="MLFLOW_AUTH_PASSWORD=Secret-11ch\n",
        names=("MLFLOW_AUTH_PASSWORD (in .env.secrets line 5)",),
        also=("at least 12 characters",),
        secret_values=("Secret-11ch",),
    ),
    Case("auth-mode-mlflow-on-3-3", env="MLFLOW_VERSION=3.3.2\nMLFLOW_AUTH_ENABLED=true\nMLFLOW_AUTH_MODE=mlflow\n",
         names=("MLFLOW_AUTH_MODE (in .env line 6)",), also=("3.4.0",)),
    Case("auth-mode-mlflow-db-name-too-long",
         env="MLFLOW_AUTH_ENABLED=true\nMLFLOW_AUTH_MODE=mlflow\nMLFLOW_DB_NAME=" + "m" * 60 + "\n",
         names=("MLFLOW_DB_NAME (in .env line 6)",), also=("at most 58 characters",)),
    Case("graphql-role-admin", env="MLFLOW_GRAPHQL_ROLE=admin\n", names=("MLFLOW_GRAPHQL_ROLE",)),
    Case("graphql-role-spaces", env="MLFLOW_GRAPHQL_ROLE=data team\n", names=("MLFLOW_GRAPHQL_ROLE",)),
    # Kubernetes: managed services, kustomize's reading of .env.secrets, the connection budget
    Case("kubernetes-with-minio", env="MLFLOW_KUBERNETES_ENABLED=true\n", names=("MLFLOW_KUBERNETES_ENABLED",)),
    Case(
        "kubernetes-auth-mode-mlflow",
        env=K8S_ENV + "MLFLOW_AUTH_ENABLED=true\nMLFLOW_AUTH_MODE=mlflow\n",
        secrets=K8S_SECRET,
        names=("MLFLOW_AUTH_MODE (in .env line 9)",),
        secret_values=("Sup3r-Secret-Value-<n>-s3",),
    ),
    Case(
        "kubernetes-connection-budget",
        env=K8S_ENV + "MLFLOW_WORKERS=4\nPOSTGRES_MAX_CONNECTIONS=150\n",
        secrets=K8S_SECRET,
        names=("POSTGRES_MAX_CONNECTIONS (in .env line 9)",),
        also=("162", "MLFLOW_HPA_MAX_REPLICAS"),
        secret_values=("Sup3r-Secret-Value-<n>-s3",),
    ),
    Case(
        "kubernetes-hpa-below-replicas",
        env=K8S_ENV + "MLFLOW_REPLICAS=5\nMLFLOW_HPA_MAX_REPLICAS=3\n",
        secrets=K8S_SECRET,
        names=("MLFLOW_HPA_MAX_REPLICAS",),
        secret_values=("Sup3r-Secret-Value-<n>-s3",),
    ),
    Case(
        "kubernetes-secret-quoted",
        env=K8S_ENV,
        secrets=K8S_SECRET + 'POSTGRES_PASSWORD="Sup3r-Secret-Value-<n>-quoted"\n',
        names=("POSTGRES_PASSWORD (in .env.secrets line 6)",),
        also=("kustomize",),
        secret_values=("Sup3r-Secret-Value-<n>-s3", "Sup3r-Secret-Value-<n>-quoted"),
    ),
    Case(
        "kubernetes-secret-outside-secrets-file",
        env=K8S_ENV + "POSTGRES_PASSWORD=Sup3r-Secret-Value-<n>-in-env\n",
        secrets=K8S_SECRET,
        names=("POSTGRES_PASSWORD (in .env line 8)",),
        secret_values=("Sup3r-Secret-Value-<n>-s3", "Sup3r-Secret-Value-<n>-in-env"),
    ),
    Case("kubernetes-image-with-tag", env="MLFLOW_IMAGE_REPOSITORY=registry.example.com/mlflow:v1\n",
         names=("MLFLOW_IMAGE_REPOSITORY",)),
    Case("kubernetes-cpu-request-text", env="MLFLOW_CPU_REQUEST=half\n", names=("MLFLOW_CPU_REQUEST",)),
    Case("kubernetes-replicas-zero", env="MLFLOW_REPLICAS=0\n", names=("MLFLOW_REPLICAS",)),
    # lines that do not parse: no variable to name, so the file and line
    Case("malformed-line", env="MLFLOW_PORT 5000\n", names=(".env line 4",)),
    Case("malformed-line-after-blank-lines", env="# server\n\n\nMLFLOW_PORT 5000\n", names=(".env line 7",)),
    Case(
        "malformed-secrets-line",
        secrets="MLFLOW_DB_PASSWORD='Sup3r-Secret-Value-<n>-unterminated\n",
        names=(".env.secrets line 5",),
        secret_values=("Sup3r-Secret-Value-<n>-unterminated",),
    ),
]


def _secrets_text(case: Case, n: int) -> str:
    lines = [f"{name}={value}\n" for name, value in base_secrets(n).items() if name not in case.drop]
    return "".join(lines) + case.secrets.replace("<n>", str(n))


def _run(project: Path, out: Path):
    result = run_generator("build", "--project-dir", project, "--out", out)
    return result, result.stdout + result.stderr


def _assert_rejected_quietly(result, output: str, out: Path, project: Path, secrets_before: bytes, secret_values):
    assert result.returncode == 2, output
    assert "Traceback" not in result.stdout
    assert "Traceback" not in result.stderr
    for value in secret_values:
        assert value not in output, f"secret value {value!r} shown:\n{output}"
    assert SECRET_MARKER not in output, f"part of a secret value shown:\n{output}"
    assert not out.exists(), f"out dir written: {sorted(p.name for p in out.rglob('*'))}"
    assert (project / ".env.secrets").read_bytes() == secrets_before
    assert sorted(p.name for p in project.iterdir()) == [".env", ".env.secrets"]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_env_is_rejected_with_a_clear_message(tmp_path, case, snapshot):
    n = CASES.index(case) + 1
    project = write_tree(
        tmp_path / "project",
        {".env": BASE_ENV + case.env.replace("<n>", str(n)), ".env.secrets": _secrets_text(case, n)},
    )
    secrets_before = (project / ".env.secrets").read_bytes()
    out = tmp_path / "out"

    result, output = _run(project, out)

    secret_values = [
        *(value for name, value in base_secrets(n).items() if name not in case.drop),
        *(value.replace("<n>", str(n)) for value in case.secret_values),
    ]
    _assert_rejected_quietly(result, output, out, project, secrets_before, secret_values)
    assert case.names, "every case names what it expects"
    for name in case.names:
        assert name in result.stderr, f"{name} not named:\n{result.stderr}"
    for text in case.also:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr}"
    # The whole message is part of the interface: a change of wording shows in review.
    assert error_golden(result.stderr, tmp_path) == snapshot(extension_class=error_extension("build", case.id))


def test_at_least_eighteen_cases_with_distinct_ids():
    assert len(CASES) >= 18
    assert len({case.id for case in CASES}) == len(CASES)


def test_every_problem_in_one_file_is_reported_in_one_run(tmp_path):
    n = 900
    problems = {
        "MLFLOW_PORT": "MLFLOW_PORT=abc\n",
        "MLFLOW_WORKERS": "MLFLOW_WORKERS=0\n",
        "MLFLOW_VERSION": "MLFLOW_VERSION=latest\n",
        "MLFLOW_AUTH_ENABLED": "MLFLOW_AUTH_ENABLED=maybe\n",
        "MLFLOW_ARTIFACTS_BUCKET": "MLFLOW_ARTIFACTS_BUCKET=Upper_Case\n",
        "MLFLOW_DB_NAME": "MLFLOW_DB_NAME=1abc\n",
        "MLFLOW_DB_USER": "MLFLOW_DB_USER=pg_admin\n",
        "MLFLOW_GC_SCHEDULE": "MLFLOW_GC_SCHEDULE=61 * * * *\n",
        "MLFLOW_WORKER": "MLFLOW_WORKER=3\n",
        "PROJECT_NAME": "PROJECT_NAME=myproject\nPOSTGRES_DB=mlflow_main\nPROJECT_NAME=My Project\n",
    }
    secret_problems = {
        "MLFLOW_AUTH_PASSWORD": "MLFLOW_AUTH_PASSWORD=short1\n",
        "MLFLOW_DB_PASSWORD": f"MLFLOW_DB_PASSWORD=Sup3r$Secret-Value-{n}-dollar\n",
    }
    project = write_tree(
        tmp_path / "project",
        {
            ".env": BASE_ENV + "".join(problems.values()),
            ".env.secrets": (
                f"POSTGRES_PASSWORD=Sup3r-Secret-Value-{n}-pg\n"
                f"MINIO_ROOT_PASSWORD=Sup3r-Secret-Value-{n}-minio\n" + "".join(secret_problems.values())
            ),
        },
    )
    secrets_before = (project / ".env.secrets").read_bytes()
    out = tmp_path / "out"

    result, output = _run(project, out)

    _assert_rejected_quietly(
        result,
        output,
        out,
        project,
        secrets_before,
        [f"Sup3r-Secret-Value-{n}-pg", f"Sup3r-Secret-Value-{n}-minio", "short1", f"Sup3r$Secret-Value-{n}-dollar"],
    )
    expected = [*problems, *secret_problems]
    lines = [line.strip() for line in result.stderr.splitlines()]
    for name in expected:
        naming = [line for line in lines if line.startswith((f"{name}:", f"{name} ("))]
        assert len(naming) == 1, f"{name}: {naming!r} in\n{result.stderr}"
    assert f"({len(expected)} problem(s))" in result.stderr, result.stderr
    assert "did you mean MLFLOW_WORKERS" in result.stderr
    assert "single quotes" in result.stderr


def test_unsupported_version_builds_with_the_override(tmp_path):
    n = 901
    project = write_tree(
        tmp_path / "project",
        {
            ".env": BASE_ENV + "MLFLOW_VERSION=1.30.0\nMLFLOW_VERSION_UNSUPPORTED_OK=true\n",
            ".env.secrets": "".join(f"{name}={value}\n" for name, value in base_secrets(n).items()),
        },
    )
    out = tmp_path / "out"

    result, output = _run(project, out)

    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert SECRET_MARKER not in output
    assert any(out.rglob("*")), "the build wrote its artifacts"


@pytest.mark.parametrize("also_broken", [False, True], ids=["valid", "with-another-problem"])
def test_mlflow_client_variables_are_not_reported_as_unknown(tmp_path, also_broken):
    n = 902
    client_variables = (
        "MLFLOW_TRACKING_URI=http://mlflow.local.nself.org\n"
        "MLFLOW_TRACKING_USERNAME=admin\n"
        "MLFLOW_EXPERIMENT_NAME=demo\n"
        "MLFLOW_S3_ENDPOINT_URL=http://minio:9000\n"
        "MLFLOW_DISABLE_TELEMETRY=true\n"
    )
    project = write_tree(
        tmp_path / "project",
        {
            ".env": BASE_ENV + client_variables + ("MLFLOW_PORT=abc\n" if also_broken else ""),
            ".env.secrets": "".join(f"{name}={value}\n" for name, value in base_secrets(n).items()),
        },
    )

    result, output = _run(project, tmp_path / "out")

    assert "Traceback" not in output
    assert "MLFLOW_TRACKING_URI" not in result.stderr
    assert "MLFLOW_TRACKING_USERNAME" not in result.stderr
    assert "MLFLOW_EXPERIMENT_NAME" not in result.stderr
    assert "MLFLOW_S3_ENDPOINT_URL" not in result.stderr
    assert "MLFLOW_DISABLE_TELEMETRY" not in result.stderr  # the README tells users to set it for their clients
    if also_broken:
        assert result.returncode == 2, output
        assert "MLFLOW_PORT" in result.stderr
        assert "(1 problem(s))" in result.stderr
    else:
        assert result.returncode == 0, output


def test_every_build_error_golden_file_belongs_to_a_case():
    from tests.snapshot_files import SNAPSHOTS_DIR

    present = {path.stem for path in (SNAPSHOTS_DIR / "errors" / "build").glob("*.txt")}
    assert present == {case.id for case in CASES}
