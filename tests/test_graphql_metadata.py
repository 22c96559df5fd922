"""The Hasura metadata for the `mlflow` source, checked against Hasura's own metadata schema.

No Hasura server can run here. What is checked instead:
- the README's steps, done on a stand-in for nself's hasura/metadata/, give a
  v3 metadata directory; it is read back as the Hasura CLI reads it (every
  `!include` resolved relative to the file that names it) and the complete
  exported-metadata document validates against Hasura's metadata schema
  (tests/schemas/hasura-metadata.openapi.json), the source also against
  PostgresSourceMetadata, for clear messages;
- every key is one the schema names (the schema itself accepts unknown
  keys, so a misspelt `select_permission` would pass it) and no value is
  null (the schema's OpenAPI `nullable` is not JSON Schema);
- every tracked view, column and relationship refers to the views the SQL
  file makes. tests/e2e/test_graphql.py checks the same against the live
  database after init.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from generator.artifacts import graphql
from tests.conftest import EXAMPLES, PROFILES, ROOT, build_profile

SCHEMA_FILE = ROOT / "tests" / "schemas" / "hasura-metadata.openapi.json"
GRAPHQL_PROFILES = [profile for profile in PROFILES if graphql.SOURCE_ENTRY_PATH in build_profile(EXAMPLES / profile)]
GRAPHQL_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
INCLUDE = "!include"


@cache
def components() -> dict:
    return json.loads(SCHEMA_FILE.read_text())["components"]


@cache
def validator(name: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator({"$ref": f"#/components/schemas/{name}", "components": components()})


def _resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = components()["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _valid(instance: Any, schema: dict) -> bool:
    return jsonschema.Draft7Validator({**schema, "components": components()}).is_valid(instance)


def unknown_keys(instance: Any, schema: dict, path: str = "$") -> set[str]:
    """Keys of `instance` that no matching branch of `schema` names."""
    schema = _resolve(schema)
    found: set[str] = set()
    branches = [branch for branch in schema.get("oneOf", []) + schema.get("anyOf", []) if _valid(instance, branch)]
    if branches:
        found |= set.intersection(*(unknown_keys(instance, branch, path) for branch in branches))
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            where = f"{path}.{key}"
            if key in properties:
                found.discard(where)
                found |= unknown_keys(value, properties[key], where)
            elif isinstance(extra, dict):
                found |= unknown_keys(value, extra, where)
            elif properties and not branches:
                found.add(where)
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(instance):
            found |= unknown_keys(item, schema["items"], f"{path}[{index}]")
    return found


def nulls(instance: Any, path: str = "$") -> list[str]:
    if instance is None:
        return [path]
    if isinstance(instance, dict):
        return [found for key, value in instance.items() for found in nulls(value, f"{path}.{key}")]
    if isinstance(instance, list):
        return [found for index, value in enumerate(instance) for found in nulls(value, f"{path}[{index}]")]
    return []


# -- the metadata directory, as nself keeps it and as the Hasura CLI reads it ------------------

NSELF_DATABASES = """\
- name: default
  kind: postgres
  configuration:
    connection_info:
      database_url:
        from_env: HASURA_GRAPHQL_DATABASE_URL
      isolation_level: read-committed
      use_prepared_statements: true
  tables: "!include default/tables/tables.yaml"
"""
NSELF_TABLE = """\
table:
  name: users
  schema: public
select_permissions:
  - role: user
    permission:
      columns:
        - id
        - name
      filter:
        id:
          _eq: X-Hasura-User-Id
"""


def nself_metadata(root: Path) -> Path:
    """A stand-in for an nself project's hasura/metadata/ (config v3), with its app database."""
    metadata = root / "hasura" / "metadata"
    (metadata / "databases" / "default" / "tables").mkdir(parents=True)
    (metadata / "version.yaml").write_text("version: 3\n")
    (metadata / "databases" / "databases.yaml").write_text(NSELF_DATABASES)
    (metadata / "databases" / "default" / "tables" / "tables.yaml").write_text('- "!include public_users.yaml"\n')
    (metadata / "databases" / "default" / "tables" / "public_users.yaml").write_text(NSELF_TABLE)
    return metadata


def write_out(files: dict[str, bytes], out: Path) -> Path:
    for path, content in files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(content)
    return out


def add_mlflow_source(metadata: Path, out: Path) -> None:
    """The README's steps: the source entry into databases.yaml once, the tables folder after every build."""
    databases = metadata / "databases" / "databases.yaml"
    databases.write_text(databases.read_text() + (out / graphql.SOURCE_ENTRY_PATH).read_text())
    target = metadata / "databases" / graphql.SOURCE_NAME / "tables"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(out / graphql.METADATA_TABLES_DIR, target)


def _include(value: Any, base: Path) -> Any:
    """Resolve `!include FILE` as the Hasura CLI does: any string holding the tag, relative to the including file."""
    if isinstance(value, str) and INCLUDE in value:
        target = base / value.split(" ", 1)[1].strip().strip('"')
        assert target.is_file(), f"{value!r} names a missing file: {target}"
        if target.suffix != ".yaml":
            return target.read_text()
        return _include(yaml.safe_load(target.read_text()), target.parent)
    if isinstance(value, dict):
        return {key: _include(item, base) for key, item in value.items()}
    if isinstance(value, list):
        return [_include(item, base) for item in value]
    return value


def exported_metadata(metadata: Path) -> dict:
    """What `hasura metadata apply` sends (the exported-metadata form): version and sources, includes resolved."""
    databases = metadata / "databases"
    sources = yaml.safe_load((databases / "databases.yaml").read_text())
    for source in sources:
        for key in ("tables", "functions"):
            if key in source:
                source[key] = _include(source[key], databases)
    return {"version": yaml.safe_load((metadata / "version.yaml").read_text())["version"], "sources": sources}


def mlflow_source(document: dict) -> dict:
    return next(source for source in document["sources"] if source["name"] == graphql.SOURCE_NAME)


@pytest.fixture(params=GRAPHQL_PROFILES)
def document(request, tmp_path) -> dict:
    out = write_out(build_profile(EXAMPLES / request.param), tmp_path / "out")
    metadata = nself_metadata(tmp_path / "project")
    add_mlflow_source(metadata, out)
    return exported_metadata(metadata)


def schema_problems(document: dict) -> list[str]:
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
                for source in document["sources"] if source["name"] == graphql.SOURCE_NAME
                for e in validator("PostgresSourceMetadata").iter_errors(source)]
    problems += [f"document: {e.message[:300]}" for e in validator("Metadata").iter_errors(document)]
    source = mlflow_source(document)
    problems += [f"unknown key {key}" for key in sorted(unknown_keys(source, {"$ref": "#/components/schemas/PostgresSourceMetadata"}))]
    problems += [f"null at {path}" for path in nulls(source)]
    return problems


def reference_problems(document: dict) -> list[str]:
    """Tracked views, columns and relationships against the views the SQL file makes."""
    views = {view.name: view for view in graphql.VIEWS}
    source = mlflow_source(document)
    problems = []
    tracked = {}
    for table in source["tables"]:
        name = table["table"]["name"]
        if table["table"].get("schema") != graphql.SCHEMA or name not in views:
            problems.append(f"{table['table']} is not a view of {graphql.SCHEMA}")
            continue
        tracked[name] = table
    if set(tracked) != set(views):
        problems.append(f"tracked {sorted(tracked)}, the SQL file makes {sorted(views)}")
    for name, table in tracked.items():
        columns = views[name].column_names
        for permission in table.get("select_permissions", []):
            if permission["permission"]["columns"] != columns:
                problems.append(f"{name}: role {permission['role']} gets {permission['permission']['columns']}, "
                                f"the view has {columns}")
        for kind in ("object_relationships", "array_relationships"):
            for relationship in table.get(kind, []):
                manual = relationship["using"]["manual_configuration"]
                target = manual["remote_table"]
                if target.get("schema") != graphql.SCHEMA or target["name"] not in tracked:
                    problems.append(f"{name}.{relationship['name']}: {target} is not tracked")
                    continue
                for mine, theirs in manual["column_mapping"].items():
                    if mine not in columns or theirs not in views[target["name"]].column_names:
                        problems.append(f"{name}.{relationship['name']}: {mine} -> {target['name']}.{theirs} "
                                        "names a column the views do not have")
    names = [table.get("configuration", {}).get("custom_name", table["table"]["name"]) for table in tracked.values()]
    problems += [f"{name}: not a GraphQL name" for name in names if not GRAPHQL_NAME.fullmatch(name)]
    if len(set(names)) != len(names):
        problems.append(f"GraphQL names are not unique: {names}")
    for name, table in tracked.items():
        fields = views[name].column_names + [r["name"] for kind in ("object_relationships", "array_relationships")
                                             for r in table.get(kind, [])]
        if len(set(fields)) != len(fields):
            problems.append(f"{name}: a relationship has a column's name: {fields}")
    return problems


# -- the checks --------------------------------------------------------------------------------

def test_a_profile_turns_the_views_on():
    assert GRAPHQL_PROFILES == ["graphql"]
    for profile in set(PROFILES) - set(GRAPHQL_PROFILES):
        assert not [path for path in build_profile(EXAMPLES / profile) if path.startswith("hasura/")], profile


def test_the_exported_metadata_validates_against_hasuras_schema(document):
    assert document["version"] == 3
    assert [source["name"] for source in document["sources"]] == ["default", graphql.SOURCE_NAME]
    assert schema_problems(document) == []


def test_every_tracked_view_column_and_relationship_is_one_the_sql_file_makes(document):
    assert reference_problems(document) == []
    assert len(mlflow_source(document)["tables"]) == len(graphql.VIEWS)


def test_the_source_reads_its_url_from_the_environment_and_namespaces_its_fields(document):
    source = mlflow_source(document)
    connection = source["configuration"]["connection_info"]
    assert connection["database_url"] == {"from_env": graphql.DATABASE_URL_VARIABLE}
    assert connection["pool_settings"]["max_connections"] == graphql.POOL_MAX_CONNECTIONS
    assert source["customization"] == {"root_fields": {"namespace": "mlflow"}, "type_names": {"prefix": "mlflow_"}}


def test_the_role_may_select_and_aggregate_everything_and_nothing_more(document):
    for table in mlflow_source(document)["tables"]:
        assert [permission["role"] for permission in table["select_permissions"]] == ["user"]
        permission = table["select_permissions"][0]["permission"]
        assert permission["filter"] == {} and permission["allow_aggregations"] is True
        for kind in ("insert_permissions", "update_permissions", "delete_permissions", "event_triggers"):
            assert kind not in table


def test_the_role_is_configurable(tmp_path):
    from tests.conftest import write_tree

    project = write_tree(tmp_path / "project", {
        ".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=true\nMLFLOW_GRAPHQL_ENABLED=true\n"
                "MLFLOW_GRAPHQL_ROLE=analyst\n",
        ".env.secrets": "POSTGRES_PASSWORD=p-secret-1\nMINIO_ROOT_PASSWORD=m-secret-1\nMLFLOW_DB_PASSWORD=d-secret-1\n"
                        "MLFLOW_GRAPHQL_DB_PASSWORD=g-secret-1\n",
    })
    metadata = nself_metadata(tmp_path / "nself")
    add_mlflow_source(metadata, write_out(build_profile(project), tmp_path / "out"))
    document = exported_metadata(metadata)
    assert {table["select_permissions"][0]["role"] for table in mlflow_source(document)["tables"]} == {"analyst"}
    assert schema_problems(document) == [] and reference_problems(document) == []


def test_no_generated_text_could_be_taken_for_an_include():
    """The CLI reads any string holding `!include` as one; only the include lists may hold it."""
    files = build_profile(EXAMPLES / "graphql")
    for path, content in files.items():
        if not path.startswith("hasura/"):
            continue
        for line in content.decode().splitlines():
            if INCLUDE in line:
                assert path.endswith("tables.yaml") or line.startswith("  tables: "), f"{path}: {line}"


# -- each check, shown failing once on a broken artifact ------------------------------------

def broken(document: dict, change) -> dict:
    copied = copy.deepcopy(document)
    change(mlflow_source(copied))
    return copied


def runs_table(source: dict) -> dict:
    return next(table for table in source["tables"] if table["table"]["name"] == "runs")


def test_the_schema_check_fails_on_a_misspelt_key(document):
    def misspell(source):
        runs_table(source)["select_permission"] = runs_table(source).pop("select_permissions")

    assert schema_problems(broken(document, misspell)) == ["unknown key $.tables[1].select_permission"]


def test_the_schema_check_fails_on_a_wrong_type_and_a_missing_field(document):
    def columns_as_text(source):
        runs_table(source)["select_permissions"][0]["permission"]["columns"] = "run_id"

    assert any("'run_id' is not valid" in problem for problem in schema_problems(broken(document, columns_as_text)))

    def no_configuration(source):
        del source["configuration"]

    assert any("'configuration' is a required property" in problem
               for problem in schema_problems(broken(document, no_configuration)))


def test_the_schema_check_fails_on_a_null(document):
    def null_comment(source):
        runs_table(source)["array_relationships"][0]["comment"] = None

    assert "null at $.tables[1].array_relationships[0].comment" in schema_problems(broken(document, null_comment))


def test_the_reference_check_fails_on_a_column_or_view_the_sql_does_not_make(document):
    def unknown_column(source):
        runs_table(source)["select_permissions"][0]["permission"]["columns"].append("source_name")

    assert reference_problems(broken(document, unknown_column))[0].startswith("runs: role user gets")

    def unknown_target(source):
        runs_table(source)["array_relationships"][0]["using"]["manual_configuration"]["remote_table"]["name"] = "param"

    assert reference_problems(broken(document, unknown_target)) == [
        "runs.params: {'name': 'param', 'schema': 'mlflow_graphql'} is not tracked"]

    def wrong_mapping(source):
        runs_table(source)["array_relationships"][0]["using"]["manual_configuration"]["column_mapping"] = {"id": "run_id"}

    assert reference_problems(broken(document, wrong_mapping)) == [
        "runs.params: id -> params.run_id names a column the views do not have"]


def test_a_missing_include_file_is_found(tmp_path):
    out = write_out(build_profile(EXAMPLES / "graphql"), tmp_path / "out")
    (out / graphql.METADATA_TABLES_DIR / "mlflow_graphql_runs.yaml").unlink()
    metadata = nself_metadata(tmp_path / "project")
    add_mlflow_source(metadata, out)
    with pytest.raises(AssertionError, match="names a missing file"):
        exported_metadata(metadata)
