"""`python -m generator service ACTION`: the typer wiring of the commands behind `nself service mlflow …`.

The REST questions live in queries.py, docker compose in compose.py, where
the backup tools run in tools.py, backup and restore in backup/; this module parses options,
prints, and picks exit codes for healthy/unhealthy answers.

They read the project's env cascade, as `build` does, so they know the URLs,
credentials and names without flags. Exit codes: 0 done (or healthy), 1 the
server or a tool failed (one line naming it and the likely fix), 2 bad input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import webbrowser
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from generator.artifacts import compose as compose_artifact
from generator.artifacts import serving as serving_artifact
from generator.errors import NotEnabledError, UserError, run_cli
from service import transfer
from service import compose, queries, tools
from service.api import ServiceError
from service.compose import docker_reachable, parse_ps
from service.project import enabled_services, load_project

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Operate the MLflow service of an nself project (what `nself service mlflow …` runs).",
)

MASK = "********"

ProjectDirOption = Annotated[Path, typer.Option("--project-dir", help="The nself project holding the .env files.")]
EnvOption = Annotated[Optional[str], typer.Option("--env", help="dev, staging or prod; default: ENV from the files.")]
UrlOption = Annotated[
    Optional[str],
    typer.Option("--url", help="The MLflow server; default: http://localhost:MLFLOW_PORT (the port bound on the host)."),
]
CaFileOption = Annotated[Optional[Path], typer.Option("--ca-file", help="CA bundle for an https --url.")]
InsecureOption = Annotated[bool, typer.Option("--insecure", help="Do not verify the certificate of an https --url.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
OutDirOption = Annotated[
    Optional[Path],
    typer.Option("--out", help="Where the build put docker-compose.mlflow.yml; default: the project, else PROJECT_DIR/out."),
]






def _time(milliseconds: Any) -> str:
    if not milliseconds:
        return "-"
    moment = datetime.fromtimestamp(int(milliseconds) / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def print_table(headers: list[str] | None, rows: list[list[Any]]) -> None:
    cells = [[str(value) for value in row] for row in rows]
    columns = len(headers) if headers else len(cells[0])
    widths = [max([len(headers[i]) if headers else 0] + [len(row[i]) for row in cells]) for i in range(columns)]
    for row in ([headers] if headers else []) + cells:
        typer.echo("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


# -- status ----------------------------------------------------------------



@app.command()
def status(
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    public_url: Annotated[Optional[str], typer.Option("--public-url", help="Default: https://MLFLOW_ROUTE.BASE_DOMAIN.")] = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
    out: OutDirOption = None,
) -> None:
    """Containers, /health (public URL and direct) and the server version. Exit 0 only when healthy."""
    try:
        project = load_project(project_dir, env)
    except NotEnabledError:
        typer.echo("MLflow: not enabled (MLFLOW_ENABLED is not true)")
        raise typer.Exit(1) from None
    healthy = True
    typer.echo(f"MLflow: enabled, MLFLOW_VERSION {project.settings.server.version}")

    reachable, reason = docker_reachable()
    if reachable:
        compose_project = project.compose(out)
        result = subprocess.run(compose_project.argv("ps", "--all", "--format", "json", *enabled_services(project)),
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            healthy = False
            typer.echo(f"containers: docker compose ps failed: {result.stderr.strip()[-300:]}")
        else:
            containers = {item.get("Service"): item for item in parse_ps(result.stdout)}
            for service in enabled_services(project):
                item = containers.get(service)
                state = compose.container_state(service, item)
                healthy &= state[0]
                typer.echo(f"container {service}: {state[1]}")
    else:
        typer.echo(f"containers: unknown, {reason}")

    checks = [("direct", project.api(url)), ("public", project.api(public_url or project.public_url, ca_file, insecure))]
    for label, api in checks:
        ok, detail = queries.health(api)
        healthy &= ok
        typer.echo(f"health ({label}, {api.base_url}): {'OK' if ok else 'FAILED: ' + detail}")

    try:
        version = project.api(url).text("/version")
        note = "" if version == str(project.settings.server.version) else \
            f" (MLFLOW_VERSION is {project.settings.server.version}: run nself build and restart mlflow)"
        typer.echo(f"version: {version}{note}")
    except ServiceError as error:
        healthy = False
        typer.echo(f"version: unknown ({error.message})")
    raise typer.Exit(0 if healthy else 1)






# -- info --------------------------------------------------------------------

@app.command()
def info(
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    show_secrets: Annotated[bool, typer.Option("--show-secrets", help="Print passwords instead of masking them.")] = False,
    as_json: JsonOption = False,
) -> None:
    """URLs, tracking URIs, database, bucket and auth of this project's MLflow."""
    project = load_project(project_dir, env)
    settings = project.settings

    def secret(value) -> str | None:
        if value is None:
            return None
        return value.get_secret_value() if show_secrets else MASK

    data = {
        "ui_url": project.public_url,
        "tracking_uri_in_docker_network": f"http://mlflow:{compose_artifact.CONTAINER_PORT}",
        "tracking_uri_from_host": project.direct_url,
        "mlflow_version": str(settings.server.version),
        "database": {"host": settings.database.host, "name": settings.database.name, "user": settings.database.user,
                     "password": secret(settings.database.password)},
        "artifacts": {"bucket": settings.storage.bucket, "destination": settings.artifacts_destination,
                      "served_by_mlflow": settings.storage.serve_artifacts, "s3_endpoint": settings.storage.endpoint},
        "auth": {"enabled": settings.auth.enabled,
                 "username": settings.auth.username if settings.auth.enabled else None,
                 "password": secret(settings.auth.password) if settings.auth.enabled else None},
        "gc": {"enabled": settings.gc.enabled, "schedule": settings.gc.schedule if settings.gc.enabled else None},
        "model_endpoints": [
            {"reference": reference.text,
             "url_in_docker_network": f"{serving_artifact.internal_url(reference)}/invocations",
             "public_url": f"{project.public_url}{serving_artifact.public_path(reference)}invocations"}
            for reference in settings.serving.models
        ],
    }
    if as_json:
        print_json(data)
        return
    rows = [
        ["UI", data["ui_url"]],
        ["Tracking URI (Docker network)", data["tracking_uri_in_docker_network"]],
        ["Tracking URI (host)", data["tracking_uri_from_host"]],
        ["MLflow version", data["mlflow_version"]],
        ["Database", f"{settings.database.name} on {settings.database.host}, user {settings.database.user}"],
        ["Database password", data["database"]["password"] or "not generated yet (run nself build)"],
        ["Artifacts", f"bucket {settings.storage.bucket} ({settings.artifacts_destination}), "
                      f"{'proxied by MLflow' if settings.storage.serve_artifacts else 'clients use S3 directly'}"],
        ["Auth", (f"MLflow's users, admin {settings.auth.username}" if settings.auth.mlflow_mode
                  else f"basic auth, user {settings.auth.username}" if settings.auth.enabled else "off")],
    ]
    if settings.auth.enabled:
        rows.append(["Auth password", data["auth"]["password"] or "not generated yet (run nself build)"])
    rows.append(["Garbage collection", f"'{settings.gc.schedule}' (UTC)" if settings.gc.enabled else "off"])
    for endpoint in data["model_endpoints"]:
        rows.append([f"Model {endpoint['reference']}", endpoint["public_url"]])
        rows.append(["  in the Docker network", endpoint["url_in_docker_network"]])
    print_table(None, rows)


# -- experiments and models --------------------------------------------------





@app.command()
def experiments(
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
    as_json: JsonOption = False,
) -> None:
    """Every experiment (deleted ones too): id, name, stage, number of runs, last update."""
    project = load_project(project_dir, env)
    found = queries.list_experiments(project.api(url, ca_file, insecure))
    if as_json:
        print_json(found)
        return
    print_table(["ID", "NAME", "STAGE", "RUNS", "LAST UPDATE (UTC)"],
                [[e["experiment_id"], e["name"], e["lifecycle_stage"], e["runs"], _time(e["last_update_time"])]
                 for e in found])




@app.command()
def models(
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
    as_json: JsonOption = False,
) -> None:
    """Registered models with their latest version per stage, and their aliases."""
    project = load_project(project_dir, env)
    found = queries.list_models(project.api(url, ca_file, insecure))
    if as_json:
        print_json(found)
        return

    def pairs(mapping: dict) -> str:
        return ", ".join(f"{key}: v{value}" for key, value in mapping.items()) or "-"

    print_table(["NAME", "LATEST VERSIONS", "ALIASES", "LAST UPDATE (UTC)"],
                [[m["name"], pairs(m["latest_versions"]), pairs(m["aliases"]), _time(m["last_updated_timestamp"])]
                 for m in found])


# -- open, logs, gc ----------------------------------------------------------

@app.command("open")
def open_ui(
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: Annotated[Optional[str], typer.Option("--url", help="Default: the public URL.")] = None,
) -> None:
    """Open the web UI in a browser; print its URL where there is none."""
    project = load_project(project_dir, env)
    target = url or project.public_url
    typer.echo(target)
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        typer.echo("no browser available here: open the URL above", err=True)
        return
    browser.open(target)




@app.command()
def logs(
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[Optional[str], typer.Option("--tail", help="Lines from the end: a number or 'all'.")] = None,
    out: OutDirOption = None,
) -> None:
    """The mlflow container's logs (docker compose logs mlflow)."""
    project = load_project(project_dir, env)
    if tail is not None and tail != "all" and not tail.isdigit():
        raise UserError(f"--tail: {tail!r} must be a number of lines or 'all'")
    options = (["--follow"] if follow else []) + (["--tail", tail] if tail is not None else [])
    raise typer.Exit(compose.run_attached(project.compose(out).argv("logs", *options, "mlflow")))




@app.command()
def gc(
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    older_than: Annotated[Optional[str], typer.Option("--older-than", help="Only runs deleted longer ago, e.g. 30d or 1d2h.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Run mlflow gc here instead of in the mlflow-gc container.")] = False,
    backend_store_uri: Annotated[Optional[str], typer.Option("--backend-store-uri", help="With --local: the database, e.g. postgresql://mlflow@localhost:5432/mlflow.")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="With --local: the server that deletes proxied artifacts; default http://localhost:MLFLOW_PORT.")] = None,
    out: OutDirOption = None,
) -> None:
    """Delete runs in the deleted stage now: the mlflow-gc service's command, run once."""
    project = load_project(project_dir, env)
    if older_than is not None and not _valid_duration(older_than):
        raise UserError(f"--older-than: {older_than!r} must be a duration in #d#h#m#s form, such as 30d or 1d12h")
    if not local:
        if backend_store_uri or tracking_uri:
            raise UserError("--backend-store-uri and --tracking-uri go with --local")
        command = ["python", "-m", "init.gc", "--once", "--", *tools.gc_command(project.settings, older_than)]
        raise typer.Exit(compose.run_attached(project.compose(out).argv("run", "--rm", "mlflow-gc", *command)))
    if not backend_store_uri:
        raise UserError("--local needs --backend-store-uri, the database as seen from here "
                        "(for example postgresql://mlflow@localhost:5432/mlflow)")
    environment = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri or project.direct_url}
    if project.settings.database.password is not None:
        environment.setdefault("PGPASSWORD", project.settings.database.password.get_secret_value())
    command = [sys.executable, "-m", "init.gc", "--once", "--",
               *tools.gc_command(project.settings, older_than, backend_store_uri)]
    raise typer.Exit(subprocess.run(command, env=environment).returncode)


def _valid_duration(text: str) -> bool:
    import re

    return bool(re.fullmatch(r"(?:[0-9]+(?:\.[0-9]+)?[dhms])+", text))


# -- export and import -------------------------------------------------------

@app.command()
def export(
    experiment: Annotated[str, typer.Option("--experiment", help="The experiment's name.")],
    output: Annotated[Path, typer.Option("--output", help="The directory to write; rerun to resume.")],
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Write an experiment, its runs (full metric histories) and their artifacts to a directory."""
    project = load_project(project_dir, env)
    api = project.api(url, ca_file, insecure)
    summary = transfer.export_experiment(api, experiment, output, progress=_progress())
    typer.echo(f"exported experiment {experiment!r} to {output}: {summary}")


@app.command("import")
def import_(
    input_dir: Annotated[Path, typer.Option("--input", help="A directory written by export.")],
    experiment: Annotated[Optional[str], typer.Option("--experiment", help="Name for the new experiment; default: the exported name.")] = None,
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Recreate an exported experiment as a new one: runs, params, tags, metric histories, artifacts."""
    project = load_project(project_dir, env)
    api = project.api(url, ca_file, insecure)
    summary = transfer.import_experiment(api, input_dir, experiment, progress=_progress())
    typer.echo(f"imported {input_dir}: {summary}")


def _progress():
    """A progress callback for a terminal; nothing when output goes to a file or pipe."""
    if not sys.stderr.isatty():
        return None

    def report(done: int, total: int, label: str) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
        sys.stderr.flush()

    return report


# -- model serving -------------------------------------------------------------------

serve_app = typer.Typer(no_args_is_help=True, help="The model endpoints of MLFLOW_SERVE_MODELS: status, reload, requirements.")
app.add_typer(serve_app, name="serve")


def _served_references(project):
    references = project.settings.serving.models
    if not references:
        raise UserError("MLFLOW_SERVE_MODELS: no model is served in this project; set it to NAME@ALIAS, "
                        "NAME/STAGE or NAME/VERSION references")
    return references


def _pick(references, slug: str | None):
    if slug is None:
        return references
    chosen = [reference for reference in references if reference.slug == slug]
    if not chosen:
        raise UserError(f"{slug!r}: no endpoint of that name; accepted: {', '.join(r.slug for r in references)}")
    return chosen


@serve_app.command("status")
def serve_status(
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
    as_json: JsonOption = False,
    out: OutDirOption = None,
) -> None:
    """Each endpoint: its reference, the version it serves (its log line), the version the reference names now,
    and its health. Exit 1 if any endpoint is unhealthy, failed or stale."""
    from service import serving

    project = load_project(project_dir, env)
    references = _served_references(project)
    reachable, reason = docker_reachable()
    compose_project = project.compose(out) if reachable else None
    states = serving.endpoint_states(references, project.api(url, ca_file, insecure), compose_project)
    if as_json:
        typer.echo(serving.states_as_json(states))
    else:
        if compose_project is None:
            typer.echo(f"containers: unknown, {reason}: the version served and the health need docker")
        print_table(["ENDPOINT", "REFERENCE", "SERVING", "RESOLVES TO", "HEALTH", "PROBLEMS"],
                    [[state.service, state.reference.text, state.serving or "-", state.resolves_to or "-",
                      state.health, "; ".join(state.problems) or "-"] for state in states])
    raise typer.Exit(1 if any(state.problems for state in states) else 0)


@serve_app.command("reload")
def serve_reload(
    slug: Annotated[Optional[str], typer.Argument(help="One endpoint (its slug); default: every endpoint.")] = None,
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    out: OutDirOption = None,
) -> None:
    """Serve what each reference names now: a new container starts and becomes healthy before the old one stops."""
    from service import serving

    project = load_project(project_dir, env)
    chosen = _pick(_served_references(project), slug)
    compose.require_docker()
    for reference in chosen:
        typer.echo(serving.reload_endpoint(project.compose(out), reference, typer.echo))


@serve_app.command("requirements")
def serve_requirements(
    reference: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME/STAGE or NAME/VERSION.")],
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Print the requirements.txt the model version was logged with, to pin them in MLFLOW_SERVE_PIP_PACKAGES."""
    from service import serving

    parsed = serving.parse_reference(reference)
    project = load_project(project_dir, env)
    version, text = serving.requirements_text(project.api(url, ca_file, insecure), parsed)
    typer.echo(f"# {parsed.text}: version {version}", err=True)
    typer.echo(text, nl=not text.endswith("\n"))


# -- backup, restore and db-dump ---------------------------------------------------

DirectOption = Annotated[bool, typer.Option(
    "--direct", help="Reach PostgreSQL and S3 from here (local pg_dump/psql, boto3) instead of through docker compose.")]
DbHostOption = Annotated[str, typer.Option("--db-host", help="With --direct: the PostgreSQL host.")]
DbPortOption = Annotated[Optional[int], typer.Option("--db-port", help="With --direct: the PostgreSQL port; default POSTGRES_PORT.")]
PgBindirOption = Annotated[Optional[Path], typer.Option(
    "--pg-bindir", help="With --direct: where pg_dump, pg_restore and psql are; default: PATH.")]
S3EndpointOption = Annotated[Optional[str], typer.Option(
    "--s3-endpoint", help="The S3 endpoint as seen from here; default http://localhost:MINIO_PORT, "
                          "or S3_ENDPOINT for an external S3.")]










@app.command()
def backup(
    output: Annotated[Path, typer.Option("--output", help="The archive to write: .tar, or .tar.gz to compress.")],
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    direct: DirectOption = False,
    db_host: DbHostOption = "localhost",
    db_port: DbPortOption = None,
    pg_bindir: PgBindirOption = None,
    s3_endpoint: S3EndpointOption = None,
    out: OutDirOption = None,
) -> None:
    """One archive: a pg_dump of the MLflow database, every object of the bucket, and a manifest of checksums."""
    from service.backup import create_backup

    project = load_project(project_dir, env)
    postgres = tools.postgres_tools(project, direct, db_host, db_port, pg_bindir, out)
    bucket = tools.artifact_bucket(project, s3_endpoint)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    auth_postgres = tools.auth_postgres_tools(project, postgres)
    result = create_backup(postgres, bucket, output, str(project.settings.server.version), created,
                           progress=_progress(), auth_postgres=auth_postgres)
    for key in result.skipped:
        typer.echo(f"note: {key} was deleted while the backup ran; it is not in the archive")
    typer.echo(f"backup written to {output}: database {postgres.database} ({_megabytes(result.dump_bytes)}, "
               f"schema revision {result.schema_revision or 'none: empty database'}), "
               f"{result.objects} objects ({_megabytes(result.object_bytes)}) from bucket {bucket.name}"
               f"{f', and the users of database {auth_postgres.database}' if auth_postgres else ''}")


@app.command()
def restore(
    input_file: Annotated[Path, typer.Option("--input", help="An archive written by backup.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty database and bucket.")] = False,
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    direct: DirectOption = False,
    db_host: DbHostOption = "localhost",
    db_port: DbPortOption = None,
    pg_bindir: PgBindirOption = None,
    s3_endpoint: S3EndpointOption = None,
    mlflow_python: Annotated[Optional[Path], typer.Option(
        "--mlflow-python", help="With --direct: a Python with the pinned MLflow, to check the schema revision.")] = None,
    out: OutDirOption = None,
) -> None:
    """Verify every checksum, then restore the database and the bucket, then check them against the manifest."""
    from service.backup import plan_restore, restore_backup

    project = load_project(project_dir, env)
    postgres = tools.postgres_tools(project, direct, db_host, db_port, pg_bindir, out)
    bucket = tools.artifact_bucket(project, s3_endpoint)
    check = tools.schema_checker(project, direct, mlflow_python, out)
    plan = plan_restore(input_file, postgres, bucket, force, check, progress=_progress())
    stopped = [] if direct else enabled_services(project)
    stopped = [service for service in stopped if service != "mlflow-init"]
    if stopped:
        compose.compose_quietly(project.compose(out), "stop", *stopped)
    # Started again either way; mlflow waits for mlflow-init, which migrates an older schema first.
    try:
        auth_postgres = tools.auth_postgres_tools(project, postgres)
        if plan.manifest.get("auth") and auth_postgres is None:
            typer.echo("note: the archive holds MLflow's users and permissions, which this project does not use "
                       "(MLFLOW_AUTH_MODE is not mlflow): they are not restored")
        elif auth_postgres is not None and not plan.manifest.get("auth"):
            typer.echo(f"note: the archive holds no users (it was made without MLFLOW_AUTH_MODE=mlflow): "
                       f"database {auth_postgres.database} keeps its own")
            auth_postgres = None
        summary = restore_backup(input_file, plan, postgres, bucket, progress=_progress(), auth_postgres=auth_postgres)
    except BaseException as failure:
        if stopped:
            tools.restart_services(project, out, stopped, after=failure)
        raise
    if stopped:
        tools.restart_services(project, out, stopped)
    revision = summary["schema_revision"]
    typer.echo(f"restored {input_file}: database {postgres.database} (schema revision {revision or 'none'}), "
               f"{summary['objects']} objects ({_megabytes(summary['bytes'])}) in bucket {bucket.name}; "
               "checked against the manifest")
    head = getattr(check, "head", None)
    if revision and head and revision != head:
        typer.echo(f"the schema is older than MLflow {project.settings.server.version}'s ({head}): "
                   "mlflow-init migrates it before mlflow starts")


@app.command("db-dump")
def db_dump(
    output: Annotated[Path, typer.Option("--output", help="The plain SQL file to write.")],
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    direct: DirectOption = False,
    db_host: DbHostOption = "localhost",
    db_port: DbPortOption = None,
    pg_bindir: PgBindirOption = None,
    out: OutDirOption = None,
) -> None:
    """A plain SQL dump of the MLflow database (what `nself db dump --database mlflow` writes)."""
    from service.backup import dump_sql

    project = load_project(project_dir, env)
    postgres = tools.postgres_tools(project, direct, db_host, db_port, pg_bindir, out)
    size = dump_sql(postgres, output)
    typer.echo(f"database {postgres.database} dumped to {output} ({_megabytes(size)})")




# -- users (MLFLOW_AUTH_MODE=mlflow) ----------------------------------------------

users_app = typer.Typer(no_args_is_help=True, help="MLflow's users and their permissions (MLFLOW_AUTH_MODE=mlflow).")
app.add_typer(users_app, name="users")

PasswordStdinOption = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of stdin instead of generating one.")]


def _users(project_dir: Path, env: str | None, url: str | None, ca_file: Path | None, insecure: bool):
    from service.users import Users

    project = load_project(project_dir, env)
    auth = project.settings.auth
    if not auth.mlflow_mode:
        raise UserError("MLFLOW_AUTH_MODE: users and permissions are MLflow's only with MLFLOW_AUTH_ENABLED=true and "
                        "MLFLOW_AUTH_MODE=mlflow; this project "
                        f"{'checks one nginx account' if auth.enabled else 'has auth off'}")
    return project, Users(project.api(url, ca_file, insecure), project.settings.server.version)


_OTHER_ADMIN = "to make another user the stack's admin, set MLFLOW_AUTH_USERNAME, then run nself build and nself start"
_ADMIN_PASSWORD = "to change it, set MLFLOW_AUTH_PASSWORD in .env.secrets, then run nself build and nself start"


def _not_the_admin(project, username: str, advice: str) -> None:
    """The cascade owns the admin: mlflow-init would undo a change made here."""
    if username == project.settings.auth.username:
        raise UserError(f"{username}: is the admin of MLFLOW_AUTH_USERNAME, which mlflow-init keeps as the env files "
                        f"say; {advice}")


def _new_password(password_stdin: bool) -> tuple[str, bool]:
    """(password, generated)."""
    from service.users import check_password, generate_password

    if password_stdin:
        return check_password(sys.stdin.readline().rstrip("\r\n")), False
    return generate_password(), True


@users_app.command("list")
def users_list(
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
    as_json: JsonOption = False,
    direct: DirectOption = False,
    db_host: DbHostOption = "localhost",
    db_port: DbPortOption = None,
    pg_bindir: PgBindirOption = None,
    out: OutDirOption = None,
) -> None:
    """Every user and whether it is an admin. Before MLflow 3.10 (no users/list) they are read from the auth
    database, in the postgres container (or --direct)."""
    project, users = _users(project_dir, env, url, ca_file, insecure)
    found = users.list()
    if found is None:
        postgres = tools.auth_postgres_tools(project, tools.postgres_tools(project, direct, db_host, db_port,
                                                                            pg_bindir, out))
        try:
            rows = postgres.query("SELECT username, is_admin FROM users ORDER BY username")
        except Exception as error:  # BackupError: one line naming the tool
            raise ServiceError(str(error)) from None
        found = [{"username": line.split("|")[0], "is_admin": line.split("|")[1] == "t"}
                 for line in rows.splitlines() if "|" in line]
    found = [{"username": user["username"], "is_admin": bool(user["is_admin"])} for user in found]
    if as_json:
        print_json(found)
        return
    print_table(["USER", "ADMIN"], [[user["username"], "yes" if user["is_admin"] else "no"] for user in found])


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The new user's name.")],
    password_stdin: PasswordStdinOption = False,
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Add a user. Without --password-stdin a password is generated and printed once, on stdout."""
    _project, users = _users(project_dir, env, url, ca_file, insecure)
    password, generated = _new_password(password_stdin)
    users.add(name, password)
    typer.echo(f"user {name} added", err=True)
    if generated:
        typer.echo(password)


@users_app.command("remove")
def users_remove(
    name: Annotated[str, typer.Argument(help="The user to remove.")],
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Remove a user and its permissions."""
    project, users = _users(project_dir, env, url, ca_file, insecure)
    _not_the_admin(project, name, _OTHER_ADMIN)
    users.remove(name)
    typer.echo(f"user {name} removed")


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="The user whose password changes.")],
    password_stdin: PasswordStdinOption = False,
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Set a new password. Without --password-stdin one is generated and printed once, on stdout."""
    project, users = _users(project_dir, env, url, ca_file, insecure)
    _not_the_admin(project, name, _ADMIN_PASSWORD)
    password, generated = _new_password(password_stdin)
    users.set_password(name, password)
    typer.echo(f"password of {name} changed", err=True)
    if generated:
        typer.echo(password)


@users_app.command("admin")
def users_admin(
    name: Annotated[str, typer.Argument(help="The user.")],
    state: Annotated[str, typer.Argument(help="on or off.")],
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Make a user an admin (every permission, and user management), or not."""
    if state not in ("on", "off"):
        raise UserError(f"STATE: {state!r}; accepted: on, off")
    project, users = _users(project_dir, env, url, ca_file, insecure)
    _not_the_admin(project, name, _OTHER_ADMIN)
    users.set_admin(name, state == "on")
    typer.echo(f"{name} is {'now' if state == 'on' else 'no longer'} an admin")


@users_app.command("grant")
def users_grant(
    name: Annotated[str, typer.Argument(help="The user.")],
    kind: Annotated[str, typer.Argument(help="experiment or model.")],
    target: Annotated[str, typer.Argument(help="The experiment's or registered model's name.")],
    permission: Annotated[str, typer.Argument(help="READ, EDIT, MANAGE or NO_PERMISSIONS.")],
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Give a user a permission on one experiment or registered model (replacing the one it had there)."""
    from service.users import check_kind, check_permission

    check_kind(kind)
    check_permission(permission)
    _project, users = _users(project_dir, env, url, ca_file, insecure)
    resolved = users.target(kind, target)
    outcome = users.grant(name, resolved, permission)
    typer.echo(f"{name}: {permission} on {kind} {target!r} {outcome}")


@users_app.command("revoke")
def users_revoke(
    name: Annotated[str, typer.Argument(help="The user.")],
    kind: Annotated[str, typer.Argument(help="experiment or model.")],
    target: Annotated[str, typer.Argument(help="The experiment's or registered model's name.")],
    permission: Annotated[Optional[str], typer.Argument(
        help="Optional: the permission you expect it to have there; refused if it has another.")] = None,
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Take back a user's own permission on one experiment or registered model: MLFLOW_AUTH_DEFAULT_PERMISSION
    applies again."""
    from service.users import check_kind, check_permission

    check_kind(kind)
    if permission is not None:
        check_permission(permission)
    _project, users = _users(project_dir, env, url, ca_file, insecure)
    resolved = users.target(kind, target)
    if permission is not None:
        held = {(row["kind"], row["id"]): row["permission"] for row in users.permissions(name)}
        current = held.get((kind, resolved.resource_id))
        if current != permission:
            raise UserError(f"{name} has {current or 'no permission of its own'} on {kind} {target!r}, not {permission}")
    users.revoke(name, resolved)
    typer.echo(f"{name}: permission on {kind} {target!r} revoked")


@users_app.command("permissions")
def users_permissions(
    name: Annotated[str, typer.Argument(help="The user.")],
    project_dir: ProjectDirOption = Path("."),
    env: EnvOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
    as_json: JsonOption = False,
) -> None:
    """The permissions granted to a user, by experiment and registered model name; everything else gets
    MLFLOW_AUTH_DEFAULT_PERMISSION (admins: everything)."""
    project, users = _users(project_dir, env, url, ca_file, insecure)
    user = users.get(name)
    rows = users.permissions(name)
    if as_json:
        print_json({"username": name, "is_admin": bool(user.get("is_admin")),
                    "default_permission": project.settings.auth.default_permission, "permissions": rows})
        return
    typer.echo(f"{name}: {'admin' if user.get('is_admin') else 'not an admin'}; "
               f"default permission {project.settings.auth.default_permission}")
    if rows:
        print_table(["KIND", "NAME", "PERMISSION"], [[row["kind"], row["target"], row["permission"]] for row in rows])


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def main() -> None:
    """`python -m service`: the same commands as `python -m generator service`."""
    run_cli(lambda: app(prog_name="python -m service"))
