"""How long `python -m init` takes: fresh stack, re-runs, and PostgreSQL starting late.

Run: .venv/bin/python -m bench.init_convergence   (after ./run test has set up .venv)

Real servers on loopback (PostgreSQL 15, SeaweedFS), the same harness as the
tests. Prints wall-clock seconds per run, including the interpreter start.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
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


def main() -> None:
    pg = PostgresServer().initdb().start()
    s3 = SeaweedS3(S3_ACCESS_KEY, S3_SECRET_KEY).start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            project = make_project(Path(scratch), pg)
            build(project)
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
    width = max(len(name) for name, _ in rows)
    print(f"{'python -m init':<{width}}  seconds")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.2f}")


if __name__ == "__main__":
    main()
