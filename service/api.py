"""A small client for MLflow's REST API and its artifact proxy.

Only the standard library: the service commands run from the generator's
own environment, which has no MLflow. Every failure becomes a ServiceError
with one line that names the URL and the likely fix.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from generator.errors import ServiceError
from generator.fileio import atomic_file

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
PAGE_SIZE = 1000  # the largest page every supported version accepts
CHUNK = 1 << 20


class _Missing(Exception):
    """The server answered that what was asked for does not exist."""


@dataclass
class MlflowApi:
    base_url: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    insecure: bool = False
    timeout: float = 30
    page_size: int = PAGE_SIZE
    credentials_hint: str = "set MLFLOW_AUTH_USERNAME and MLFLOW_AUTH_PASSWORD in the project's env files"
    forbidden_hint: str = "is this address in MLFLOW_ALLOWED_IPS?"

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")

    # -- transport ---------------------------------------------------------
    def _context(self) -> ssl.SSLContext | None:
        if not self.base_url.startswith("https://"):
            return None
        if self.insecure:
            return ssl._create_unverified_context()
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.username and self.password:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers

    def open(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
             data: Any = None, headers: dict[str, str] | None = None, timeout: float | None = None,
             missing_statuses: tuple[int, ...] = ()):
        """The response; an answer in `missing_statuses` raises _Missing instead of a ServiceError."""
        url = f"{self.base_url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        extra = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            extra["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=self._headers(extra))
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout, context=self._context())
        except urllib.error.HTTPError as error:
            if error.code in missing_statuses:
                raise _Missing(url) from None
            raise self._http_error(error, url) from None
        except urllib.error.URLError as error:
            raise self._unreachable(error.reason, url) from None
        except (TimeoutError, ConnectionError) as error:
            raise self._unreachable(error, url) from None

    def _http_error(self, error: urllib.error.HTTPError, url: str) -> ServiceError:
        detail = error.read(2000).decode(errors="replace").strip()
        try:
            detail = json.loads(detail).get("message", detail)
        except (ValueError, AttributeError):
            pass
        if error.code == 401:
            return ServiceError(f"{self._origin(url)} answered 401 Unauthorized: {self.credentials_hint}")
        if error.code == 403:
            return ServiceError(f"{self._origin(url)} answered 403 Forbidden: {self.forbidden_hint}")
        if error.code in (502, 503, 504):
            return ServiceError(f"{self._origin(url)} answered {error.code}: MLflow is not up behind nginx; "
                                "check `nself service mlflow logs`")
        first_line = detail.splitlines()[0][:300] if detail else error.reason
        return ServiceError(f"{url.split('?')[0]} answered {error.code}: {first_line}")

    def _unreachable(self, reason: object, url: str) -> ServiceError:
        if isinstance(reason, ssl.SSLError):
            return ServiceError(f"{self._origin(url)}: TLS verification failed ({getattr(reason, 'reason', reason)}); "
                                "pass --ca-file with the certificate's CA, or --insecure")
        return ServiceError(f"cannot reach {self._origin(url)} ({reason}): is the stack up? run nself start")

    def _origin(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    # -- JSON API ----------------------------------------------------------
    def get(self, endpoint: str, /, **params: Any) -> dict:
        with self.open("GET", f"{API}/{endpoint}", params=params) as response:
            return json.load(response)

    def optional(self, method: str, endpoint: str, /, missing_statuses: tuple[int, ...] = (404,),
                 body: dict | None = None, **params: Any) -> dict | None:
        """The JSON answer, or None when the server answers that the thing does not exist.

        That is 404 (RESOURCE_DOES_NOT_EXIST); some lookups answer 400 on some
        versions (2.9.2's alias lookup: "Registered model alias … not found").
        """
        try:
            with self.open(method, f"{API}/{endpoint}", params=params or None, body=body,
                           missing_statuses=missing_statuses) as response:
                return json.load(response)
        except _Missing:
            return None

    def get_optional(self, endpoint: str, /, **params: Any) -> dict | None:
        return self.optional("GET", endpoint, **params)

    def post(self, path: str, body: dict) -> dict:
        with self.open("POST", f"{API}/{path}", body=body) as response:
            return json.load(response)

    def text(self, path: str) -> str:
        with self.open("GET", path, timeout=10) as response:
            return response.read().decode(errors="replace").strip()

    def search(self, path: str, body: dict, key: str) -> Iterator[dict]:
        """Every item of a paginated POST …/search."""
        token = None
        while True:
            page = self.post(path, {**body, "max_results": self.page_size, **({"page_token": token} if token else {})})
            yield from page.get(key, [])
            token = page.get("next_page_token")
            if not token:
                return

    def search_get(self, endpoint: str, key: str, /, **params: Any) -> Iterator[dict]:
        """Every item of a paginated GET …/search (registered models, model versions)."""
        token = None
        while True:
            page = self.get(endpoint, max_results=self.page_size, **params, **({"page_token": token} if token else {}))
            yield from page.get(key, [])
            token = page.get("next_page_token")
            if not token:
                return

    # -- artifacts -----------------------------------------------------------
    def list_artifacts(self, run_id: str, path: str | None = None) -> Iterator[dict]:
        """Every file under a run's artifact root: {path, file_size}, depth first."""
        params = {"run_id": run_id, **({"path": path} if path else {})}
        for entry in self.get("artifacts/list", **params).get("files", []):
            if entry.get("is_dir"):
                yield from self.list_artifacts(run_id, entry["path"])
            else:
                yield entry

    def download_artifact(self, run_id: str, path: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with self.open("GET", "/get-artifact", params={"path": path, "run_uuid": run_id}, timeout=600) as response:
            with atomic_file(target, temporary=partial) as output:
                shutil.copyfileobj(response, output, CHUNK)

    def upload_artifact(self, artifact_uri: str, path: str, source: Path) -> None:
        """PUT through the server's artifact proxy (runs whose URI is mlflow-artifacts:/…)."""
        prefix = "mlflow-artifacts:"
        if not artifact_uri.startswith(prefix):
            raise ServiceError(
                f"the run's artifacts live at {artifact_uri}, not behind the server's proxy; "
                "import needs MLFLOW_SERVE_ARTIFACTS=true"
            )
        location = urllib.parse.urlsplit(artifact_uri[len(prefix):]).path.strip("/")
        quoted = urllib.parse.quote(f"{location}/{path}")
        size = source.stat().st_size
        with open(source, "rb") as data:
            with self.open("PUT", f"{ARTIFACTS_API}/{quoted}", data=data, timeout=600,
                           headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"}):
                pass
