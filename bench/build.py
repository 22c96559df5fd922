"""`python -m generator build`: latency against importing its libraries, no-op rebuilds, scale.

Run alone: .venv/bin/python -m bench.build
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Row, child_environment, median, print_rows

RUNS = 15
FULL_PROFILE = ROOT / "examples" / "prod"  # auth, gc, monitoring and MinIO on: every artifact
FORBIDDEN = ("boto3", "botocore", "psycopg", "psycopg2", "mlflow", "urllib3", "requests")

IMPORTED = """
import json, runpy, sys, sysconfig
sys.argv = ["generator", "build", "--project-dir", sys.argv[1], "--out", sys.argv[2]]
try:
    runpy.run_module("generator", run_name="__main__")
except SystemExit:
    pass
roots = tuple({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
names = sorted({name.split(".")[0] for name, module in list(sys.modules.items())
                if (getattr(module, "__file__", None) or "").startswith(roots) and not name.startswith("_")})
# The import statements of the generator's own modules that load those libraries.
import ast
statements = set()
for name, module in list(sys.modules.items()):
    if name.split(".")[0] != "generator" or not getattr(module, "__file__", None):
        continue
    for node in ast.walk(ast.parse(open(module.__file__).read())):
        if isinstance(node, ast.Import):
            statements |= {f"import {alias.name}" for alias in node.names if alias.name.split(".")[0] in names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in names:
            statements |= {f"from {node.module} import {alias.name}" for alias in node.names}
print("IMPORTED " + json.dumps({"libraries": names, "statements": sorted(statements)}))
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=child_environment(), capture_output=True, text=True)


def _timed(*args: str) -> float:
    started = time.perf_counter()
    result = _python(*args)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"python {' '.join(args)} failed:\n{result.stderr}")
    return elapsed


def libraries_the_build_imports(project: Path, scratch: Path) -> tuple[list[str], list[str]]:
    """The third-party packages loaded by a build, and the generator's import statements that load them."""
    result = _python("-c", IMPORTED, str(project), str(scratch / "discover"))
    line = next(line for line in result.stdout.splitlines() if line.startswith("IMPORTED "))
    found = json.loads(line[len("IMPORTED "):])
    return found["libraries"], found["statements"]


def _state(out: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(out)): (path.stat().st_mtime_ns, path.stat().st_ino)
            for path in sorted(out.rglob("*")) if path.is_file()}


def run() -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-build-") as scratch_name:
        scratch = Path(scratch_name)
        project = scratch / "project"
        shutil.copytree(FULL_PROFILE, project)
        _timed("-m", "generator", "build", "--project-dir", str(project), "--out", str(scratch / "warm"))

        libraries, statements = libraries_the_build_imports(project, scratch)
        leaked = [name for name in libraries if name in FORBIDDEN]
        # The generator's own third-party import statements, run alone: importing
        # the libraries exactly as the build imports them (`from pydantic import
        # BaseModel` loads far more of pydantic than `import pydantic`).
        baseline_statement = "; ".join(statements)
        baselines, builds = [], []
        for run_number in range(RUNS):  # interleaved, so load changes hit both alike
            baselines.append(_timed("-c", baseline_statement))
            builds.append(_timed("-m", "generator", "build", "--project-dir", str(project),
                                 "--out", str(scratch / f"out-{run_number}")))
        base, build = median(baselines), median(builds)
        files = len(_state(scratch / "out-0"))
        rows.append(Row(
            f"`generator build`, full prod profile ({files} files into an empty out/), median of {RUNS}",
            f"`python -c` with the build's {len(statements)} third-party import statements: {base:.3f} s",
            f"{build:.3f} s = {build / base:.2f}× the baseline",
            "≤ 1.5× and ≤ 0.25 s",
            build / base <= 1.5 and build <= 0.25,
            "baseline statements: " + "; ".join(statements),
        ))
        rows.append(Row(
            "libraries imported by `generator build`", "—", ", ".join(libraries),
            "no boto3, psycopg or mlflow", not leaked, f"leaked: {', '.join(leaked)}" if leaked else "",
        ))

        out = scratch / "noop"
        _timed("-m", "generator", "build", "--project-dir", str(project), "--out", str(out))
        before = _state(out)
        time.sleep(0.05)
        result = _python("-m", "generator", "build", "--project-dir", str(project), "--out", str(out))
        after = _state(out)
        report = next((line for line in result.stdout.splitlines() if " written, " in line), result.stdout.strip())
        rewritten = sorted(path for path in after if before.get(path) != after[path])
        rows.append(Row(
            "no-op rebuild", "—", f"{report.split(': ', 1)[-1]}; {len(rewritten)} files with a new mtime or inode",
            "0 files rewritten, mtimes unchanged", " 0 written" in report and not rewritten and before == after,
        ))
        rows.append(_scale())
    return rows


SCALE = """
import sys, time
from pathlib import Path
from generator import artifacts
from generator.envfiles import read_project_env
from generator.settings import load_settings
projects = [Path(p) for p in sys.argv[1:]]
times = []
for count in (1, 10):
    started = time.perf_counter()
    for index in range(count):
        artifacts.build(load_settings(read_project_env(projects[index % len(projects)])))
    times.append(time.perf_counter() - started)
print(*times)
"""


def _scale() -> Row:
    """Build cost per environment once the libraries are loaded: 1 vs 10 builds in one process."""
    examples = [ROOT / "examples" / name for name in ("dev", "staging", "prod", "auth-off", "gc-off")]
    result = _python("-c", SCALE, *map(str, examples))
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    one, ten = (float(value) for value in result.stdout.split())
    return Row(
        "scale: 1 → 10 environments rendered in one process (the 5 examples, cycled)",
        f"1 environment: {one * 1000:.0f} ms",
        f"10 environments: {ten * 1000:.0f} ms ({ten / one:.1f}×, {ten / 10 * 1000:.0f} ms each)",
        "linear or better", ten / one <= 10.5,
        "the first render also compiles the templates; each environment is one invocation of nself build",
    )


def main() -> None:
    print_rows("generator build", run())


if __name__ == "__main__":
    main()
