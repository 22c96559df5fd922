"""out/monitoring/prometheus/: MLflow's scrape jobs and its recording and alerting rules.

Metric names are the ones the exporters expose:
- MLflow (prometheus-flask-exporter, `--expose-prometheus`): mlflow_http_request_total{method,status},
  mlflow_http_request_duration_seconds_bucket{le,method,status}; no path label.
- postgres_exporter: pg_up, pg_stat_activity_count{datname,state}, pg_settings_max_connections,
  pg_stat_activity_max_tx_duration{datname}.
- MinIO v2 metrics: minio_bucket_usage_total_bytes{bucket}, minio_cluster_capacity_usable_{free,total}_bytes.
- cAdvisor: container_memory_working_set_bytes, container_spec_memory_limit_bytes,
  container_start_time_seconds, with the compose service as container_label_com_docker_compose_service.
- blackbox_exporter: probe_success and probe_duration_seconds for the /health probe and, when
  MLFLOW_SERVE_MODELS is set, for each scoring server's /ping.
"""

from __future__ import annotations

from typing import Any

from generator.artifacts import serving
from generator.artifacts.compose import CONTAINER_PORT
from generator.render import to_yaml
from generator.settings import Settings

RULES_PATH = "monitoring/prometheus/rules/mlflow.rules.yml"
SCRAPE_PATH = "monitoring/prometheus/scrape/mlflow.yml"
SOURCE = "generator/artifacts/prometheus.py"

MLFLOW_JOB = "mlflow"
HEALTH_JOB = "mlflow-health"
SERVING_JOB = "mlflow-serving"
BUCKET_JOB = "mlflow-minio"
BLACKBOX_ADDRESS = "mlflow-blackbox:9115"
# Alerts on MinIO's own metrics: left out with an external S3, which has neither
# these metrics nor a minio scrape target (its operator monitors it).
MINIO_ALERTS = ("MLflowArtifactBucketLarge", "MLflowMinioCapacityLow")
GIB = 1024**3


# Kubernetes pods of the `mlflow` Deployment (<deployment>-<replica set hash>-<pod id>), as the kubelet's
# cAdvisor labels their containers.
KUBERNETES_CONTAINER = 'container="mlflow", pod=~"mlflow-[a-z0-9]+-[a-z0-9]+"'


def mlflow_container(settings: Settings, kubernetes: bool = False) -> str:
    """cAdvisor's selector for MLflow's container: compose labels, or the Deployment's pods."""
    if kubernetes:
        return KUBERNETES_CONTAINER
    return f'container_label_com_docker_compose_service="mlflow", container_label_com_docker_compose_project="{settings.stack.project_name}"'


# Alerts on jobs a cluster does not have: the kubelet probes /health itself (no blackbox exporter there)
# and the S3 is external.
NOT_ON_KUBERNETES = ("MLflowHealthCheckFailing", "MLflowMonitoringTargetDown")


def recording_rules(settings: Settings) -> list[dict[str, Any]]:
    database = settings.database.name
    return [
        {
            "record": "job:mlflow_http_requests:rate5m",
            "expr": f'sum by (job) (rate(mlflow_http_request_total{{job="{MLFLOW_JOB}"}}[5m]))',
        },
        {
            "record": "job:mlflow_http_requests_5xx:ratio_rate5m",
            "expr": (
                f'sum by (job) (rate(mlflow_http_request_total{{job="{MLFLOW_JOB}", status=~"5.."}}[5m]))\n'
                f'/\nsum by (job) (rate(mlflow_http_request_total{{job="{MLFLOW_JOB}"}}[5m]))'
            ),
        },
        {
            "record": "job:mlflow_http_request_duration_seconds:p95_5m",
            "expr": (
                "histogram_quantile(0.95, sum by (job, le) "
                f'(rate(mlflow_http_request_duration_seconds_bucket{{job="{MLFLOW_JOB}"}}[5m])))'
            ),
        },
        {
            "record": "datname:pg_stat_activity_count:sum",
            "expr": f'sum by (datname) (pg_stat_activity_count{{datname="{database}"}})',
        },
    ]


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity, "service": "mlflow"},
        "annotations": {"summary": summary, "description": description},
    }


def serving_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Only when models are served: a scoring server answers /ping with 200 once its model is loaded."""
    if not settings.serving.models:
        return []
    return [
        _alert(
            "MLflowModelEndpointDown", f'probe_success{{job="{SERVING_JOB}"}} == 0', "2m", "critical",
            "Model endpoint {{ $labels.endpoint }} is down",
            "The /ping probe of mlflow-serve-{{ $labels.endpoint }}, which serves {{ $labels.model }}, "
            "has failed for 2 minutes: /serving/{{ $labels.endpoint }}/ cannot score.",
        ),
    ]


def alerts(settings: Settings, kubernetes: bool = False) -> list[dict[str, Any]]:
    found = _all_alerts(settings, kubernetes)
    if settings.external_s3:
        found = [alert for alert in found if alert["alert"] not in MINIO_ALERTS]
    if kubernetes:
        found = [alert for alert in found if alert["alert"] not in NOT_ON_KUBERNETES]
    return found


def connections_needed(settings: Settings, kubernetes: bool) -> tuple[int, str]:
    """What MLflow may open at most, and how that is counted (for the alert's description)."""
    if kubernetes:
        from generator.artifacts.kubernetes import settings_budget

        budget = settings_budget(settings)
        return budget.total, budget.formula
    return settings.server.workers * 10, "MLFLOW_WORKERS x 10"


def _all_alerts(settings: Settings, kubernetes: bool) -> list[dict[str, Any]]:
    monitoring = settings.monitoring
    database = settings.database.name
    bucket = settings.storage.bucket
    container = mlflow_container(settings, kubernetes)
    # One container under compose; per pod on Kubernetes, where each has its own limit.
    per = " by (pod)" if kubernetes else ""
    needed, counted = connections_needed(settings, kubernetes)
    bucket_bytes = int(monitoring.bucket_size_gb * GIB)
    return [
        _alert(
            "MLflowTargetDown", f'up{{job="{MLFLOW_JOB}"}} == 0', "2m", "critical",
            "MLflow is down",
            "Prometheus cannot scrape MLflow at {{ $labels.instance }} for 2 minutes.",
        ),
        _alert(
            "MLflowHealthCheckFailing", f'probe_success{{job="{HEALTH_JOB}"}} == 0', "2m", "critical",
            "MLflow /health is failing",
            "The /health probe of {{ $labels.instance }} has failed for 2 minutes.",
        ),
        _alert(
            "MLflowHighErrorRate",
            f"job:mlflow_http_requests_5xx:ratio_rate5m > {monitoring.error_ratio:g}", "10m", "warning",
            "MLflow answers many requests with 5xx",
            f"{{{{ $value | humanizePercentage }}}} of MLflow requests fail with 5xx "
            f"(threshold {monitoring.error_ratio:g}, MLFLOW_ALERT_ERROR_RATIO).",
        ),
        _alert(
            "MLflowHighLatency",
            f"job:mlflow_http_request_duration_seconds:p95_5m > {monitoring.p95_latency_seconds:g}", "10m", "warning",
            "MLflow responds slowly",
            f"The 95th percentile of MLflow response times is {{{{ $value | humanizeDuration }}}} "
            f"(threshold {monitoring.p95_latency_seconds:g}s, MLFLOW_ALERT_P95_LATENCY_SECONDS).",
        ),
        _alert(
            "MLflowMonitoringTargetDown",
            f'up{{job=~"{HEALTH_JOB}|{BUCKET_JOB}.*"}} == 0', "10m", "warning",
            "A scrape job of the MLflow monitoring fails",
            "Prometheus cannot scrape {{ $labels.job }} at {{ $labels.instance }}: the MLflow health and MinIO "
            "alerts are blind until it is back (for MinIO, check MINIO_PROMETHEUS_AUTH_TYPE=public).",
        ),
        _alert(
            "MLflowPostgresDown", "pg_up == 0", "2m", "critical",
            "PostgreSQL is down",
            "postgres_exporter cannot reach PostgreSQL, which holds MLflow's metadata.",
        ),
        _alert(
            # The whole server: MLflow fails to connect when any database
            # uses up max_connections, not only its own.
            "MLflowDatabaseConnectionsNearLimit",
            "sum(pg_stat_activity_count) / max(pg_settings_max_connections) > 0.8",
            "5m", "warning",
            "PostgreSQL is close to max_connections",
            f"PostgreSQL uses {{{{ $value | humanizePercentage }}}} of max_connections; MLflow ({database}) "
            f"needs up to {needed} ({counted}).",
        ),
        _alert(
            "MLflowLongRunningTransaction",
            f'max by (datname) (pg_stat_activity_max_tx_duration{{datname="{database}"}}) > 300', "5m", "warning",
            "A transaction on the MLflow database runs long",
            f"A transaction on {database} has been open for {{{{ $value | humanizeDuration }}}}.",
        ),
        _alert(
            "MLflowArtifactBucketLarge",
            f'max by (bucket) (minio_bucket_usage_total_bytes{{bucket="{bucket}"}}) > {bucket_bytes}', "30m", "info",
            "The MLflow artifact bucket is large",
            f"Bucket {bucket} holds {{{{ $value | humanize1024 }}}}B (threshold {monitoring.bucket_size_gb:g} GiB, "
            "MLFLOW_ALERT_BUCKET_SIZE_GB). Run `nself service mlflow gc` or raise the threshold.",
        ),
        _alert(
            "MLflowMinioCapacityLow",
            "min(minio_cluster_capacity_usable_free_bytes / minio_cluster_capacity_usable_total_bytes) < 0.1",
            "15m", "warning",
            "MinIO is running out of space",
            "Less than 10% of MinIO's usable capacity is free; MLflow artifact uploads will start failing.",
        ),
        _alert(
            "MLflowContainerMemoryNearLimit",
            f"max{per}(container_memory_working_set_bytes{{{container}}})\n"
            f"/ max{per}(container_spec_memory_limit_bytes{{{container}}} > 0) > 0.9",
            "10m", "warning",
            "The MLflow container is close to its memory limit",
            "MLflow uses {{ $value | humanizePercentage }} of its container memory limit.",
        ),
        _alert(
            "MLflowContainerRestarting",
            f"sum(changes(container_start_time_seconds{{{container}}}[15m])) > 2", "0m", "warning",
            "The MLflow container keeps restarting",
            "The MLflow container restarted more than twice in 15 minutes.",
        ),
    ]


def rules(settings: Settings, kubernetes: bool = False) -> dict[str, Any]:
    """mlflow.rules.yml, and with kubernetes=True the PrometheusRule's spec (models are served by compose only)."""
    served = [] if kubernetes else serving_alerts(settings)
    return {
        "groups": [
            {"name": "mlflow.recording", "interval": "1m", "rules": recording_rules(settings)},
            {"name": "mlflow.alerts", "rules": [*alerts(settings, kubernetes), *served]},
        ]
    }


def _probe_relabelling() -> list[dict[str, Any]]:
    """A blackbox job: the target becomes the probe's ?target= and the instance; the exporter is scraped."""
    return [
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": BLACKBOX_ADDRESS},
    ]


def serving_jobs(settings: Settings) -> list[dict[str, Any]]:
    """Each scoring server's /ping through the blackbox exporter; the series carry the slug
    (`endpoint`, as in mlflow-serve-<slug> and /serving/<slug>/) and the reference (`model`)."""
    if not settings.serving.models:
        return []
    return [
        {
            "job_name": SERVING_JOB,
            "metrics_path": "/probe",
            "params": {"module": ["http_2xx"]},
            "static_configs": [
                {
                    "targets": [f"{serving.internal_url(reference)}/ping"],
                    "labels": {"endpoint": reference.slug, "model": reference.text},
                }
                for reference in settings.serving.models
            ],
            "relabel_configs": _probe_relabelling(),
        }
    ]


# In mlflow mode the auth app guards /metrics too (401 without credentials on
# 2.9.2 and 3.17.2, tested live): Prometheus logs in as the admin, with the
# password read from a file the operator mounts (Prometheus cannot read it
# from the environment, and no generated file holds a secret).
METRICS_PASSWORD_FILE = "/etc/prometheus/secrets/mlflow-auth-password"


def _mlflow_credentials(settings: Settings) -> dict[str, Any]:
    if not settings.auth.mlflow_mode:
        return {}
    return {"basic_auth": {"username": settings.auth.username, "password_file": METRICS_PASSWORD_FILE}}


def scrape_configs(settings: Settings) -> dict[str, Any]:
    """Jobs nself's monitoring bundle lacks: MLflow itself, its /health, MinIO's bucket metrics (not with
    an external S3: it is no MinIO of this stack) and, when models are served, each scoring server's /ping."""
    scheme, minio = settings.storage.endpoint.rstrip("/").split("://", 1)
    jobs = {
        "scrape_configs": [
            {
                # Inside the Docker network: through nginx, /metrics would answer 401 under auth.
                "job_name": MLFLOW_JOB,
                "metrics_path": "/metrics",
                **_mlflow_credentials(settings),
                "static_configs": [{"targets": [f"mlflow:{CONTAINER_PORT}"]}],
            },
            {
                "job_name": HEALTH_JOB,
                "metrics_path": "/probe",
                "params": {"module": ["http_2xx"]},
                "static_configs": [{"targets": [f"http://mlflow:{CONTAINER_PORT}/health"]}],
                "relabel_configs": _probe_relabelling(),
            },
            {
                # Bucket usage and cluster capacity; MinIO must allow it with
                # MINIO_PROMETHEUS_AUTH_TYPE=public (see the README).
                "job_name": BUCKET_JOB,
                "scheme": scheme,
                "metrics_path": "/minio/v2/metrics/bucket",
                "static_configs": [{"targets": [minio]}],
            },
            {
                "job_name": f"{BUCKET_JOB}-cluster",
                "scheme": scheme,
                "metrics_path": "/minio/v2/metrics/cluster",
                "static_configs": [{"targets": [minio]}],
            },
            *serving_jobs(settings),
        ]
    }
    if settings.external_s3:
        jobs["scrape_configs"] = [job for job in jobs["scrape_configs"] if not job["job_name"].startswith(BUCKET_JOB)]
    return jobs


def build(settings: Settings) -> dict[str, bytes]:
    if not settings.monitoring.enabled:
        return {}
    return {RULES_PATH: to_yaml(rules(settings), SOURCE), SCRAPE_PATH: to_yaml(scrape_configs(settings), SOURCE)}
