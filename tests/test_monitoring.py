"""Monitoring artifacts, checked by promtool (Debian's prometheus) and Grafana's dashboard schema."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from generator.artifacts import grafana, prometheus
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


def unit_test(promtool, tmp_path, rules: bytes):
    shutil.copy(ROOT / "tests" / "promtool" / "mlflow.test.yml", tmp_path / "mlflow.test.yml")
    (tmp_path / "mlflow.rules.yml").write_bytes(rules)
    return run([promtool, "test", "rules", "mlflow.test.yml"], tmp_path)


def test_every_alert_fires_on_its_failure_and_stays_silent_when_healthy(promtool, tmp_path):
    result = unit_test(promtool, tmp_path, build_profile(EXAMPLES / "prod")[prometheus.RULES_PATH])
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (ROOT / "tests/promtool/mlflow.test.yml").read_text()))
    generated = {rule["alert"] for group in yaml.safe_load(
        build_profile(EXAMPLES / "prod")[prometheus.RULES_PATH])["groups"] for rule in group["rules"] if "alert" in rule}
    assert tested == generated


def test_the_unit_tests_catch_a_wrong_threshold(promtool, tmp_path):
    rules = build_profile(EXAMPLES / "prod")[prometheus.RULES_PATH].decode()
    result = unit_test(promtool, tmp_path, rules.replace("ratio_rate5m > 0.05", "ratio_rate5m > 0.6").encode())
    assert result.returncode != 0 and "MLflowHighErrorRate" in result.stdout + result.stderr


def test_alerts_follow_the_mixin_conventions():
    document = yaml.safe_load(build_profile(EXAMPLES / "prod")[prometheus.RULES_PATH])
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


def test_scrape_config_passes_promtool_check_config(promtool, tmp_path):
    files = build_profile(EXAMPLES / "prod")
    scrape = yaml.safe_load(files[prometheus.SCRAPE_PATH])
    (tmp_path / "rules.yml").write_bytes(files[prometheus.RULES_PATH])
    config = {"global": {"scrape_interval": "30s"}, "rule_files": ["rules.yml"], **scrape}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run([promtool, "check", "config", "prometheus.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    mlflow_job = next(job for job in scrape["scrape_configs"] if job["job_name"] == "mlflow")
    # Inside the network, never through nginx (where /metrics answers 401 under auth).
    assert mlflow_job["static_configs"][0]["targets"] == ["mlflow:5000"]


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


def test_every_panel_uses_the_datasource_variable():
    dashboard = dashboards()["prod"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_panel_ids_are_unique_and_panels_do_not_overlap():
    panels = all_panels(dashboards()["prod"])
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


def test_the_dashboard_has_the_promised_rows():
    rows = [panel["title"] for panel in all_panels(dashboards()["prod"]) if panel["type"] == "row"]
    assert rows == ["Health", "MLflow server", "PostgreSQL", "MinIO", "Containers"]


def panel_queries(dashboard):
    return [target["expr"] for panel in all_panels(dashboard) for target in panel.get("targets", [])]


def check_queries(promtool, tmp_path, queries):
    rules = {"groups": [{"name": "panels", "rules": [
        {"record": f"panel:query:{index}", "expr": query.replace("$__rate_interval", "5m")}
        for index, query in enumerate(queries)
    ]}]}
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    return run([promtool, "check", "rules", "panels.yml"], tmp_path)


def test_every_panel_query_parses_as_promql(promtool, tmp_path):
    result = check_queries(promtool, tmp_path, panel_queries(dashboards()["prod"]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_promql_check_can_fail(promtool, tmp_path):
    assert check_queries(promtool, tmp_path, ["sum(rate(x[$__rate_interval])"]).returncode != 0


def test_mlflow_metric_names_are_the_ones_mlflow_exposes():
    files = build_profile(EXAMPLES / "prod")
    text = files[prometheus.RULES_PATH].decode() + "\n".join(panel_queries(dashboards()["prod"]))
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
