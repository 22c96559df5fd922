"""How long `python -m init` takes: fresh stack, re-runs, and PostgreSQL starting late.

Run: .venv/bin/python -m bench.init_convergence   (after ./run test has set up .venv)

Real servers on loopback (PostgreSQL 15, SeaweedFS), the same harness as the
tests. Prints wall-clock seconds per run, including the interpreter start.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Row, print_rows
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.e2e.mlflow_venv import image_venv
from tests.services import PostgresServer, SeaweedS3
from tests.test_init import build, make_project, run_init

RERUNS = 5


def timed(project, pg, endpoint, **overrides):
    started = time.monotonic()
    result = run_init(project, pg, endpoint, **overrides)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    return elapsed


def run() -> list[Row]:
    pg = PostgresServer().initdb().start()
    s3 = SeaweedS3(S3_ACCESS_KEY, S3_SECRET_KEY).start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            project = make_project(Path(scratch), pg)
            build(project)
            # init runs in the image, beside the pinned MLflow: its schema step is part of the time.
            os.environ.setdefault("INIT_PYTHON", str(image_venv(project / "out" / "mlflow" / "Dockerfile") / "bin/python"))
            rows.append(("fresh stack (creates role, database, bucket, policy)", timed(project, pg, s3.endpoint)))
            reruns = [timed(project, pg, s3.endpoint) for _ in range(RERUNS)]
            rows.append((f"re-run, everything unchanged (median of {RERUNS})", statistics.median(reruns)))

            late = PostgresServer().initdb()
            try:
                late_project = make_project(Path(scratch), late)
                build(late_project)
                ready_at = {}

                def start_late():
                    late.start()
                    ready_at["t"] = time.monotonic()

                timer = threading.Timer(5, start_late)
                timer.start()
                timed(late_project, late, s3.endpoint, MLFLOW_INIT_TIMEOUT="60")
                done = time.monotonic()
                timer.join()
                rows.append(("PostgreSQL 5 s late: done after PostgreSQL was ready", done - ready_at["t"]))
            finally:
                late.remove()
    finally:
        s3.stop()
        pg.remove()
    (_, fresh), (_, rerun), (_, late) = rows
    return [
        Row("`python -m init` on a ready, empty stack (creates role, database, bucket, policy)", "—",
            f"{fresh:.2f} s", "≤ 2 s", fresh <= 2),
        Row(f"`python -m init` re-run, every step unchanged (median of {RERUNS})", "—", f"{rerun:.2f} s", "≤ 1 s",
            rerun <= 1),
        Row("`python -m init` with PostgreSQL starting 5 s late", "the moment PostgreSQL is ready",
            f"done {late:.2f} s later", "≤ 1 s", late <= 1),
        Row("init with more buckets or databases", "—", "one database and one bucket per project", "—", None,
            "MLflow uses exactly one of each, so init does not scale with a count"),
    ]


def main() -> None:
    print_rows("python -m init (wall clock, including the interpreter start)", run())


if __name__ == "__main__":
    main()
