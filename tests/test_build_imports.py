"""`generator build` runs on every `nself build`: its import path stays lean.

The benchmark (bench/build.py) measures how long the imports take; this
test only keeps the heavy service-side libraries off the build path.
"""

from __future__ import annotations

import shutil

from bench.build import FORBIDDEN, libraries_the_build_imports
from tests.conftest import EXAMPLES


def test_build_imports_no_s3_database_or_mlflow_libraries(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "prod", project)
    libraries, statements = libraries_the_build_imports(project, tmp_path)
    assert {"pydantic", "jinja2", "yaml", "typer"} <= set(libraries), libraries
    assert not set(libraries) & set(FORBIDDEN), libraries
    assert statements and all(statement.startswith(("import ", "from ")) for statement in statements)
