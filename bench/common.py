"""What every benchmark shares: result rows, medians, the machine, the report."""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    benchmark: str
    baseline: str
    measured: str
    target: str
    met: bool | None  # None: no target, reported for information
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**missed**", None: "—"}[self.met]


def median(values: list[float]) -> float:
    return statistics.median(values)


def child_environment(**extra: str) -> dict[str, str]:
    """The environment of measured child processes: bytecode caching on, as in any installed copy."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    environment.update(extra)
    return environment


def _first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return ((result.stdout or result.stderr).strip().splitlines() or ["?"])[0]


def machine() -> list[tuple[str, str]]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = "unknown"
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, TypeError):
        pass
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} logical cores available"),
        ("memory", memory),
        ("system", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("Python", sys.version.split()[0]),
        ("nginx", _first_line([nginx, "-v"]).replace("nginx version: ", "")),
        ("PostgreSQL", _first_line(["/usr/lib/postgresql/15/bin/postgres", "--version"])),
        ("load average at the start", " ".join(f"{value:.2f}" for value in os.getloadavg())),
    ]


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | baseline (same run) | measured | target | verdict |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.benchmark} | {row.baseline} | {row.measured} | {row.target} | {row.verdict} |")
    return "\n".join(lines)


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n== {title}")
    width = max(len(row.benchmark) for row in rows)
    for row in rows:
        print(f"{row.benchmark:<{width}}  {row.measured:<32}  baseline: {row.baseline:<28}  target: {row.target:<24} "
              f"{row.verdict.strip('*')}")
        if row.note:
            print(f"{'':<{width}}  note: {row.note}")
