"""The project the service commands operate: its cascade, settings, URLs and credentials."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from generator.envfiles import read_project_env
from generator.errors import UserError
from generator.settings import Settings, load_settings, require_enabled
from service.api import MlflowApi
from service.compose import SERVICES, ComposeProject


@dataclass
class Project:
    directory: Path
    env: str
    settings: Settings
    values: dict[str, str]

    @property
    def direct_url(self) -> str:
        return f"http://localhost:{self.settings.server.port}"

    @property
    def public_url(self) -> str:
        return f"https://{self.settings.public_host}"

    def api(self, url: str | None = None, ca_file: Path | None = None, insecure: bool = False) -> MlflowApi:
        auth = self.settings.auth
        credentials = (auth.username, auth.password.get_secret_value()) if auth.enabled and auth.password else (None, None)
        forbidden = ("MLflow refused MLFLOW_AUTH_USERNAME this (MLFLOW_AUTH_MODE=mlflow): is it still an admin? "
                     "mlflow-init makes it one again at the next nself start; or is this address outside "
                     "MLFLOW_ALLOWED_IPS?") if auth.mlflow_mode else "is this address in MLFLOW_ALLOWED_IPS?"
        return MlflowApi(url or self.direct_url, *credentials, ca_file=ca_file, insecure=insecure,
                         credentials_hint=self.credentials_hint, forbidden_hint=forbidden)

    @property
    def credentials_hint(self) -> str:
        if not self.settings.auth.enabled:
            return "MLFLOW_AUTH_ENABLED is false here; set it to true (with MLFLOW_AUTH_PASSWORD) to match the server"
        if self.settings.auth.password is None:
            return "MLFLOW_AUTH_PASSWORD is not set yet: run nself build, which generates it"
        if self.settings.auth.mlflow_mode:
            return ("check MLFLOW_AUTH_USERNAME and MLFLOW_AUTH_PASSWORD: MLflow's admin gets them when mlflow-init "
                    "runs (nself build, then nself start)")
        return "check MLFLOW_AUTH_USERNAME and MLFLOW_AUTH_PASSWORD against the server's htpasswd (run nself build)"

    def compose(self, out_dir: Path | None = None) -> ComposeProject:
        return ComposeProject.locate(self.directory, self.env, self.settings.stack.project_name, out_dir)


def load_project(project_dir: Path, env: str | None) -> Project:
    if not project_dir.is_dir():
        raise UserError(f"--project-dir: {project_dir} is not a directory")
    project_env = read_project_env(project_dir, env)
    require_enabled(project_env)
    return Project(project_dir, project_env.env, load_settings(project_env), project_env.values)


def enabled_services(project: Project) -> list[str]:
    return [s for s in SERVICES if s != "mlflow-gc" or project.settings.gc.enabled]
