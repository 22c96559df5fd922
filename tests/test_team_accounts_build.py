"""What MLFLOW_AUTH_MODE=mlflow changes in the build where no live test looks: the model endpoints, which check
no credentials of their own, keep nginx's htpasswd; and no generated file holds a secret of this mode."""

from __future__ import annotations

from generator import artifacts
from generator.artifacts import auth, compose, nginx
from generator.envfiles import read_project_env
from generator.settings import load_settings
from tests.conftest import write_tree

SECRETS = {"MLFLOW_AUTH_PASSWORD": "admin-password-Secret-1", "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-Secret-key-1",
           "MLFLOW_DB_PASSWORD": "db-Secret-1", "POSTGRES_PASSWORD": "pg-Secret-1",
           "MINIO_ROOT_PASSWORD": "minio-Secret-1"}


def build(tmp_path, **extra):
    lines = {"PROJECT_NAME": "demo", "MLFLOW_ENABLED": "true", "MINIO_ENABLED": "true", "MLFLOW_AUTH_ENABLED": "true",
             "MLFLOW_AUTH_MODE": "mlflow", "MLFLOW_AUTH_HASH_SALT": "a" * 21 + ".", **SECRETS, **extra}
    write_tree(tmp_path, {".env": "".join(f"{key}={value}\n" for key, value in lines.items())})
    return artifacts.build(load_settings(read_project_env(tmp_path)))


def test_served_models_keep_nginxs_check_in_mlflow_mode(tmp_path):
    files = build(tmp_path, MLFLOW_SERVE_MODELS="churn@champion")
    vhost = files[nginx.VHOST_PATH].decode()
    server_part, serving_part = vhost.split("location /serving/", 1)
    assert "auth_basic " not in server_part.split("location = /health")[0], "MLflow checks the tracking paths"
    assert 'auth_basic "MLflow model serving";' in serving_part.split("location / {")[0]
    assert nginx.HTPASSWD_PATH in files
    endpoint = next(service for name, service in __import__("yaml").safe_load(files[compose.PATH])["services"].items()
                    if name.startswith("mlflow-serve-"))
    assert endpoint["environment"]["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert endpoint["environment"]["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_AUTH_PASSWORD:?")


def test_without_served_models_mlflow_mode_has_no_htpasswd(tmp_path):
    files = build(tmp_path)
    assert nginx.HTPASSWD_PATH not in files and auth.PATH in files
    assert "auth_basic" not in files[nginx.VHOST_PATH].decode()


def test_no_generated_file_holds_a_secret(tmp_path):
    files = build(tmp_path, MLFLOW_VERSION="3.17.2")
    for path, content in files.items():
        for value in SECRETS.values():
            assert value.encode() not in content, (path, value)
