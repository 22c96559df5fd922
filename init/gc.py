"""python -m init.gc: run `mlflow gc` on the MLFLOW_GC_SCHEDULE cron schedule.

    python -m init.gc [--once] -- mlflow gc --backend-store-uri URI ...

The gc command comes after `--`, from the generated compose service, which
picks the flags the pinned MLflow supports. The schedule is read in UTC.

Every run logs one line when it starts and one when it ends. A failed run is
never swallowed: `--once` exits with gc's exit code; the scheduler keeps
going, logs the failure, and `--healthcheck` reports the container unhealthy
until a later run succeeds.

Exit codes: gc's own with --once, 2 bad configuration.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from cronsim import CronSim, CronSimError

STATUS_FILE = Path(os.environ.get("MLFLOW_GC_STATUS_FILE", "/tmp/nself-mlflow-gc.status"))
USAGE = "usage: python -m init.gc [--once | --healthcheck] -- mlflow gc [OPTIONS]"


def log(message: str) -> None:
    print(f"mlflow-gc: {message}", flush=True)


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_gc(command: list[str]) -> int:
    log(f"starting: {' '.join(command)}")
    started = time.monotonic()
    try:
        returncode = subprocess.run(command).returncode
    except OSError as error:
        log(f"FAILED: cannot run {command[0]}: {error}")
        returncode = 127
    elapsed = time.monotonic() - started
    if returncode == 0:
        log(f"finished in {elapsed:.1f} s")
    else:
        log(f"FAILED with exit code {returncode} after {elapsed:.1f} s; deleted runs may remain until the next run")
    STATUS_FILE.write_text(f"{returncode}\n")
    return returncode


def healthcheck() -> int:
    """Healthy until a run fails, and again once a later run succeeds."""
    try:
        last = STATUS_FILE.read_text().strip()
    except FileNotFoundError:
        return 0  # no run yet
    if last == "0":
        return 0
    print(f"the last mlflow gc run failed with exit code {last}; see the container's log", file=sys.stderr)
    return 1


def serve(schedule: str, command: list[str]) -> int:
    def stop(signum, frame):
        log("stopping")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    log(f"schedule '{schedule}' (UTC)")
    while True:
        now = datetime.now(timezone.utc)
        upcoming = next(CronSim(schedule, now))
        log(f"next run at {_utc(upcoming)}")
        # Sleep in short steps: a suspended host or a clock change must not
        # make a run late by the whole remaining interval.
        while (remaining := (upcoming - datetime.now(timezone.utc)).total_seconds()) > 0:
            time.sleep(min(remaining, 60))
        run_gc(command)


def main(argv: list[str]) -> int:
    if "--" not in argv:
        if argv == ["--healthcheck"]:
            return healthcheck()
        if argv in (["--help"], ["-h"]):
            print(USAGE)
            return 0
        print(USAGE, file=sys.stderr)
        return 2
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    if not command or any(option != "--once" for option in options):
        print(USAGE, file=sys.stderr)
        return 2
    if options:
        return run_gc(command)
    schedule = " ".join(os.environ.get("MLFLOW_GC_SCHEDULE", "").split())
    try:
        CronSim(schedule, datetime(2000, 1, 1))
    except CronSimError as error:
        log(f"configuration: MLFLOW_GC_SCHEDULE must be a cron expression like '0 3 * * 0' ({error})")
        return 2
    return serve(schedule, command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
