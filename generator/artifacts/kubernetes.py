"""out/kubernetes/: the same MLflow as a kustomize base, for a cluster instead of one compose host.

One file per resource, built as data. The containers get the compose services'
argv and environment from the same functions (compose.server_command,
server_environment, init_environment, gc_command, gc_environment); the rules
and the dashboard come from prometheus.py and grafana.py. Secrets are never
written here: `kustomization.yaml` generates the Secret from the project's
.env.secrets when it is rendered, and the containers name its keys.

kustomize refuses files outside the kustomization's folder unless it is run
with `--load-restrictor LoadRestrictionsNone`, and .env.secrets, the htpasswd
and the init SQL live outside out/kubernetes/; the README gives the command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from generator.artifacts import compose, grafana, image, nginx, prometheus
from generator.artifacts.compose import CONTAINER_PORT, METRICS_DIR, EnvRef, EnvTemplate
from generator.render import to_json, to_yaml
from generator.settings import Settings

DIR = "kubernetes"
SOURCE = "generator/artifacts/kubernetes.py"
KUSTOMIZATION = f"{DIR}/kustomization.yaml"

NAME = "mlflow"
GC_NAME = "mlflow-gc"
SECRET_NAME = "mlflow-secrets"
AUTH_SECRET_NAME = "mlflow-basic-auth"
INIT_FILES_NAME = "mlflow-init-files"
DASHBOARD_NAME = "mlflow-dashboard"
# The Deployment's image is this placeholder; kustomization.yaml's `images:` maps it to
# MLFLOW_IMAGE_REPOSITORY and the build's tag, and an overlay's `images:` can map it again.
IMAGE = "mlflow"
# Relative to out/kubernetes/, with out/ in the project (the build's default --out).
SECRETS_ENV_FILE = "../../.env.secrets"
HTPASSWD_FILE = f"../{nginx.HTPASSWD_PATH}"

# The images run as root by default; any unprivileged id works, since nothing is written
# outside the emptyDir volumes.
RUN_AS = 10001
TMP_DIR = "/tmp"
# One more pod than the autoscaler's maximum exists during a rolling update (maxSurge 1,
# maxUnavailable 0): its workers hold connections too.
SURGE = 1
INIT_CONNECTIONS = 1  # psql's admin session; init's schema steps use one more, after it
GC_CONNECTIONS = 1  # `mlflow gc` works through one session
# Pod addresses as Prometheus scrapes them (Host: <pod IP>:5000): MLflow 3.5+ answers 403 to a Host it
# does not list, and /metrics is not exempt as /health is. The RFC 1918 ranges as fnmatch patterns,
# which --allowed-hosts accepts; an in-cluster client may also use the Service's longer DNS names.
POD_HOST_PATTERNS = (
    f"mlflow.*:{CONTAINER_PORT}",
    f"10.*:{CONTAINER_PORT}",
    f"172.1[6-9].*:{CONTAINER_PORT}",
    f"172.2[0-9].*:{CONTAINER_PORT}",
    f"172.3[01].*:{CONTAINER_PORT}",
    f"192.168.*:{CONTAINER_PORT}",
)
INGRESS_NGINX = "nginx.ingress.kubernetes.io"


@dataclass(frozen=True)
class Budget:
    total: int
    formula: str


def connection_budget(max_replicas: int, workers: int, gc_enabled: bool) -> Budget:
    """The most PostgreSQL connections the manifests can open at once."""
    per_worker = compose.POOL_SIZE + compose.POOL_MAX_OVERFLOW
    gc = GC_CONNECTIONS if gc_enabled else 0
    total = (max_replicas + SURGE) * workers * per_worker + INIT_CONNECTIONS + gc
    formula = (
        f"(MLFLOW_HPA_MAX_REPLICAS {max_replicas} + {SURGE} pod of a rolling update) x MLFLOW_WORKERS {workers} "
        f"x {per_worker} (pool {compose.POOL_SIZE} + overflow {compose.POOL_MAX_OVERFLOW}) + {INIT_CONNECTIONS} "
        "mlflow-init" + (f" + {gc} mlflow-gc" if gc else "")
    )
    return Budget(total, formula)


def settings_budget(settings: Settings) -> Budget:
    return connection_budget(settings.kubernetes.hpa_max_replicas, settings.server.workers, settings.gc.enabled)


def _labels(component: str, settings: Settings) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/instance": settings.stack.project_name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "nself-mlflow",
    }


def _selector(component: str, settings: Settings) -> dict[str, str]:
    labels = _labels(component, settings)
    return {key: labels[key] for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")}


def _metadata(name: str, component: str, settings: Settings, **extra: Any) -> dict[str, Any]:
    return {"name": name, "labels": _labels(component, settings), **extra}


def environment(variables: dict[str, Any]) -> list[dict[str, Any]]:
    """Compose's environment as a container's `env`: literals as values, secrets as secretKeyRefs."""
    entries = []
    for name, value in variables.items():
        if isinstance(value, EnvRef):
            entries.append({"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": value.name}}})
        elif isinstance(value, EnvTemplate):  # pragma: no cover - only Hasura's URL, which no pod here gets
            raise ValueError(f"{name}: a secret inside a literal has no secretKeyRef form")
        else:
            entries.append({"name": name, "value": value})
    return entries


def server_command(settings: Settings) -> list[str]:
    return compose.server_command(settings, POD_HOST_PATTERNS)


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _memory(limit: str) -> str:
    """Compose's 2g as Kubernetes' 2Gi: Docker reads k, m and g as powers of 1024."""
    return limit[:-1] + {"k": "Ki", "m": "Mi", "g": "Gi"}[limit[-1]]


def _resources(settings: Settings) -> dict[str, Any]:
    memory = _memory(settings.server.memory_limit)
    limits = {"memory": memory}
    if settings.kubernetes.cpu_limit:
        limits["cpu"] = settings.kubernetes.cpu_limit
    # Memory request = limit: a worker that is evicted under node pressure loses in-flight uploads.
    return {"requests": {"cpu": settings.kubernetes.cpu_request, "memory": memory}, "limits": limits}


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _init_volume_items(settings: Settings) -> list[dict[str, str]]:
    return [
        {"key": _config_key(source), "path": target.rsplit("/", 1)[1]}
        for source, target in compose.init_files(settings).items()
    ]


def _config_key(source: str) -> str:
    return source.rsplit("/", 1)[1]


def deployment(settings: Settings) -> dict[str, Any]:
    k8s = settings.kubernetes
    labels = _labels("server", settings)
    selector = _selector("server", settings)
    init_container = {
        "name": "mlflow-init",
        "image": IMAGE,
        "command": compose.INIT_COMMAND,
        "env": environment(compose.init_environment(settings)),
        "volumeMounts": [
            {"name": "init-files", "mountPath": compose.INIT_FILES_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": TMP_DIR},
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": _container_security(),
    }
    server = {
        "name": "mlflow",
        "image": IMAGE,
        "command": server_command(settings),
        "env": environment(compose.server_environment(settings)),
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        # Startup allows what compose's start_period does (60 s), then the same 30 s rhythm.
        "startupProbe": _probe(5, 24),
        "readinessProbe": _probe(10, 3),
        "livenessProbe": _probe(30, 3),
        "resources": _resources(settings),
        "volumeMounts": [
            # --expose-prometheus needs an empty directory at every start, as compose's tmpfs.
            {"name": "metrics", "mountPath": METRICS_DIR},
            {"name": "tmp", "mountPath": TMP_DIR},
        ],
        "securityContext": _container_security(),
    }
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(NAME, "server", settings),
        "spec": {
            "replicas": k8s.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            # A new pod must be ready before an old one goes: no capacity is lost in a rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": SURGE}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security(),
                    "topologySpreadConstraints": spread,
                    "initContainers": [init_container],
                    "containers": [server],
                    "volumes": [
                        {"name": "init-files", "configMap": {"name": INIT_FILES_NAME, "items": _init_volume_items(settings)}},
                        {"name": "metrics", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }


def service(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        # Named `mlflow` on port 5000, so http://mlflow:5000 (compose.TRACKING_URI) works in the namespace too.
        "metadata": _metadata(NAME, "server", settings),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector("server", settings),
            "ports": [{"name": "http", "port": CONTAINER_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def service_account(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(NAME, "server", settings),
        # MLflow never talks to the Kubernetes API.
        "automountServiceAccountToken": False,
    }


def _ingress_annotations(settings: Settings, auth: bool) -> dict[str, str]:
    proxy = settings.proxy
    annotations = {
        # The vhost's streaming settings: no body limit, nothing buffered, long waits.
        f"{INGRESS_NGINX}/proxy-body-size": "0",
        f"{INGRESS_NGINX}/proxy-request-buffering": "off",
        f"{INGRESS_NGINX}/proxy-buffering": "off",
        f"{INGRESS_NGINX}/proxy-read-timeout": str(proxy.read_timeout),
        f"{INGRESS_NGINX}/proxy-send-timeout": str(proxy.send_timeout),
    }
    if proxy.allowed_ips:
        annotations[f"{INGRESS_NGINX}/whitelist-source-range"] = ",".join(proxy.allowed_ips)
    if auth and settings.auth.enabled:
        annotations[f"{INGRESS_NGINX}/auth-type"] = "basic"
        annotations[f"{INGRESS_NGINX}/auth-secret"] = AUTH_SECRET_NAME
        annotations[f"{INGRESS_NGINX}/auth-realm"] = "MLflow"
    return annotations


def _ingress(name: str, settings: Settings, paths: list[dict[str, Any]], annotations: dict[str, str]) -> dict[str, Any]:
    host = settings.public_host
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _metadata(name, "server", settings, annotations=annotations),
        "spec": {
            "ingressClassName": settings.kubernetes.ingress_class,
            "tls": [{"hosts": [host], "secretName": settings.kubernetes.tls_secret}],
            "rules": [{"host": host, "http": {"paths": paths}}],
        },
    }


def _backend() -> dict[str, Any]:
    return {"service": {"name": NAME, "port": {"name": "http"}}}


def ingress(settings: Settings) -> dict[str, Any]:
    paths = [{"path": "/", "pathType": "Prefix", "backend": _backend()}]
    return _ingress(NAME, settings, paths, _ingress_annotations(settings, auth=True))


def health_ingress(settings: Settings) -> dict[str, Any]:
    """/health without credentials, for outside probes, as the vhost's `location = /health`.
    ingress-nginx applies an Ingress's annotations to its own paths only."""
    paths = [{"path": "/health", "pathType": "Exact", "backend": _backend()}]
    return _ingress(f"{NAME}-health", settings, paths, _ingress_annotations(settings, auth=False))


def legacy_ingress(settings: Settings) -> dict[str, Any]:
    """The seed's …/list endpoints mapped to …/search with a rewrite (no snippet annotations, which
    ingress-nginx disables by default). nginx's rewrite keeps the query string; unlike the vhost it
    cannot add max_results when the client sent none (see the README)."""
    annotations = {
        **_ingress_annotations(settings, auth=True),  # the same credentials as every other path
        f"{INGRESS_NGINX}/use-regex": "true",
        f"{INGRESS_NGINX}/rewrite-target": "/api/2.0/mlflow/$1/search",
    }
    paths = [
        {
            # Anchored: ingress-nginx makes the location `~* "^PATH"` and the rewrite `rewrite "(?i)PATH"`,
            # which would otherwise also take …/list/anything.
            "path": "/api/2.0/mlflow/(experiments|registered-models)/list$",
            "pathType": "ImplementationSpecific",
            "backend": _backend(),
        }
    ]
    return _ingress(f"{NAME}-legacy-list", settings, paths, annotations)


def pod_disruption_budget(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(NAME, "server", settings),
        # A node drain takes one pod at a time; the others keep serving.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector("server", settings)}},
    }


def autoscaler(settings: Settings) -> dict[str, Any]:
    k8s = settings.kubernetes
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(NAME, "server", settings),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "minReplicas": k8s.replicas,
            "maxReplicas": k8s.hpa_max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": k8s.hpa_cpu_percent}},
                }
            ],
        },
    }


def network_policy(settings: Settings) -> dict[str, Any]:
    k8s = settings.kubernetes
    sources: list[dict[str, Any]] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k8s.ingress_namespace}}},
    ]
    if settings.monitoring.enabled:
        sources.append(
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k8s.prometheus_namespace}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        )
    if settings.gc.enabled:
        sources.append({"podSelector": {"matchLabels": _selector("gc", settings)}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(NAME, "server", settings),
        "spec": {
            "podSelector": {"matchLabels": _selector("server", settings)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": CONTAINER_PORT}]}],
        },
    }


def gc_command(settings: Settings) -> list[str]:
    """One run per Job: the CronJob schedules, init.gc --once logs and exits with gc's code."""
    return [*compose.GC_RUNNER, "--once", "--", *compose.gc_command(settings)]


def cron_job(settings: Settings) -> dict[str, Any]:
    labels = _labels("gc", settings)
    container = {
        "name": "mlflow-gc",
        "image": IMAGE,
        "command": gc_command(settings),
        "env": environment(compose.gc_environment(settings)),
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}],  # init.gc's status file
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": _container_security(),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(GC_NAME, "gc", settings),
        "spec": {
            "schedule": settings.gc.schedule,
            "timeZone": "Etc/UTC",  # MLFLOW_GC_SCHEDULE is read in UTC, as by compose's scheduler
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {
                    "backoffLimit": 1,
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "restartPolicy": "Never",
                            "serviceAccountName": NAME,
                            "automountServiceAccountToken": False,
                            "securityContext": _pod_security(),
                            "containers": [container],
                            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                        },
                    },
                },
            },
        },
    }


def service_monitor(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(NAME, "server", settings),
        "spec": {
            # The job label is the Service's name, `mlflow`: the rules' job="mlflow".
            "selector": {"matchLabels": _selector("server", settings)},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        },
    }


def prometheus_rule(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(NAME, "server", settings),
        "spec": prometheus.rules(settings, kubernetes=True),
    }


def dashboard_config_map(settings: Settings) -> dict[str, Any]:
    labels = {**_labels("server", settings), "grafana_dashboard": "1"}  # Grafana's sidecar loads these
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": DASHBOARD_NAME, "labels": labels},
        "data": {"mlflow-overview.json": to_json(grafana.dashboard(settings, kubernetes=True)).decode()},
    }


def resources(settings: Settings) -> dict[str, dict[str, Any]]:
    """File name in out/kubernetes/ -> resource, one per file."""
    found = {
        "serviceaccount.yaml": service_account(settings),
        "deployment.yaml": deployment(settings),
        "service.yaml": service(settings),
        "ingress.yaml": ingress(settings),
        "ingress-legacy-list.yaml": legacy_ingress(settings),
        "poddisruptionbudget.yaml": pod_disruption_budget(settings),
        "horizontalpodautoscaler.yaml": autoscaler(settings),
        "networkpolicy.yaml": network_policy(settings),
    }
    if settings.auth.enabled:
        found["ingress-health.yaml"] = health_ingress(settings)
    if settings.gc.enabled:
        found["cronjob-gc.yaml"] = cron_job(settings)
    if settings.monitoring.enabled:
        found["servicemonitor.yaml"] = service_monitor(settings)
        found["prometheusrule.yaml"] = prometheus_rule(settings)
        found["configmap-dashboard.yaml"] = dashboard_config_map(settings)
    return found


def kustomization(settings: Settings, files: list[str], tag: str) -> dict[str, Any]:
    secrets: list[dict[str, Any]] = [
        # The whole file, read when the kustomization is rendered; the name gets a hash of the content,
        # so a changed password rolls the pods.
        {"name": SECRET_NAME, "envs": [SECRETS_ENV_FILE]},
    ]
    if settings.auth.enabled:
        secrets.append(
            {
                "name": AUTH_SECRET_NAME,
                "files": [f"auth={HTPASSWD_FILE}"],
                # ingress-nginx finds it by the name in an annotation, which kustomize does not rewrite.
                "options": {"disableNameSuffixHash": True},
            }
        )
    repository, version_tag = tag.split(":", 1)
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": files,
        "images": [{"name": IMAGE, "newName": settings.kubernetes.image, "newTag": version_tag}],
        "configMapGenerator": [
            {"name": INIT_FILES_NAME, "files": [f"{_config_key(source)}=../{source}" for source in compose.init_files(settings)]}
        ],
        "secretGenerator": secrets,
    }


def build(settings: Settings, image_files: dict[str, bytes]) -> dict[str, bytes]:
    if not settings.kubernetes.enabled:
        return {}
    found = resources(settings)
    # Through JSON: resources share dicts (selectors), which YAML would write as anchors and aliases.
    files = {f"{DIR}/{name}": to_yaml(json.loads(json.dumps(resource)), SOURCE) for name, resource in found.items()}
    tag = image.image_tag(settings, image_files)
    files[KUSTOMIZATION] = to_yaml(kustomization(settings, sorted(found), tag), SOURCE)
    return files
