"""Model serving as the build writes it: references, the serving image, services and nginx locations."""

from __future__ import annotations

import pytest
import yaml

from generator.artifacts import compose, nginx, serving
from generator.envfiles import read_project_env
from generator.settings import load_settings
from generator.settings.validators import ModelReference, model_references
from init.serve import Reference, parse_arguments, requirement_mismatches
from tests.conftest import EXAMPLES, MINIMAL_ENV, MINIMAL_SECRETS, build_profile, write_tree


def settings_with(tmp_path, lines: str):
    project = write_tree(tmp_path / "project", {".env": MINIMAL_ENV + lines, ".env.secrets": MINIMAL_SECRETS})
    return load_settings(read_project_env(project))


@pytest.mark.parametrize("text, reference, slug", [
    ("production-classifier@champion", ModelReference("production-classifier", "alias", "champion"),
     "production-classifier-champion"),
    ("churn/production", ModelReference("churn", "stage", "Production"), "churn-production"),
    ("churn/Staging", ModelReference("churn", "stage", "Staging"), "churn-staging"),
    ("churn/007", ModelReference("churn", "version", "7"), "churn-v7"),
    ("Fraud_Model.v2@blue_green", ModelReference("Fraud_Model.v2", "alias", "blue_green"), "fraud-model-v2-blue-green"),
])
def test_each_reference_form_and_its_slug(text, reference, slug):
    (parsed,) = model_references(text)
    assert parsed == reference and parsed.slug == slug
    assert parsed.uri == f"models:/{parsed.text}"


def test_no_models_means_no_serving_artifacts():
    files = build_profile(EXAMPLES / "prod")
    assert not [path for path in files if path.startswith("mlflow-serve/")]
    services = yaml.safe_load(files[compose.PATH])["services"]
    assert not [name for name in services if name.startswith("mlflow-serve-")]
    assert b"/serving/" not in files[nginx.VHOST_PATH]


def test_one_service_and_one_location_per_reference():
    files = build_profile(EXAMPLES / "serving")
    services = yaml.safe_load(files[compose.PATH])["services"]
    vhost = files[nginx.VHOST_PATH].decode()
    for slug, arguments in [("production-classifier-champion", ["--name", "production-classifier", "--alias", "champion"]),
                            ("churn-production", ["--name", "churn", "--stage", "Production"])]:
        service = services[f"mlflow-serve-{slug}"]
        assert service["command"] == ["python", "-m", "init.serve", *arguments, "--host", "0.0.0.0", "--port", "8080"]
        assert service["init"] is True and service["restart"] == "unless-stopped" and service["mem_limit"] == "1g"
        assert "container_name" not in service  # a reload runs two containers of the service for a moment
        assert service["depends_on"] == {"mlflow": {"condition": "service_healthy"}}
        assert service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert service["environment"]["MLFLOW_WORKERS"] == "2"  # 2.9.2: gunicorn's --workers variable
        assert "/ping" in service["healthcheck"]["test"][-1]
        assert f"location /serving/{slug}/ {{" in vhost
        assert f"set $mlflow_serve_upstream mlflow-serve-{slug}:8080;" in vhost


def test_the_serving_image_has_the_mlflow_image_pins_and_the_model_packages():
    files = build_profile(EXAMPLES / "serving")
    mlflow_image, serving_image = files["mlflow/Dockerfile"].decode(), files["mlflow-serve/Dockerfile"].decode()
    assert "FROM ghcr.io/mlflow/mlflow:v2.9.2" in serving_image
    for line in mlflow_image.splitlines():
        if line.strip().startswith('"'):
            assert line.strip().rstrip(" \\") in serving_image
    assert '"scikit-learn==1.5.2"' in serving_image
    for name in serving.INIT_FILES:
        assert files[f"mlflow-serve/init/{name}"] == files[f"mlflow/init/{name}"]


def test_workers_reach_the_scoring_server_through_the_variable_of_its_version(tmp_path):
    settings = settings_with(tmp_path, "MLFLOW_VERSION=3.17.2\nMLFLOW_SERVE_MODELS=churn/3\nMLFLOW_SERVE_WORKERS=3\n")
    service = serving.services(settings, "net", "http://mlflow:5000", serving.build(settings))["mlflow-serve-churn-v3"]
    assert service["environment"]["MLFLOW_MODELS_WORKERS"] == "3" and "MLFLOW_WORKERS" not in service["environment"]
    assert service["environment"]["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] == "60"


def test_the_serving_image_tag_changes_with_its_packages(tmp_path):
    one = settings_with(tmp_path / "a", "MLFLOW_SERVE_MODELS=churn/3\nMLFLOW_SERVE_PIP_PACKAGES=xgboost==2.1.1\n")
    two = settings_with(tmp_path / "b", "MLFLOW_SERVE_MODELS=churn/3\nMLFLOW_SERVE_PIP_PACKAGES=xgboost==2.1.2\n")

    def tag(settings):
        return serving.services(settings, "net", "u", serving.build(settings))["mlflow-serve-churn-v3"]["image"]

    assert tag(one) != tag(two) and tag(one).startswith("demo-mlflow-serve:2.9.2-")


# -- the launcher (python -m init.serve) ---------------------------------------------

@pytest.mark.parametrize("argv, reference", [
    (["--name", "m", "--alias", "champion"], Reference("m", "alias", "champion")),
    (["--name", "m", "--stage", "Production"], Reference("m", "stage", "Production")),
    (["--name", "m", "--version", "3", "--port", "9000"], Reference("m", "version", "3")),
])
def test_the_launcher_reads_the_reference_the_service_passes(argv, reference):
    parsed, host, port = parse_arguments(argv)
    assert parsed == reference and host == "0.0.0.0" and port == ("9000" if "9000" in argv else "8080")


def test_the_launcher_refuses_two_targets():
    with pytest.raises(SystemExit) as exited:
        parse_arguments(["--name", "m", "--alias", "a", "--version", "3"])
    assert exited.value.code == 2


def test_requirement_mismatches_are_one_line_each():
    installed = {"mlflow": "2.9.2", "scikit-learn": "1.9.1", "numpy": "1.26.4"}.get
    requirements = "\n".join([
        "mlflow==2.9.2",
        "scikit-learn==1.5.2",
        "numpy<2",
        "xgboost==2.1.1",
        "# a comment",
        "-r other.txt",
        'pywin32==306; sys_platform == "win32"',
    ])
    assert requirement_mismatches(requirements, lambda name: installed(name.lower())) == [
        "requirement scikit-learn==1.5.2 of the model: the image has scikit-learn 1.9.1 "
        "(pin it in MLFLOW_SERVE_PIP_PACKAGES)",
        "requirement xgboost==2.1.1 of the model: not installed in the image (add it to MLFLOW_SERVE_PIP_PACKAGES)",
    ]


# -- service serve reload: the docker sequence --------------------------------------

class FakeDocker:
    """Answers the docker argv reload_endpoint runs, and records them."""

    def __init__(self, health: list[str]):
        self.calls: list[list[str]] = []
        self.containers = ["old111111111111"]
        self.health = list(health)

    def __call__(self, argv, **_kwargs):
        import subprocess

        self.calls.append(argv)
        out = ""
        if argv[-3:-1] == ["ps", "--quiet"]:
            out = "\n".join(self.containers) + "\n"
        elif "--scale" in argv:
            self.containers.append("new222222222222")
        elif argv[:2] == ["docker", "inspect"]:
            out = self.health.pop(0) + "\n"
        elif argv[:2] == ["docker", "logs"]:
            # A replacement that got as far as the old one's stop is serving; one removed earlier failed.
            if any(call[:2] == ["docker", "stop"] for call in self.calls):
                out = "mlflow-serve: serving churn@champion: version 7 (models:/churn/7)\n"
            else:
                out = "mlflow-serve: churn@champion: FAILED: no alias champion\n"
        return subprocess.CompletedProcess(argv, 0, out, "")


def compose_project(tmp_path):
    from service.compose import ComposeProject

    return ComposeProject("demo", tmp_path, (tmp_path / "docker-compose.mlflow.yml",), ())


def test_reload_starts_the_new_container_waits_until_healthy_and_seen_then_stops_the_old(tmp_path):
    from service.serving import RESOLVER_VALID_SECONDS, reload_endpoint

    docker, slept, said = FakeDocker(["running starting", "running healthy"]), [], []
    (reference,) = model_references("churn@champion")
    line = reload_endpoint(compose_project(tmp_path), reference, said.append, run=docker, sleep=slept.append,
                           clock=lambda: 0.0)
    assert line == "mlflow-serve-churn-champion: now serving churn@champion: version 7"
    steps = [call[call.index("compose") + 7:] if "compose" in call else call for call in docker.calls]
    assert steps == [
        ["ps", "--quiet", "mlflow-serve-churn-champion"],
        ["up", "-d", "--no-deps", "--no-recreate", "--scale", "mlflow-serve-churn-champion=2",
         "mlflow-serve-churn-champion"],
        ["ps", "--quiet", "mlflow-serve-churn-champion"],
        ["docker", "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", "new222222222222"],
        ["docker", "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", "new222222222222"],
        ["docker", "stop", "--time", "30", "old111111111111"],
        ["docker", "rm", "old111111111111"],
        ["docker", "logs", "new222222222222"],
    ]
    # The old container stops only after nginx's resolver has had time to see the new one.
    assert slept[-1] == RESOLVER_VALID_SECONDS + 2


def test_a_replacement_that_fails_is_removed_and_the_old_one_keeps_serving(tmp_path):
    from generator.errors import ServiceError
    from service.serving import reload_endpoint

    docker = FakeDocker(["exited "])
    (reference,) = model_references("churn@champion")
    with pytest.raises(ServiceError) as raised:
        reload_endpoint(compose_project(tmp_path), reference, lambda _: None, run=docker, sleep=lambda _: None,
                        clock=lambda: 0.0)
    assert str(raised.value) == ("mlflow-serve-churn-champion: the new container did not become healthy (exited): "
                                 "mlflow-serve: churn@champion: FAILED: no alias champion; the old one keeps serving")
    assert ["docker", "rm", "-f", "new222222222222"] in docker.calls
    assert not [call for call in docker.calls if call[:2] == ["docker", "stop"]]


def test_status_reads_the_latest_serving_or_failed_line():
    from service.serving import latest_log_state

    log = ("mlflow-serve: serving m@a: version 1 (models:/m/1)\n"
           "mlflow-serve: m@a: FAILED: no alias a\n"
           "mlflow-serve: serving m@a: version 2 (models:/m/2)\n")
    assert latest_log_state(log) == ("2", None)
    assert latest_log_state(log + "mlflow-serve: m@a: FAILED: gone\n") == (None, "gone")
    assert latest_log_state("") == (None, None)


def test_info_prints_both_urls_of_every_endpoint():
    import json

    from tests.conftest import run_generator

    result = run_generator("service", "info", "--project-dir", EXAMPLES / "serving", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model_endpoints"] == [
        {"reference": "production-classifier@champion",
         "public_url": "https://mlflow.example.com/serving/production-classifier-champion/invocations",
         "url_in_docker_network": "http://mlflow-serve-production-classifier-champion:8080/invocations"},
        {"reference": "churn/Production",
         "public_url": "https://mlflow.example.com/serving/churn-production/invocations",
         "url_in_docker_network": "http://mlflow-serve-churn-production:8080/invocations"},
    ]


def test_endpoints_are_mlflow_containers_with_telemetry_off_unless_asked_for(tmp_path):
    from generator import artifacts

    for lines, expected in [("", {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}),
                            ("MLFLOW_TELEMETRY_ENABLED=true\n", {})]:
        settings = settings_with(tmp_path / str(len(lines)), "MLFLOW_SERVE_MODELS=churn/3\n" + lines)
        service = yaml.safe_load(artifacts.build(settings)[compose.PATH])["services"]["mlflow-serve-churn-v3"]
        switches = {key: value for key, value in service["environment"].items()
                    if key in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
        assert switches == expected
