"""A virtualenv that stands in for the generated MLflow image.

It holds `mlflow==<version of the FROM line>` plus every pin of the generated
Dockerfile's `pip install`, so the server, `python -m init` and the gc runner
run against the same packages as in the image. Building it takes minutes, so
it is cached in a folder keyed by the Python version and the pins: later runs
reuse it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

FROM_LINE = re.compile(r"^FROM\s+\S*mlflow:v(?P<version>[0-9][^\s]*)\s*$", re.MULTILINE)
# The `RUN pip install --no-cache-dir \` block, continued by backslashes.
PIP_BLOCK = re.compile(r"^RUN pip install (?P<args>(?:[^\n]*\\\n)*[^\n]*)$", re.MULTILINE)


def image_requirements(dockerfile_text: str) -> list[str]:
    """`mlflow==X` and the quoted pins, read from the generated Dockerfile."""
    base = FROM_LINE.search(dockerfile_text)
    if base is None:
        raise ValueError("the Dockerfile has no `FROM …/mlflow:vX` line")
    requirements = [f"mlflow=={base['version']}"]
    for block in PIP_BLOCK.finditer(dockerfile_text):
        words = shlex.split(block["args"].replace("\\\n", " "))
        requirements += [word for word in words if not word.startswith("-")]
    return requirements


def cache_root() -> Path:
    configured = os.environ.get("NSELF_MLFLOW_TEST_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nself-mlflow-tests"


def venv_key(requirements: list[str]) -> str:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    digest = hashlib.sha256("\n".join([python, *sorted(requirements)]).encode()).hexdigest()[:16]
    return f"py{python}-{digest}"


def image_venv(dockerfile: Path, extra: list[str] = ()) -> Path:
    """The cached venv for this Dockerfile (built on first use); returns its root."""
    requirements = image_requirements(dockerfile.read_text()) + list(extra)
    root = cache_root() / "venvs" / venv_key(requirements)
    done = root / ".complete"
    if done.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return root
        # A venv is not relocatable: build in place, and mark it complete last
        # so an interrupted build is redone rather than used.
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", root], check=True)
        log = root.parent / f"{root.name}.install.log"
        with open(log, "w") as output:
            subprocess.run(
                [root / "bin/python", "-m", "pip", "install", "--disable-pip-version-check", *requirements],
                check=True, stdout=output, stderr=subprocess.STDOUT, timeout=1800,
            )
        (root / "requirements.txt").write_text("\n".join(requirements) + "\n")
        done.touch()
    return root
