"""One declaration per setting drives the model, the defaults, the README table and the hints."""

from __future__ import annotations

import re
import subprocess
import sys

from generator.settings import SECRET_VARIABLES, VARIABLES, settings_table
from tests.conftest import ROOT

TABLE = re.compile(r"<!-- settings table:.*?-->\n(.*?)<!-- end of settings table -->\n", re.S)


def test_the_readme_table_is_the_declarations():
    match = TABLE.search((ROOT / "README.md").read_text())
    assert match, "README.md lost its generated settings table"
    assert match.group(1) == settings_table(), "README.md's settings table is stale: paste `python -m generator settings`"


def test_the_settings_command_prints_the_table():
    result = subprocess.run([sys.executable, "-m", "generator", "settings"], capture_output=True, text=True, check=True)
    assert result.stdout == settings_table()


def test_every_declaration_is_complete_and_unique():
    fields = [(variable.section, variable.field) for variable in VARIABLES.values()]
    assert len(fields) == len(set(fields))
    for name, variable in VARIABLES.items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name)
        assert variable.doc, f"{name} has no doc"


def test_secrets_are_the_secret_typed_fields():
    assert SECRET_VARIABLES == {"MLFLOW_DB_PASSWORD", "MLFLOW_AUTH_PASSWORD", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD",
                                "S3_SECRET_KEY", "MLFLOW_GRAPHQL_DB_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"}
