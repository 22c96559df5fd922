"""Monitoring artifacts, checked by promtool (Debian's prometheus) and Grafana's dashboard schema."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from generator.artifacts import compose, grafana, prometheus
from tests.conftest import EXAMPLES, PROFILES, ROOT, build_profile, require_tool

MONITORED = [profile for profile in PROFILES if prometheus.RULES_PATH in build_profile(EXAMPLES / profile)]
SCHEMA = ROOT / "tests" / "schemas" / "grafana-dashboard.schema.json"
# What `mlflow server --expose-prometheus` serves (prometheus-flask-exporter); no path label.
MLFLOW_METRICS = {
    "mlflow_http_request_total",
    "mlflow_http_request_duration_seconds_bucket",
    "mlflow_http_request_duration_seconds_count",
    "mlflow_http_request_duration_seconds_sum",
    "mlflow_http_request_exceptions_total",
    "mlflow_exporter_info",
}
MONITORING_FILES = {prometheus.RULES_PATH, prometheus.SCRAPE_PATH, grafana.DASHBOARD_PATH, grafana.PROVIDER_PATH}
# The example profile that serves models (production-classifier@champion, churn/Production).
SERVING = "serving"
PROMTOOL_TESTS = ROOT / "tests" / "promtool"


@pytest.fixture(scope="session")
def promtool():
    path = shutil.which("promtool")
    require_tool(path, "promtool (Debian package prometheus)")
    return path


def run(command, cwd):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_profiles_with_monitoring_exist_and_others_produce_nothing():
    assert MONITORED, "at least one example profile enables monitoring"
    for profile in PROFILES:
        files = set(build_profile(EXAMPLES / profile))
        assert (MONITORING_FILES <= files) if profile in MONITORED else not (MONITORING_FILES & files), profile


@pytest.mark.parametrize("profile", MONITORED)
def test_rules_pass_promtool_check(profile, promtool, tmp_path):
    (tmp_path / "rules.yml").write_bytes(build_profile(EXAMPLES / profile)[prometheus.RULES_PATH])
    result = run([promtool, "check", "rules", "rules.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_fails_on_a_broken_rule(promtool, tmp_path):
    rules = build_profile(EXAMPLES / "prod")[prometheus.RULES_PATH].decode()
    (tmp_path / "rules.yml").write_text(rules.replace("pg_up == 0", "pg_up == == 0"))
    assert run([promtool, "check", "rules", "rules.yml"], tmp_path).returncode != 0


def unit_test(promtool, tmp_path, rules: bytes, tests: str = "mlflow.test.yml"):
    shutil.copy(PROMTOOL_TESTS / tests, tmp_path / tests)
    (tmp_path / "mlflow.rules.yml").write_bytes(rules)
    return run([promtool, "test", "rules", tests], tmp_path)


def alerts_under_test(tests: str) -> set[str]:
    return set(re.findall(r"alertname: (\w+)", (PROMTOOL_TESTS / tests).read_text()))


def generated_alerts(profile: str) -> set[str]:
    document = yaml.safe_load(build_profile(EXAMPLES / profile)[prometheus.RULES_PATH])
    return {rule["alert"] for group in document["groups"] for rule in group["rules"] if "alert" in rule}


def test_every_alert_fires_on_its_failure_and_stays_silent_when_healthy(promtool, tmp_path):
    result = unit_test(promtool, tmp_path, build_profile(EXAMPLES / "prod")[prometheus.RULES_PATH])
    assert result.returncode == 0, result.stdout + result.stderr
    assert alerts_under_test("mlflow.test.yml") == generated_alerts("prod")


def test_the_serving_alerts_fire_on_a_failing_probe_and_stay_silent_when_healthy(promtool, tmp_path):
    result = unit_test(promtool, tmp_path, build_profile(EXAMPLES / SERVING)[prometheus.RULES_PATH],
                       "mlflow-serving.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # Exactly the alerts that exist only when models are served; mlflow.test.yml tests the others.
    assert alerts_under_test("mlflow-serving.test.yml") == generated_alerts(SERVING) - generated_alerts("prod")
    assert alerts_under_test("mlflow-serving.test.yml") == {"MLflowModelEndpointDown"}


def test_the_unit_tests_catch_a_wrong_threshold(promtool, tmp_path):
    rules = build_profile(EXAMPLES / "prod")[prometheus.RULES_PATH].decode()
    result = unit_test(promtool, tmp_path, rules.replace("ratio_rate5m > 0.05", "ratio_rate5m > 0.6").encode())
    assert result.returncode != 0 and "MLflowHighErrorRate" in result.stdout + result.stderr


def with_alert_changed(rules: bytes, name: str, **changes) -> bytes:
    document = yaml.safe_load(rules)
    (rule,) = [rule for group in document["groups"] for rule in group["rules"] if rule.get("alert") == name]
    rule.update(changes)
    return yaml.safe_dump(document).encode()


@pytest.mark.parametrize("changes", [
    {"expr": 'probe_success{job="mlflow-health"} == 0'},  # the wrong job
    {"expr": 'probe_success{job="mlflow-serving"} < 0'},  # a threshold that never fires
    {"for": "5m"},  # too late
    {"for": "1m"},  # too early
], ids=["job", "threshold", "for-5m", "for-1m"])
def test_the_serving_unit_tests_catch_a_broken_endpoint_alert(promtool, tmp_path, changes):
    rules = build_profile(EXAMPLES / SERVING)[prometheus.RULES_PATH]
    result = unit_test(promtool, tmp_path, with_alert_changed(rules, "MLflowModelEndpointDown", **changes),
                       "mlflow-serving.test.yml")
    assert result.returncode != 0 and "MLflowModelEndpointDown" in result.stdout + result.stderr


@pytest.mark.parametrize("profile", MONITORED)
def test_alerts_follow_the_mixin_conventions(profile):
    document = yaml.safe_load(build_profile(EXAMPLES / profile)[prometheus.RULES_PATH])
    for group in document["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]
                continue
            assert re.fullmatch(r"MLflow[A-Z][A-Za-z]+", rule["alert"])
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert re.fullmatch(r"\d+m", rule["for"])


def test_thresholds_are_settings(project):
    from tests.conftest import write_tree

    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=true\nMONITORING_ENABLED=true\n"
                         "MLFLOW_ALERT_P95_LATENCY_SECONDS=7.5\nMLFLOW_ALERT_BUCKET_SIZE_GB=2\n"})
    rules = build_profile(project)[prometheus.RULES_PATH].decode()
    assert "p95_5m > 7.5" in rules
    assert f"> {2 * 1024 ** 3}" in rules


def check_config(promtool, tmp_path, scrape: dict, rules: bytes):
    (tmp_path / "rules.yml").write_bytes(rules)
    config = {"global": {"scrape_interval": "30s"}, "rule_files": ["rules.yml"], **scrape}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    return run([promtool, "check", "config", "prometheus.yml"], tmp_path)


def scrape_jobs(profile: str) -> dict[str, dict]:
    scrape = yaml.safe_load(build_profile(EXAMPLES / profile)[prometheus.SCRAPE_PATH])
    return {job["job_name"]: job for job in scrape["scrape_configs"]}


@pytest.mark.parametrize("profile", MONITORED)
def test_scrape_config_passes_promtool_check_config(promtool, tmp_path, profile):
    files = build_profile(EXAMPLES / profile)
    scrape = yaml.safe_load(files[prometheus.SCRAPE_PATH])
    result = check_config(promtool, tmp_path, scrape, files[prometheus.RULES_PATH])
    assert result.returncode == 0, result.stdout + result.stderr
    mlflow_job = next(job for job in scrape["scrape_configs"] if job["job_name"] == "mlflow")
    # Inside the network, never through nginx (where /metrics answers 401 under auth).
    assert mlflow_job["static_configs"][0]["targets"] == ["mlflow:5000"]


def test_promtool_check_config_fails_on_a_broken_serving_job(promtool, tmp_path):
    files = build_profile(EXAMPLES / SERVING)
    scrape = yaml.safe_load(files[prometheus.SCRAPE_PATH])
    (job,) = [job for job in scrape["scrape_configs"] if job["job_name"] == prometheus.SERVING_JOB]
    job["job_name"] = prometheus.HEALTH_JOB  # two jobs of one name
    assert check_config(promtool, tmp_path, scrape, files[prometheus.RULES_PATH]).returncode != 0


def test_each_served_model_is_probed_through_the_blackbox_exporter():
    files = build_profile(EXAMPLES / SERVING)
    jobs = scrape_jobs(SERVING)
    job, health = jobs[prometheus.SERVING_JOB], jobs[prometheus.HEALTH_JOB]
    assert {key: job[key] for key in ("metrics_path", "params", "relabel_configs")} == \
        {key: health[key] for key in ("metrics_path", "params", "relabel_configs")}
    assert job["relabel_configs"][-1] == {"target_label": "__address__", "replacement": "mlflow-blackbox:9115"}
    assert job["static_configs"] == [
        {"targets": ["http://mlflow-serve-production-classifier-champion:8080/ping"],
         "labels": {"endpoint": "production-classifier-champion", "model": "production-classifier@champion"}},
        {"targets": ["http://mlflow-serve-churn-production:8080/ping"],
         "labels": {"endpoint": "churn-production", "model": "churn/Production"}},
    ]
    # Every probed host is a service of the generated compose file.
    services = yaml.safe_load(files[compose.PATH])["services"]
    hosts = {re.match(r"http://([^:]+):8080/ping$", target).group(1)
             for entry in job["static_configs"] for target in entry["targets"]}
    assert hosts == {name for name in services if name.startswith("mlflow-serve-")}


@pytest.mark.parametrize("profile", [profile for profile in MONITORED if profile != SERVING])
def test_without_served_models_there_is_no_serving_job_alert_or_row(profile):
    assert prometheus.SERVING_JOB not in scrape_jobs(profile)
    assert "MLflowModelEndpointDown" not in generated_alerts(profile)
    assert "Model serving" not in [panel["title"] for panel in all_panels(dashboards()[profile])]


def dashboards():
    return {profile: json.loads(build_profile(EXAMPLES / profile)[grafana.DASHBOARD_PATH]) for profile in MONITORED}


def all_panels(dashboard):
    return dashboard["panels"]


@pytest.mark.parametrize("profile", MONITORED)
def test_dashboard_validates_against_grafanas_schema(profile):
    schema = json.loads(SCHEMA.read_text())
    dashboard = dashboards()[profile]
    jsonschema.validate(dashboard, schema)
    assert "dashboard" not in dashboard  # the bare model, not the API wrapper
    assert dashboard["uid"] == grafana.UID and dashboard["title"] == "MLflow Overview"


def test_the_schema_check_can_fail():
    schema = json.loads(SCHEMA.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"dashboard": dashboards()["prod"]}, schema)


@pytest.mark.parametrize("profile", MONITORED)
def test_every_panel_uses_the_datasource_variable(profile):
    dashboard = dashboards()[profile]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["datasource"] == panel["datasource"] for t in panel["targets"])


@pytest.mark.parametrize("profile", MONITORED)
def test_panel_ids_are_unique_and_panels_do_not_overlap(profile):
    panels = all_panels(dashboards()[profile])
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def rows(dashboard):
    return [panel["title"] for panel in all_panels(dashboard) if panel["type"] == "row"]


def test_the_dashboard_has_the_promised_rows():
    assert rows(dashboards()["prod"]) == ["Health", "MLflow server", "PostgreSQL", "MinIO", "Containers"]


def test_serving_models_adds_the_model_serving_row_last():
    prod, served = all_panels(dashboards()["prod"]), all_panels(dashboards()[SERVING])
    assert rows(dashboards()[SERVING]) == [*rows(dashboards()["prod"]), "Model serving"]
    # The other panels keep their ids and places.
    assert [(p["id"], p["title"], p["gridPos"]) for p in served[:len(prod)]] == \
        [(p["id"], p["title"], p["gridPos"]) for p in prod]
    row, *members = served[len(prod):]
    assert row["type"] == "row" and row["gridPos"]["y"] == max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in prod)
    assert [(panel["title"], panel["targets"][0]["expr"], panel["targets"][0]["legendFormat"]) for panel in members] == [
        ("Endpoint up", 'probe_success{job="mlflow-serving"}', "{{model}}"),
        ("Probe duration", 'probe_duration_seconds{job="mlflow-serving"}', "{{model}}"),
    ]


def panel_queries(dashboard):
    return [target["expr"] for panel in all_panels(dashboard) for target in panel.get("targets", [])]


def check_queries(promtool, tmp_path, queries):
    rules = {"groups": [{"name": "panels", "rules": [
        {"record": f"panel:query:{index}", "expr": query.replace("$__rate_interval", "5m")}
        for index, query in enumerate(queries)
    ]}]}
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    return run([promtool, "check", "rules", "panels.yml"], tmp_path)


@pytest.mark.parametrize("profile", MONITORED)
def test_every_panel_query_parses_as_promql(promtool, tmp_path, profile):
    result = check_queries(promtool, tmp_path, panel_queries(dashboards()[profile]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_promql_check_can_fail(promtool, tmp_path):
    assert check_queries(promtool, tmp_path, ["sum(rate(x[$__rate_interval])"]).returncode != 0


@pytest.mark.parametrize("profile", MONITORED)
def test_mlflow_metric_names_are_the_ones_mlflow_exposes(profile):
    files = build_profile(EXAMPLES / profile)
    text = files[prometheus.RULES_PATH].decode() + "\n".join(panel_queries(dashboards()[profile]))
    used = set(re.findall(r"(?<![:\w])(mlflow_[a-z_]+)\b(?!:)", text))
    assert used and used <= MLFLOW_METRICS, used - MLFLOW_METRICS


def test_the_provider_loads_the_dashboards_folder():
    provider = yaml.safe_load(build_profile(EXAMPLES / "prod")[grafana.PROVIDER_PATH])
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"] == grafana.DASHBOARDS_IN_CONTAINER


def test_an_external_s3_gets_no_minio_jobs_alerts_or_row(promtool, tmp_path):
    """Its store is no MinIO of this stack: a minio scrape job would only ever be down."""
    files = build_profile(EXAMPLES / "external-s3")
    scrape = yaml.safe_load(files[prometheus.SCRAPE_PATH])
    assert [job["job_name"] for job in scrape["scrape_configs"]] == ["mlflow", "mlflow-health"]
    alerts = {rule["alert"] for group in yaml.safe_load(files[prometheus.RULES_PATH])["groups"]
              for rule in group["rules"] if "alert" in rule}
    assert alerts and not alerts & set(prometheus.MINIO_ALERTS)
    dashboard = json.loads(files[grafana.DASHBOARD_PATH])
    assert [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"] == [
        "Health", "MLflow server", "PostgreSQL", "Containers"]
    assert not [query for query in panel_queries(dashboard) if "minio" in query]
    # What is left still loads in Prometheus, rules included.
    (tmp_path / "rules.yml").write_bytes(files[prometheus.RULES_PATH])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], **scrape}))
    result = run([promtool, "check", "config", "prometheus.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
