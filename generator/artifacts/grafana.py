"""out/monitoring/grafana/: the "MLflow Overview" dashboard and its file provider.

The dashboard is the bare classic JSON model that file provisioning reads
(never the {"dashboard": ...} API wrapper), built as data. Every panel uses
the `datasource` template variable, so it works with any Prometheus name.
"""

from __future__ import annotations

from typing import Any

from generator.artifacts.prometheus import HEALTH_JOB, MLFLOW_JOB, SERVING_JOB, mlflow_container
from generator.render import to_json, to_yaml
from generator.settings import Settings

DASHBOARD_PATH = "monitoring/grafana/dashboards/mlflow-overview.json"
PROVIDER_PATH = "monitoring/grafana/provisioning/dashboards/mlflow.yml"
UID = "nself-mlflow-overview"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Where Grafana's container sees out/monitoring/grafana/dashboards/ (see the README).
DASHBOARDS_IN_CONTAINER = "/var/lib/grafana/dashboards"
WIDTH = 24


def _target(expr: str, legend: str, ref: str, table: bool = False) -> dict[str, Any]:
    target = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}
    if table:
        target.update(instant=True, range=False, format="table")
    return target


def _panel(kind: str, title: str, targets: list[tuple[str, str]], unit: str, description: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [
            _target(expr, legend, chr(ord("A") + index), table=kind == "table")
            for index, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }


def serving_sections(settings: Settings) -> list[tuple[str, list[dict[str, Any]]]]:
    """Only when models are served. Last, so the other panels keep their ids and places either way."""
    if not settings.serving.models:
        return []
    return [
        ("Model serving", [
            _panel("stat", "Endpoint up", [(f'probe_success{{job="{SERVING_JOB}"}}', "{{model}}")], "none",
                   "The /ping probe of each mlflow-serve-<slug>: 1 once its model is loaded and answering."),
            _panel("timeseries", "Probe duration", [
                (f'probe_duration_seconds{{job="{SERVING_JOB}"}}', "{{model}}"),
            ], "s"),
        ]),
    ]


def sections(settings: Settings, kubernetes: bool = False) -> list[tuple[str, list[dict[str, Any]]]]:
    found = _all_sections(settings, kubernetes)
    if settings.external_s3:  # no MinIO metrics: the store is another service's
        found = [(title, panels) for title, panels in found if title != "MinIO"]
    if kubernetes:  # the kubelet probes /health; no blackbox job exists there
        found = [(title, [p for p in panels if p["title"] != HEALTH_PROBE_PANEL]) for title, panels in found]
    return found


HEALTH_PROBE_PANEL = "/health probe"


def _all_sections(settings: Settings, kubernetes: bool) -> list[tuple[str, list[dict[str, Any]]]]:
    database = settings.database.name
    bucket = settings.storage.bucket
    container = mlflow_container(settings, kubernetes)
    requests = f'mlflow_http_request_total{{job="{MLFLOW_JOB}"}}'
    durations = f'mlflow_http_request_duration_seconds_bucket{{job="{MLFLOW_JOB}"}}'
    return [
        ("Health", [
            _panel("stat", "MLflow up", [(f'up{{job="{MLFLOW_JOB}"}}', "{{instance}}")], "none"),
            _panel("stat", HEALTH_PROBE_PANEL, [(f'probe_success{{job="{HEALTH_JOB}"}}', "{{instance}}")], "none"),
            _panel("stat", "PostgreSQL up", [("pg_up", "{{instance}}")], "none"),
            _panel("stat", "Firing MLflow alerts", [('count(ALERTS{service="mlflow", alertstate="firing"}) or vector(0)', "alerts")], "none"),
        ]),
        ("MLflow server", [
            _panel("timeseries", "Requests by status", [
                (f"sum by (status) (rate({requests}[$__rate_interval]))", "{{status}}"),
            ], "reqps", "Artifact routes served by FastAPI on MLflow 3.x are not counted."),
            _panel("timeseries", "5xx error ratio", [
                (f'sum(rate(mlflow_http_request_total{{job="{MLFLOW_JOB}", status=~"5.."}}[$__rate_interval]))'
                 f" / sum(rate({requests}[$__rate_interval]))", "5xx ratio"),
            ], "percentunit"),
            _panel("timeseries", "Latency quantiles", [
                (f"histogram_quantile({q}, sum by (le) (rate({durations}[$__rate_interval])))", f"p{int(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ], "s"),
        ]),
        ("PostgreSQL", [
            _panel("timeseries", "Transactions", [
                (f'rate(pg_stat_database_xact_commit{{datname="{database}"}}[$__rate_interval])', "commits"),
                (f'rate(pg_stat_database_xact_rollback{{datname="{database}"}}[$__rate_interval])', "rollbacks"),
            ], "ops"),
            _panel("timeseries", "Connections by state", [
                (f'sum by (state) (pg_stat_activity_count{{datname="{database}"}})', "{{state}}"),
                ("max(pg_settings_max_connections)", "max_connections"),
            ], "none"),
            _panel("timeseries", "Cache hit ratio", [
                (f'rate(pg_stat_database_blks_hit{{datname="{database}"}}[$__rate_interval]) / '
                 f'(rate(pg_stat_database_blks_hit{{datname="{database}"}}[$__rate_interval]) + '
                 f'rate(pg_stat_database_blks_read{{datname="{database}"}}[$__rate_interval]))', "hit ratio"),
            ], "percentunit"),
            _panel("timeseries", "Database size", [
                (f'pg_database_size_bytes{{datname="{database}"}}', "{{datname}}"),
            ], "bytes"),
            _panel("table", "Top queries by total time", [
                (f'topk(10, sum by (queryid) (rate(pg_stat_statements_seconds_total{{datname="{database}"}}'
                 "[$__rate_interval])))", "{{queryid}}"),
            ], "s", "Needs the pg_stat_statements extension and postgres_exporter's stat_statements collector."),
        ]),
        ("MinIO", [
            _panel("timeseries", "Artifact bucket size", [
                (f'max(minio_bucket_usage_total_bytes{{bucket="{bucket}"}})', bucket),
            ], "bytes"),
            _panel("timeseries", "Artifact objects", [
                (f'max(minio_bucket_usage_object_total{{bucket="{bucket}"}})', bucket),
            ], "none"),
            _panel("timeseries", "Bucket traffic", [
                (f'sum(rate(minio_bucket_traffic_received_bytes{{bucket="{bucket}"}}[$__rate_interval]))', "received"),
                (f'sum(rate(minio_bucket_traffic_sent_bytes{{bucket="{bucket}"}}[$__rate_interval]))', "sent"),
            ], "Bps"),
        ]),
        ("Containers", [
            _panel("timeseries", "MLflow CPU", [
                (f"sum(rate(container_cpu_usage_seconds_total{{{container}}}[$__rate_interval]))", "cores"),
            ], "none"),
            _panel("timeseries", "MLflow memory", [
                (f"max(container_memory_working_set_bytes{{{container}}})", "working set"),
                (f"max(container_spec_memory_limit_bytes{{{container}}} > 0)", "limit"),
            ], "bytes"),
        ]),
    ]


def _lay_out(settings: Settings, kubernetes: bool) -> list[dict[str, Any]]:
    """Rows of equal-width panels, stacked top to bottom; ids in reading order."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    served = [] if kubernetes else serving_sections(settings)  # models are served by compose only
    for title, members in [*sections(settings, kubernetes), *served]:
        panels.append({
            "type": "row", "title": title, "collapsed": False, "id": next_id, "panels": [],
            "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
        })
        next_id += 1
        y += 1
        height = 4 if all(panel["type"] == "stat" for panel in members) else 8
        width = WIDTH // len(members)
        for index, panel in enumerate(members):
            panel = {**panel, "id": next_id, "gridPos": {"h": height, "w": width, "x": index * width, "y": y}}
            panels.append(panel)
            next_id += 1
        y += height
    return panels


def dashboard(settings: Settings, kubernetes: bool = False) -> dict[str, Any]:
    """The dashboard; with kubernetes=True its queries select the Deployment's pods."""
    return {
        "uid": UID,
        "title": "MLflow Overview",
        "description": "nself's MLflow service: health, server, PostgreSQL, MinIO and container metrics.",
        "tags": ["mlflow", "nself"],
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "timezone": "browser",
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Prometheus",
                    "query": "prometheus",
                    "hide": 0,
                    "refresh": 1,
                }
            ]
        },
        "panels": _lay_out(settings, kubernetes),
    }


def provider() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "mlflow",
                "folder": "MLflow",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": DASHBOARDS_IN_CONTAINER},
            }
        ],
    }


def build(settings: Settings) -> dict[str, bytes]:
    if not settings.monitoring.enabled:
        return {}
    return {
        DASHBOARD_PATH: to_json(dashboard(settings)),
        PROVIDER_PATH: to_yaml(provider(), "generator/artifacts/grafana.py"),
    }
