"""The project as a user installs it: a wheel, installed non-editable into a fresh venv.

Nothing may be read from the source tree: the build runs in a scratch
directory, with no PYTHONPATH, and its output must equal the checkout's byte
for byte. The venv is made once per test session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT

CLEAN_ENV = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}


def _run(argv: list, cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in argv], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True,
                          timeout=600, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The Python of a fresh venv holding only the wheel (and its dependencies)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    # A copy, so the wheel build's build/ folder never lands in the checkout.
    shutil.copytree(ROOT, source, symlinks=True,
                    ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", "out",
                                                  "snapshots", ".pytest_cache"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                  "--disable-pip-version-check", "-w", work / "dist", source], cwd=work)
    assert built.returncode == 0, built.stderr
    wheel = next((work / "dist").glob("nself_mlflow-*.whl"))
    venv = work / "venv"
    assert _run([sys.executable, "-m", "venv", venv], cwd=work).returncode == 0
    python = venv / "bin" / "python"
    install = _run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{wheel}[init]"],
                   cwd=work)
    assert install.returncode == 0, install.stderr
    return python


def test_the_packages_come_from_the_venv_not_the_checkout(installed, tmp_path):
    result = _run([installed, "-c", "import generator, init, service; "
                                    "print(generator.__file__); print(init.__file__); print(service.__file__)"],
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        assert "site-packages" in line and not line.startswith(str(ROOT)), line


def test_a_wheel_build_equals_the_checkout_build_byte_for_byte(installed, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "prod", project, ignore=shutil.ignore_patterns("out"))
    from_wheel = _run([installed, "-m", "generator", "build", "--project-dir", project, "--out", tmp_path / "wheel-out"],
                      cwd=tmp_path)
    assert from_wheel.returncode == 0, from_wheel.stderr
    assert "None" not in from_wheel.stderr
    from_checkout = _run([sys.executable, "-m", "generator", "build", "--project-dir", project,
                          "--out", tmp_path / "checkout-out"], cwd=ROOT)
    assert from_checkout.returncode == 0, from_checkout.stderr

    def tree(root: Path) -> dict[str, bytes]:
        return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*"))
                if path.is_file()}

    wheel_files, checkout_files = tree(tmp_path / "wheel-out"), tree(tmp_path / "checkout-out")
    assert wheel_files.keys() == checkout_files.keys()
    assert "mlflow/init/__main__.py" in wheel_files and "nginx/sites/mlflow.conf" in wheel_files
    assert [path for path in wheel_files if wheel_files[path] != checkout_files[path]] == []


@pytest.mark.parametrize("argv, expected", [
    (["-m", "init", "--help"], "python -m init: provision PostgreSQL and the artifact bucket"),
    (["-m", "init.gc", "--help"], "usage: python -m init.gc"),
    (["-m", "generator", "--help"], "build"),
    (["-m", "generator", "service", "--help"], "backup"),
    (["-m", "service", "--help"], "restore"),
    (["-m", "generator", "settings"], "| `MLFLOW_ENABLED` | `false` |"),
])
def test_every_entry_point_answers_from_the_wheel(installed, tmp_path, argv, expected):
    result = _run([installed, *argv], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout + result.stderr


def test_the_console_script_is_installed(installed, tmp_path):
    result = _run([installed.parent / "nself-mlflow", "--help"], cwd=tmp_path)
    assert result.returncode == 0 and "service" in result.stdout
