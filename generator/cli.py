"""`python -m generator`: the command line of the build.

The build's effects live here: reading the project's files, generating
passwords (saved to .env.secrets before anything is rendered, so the render
stays pure), printing and writing out/. Errors are raised, and
`generator.errors.run_cli` turns them into messages and exit codes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from generator import artifacts
from generator.envfiles import SECRETS_FILE, ProjectEnv, cascade, read_project_env
from generator.errors import UserError, run_cli
from generator.output import diff_outputs, write_outputs
from generator.projectfiles import append_secrets
from generator.settings import SALT_ALPHABET, Settings, load_settings, mlflow_enabled

# No pretty tracebacks: with local variables shown they would print secrets.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="nself's MLflow service: build its artifacts, and operate the running service.",
)

GENERATED_PASSWORD_BYTES = 32  # token_urlsafe(32) gives 43 URL-safe characters


@app.callback()
def _root() -> None:
    """nself's MLflow service."""


@app.command()
def build(
    project_dir: Path = typer.Option(Path("."), "--project-dir", help="The nself project holding the .env files."),
    env: Optional[str] = typer.Option(None, "--env", help="dev, staging or prod; default: ENV from the files, else dev."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where artifacts go; default: PROJECT_DIR/out."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 with a diff if out/ is not up to date."),
) -> None:
    """Render the MLflow artifacts from the project's env cascade."""
    out_dir = out if out is not None else project_dir / "out"
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out: {out_dir} exists and is not a directory")
    files, notices = _plan(project_dir, env, generate_passwords=not check)
    for notice in notices:
        typer.echo(notice, err=True)
    if check:
        difference = diff_outputs(out_dir, files)
        if difference:
            sys.stdout.write(difference)
            typer.echo(f"{out_dir}: out of date; run the build to update it", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out_dir}: up to date")
        return
    report = write_outputs(out_dir, files)
    _note_readable_htpasswd(out_dir, files)
    _note_kustomization_paths(project_dir, out_dir, files)
    typer.echo(
        f"{out_dir}: {len(report.written)} written, {len(report.unchanged)} unchanged, {len(report.removed)} removed"
    )


@app.command("settings")
def settings_command() -> None:
    """Print every setting with its default and what it accepts (the README's table)."""
    from generator.settings import settings_table

    typer.echo(settings_table(), nl=False)


def _note_kustomization_paths(project_dir: Path, out_dir: Path, files: dict[str, bytes]) -> None:
    """kubernetes/kustomization.yaml finds .env.secrets at ../../ : true only with out/ in the project."""
    from generator.artifacts.kubernetes import KUSTOMIZATION, SECRETS_ENV_FILE

    if KUSTOMIZATION in files and out_dir.resolve() != (project_dir / "out").resolve():
        typer.echo(
            f"{KUSTOMIZATION}: its secretGenerator reads {SECRETS_ENV_FILE}, the project's .env.secrets only when "
            f"the output is PROJECT_DIR/out (not {out_dir}); build without --out before applying it",
            err=True,
        )


def _note_readable_htpasswd(out_dir: Path, files: dict[str, bytes]) -> None:
    """Say once per build why the htpasswd is readable by others, until an operator narrows it."""
    from generator.artifacts.nginx import HTPASSWD_PATH

    path = out_dir / HTPASSWD_PATH
    if HTPASSWD_PATH in files and path.stat().st_mode & 0o004:
        typer.echo(
            f"{HTPASSWD_PATH}: mode 0644, because nginx's workers read it on every request; it holds a salted "
            "hash, not the password. To hide it from other local users: chgrp <workers' group> and chmod 0640 "
            "(rebuilds keep both)",
            err=True,
        )


def _plan(project_dir: Path, env: str | None, generate_passwords: bool) -> tuple[dict[str, bytes], list[str]]:
    if not project_dir.is_dir():
        raise UserError(f"--project-dir: {project_dir} is not a directory")
    project_env = read_project_env(project_dir, env)
    if not mlflow_enabled(project_env):
        return {}, []
    settings = load_settings(project_env)
    notices = []
    missing = settings.missing_generated
    if missing:
        if not generate_passwords:
            raise UserError(
                f"{', '.join(missing)}: not set yet; a build generates and saves {'them' if len(missing) > 1 else 'it'}"
                f" to {SECRETS_FILE}, so run it without --check first"
            )
        _refuse_hidden_secrets(project_env, missing)
        append_secrets(project_dir / SECRETS_FILE, {name: _generate(name) for name in missing})
        notices.append(f"generated {', '.join(missing)} and saved to {SECRETS_FILE}")
        project_env = read_project_env(project_dir, env)
        settings = load_settings(project_env)
        if settings.missing_generated:
            raise UserError(f"{', '.join(settings.missing_generated)}: still unset after saving to {SECRETS_FILE}")
    notices.append(_store_notice(settings))
    if settings.monitoring.enabled and not settings.minio_auto_enabled and not settings.external_s3:
        notices.append(
            "MONITORING_ENABLED: the MinIO scrape jobs need MINIO_PROMETHEUS_AUTH_TYPE=public on nself's minio service"
        )
    return artifacts.build(settings), notices


def _store_notice(settings: Settings) -> str:
    """One line saying where MLflow keeps its artifacts, and with which keys."""
    endpoint = settings.storage.endpoint.rstrip("/")
    keys = "S3_ACCESS_KEY and S3_SECRET_KEY" if settings.storage.access_key else "the MinIO root keys"
    if settings.external_s3:
        return (
            f"artifact store: external S3 at {endpoint} (S3_ENDPOINT, region {settings.storage.region}), "
            f"signed with {keys}; no minio service is added"
        )
    if settings.minio_auto_enabled:
        return (
            f"artifact store: MinIO, signed with {keys}. MINIO_ENABLED is not true and S3_ENDPOINT is the default, "
            "so MinIO is turned on (docker-compose.mlflow.yml adds a minio service)"
        )
    return f"artifact store: nself's MinIO (MINIO_ENABLED=true) at {endpoint}, signed with {keys}"


def _refuse_hidden_secrets(project_env: ProjectEnv, missing: tuple[str, ...]) -> None:
    """A later file's empty NAME= would hide a password saved to .env.secrets."""
    order = cascade(project_env.env)
    problems = []
    for name in missing:
        origin = project_env.origins.get(name)
        if origin is not None and order.index(origin.source) > order.index(SECRETS_FILE):
            problems.append(
                f"{name} (in {origin.source} line {origin.line}): is empty, and {origin.source} is read after "
                f"{SECRETS_FILE}, so it would hide the generated password; accepted: delete that line, "
                "or set a password there"
            )
    if problems:
        raise UserError("\n".join(problems))


def _generate(name: str) -> str:
    import secrets

    if name == "MLFLOW_AUTH_HASH_SALT":
        alphabet = SALT_ALPHABET
        return "".join(secrets.choice(alphabet) for _ in range(21)) + secrets.choice(".Oeu")
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


# `python -m generator service ACTION`: what `nself service mlflow ACTION` runs.
# Imported only when used: the service commands pull in HTTP, TLS and
# archive modules that `build` never needs, and `build` runs on every
# `nself build`.
@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def service(context: typer.Context) -> None:
    """Operate the running service: status, info, experiments, models, open, logs, gc, export, import, backup, restore, db-dump."""
    from service.commands import app as service_app

    service_app(args=context.args, prog_name="python -m generator service")


def main() -> None:
    """The `nself-mlflow` console script and `python -m generator`."""
    run_cli(lambda: app(prog_name="python -m generator"))
