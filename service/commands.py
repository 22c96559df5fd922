"""`python -m generator service ACTION`: the commands behind `nself service mlflow …`.

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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from generator.artifacts import compose as compose_artifact
from generator.envfiles import read_project_env
from generator.errors import UserError
from service import transfer
from service.api import MlflowApi, ServiceError
from service.docker import SERVICES, ComposeProject, docker_reachable, parse_ps
from generator.settings import Settings, load_settings, mlflow_enabled

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


@dataclass
class Project:
    directory: Path
    env: str
    settings: Settings
    values: dict[str, str]

    @property
    def direct_url(self) -> str:
        return f"http://localhost:{self.settings.server.port}"

    @property
    def public_url(self) -> str:
        return f"https://{self.settings.public_host}"

    def api(self, url: str | None = None, ca_file: Path | None = None, insecure: bool = False) -> MlflowApi:
        auth = self.settings.auth
        credentials = (auth.username, auth.password.get_secret_value()) if auth.enabled and auth.password else (None, None)
        return MlflowApi(url or self.direct_url, *credentials, ca_file=ca_file, insecure=insecure,
                         credentials_hint=self.credentials_hint)

    @property
    def credentials_hint(self) -> str:
        if not self.settings.auth.enabled:
            return "MLFLOW_AUTH_ENABLED is false here; set it to true (with MLFLOW_AUTH_PASSWORD) to match the server"
        if self.settings.auth.password is None:
            return "MLFLOW_AUTH_PASSWORD is not set yet: run nself build, which generates it"
        return "check MLFLOW_AUTH_USERNAME and MLFLOW_AUTH_PASSWORD against the server's htpasswd (run nself build)"

    def compose(self, out_dir: Path | None = None) -> ComposeProject:
        return ComposeProject.locate(self.directory, self.env, self.settings.stack.project_name, out_dir)


def load_project(project_dir: Path, env: str | None) -> Project:
    if not project_dir.is_dir():
        raise UserError(f"--project-dir: {project_dir} is not a directory")
    project_env = read_project_env(project_dir, env)
    if not mlflow_enabled(project_env):
        raise UserError("MLFLOW_ENABLED: MLflow is not enabled in this project; set MLFLOW_ENABLED=true")
    return Project(project_dir, project_env.env, load_settings(project_env), project_env.values)


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

def _health(api: MlflowApi) -> tuple[bool, str]:
    try:
        answer = api.text("/health")
    except ServiceError as error:
        return False, error.message
    return answer == "OK", answer if answer == "OK" else f"unexpected answer {answer!r}"


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
    except UserError as error:
        if "MLFLOW_ENABLED" in error.message:
            typer.echo("MLflow: not enabled (MLFLOW_ENABLED is not true)")
            raise typer.Exit(1)
        raise error
    healthy = True
    typer.echo(f"MLflow: enabled, MLFLOW_VERSION {project.settings.server.version}")

    reachable, reason = docker_reachable()
    if reachable:
        compose = project.compose(out)
        result = subprocess.run(compose.argv("ps", "--all", "--format", "json", *_enabled_services(project)),
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            healthy = False
            typer.echo(f"containers: docker compose ps failed: {result.stderr.strip()[-300:]}")
        else:
            containers = {item.get("Service"): item for item in parse_ps(result.stdout)}
            for service in _enabled_services(project):
                item = containers.get(service)
                state = _container_state(service, item)
                healthy &= state[0]
                typer.echo(f"container {service}: {state[1]}")
    else:
        typer.echo(f"containers: unknown, {reason}")

    checks = [("direct", project.api(url)), ("public", project.api(public_url or project.public_url, ca_file, insecure))]
    for label, api in checks:
        ok, detail = _health(api)
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


def _enabled_services(project: Project) -> list[str]:
    return [s for s in SERVICES if s != "mlflow-gc" or project.settings.gc.enabled]


def _container_state(service: str, item: dict | None) -> tuple[bool, str]:
    if service == "mlflow-init":
        # A one-shot container: done is good, and nself removes it once it exited.
        if item is None:
            return True, "removed after it ran (nself removes init containers)"
        ok = item.get("State") == "exited" and item.get("ExitCode", 0) == 0
        return ok, f"{item.get('State', '?')} (exit code {item.get('ExitCode', '?')})"
    if item is None:
        return False, "not created (run nself start)"
    state, health = item.get("State", "?"), item.get("Health", "")
    ok = state == "running" and health in ("", "healthy")
    return ok, f"{state}{f' ({health})' if health else ''}"


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
        ["Auth", f"basic auth, user {settings.auth.username}" if settings.auth.enabled else "off"],
    ]
    if settings.auth.enabled:
        rows.append(["Auth password", data["auth"]["password"] or "not generated yet (run nself build)"])
    rows.append(["Garbage collection", f"'{settings.gc.schedule}' (UTC)" if settings.gc.enabled else "off"])
    print_table(None, rows)


# -- experiments and models --------------------------------------------------

RUN_COUNT_BATCH = 100  # experiments per runs/search


def list_experiments(api: MlflowApi) -> list[dict]:
    experiments = list(api.search("experiments/search", {"view_type": "ALL"}, "experiments"))
    counts: dict[str, int] = {}
    ids = [experiment["experiment_id"] for experiment in experiments]
    for start in range(0, len(ids), RUN_COUNT_BATCH):
        body = {"experiment_ids": ids[start:start + RUN_COUNT_BATCH], "run_view_type": "ALL"}
        for run in api.search("runs/search", body, "runs"):
            experiment_id = run["info"]["experiment_id"]
            counts[experiment_id] = counts.get(experiment_id, 0) + 1
    return [
        {
            "experiment_id": experiment["experiment_id"],
            "name": experiment["name"],
            "lifecycle_stage": experiment.get("lifecycle_stage", "active"),
            "runs": counts.get(experiment["experiment_id"], 0),
            "last_update_time": experiment.get("last_update_time"),
        }
        for experiment in sorted(experiments, key=lambda e: int(e["experiment_id"]) if e["experiment_id"].isdigit() else 0)
    ]


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
    found = list_experiments(project.api(url, ca_file, insecure))
    if as_json:
        print_json(found)
        return
    print_table(["ID", "NAME", "STAGE", "RUNS", "LAST UPDATE (UTC)"],
                [[e["experiment_id"], e["name"], e["lifecycle_stage"], e["runs"], _time(e["last_update_time"])]
                 for e in found])


def list_models(api: MlflowApi) -> list[dict]:
    models = []
    for model in api.search_get("registered-models/search", "registered_models"):
        models.append({
            "name": model["name"],
            "latest_versions": {
                version.get("current_stage", "None"): version["version"]
                for version in sorted(model.get("latest_versions", []), key=lambda v: int(v["version"]))
            },
            "aliases": {alias["alias"]: alias["version"] for alias in model.get("aliases", [])},
            "last_updated_timestamp": model.get("last_updated_timestamp"),
        })
    return sorted(models, key=lambda m: m["name"])


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
    found = list_models(project.api(url, ca_file, insecure))
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


def _exec(argv: list[str]) -> None:
    try:
        code = subprocess.run(argv).returncode
    except FileNotFoundError:
        raise ServiceError(f"{argv[0]}: not installed; the command needs the docker CLI with Compose v2")
    raise typer.Exit(code)


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
    _exec(project.compose(out).argv("logs", *options, "mlflow"))


def gc_command(settings: Settings, older_than: str | None, backend_store_uri: str | None = None) -> list[str]:
    command = compose_artifact.gc_command(settings)
    if backend_store_uri is not None:
        command[command.index("--backend-store-uri") + 1] = backend_store_uri
    if older_than is not None:
        command += ["--older-than", older_than]
    return command


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
        command = ["python", "-m", "init.gc", "--once", "--", *gc_command(project.settings, older_than)]
        _exec(project.compose(out).argv("run", "--rm", "mlflow-gc", *command))
    if not backend_store_uri:
        raise UserError("--local needs --backend-store-uri, the database as seen from here "
                        "(for example postgresql://mlflow@localhost:5432/mlflow)")
    environment = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri or project.direct_url}
    if project.settings.database.password is not None:
        environment.setdefault("PGPASSWORD", project.settings.database.password.get_secret_value())
    command = [sys.executable, "-m", "init.gc", "--once", "--",
               *gc_command(project.settings, older_than, backend_store_uri)]
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


def _postgres_tools(project: Project, direct: bool, db_host: str, db_port: int | None, pg_bindir: Path | None,
                    out: Path | None):
    from service.backup import PostgresTools

    database = project.settings.database
    if not direct:
        _require_docker()
        # The postgres image trusts its own socket: no password leaves the container.
        return PostgresTools(database.name, database.user, tuple(project.compose(out).argv("exec", "-T", "postgres")),
                             ("-U", database.admin_user), where="PostgreSQL (the postgres container)")
    if database.admin_password is None:
        raise UserError("POSTGRES_PASSWORD: not set in the project's env files; --direct connects as POSTGRES_USER")
    port = db_port or database.port
    return PostgresTools(database.name, database.user, (), ("-h", db_host, "-p", str(port), "-U", database.admin_user),
                         {"PGPASSWORD": database.admin_password.get_secret_value()}, pg_bindir,
                         where=f"PostgreSQL at {db_host}:{port}")


def _bucket(project: Project, s3_endpoint: str | None):
    from service.backup import s3_bucket

    settings = project.settings
    access_key, secret_variable, secret = settings.s3_credentials
    if secret is None:
        raise UserError(f"{secret_variable}: not set in the project's env files; the backup reads the bucket with it")
    endpoint = s3_endpoint or settings.s3_endpoint_from_host
    return s3_bucket(endpoint, access_key, secret.get_secret_value(), settings.storage.bucket, settings.storage.region)


def _require_docker() -> None:
    reachable, reason = docker_reachable()
    if not reachable:
        raise ServiceError(f"docker compose is not usable here: {reason}; start the stack (nself start), "
                           "or pass --direct with --db-host and --s3-endpoint")


def _schema_check(project: Project, direct: bool, mlflow_python: Path | None, out: Path | None):
    """How to ask the pinned MLflow where a schema revision stands: current, older or newer."""
    if direct and mlflow_python is None:
        raise UserError("--mlflow-python: --direct restore needs the Python of the pinned MLflow "
                        f"({project.settings.server.version}) to check the archive's schema revision")

    def check(revision: str) -> str:
        if direct:
            import init

            packages = str(Path(init.__file__).resolve().parent.parent)
            environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
                filter(None, [packages, os.environ.get("PYTHONPATH")]))}
            argv = [str(mlflow_python), "-m", "init.schema", "check", revision]
        else:
            environment = None
            argv = project.compose(out).argv("run", "--rm", "--no-deps", "-T", "mlflow-init",
                                             "python", "-m", "init.schema", "check", revision)
        try:
            result = subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=300)
        except FileNotFoundError:
            raise ServiceError(f"{argv[0]}: not found") from None
        words = result.stdout.split()
        if result.returncode != 0 or not words or words[0] not in ("current", "older", "newer"):
            detail = (result.stderr.strip().splitlines() or ["no answer"])[-1]
            raise ServiceError(f"checking schema revision {revision} with the pinned MLflow failed: {detail}")
        check.head = words[1]
        return words[0]

    return check


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
    postgres = _postgres_tools(project, direct, db_host, db_port, pg_bindir, out)
    bucket = _bucket(project, s3_endpoint)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = create_backup(postgres, bucket, output, str(project.settings.server.version), created,
                  progress=_progress())
    for key in result.skipped:
        typer.echo(f"note: {key} was deleted while the backup ran; it is not in the archive")
    typer.echo(f"backup written to {output}: database {postgres.database} ({_megabytes(result.dump_bytes)}, "
               f"schema revision {result.schema_revision or 'none: empty database'}), "
               f"{result.objects} objects ({_megabytes(result.object_bytes)}) from bucket {bucket.name}")


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
    postgres = _postgres_tools(project, direct, db_host, db_port, pg_bindir, out)
    bucket = _bucket(project, s3_endpoint)
    check = _schema_check(project, direct, mlflow_python, out)
    plan = plan_restore(input_file, postgres, bucket, force, check, progress=_progress())
    stopped = [] if direct else _enabled_services(project)
    stopped = [service for service in stopped if service != "mlflow-init"]
    if stopped:
        _compose_quietly(project.compose(out).argv("stop", *stopped))
    try:
        summary = restore_backup(input_file, plan, postgres, bucket, progress=_progress())
    finally:
        if stopped:
            # mlflow waits for mlflow-init, which migrates an older schema first.
            _compose_quietly(project.compose(out).argv("up", "-d", *stopped))
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
    postgres = _postgres_tools(project, direct, db_host, db_port, pg_bindir, out)
    size = dump_sql(postgres, output)
    typer.echo(f"database {postgres.database} dumped to {output} ({_megabytes(size)})")


def _compose_quietly(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"{' '.join(argv[-2:])}: docker compose failed: "
                           f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
