"""docs/reliability.md and its soak plot, written by the fault suite from the figures of its run.

The file is written only when every scenario ran in the session (a partial
run, `-k reload` say, leaves it alone), so it always describes one whole run.
The layout is fixed; only the measured figures change between runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import machine

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "reliability.md"
PLOT = ROOT / "docs" / "reliability-soak.png"

# (key, title, what is done) in the order of the document.
SCENARIOS = [
    ("postgres", "1. PostgreSQL restarts", "`pg_ctl stop -m fast`, 5 s down, started again; MLflow is not restarted"),
    ("s3", "2. S3 unreachable for 10 s", "SeaweedFS stopped (SIGTERM, then SIGKILL after 2 s), started again on its data 10 s later"),
    ("mlflow", "3. MLflow killed and started again", "`SIGKILL` to the whole `mlflow server` process group, started again at once as `restart: unless-stopped` does"),
    ("worker", "4. One worker killed", "`SIGKILL` to one of the 4 gunicorn (2.9.2) or uvicorn (3.17.2) workers"),
    ("reload", "5. nginx reload", "`nginx -s reload` every 3 s"),
    ("init", "6. mlflow-init twice at once", "two `python -m init` started together while the clients log"),
]
SOAK_KEY = "soak"


@dataclass
class Report:
    rows: dict[tuple[str, str], dict] = field(default_factory=dict)  # (scenario, version) -> figures
    soak: dict | None = None

    def add(self, scenario: str, version: str, figures: dict) -> None:
        self.rows[(scenario, version)] = figures

    def complete(self) -> bool:
        return {key for key, _, _ in SCENARIOS} <= {key for key, _ in self.rows} and self.soak is not None

    def write_if_complete(self) -> None:
        if not self.complete():
            return
        self.plot(PLOT)
        DOCUMENT.write_text(self.markdown())

    def markdown(self) -> str:
        lines = [
            "# Reliability under faults and load",
            "",
            "Written by the fault suite (`.venv/bin/python -m pytest -m faults`, part of `./run test`) from the figures "
            "of its last complete run; see the README's [Faults and load](../README.md#faults-and-load). Each scenario "
            "runs 8 clients through nginx (TLS, basic auth), each with MLflow's own client and its retries "
            "(`MLFLOW_HTTP_REQUEST_MAX_RETRIES=6`, `…_BACKOFF_FACTOR=1`), logging batches of 5 metrics with params and "
            "tags, a 256 B–4 KiB artifact every 4th call, and a new run every 40 calls. After each scenario every "
            "acknowledged metric, param and tag is looked up in PostgreSQL and every acknowledged artifact is read "
            "back from the bucket and compared by sha256.",
            "",
            "## Machine",
            "",
            "| | |",
            "|---|---|",
            *[f"| {name} | {value} |" for name, value in machine() if name != "load average at the start"],
            "",
            "## Scenarios",
            "",
            "- **calls**: client calls (`log_batch`, `log_artifact`, `create_run`, `set_terminated`); **acknowledged**: "
            "calls that returned; **failed**: calls that raised after the client's retries, by the last status or "
            "exception; **retried**: calls the HTTP layer retried, and what it saw before retrying;",
            "- **lost**: acknowledged writes missing from PostgreSQL or the bucket (the suite fails unless 0); "
            "**extra runs**: runs no client was told about, each from a `create_run` the client retried;",
            "- **recovery**: seconds from the end of the fault to the first write through nginx that succeeds, "
            "from a probe that writes a metric and a small artifact every 0.2 s without retries;",
            "- **longest call**: the slowest client call, its retries included.",
            "",
            "| scenario | MLflow | what is done | calls | acknowledged | failed | retried (what was seen) | lost | extra runs | recovery | longest call |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, title, action in SCENARIOS:
            for (scenario, version), figures in sorted(self.rows.items()):
                if scenario != key:
                    continue
                failed = ", ".join(f"{count}× {label}" for label, count in figures["failed"].items()) or "0"
                seen = ", ".join(f"{count}× {label}" for label, count in figures["retried_statuses"].items())
                retried = f"{figures['retried_calls']}" + (f" ({seen})" if seen else "")
                recovery = "—" if figures.get("recovery_s") is None else f"{figures['recovery_s']:.1f} s"
                lines.append(
                    f"| {title} | {version} | {action} | {figures['calls']} | {figures['acknowledged']} | {failed} | "
                    f"{retried} | {len(figures['lost'])} | {figures['extra_runs']} | {recovery} | "
                    f"{figures['longest_call_s']:.1f} s |")
        lines += ["", "Notes:", ""]
        for key, title, _ in SCENARIOS:
            for (scenario, version), figures in sorted(self.rows.items()):
                if scenario == key and figures.get("note"):
                    lines.append(f"- {title}, {version}: {figures['note']}")
        soak = self.soak
        lines += [
            "",
            "## Soak",
            "",
            f"MLflow {soak['version']}, {soak['minutes']:.0f} minutes, {soak['clients']} clients at about "
            f"{soak['rate']:.0f} calls/s in all, sampled every {soak['interval']:.0f} s. RSS is the sum over the "
            "process tree: for MLflow, `mlflow server`, uvicorn or gunicorn and their 4 workers, and on 3.x the job "
            "runner and its huey consumers; for nginx, its master and worker. Connections are `pg_stat_activity` "
            "rows of the `mlflow` role. The level after the first minute is the median of the samples from 60 s "
            "to 80 s, the end the median of the last 20 s.",
            "",
            "![RSS and PostgreSQL connections during the soak](reliability-soak.png)",
            "",
            "| | after the first minute | at the end | change | limit |",
            "|---|---|---|---|---|",
            f"| MLflow RSS | {soak['mlflow_rss'][0] / 2**20:.0f} MiB | {soak['mlflow_rss'][1] / 2**20:.0f} MiB | "
            f"{soak['mlflow_change']:+.1%} | ±10% |",
            f"| nginx RSS | {soak['nginx_rss'][0] / 2**20:.1f} MiB | {soak['nginx_rss'][1] / 2**20:.1f} MiB | "
            f"{soak['nginx_change']:+.1%} | ±10% |",
            f"| PostgreSQL connections of `mlflow` (max over the run) | — | {soak['connections_max']} | — | "
            f"{soak['budget']} (workers × (pool + overflow)) |",
            "",
            f"Calls: {soak['calls']}, acknowledged {soak['acknowledged']}, failed {soak['failed_total']}, lost "
            f"{len(soak['lost'])}. Error lines in the logs of MLflow, nginx, PostgreSQL and SeaweedFS during the "
            f"soak: {soak['log_errors']}.",
            "",
        ]
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot

        samples = self.soak["samples"]  # (seconds, mlflow rss, nginx rss, connections)
        minutes = [sample[0] / 60 for sample in samples]
        figure, (memory, nginx, connections) = pyplot.subplots(3, 1, figsize=(7, 6), sharex=True)
        memory.plot(minutes, [sample[1] / 2**20 for sample in samples])
        memory.set_ylabel("MLflow RSS (MiB)")
        memory.set_ylim(0, max(sample[1] for sample in samples) / 2**20 * 1.25)
        nginx.plot(minutes, [sample[2] / 2**20 for sample in samples], color="tab:orange")
        nginx.set_ylabel("nginx RSS (MiB)")
        nginx.set_ylim(0, max(sample[2] for sample in samples) / 2**20 * 1.25)
        connections.step(minutes, [sample[3] for sample in samples], where="post")
        connections.axhline(self.soak["budget"], color="tab:red", linestyle="--", label="budget")
        connections.set_ylim(0, self.soak["budget"] * 1.15)
        connections.set_ylabel("PostgreSQL connections")
        connections.set_xlabel("minutes")
        connections.legend(loc="center right")
        figure.suptitle(f"Soak, MLflow {self.soak['version']}")
        figure.tight_layout()
        figure.savefig(path, dpi=80, metadata={"Software": None})
        pyplot.close(figure)
