"""Every benchmark, side by side, in one run: `python -m bench [--write docs/benchmarks.md]`.

Each figure is a ratio against a baseline measured in the same run, or a
median of several runs; targets come from the project's performance goals.
Sections: generator build, init, nginx in front of a live MLflow, backup and
restore, model serving, team accounts. With --write, the results and the machine go to a Markdown file.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import auth_mode, backup_restore, build, init_convergence, proxy, serving
from bench.common import Row, machine, print_rows, table

# (name for --only, title, run)
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"

SECTIONS = [
    ("build", "generator build", build.run),
    ("init", "python -m init (wall clock, including the interpreter start)", init_convergence.run),
    ("proxy", "nginx in front of a live MLflow 2.9.2", proxy.run),
    ("backup", "backup and restore (service commands, --direct)", backup_restore.run),
    ("serving", "model serving: nginx in front of a scoring server, MLflow 2.9.2", serving.run),
    ("auth", "team accounts: MLFLOW_AUTH_MODE=mlflow against nginx mode and no auth", auth_mode.run),
]


def report(results: list[tuple[str, list[Row]]], host: list[tuple[str, str]], seconds: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `.venv/bin/python -m bench --write docs/benchmarks.md` (after `./run test` has set up `.venv`"
        " and the image venv). Every figure is measured against a baseline in the same run, or is a median of"
        " several runs; nothing here is a timed unit test.",
        "",
        f"Run of {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} minutes.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in host],
        "",
    ]
    for title, rows in results:
        lines += [f"## {title}", "", table(rows), ""]
        notes = [f"- {row.benchmark}: {row.note}" for row in rows if row.note]
        if notes:
            lines += ["Notes:", *notes, ""]
    # What the figures mean and why a target is missed: written by hand, kept with the code.
    lines.append(ANALYSIS.read_text())
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the results as Markdown to this file")
    parser.add_argument("--only", choices=[name for name, _, _ in SECTIONS], action="append",
                        help="run only this section (repeatable)")
    args = parser.parse_args()
    host = machine()
    started = time.monotonic()
    results = []
    for name, title, run in SECTIONS:
        if args.only and name not in args.only:
            continue
        rows = run()
        print_rows(title, rows)
        results.append((title, rows))
    seconds = time.monotonic() - started
    print(f"\n{seconds / 60:.1f} minutes")
    if args.write:
        args.write.write_text(report(results, host, seconds))
        print(f"written to {args.write}")


if __name__ == "__main__":
    main()
