"""GraphQL through nself's Hasura: read-only views of the experiment data, and Hasura's metadata for them.

Only while MLFLOW_GRAPHQL_ENABLED=true:

- out/postgres/init/mlflow-graphql.sql: the views in schema mlflow_graphql of
  the MLflow database, their column comments (Hasura shows them as field
  descriptions) and the read-only role's privileges. mlflow-init applies it
  after the MLflow schema is current, and drops the schema before a migration;
- out/hasura/metadata/databases/mlflow/tables/: one metadata file per tracked
  view, as `hasura metadata export` writes them (v3 metadata directory);
- out/hasura/mlflow-source.yaml: the source entry to add to nself's
  hasura/metadata/databases/databases.yaml (see the README).

The views are the interface; MLflow's tables are not. Every view reads only
columns that exist, with the same meaning, from MLflow 2.9 to 3.17: times are
milliseconds since the epoch there and timestamptz here, ids are text as the
REST API writes them, and MLflow 3's `workspace` columns are left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from generator.artifacts.sql import quote_identifier
from generator.render import render_template, to_yaml
from generator.settings import Settings

SCHEMA = "mlflow_graphql"  # init/graphql.py drops it by this name (a test holds them together)
SQL_PATH = "postgres/init/mlflow-graphql.sql"
SOURCE_NAME = "mlflow"
SOURCE_ENTRY_PATH = "hasura/mlflow-source.yaml"
METADATA_TABLES_DIR = f"hasura/metadata/databases/{SOURCE_NAME}/tables"
# Set on nself's hasura service by docker-compose.mlflow.yml.
DATABASE_URL_VARIABLE = "MLFLOW_GRAPHQL_DATABASE_URL"
# GraphQL: query { mlflow { runs { ... } } }, types mlflow_runs, ...: nothing
# collides with the app database's tables.
NAMESPACE = "mlflow"
TYPE_PREFIX = "mlflow_"
# Hasura's default is 50 connections per source. MLflow's own budget is
# MLFLOW_WORKERS x 10 on the same server, so the views get a small pool.
POOL_MAX_CONNECTIONS = 5
SOURCE = "generator/artifacts/graphql.py"
MARKER_PREFIX = "nself-mlflow graphql views"
# MLflow marks a deleted model version with this stage and keeps the row; its REST API hides it.
DELETED_VERSION_STAGE = "Deleted_Internal"


def _time(expression: str) -> str:
    """Milliseconds since the epoch (MLflow's bigint columns) as timestamptz, exactly."""
    return f"timestamptz 'epoch' + {expression} * interval '1 millisecond'"


def _metric_value(alias: str) -> str:
    # MLflow stores NaN as 0 with is_nan; its REST API answers NaN.
    return f"CASE WHEN {alias}.is_nan THEN 'NaN'::double precision ELSE {alias}.value END"


@dataclass(frozen=True)
class Column:
    name: str
    expression: str
    doc: str


@dataclass(frozen=True)
class View:
    name: str  # the view in SCHEMA, and its GraphQL name
    source: str  # FROM ... AS alias
    columns: tuple[Column, ...]
    doc: str
    where: str = ""

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


@dataclass(frozen=True)
class Relationship:
    view: str
    name: str
    kind: str  # "object" or "array"
    target: str
    mapping: tuple[tuple[str, str], ...]  # (column of view, column of target)


def _run_id(alias: str) -> Column:
    return Column("run_id", f"{alias}.run_uuid::text", "the run's id")


VIEWS: tuple[View, ...] = (
    View(
        "experiments",
        "public.experiments AS e",
        (
            Column("experiment_id", "e.experiment_id::text", "the experiment's id, as MLflow's REST API writes it"),
            Column("name", "e.name::text", "the experiment's name"),
            Column("artifact_location", "e.artifact_location::text", "where the experiment's artifacts are stored"),
            Column("lifecycle_stage", "e.lifecycle_stage::text",
                   "active, or deleted (a deleted experiment stays until mlflow gc removes it)"),
            Column("creation_time", _time("e.creation_time"), "when the experiment was created"),
            Column("last_update_time", _time("e.last_update_time"), "when the experiment was last changed"),
        ),
        "MLflow experiments, deleted ones included (see lifecycle_stage)",
    ),
    View(
        "runs",
        "public.runs AS r",
        (
            _run_id("r"),
            Column("experiment_id", "r.experiment_id::text", "the experiment the run belongs to"),
            Column("run_name", "r.name::text", "the run's name"),
            Column("user_id", "r.user_id::text", "the user who started the run"),
            Column("status", "r.status::text", "RUNNING, SCHEDULED, FINISHED, FAILED or KILLED"),
            Column("start_time", _time("r.start_time"), "when the run started"),
            Column("end_time", _time("r.end_time"), "when the run ended; null while it runs"),
            Column("lifecycle_stage", "r.lifecycle_stage::text",
                   "active, or deleted (a deleted run stays until mlflow gc removes it)"),
            Column("artifact_uri", "r.artifact_uri::text", "where the run's artifacts are stored"),
        ),
        "MLflow runs, deleted ones included (see lifecycle_stage)",
    ),
    View(
        "params",
        "public.params AS p",
        (
            _run_id("p"),
            Column("key", "p.key::text", "the parameter's name"),
            Column("value", "p.value::text", "the parameter's value, as logged (text)"),
        ),
        "the parameters of every run",
    ),
    View(
        "metrics",
        "public.latest_metrics AS m",
        (
            _run_id("m"),
            Column("key", "m.key::text", "the metric's name"),
            Column("value", _metric_value("m"), "its latest value (the highest step, then the latest time)"),
            Column("step", "m.step", "the step of that value"),
            Column("timestamp", _time("m.timestamp"), "when that value was logged"),
        ),
        "the latest value of every metric of every run, as MLflow's REST API reports a run's metrics",
    ),
    View(
        "metric_history",
        "public.metrics AS m",
        (
            _run_id("m"),
            Column("key", "m.key::text", "the metric's name"),
            Column("value", _metric_value("m"), "the logged value"),
            Column("step", "m.step", "the step it was logged at"),
            Column("timestamp", _time("m.timestamp"), "when it was logged"),
        ),
        "every logged value of every metric of every run",
    ),
    View(
        "run_tags",
        "public.tags AS t",
        (
            _run_id("t"),
            Column("key", "t.key::text", "the tag's name (mlflow.* tags are MLflow's own)"),
            Column("value", "t.value::text", "the tag's value"),
        ),
        "the tags of every run",
    ),
    View(
        "registered_models",
        "public.registered_models AS rm",
        (
            Column("name", "rm.name::text", "the registered model's name"),
            Column("description", "rm.description::text", "its description"),
            Column("creation_time", _time("rm.creation_time"), "when it was registered"),
            Column("last_updated_time", _time("rm.last_updated_time"), "when it was last changed"),
        ),
        "the models of MLflow's model registry",
    ),
    View(
        "model_versions",
        "public.model_versions AS mv",
        (
            Column("name", "mv.name::text", "the registered model's name"),
            Column("version", "mv.version", "the version number"),
            Column("stage", "mv.current_stage::text", "None, Staging, Production or Archived"),
            Column("status", "mv.status::text", "PENDING_REGISTRATION, FAILED_REGISTRATION or READY"),
            Column("status_message", "mv.status_message::text", "details of the status"),
            Column("source", "mv.source::text", "the model's source URI, such as runs:/<run id>/model"),
            Column("run_id", "mv.run_id::text", "the run that produced the version, if any"),
            Column("run_link", "mv.run_link::text", "a link to that run, if one was given"),
            Column("user_id", "mv.user_id::text", "the user who registered the version"),
            Column("description", "mv.description::text", "its description"),
            Column("creation_time", _time("mv.creation_time"), "when the version was registered"),
            Column("last_updated_time", _time("mv.last_updated_time"), "when it was last changed"),
        ),
        "the versions of every registered model (deleted versions are left out, as in MLflow's REST API)",
        where=f"mv.current_stage IS DISTINCT FROM '{DELETED_VERSION_STAGE}'",
    ),
    View(
        "model_aliases",
        "public.registered_model_aliases AS a",
        (
            Column("name", "a.name::text", "the registered model's name"),
            Column("alias", "a.alias::text", "the alias, such as champion"),
            Column("version", "a.version", "the version the alias points to"),
        ),
        "the aliases of registered models (models:/<name>@<alias>)",
    ),
)

RELATIONSHIPS: tuple[Relationship, ...] = (
    Relationship("experiments", "runs", "array", "runs", (("experiment_id", "experiment_id"),)),
    Relationship("runs", "experiment", "object", "experiments", (("experiment_id", "experiment_id"),)),
    Relationship("runs", "params", "array", "params", (("run_id", "run_id"),)),
    Relationship("runs", "metrics", "array", "metrics", (("run_id", "run_id"),)),
    Relationship("runs", "metric_history", "array", "metric_history", (("run_id", "run_id"),)),
    Relationship("runs", "tags", "array", "run_tags", (("run_id", "run_id"),)),
    Relationship("runs", "model_versions", "array", "model_versions", (("run_id", "run_id"),)),
    Relationship("params", "run", "object", "runs", (("run_id", "run_id"),)),
    Relationship("metrics", "run", "object", "runs", (("run_id", "run_id"),)),
    Relationship("metric_history", "run", "object", "runs", (("run_id", "run_id"),)),
    Relationship("run_tags", "run", "object", "runs", (("run_id", "run_id"),)),
    Relationship("registered_models", "versions", "array", "model_versions", (("name", "name"),)),
    Relationship("registered_models", "aliases", "array", "model_aliases", (("name", "name"),)),
    Relationship("model_versions", "model", "object", "registered_models", (("name", "name"),)),
    Relationship("model_versions", "run", "object", "runs", (("run_id", "run_id"),)),
    Relationship("model_versions", "aliases", "array", "model_aliases", (("name", "name"), ("version", "version"))),
    Relationship("model_aliases", "model", "object", "registered_models", (("name", "name"),)),
    Relationship("model_aliases", "model_version", "object", "model_versions", (("name", "name"), ("version", "version"))),
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_statements(graphql_user: str) -> list[str]:
    """Everything that (re)creates the schema's contents, in order; run in one transaction."""
    user = quote_identifier(graphql_user)
    statements = [f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE", f"CREATE SCHEMA {SCHEMA}"]
    for view in VIEWS:
        select = ",\n".join(f"  {column.expression} AS {quote_identifier(column.name)}" for column in view.columns)
        where = f"\nWHERE {view.where}" if view.where else ""
        statements.append(f"CREATE VIEW {view.qualified} AS\nSELECT\n{select}\nFROM {view.source}{where}")
    for view in VIEWS:
        statements.append(f"COMMENT ON VIEW {view.qualified} IS {_literal(view.doc)}")
        statements += [
            f"COMMENT ON COLUMN {view.qualified}.{quote_identifier(column.name)} IS {_literal(column.doc)}"
            for column in view.columns
        ]
    statements.append(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {user}")
    statements += [f"GRANT SELECT ON {view.qualified} TO {user}" for view in VIEWS]
    return statements


def marker(statements: list[str]) -> str:
    """The schema's comment: it names the definition the views were made from."""
    digest = hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()[:16]
    return f"{MARKER_PREFIX} {digest}"


def sql(settings: Settings) -> bytes:
    graphql = settings.graphql
    statements = view_statements(graphql.db_user)
    return render_template(
        SQL_PATH,
        comment="--",
        schema=SCHEMA,
        database=settings.database.name,
        owner_ident=quote_identifier(settings.database.user),
        role=graphql.db_user,
        role_ident=quote_identifier(graphql.db_user),
        statements=statements,
        marker=marker(statements),
        views=[view.name for view in VIEWS],
    )


def _relationship(relationship: Relationship) -> dict[str, Any]:
    return {
        "name": relationship.name,
        "using": {
            "manual_configuration": {
                "remote_table": {"name": relationship.target, "schema": SCHEMA},
                "column_mapping": dict(relationship.mapping),
            }
        },
    }


def table_metadata(view: View, role: str) -> dict[str, Any]:
    """One tracked view, in the form of `hasura metadata export`'s tables/<schema>_<name>.yaml."""
    table: dict[str, Any] = {
        "table": {"name": view.name, "schema": SCHEMA},
        "configuration": {"custom_name": view.name},
    }
    for kind in ("object", "array"):
        relationships = [_relationship(r) for r in RELATIONSHIPS if r.view == view.name and r.kind == kind]
        if relationships:
            table[f"{kind}_relationships"] = relationships
    table["select_permissions"] = [
        {
            "role": role,
            "permission": {"columns": view.column_names, "filter": {}, "allow_aggregations": True},
        }
    ]
    return table


def table_file(view: View) -> str:
    return f"{SCHEMA}_{view.name}.yaml"


def source_entry() -> dict[str, Any]:
    """The source, as one entry of databases.yaml; its tables are included from the folder beside it."""
    return {
        "name": SOURCE_NAME,
        "kind": "postgres",
        "configuration": {
            "connection_info": {
                "database_url": {"from_env": DATABASE_URL_VARIABLE},
                "isolation_level": "read-committed",
                "use_prepared_statements": True,
                "pool_settings": {"max_connections": POOL_MAX_CONNECTIONS, "idle_timeout": 180, "retries": 1},
            }
        },
        "customization": {"root_fields": {"namespace": NAMESPACE}, "type_names": {"prefix": TYPE_PREFIX}},
        "tables": f"!include {SOURCE_NAME}/tables/tables.yaml",
    }


SOURCE_ENTRY_HEADER = (
    f"# Generated by nself-mlflow from {SOURCE}.\n"
    "# The `mlflow` source: add this entry to hasura/metadata/databases/databases.yaml once,\n"
    f"# and copy out/{METADATA_TABLES_DIR}/ to hasura/metadata/databases/{SOURCE_NAME}/tables/\n"
    "# after every build (see the README's \"GraphQL through Hasura\").\n"
)


def database_url(settings: Settings) -> tuple[str, str]:
    """Hasura's connection URL around the password: (before it, after it); Compose fills the password in."""
    database = settings.database
    return (
        f"postgres://{settings.graphql.db_user}:",
        f"@{database.host}:{database.port}/{database.name}",
    )


def build(settings: Settings) -> dict[str, bytes]:
    if not settings.graphql.enabled:
        return {}
    role = settings.graphql.role
    files = {SQL_PATH: sql(settings)}
    files[f"{METADATA_TABLES_DIR}/tables.yaml"] = to_yaml([f"!include {table_file(view)}" for view in VIEWS], SOURCE)
    for view in VIEWS:
        files[f"{METADATA_TABLES_DIR}/{table_file(view)}"] = to_yaml(table_metadata(view, role), SOURCE)
    files[SOURCE_ENTRY_PATH] = to_yaml([source_entry()], SOURCE, comment=SOURCE_ENTRY_HEADER)
    return files
