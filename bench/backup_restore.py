"""Backup and restore throughput on a live stack: the seed's workload plus one large artifact.

Run: .venv/bin/python -m bench.backup_restore [SIZE_MIB]   (default 1024; after ./run test)

The end-to-end harness starts examples/prod (PostgreSQL 15, SeaweedFS, init,
MLflow 2.9.2, nginx), runs the seed's tracking and registry examples, and
logs one SIZE_MIB artifact through nginx. Then, with the service commands
as users run them (--direct):
  backup to .tar and to .tar.gz, restore each into a fresh stack.
Reports seconds and MB/s of archive content (dump plus objects, 1 MB = 10^6 bytes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.common import Row, print_rows
from generator.envfiles import read_project_env
from tests.conftest import ROOT
from tests.e2e.conftest import DEFAULT_VERSION, build_out, fresh_servers, make_project
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.stack import Stack
from tests.services import PG_BIN


def service(stack: Stack, project: Path, action: str, *args) -> float:
    extra = ["--mlflow-python", stack.venv / "bin/python"] if action == "restore" else []
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "generator", "service", action, *map(str, args), "--project-dir", str(project),
         "--direct", "--db-host", "127.0.0.1", "--db-port", str(stack.pg.port), "--pg-bindir", str(PG_BIN),
         "--s3-endpoint", stack.s3.endpoint, *map(str, extra)],
        cwd=ROOT, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{action} failed: {result.stderr}")
    return elapsed


def start_stack(project: Path, out: Path, venv: Path, seeded: bool) -> Stack:
    postgres, s3 = fresh_servers()
    stack = Stack(out, read_project_env(project).values, postgres, s3, venv)
    init = stack.run_init()
    if init.returncode != 0:
        raise SystemExit(init.stdout + init.stderr)
    if seeded:
        stack.start_mlflow()
        stack.start_nginx()
    return stack


def stop_stack(stack: Stack) -> None:
    stack.stop()
    stack.s3.stop()
    stack.pg.remove()


def run(size_mib: int = 1024) -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    project = make_project(root, DEFAULT_VERSION)
    out = build_out(project, root / "out")
    venv = image_venv(out / "mlflow" / "Dockerfile")
    source = start_stack(project, out, venv, seeded=True)
    rows = []
    try:
        tracking = source.run_client("seed_tracking.py")
        source.run_client("seed_registry.py", tracking["run_id"])
        source.run_client("large_artifact.py", str(size_mib), timeout=3600)
        for name in ("mlflow-backup.tar", "mlflow-backup.tar.gz"):
            archive = root / name
            seconds = service(source, project, "backup", "--output", archive)
            with tarfile.open(archive, "r:*") as opened:
                manifest = json.load(opened.extractfile("manifest.json"))
            content = manifest["postgres"]["dump"]["size"] + manifest["bucket"]["bytes"]
            size = archive.stat().st_size
            rows.append(Row(f"`service backup` to {name}: the seed's runs plus a {size_mib} MiB artifact", "—",
                            f"{content / 1e6:.0f} MB in {seconds:.1f} s = {content / 1e6 / seconds:.0f} MB/s "
                            f"(archive {size / 1e6:.0f} MB)", "reported", None))
            target = start_stack(project, out, venv, seeded=False)
            try:
                seconds = service(target, project, "restore", "--input", archive)
            finally:
                stop_stack(target)
            rows.append(Row(f"`service restore` from {name} into a fresh stack (verify pass included)", "—",
                            f"{content / 1e6:.0f} MB in {seconds:.1f} s = {content / 1e6 / seconds:.0f} MB/s",
                            "reported", None))
            archive.unlink()
    finally:
        stop_stack(source)
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main() -> None:
    print_rows("backup and restore", run(int(sys.argv[1]) if len(sys.argv) > 1 else 1024))


if __name__ == "__main__":
    main()
