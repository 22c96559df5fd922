"""The vhost and htpasswd as real nginx binaries read and serve them.

Two nginx serve the vhost: Debian 12's 1.22 and 1.26, which reads the default
rendering (NGINX_VERSION 1.27: `listen 443 ssl;` plus `http2 on;`). Debian 12
has no package of 1.25 or later, so `./run test` builds 1.26 once with
tools/build-nginx. 1.22 cannot parse `http2 on;`, so the pairs are 1.26 with
both renderings and 1.22 with its own, and a test proves that 1.22 rejects the
default rendering.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from generator.artifacts import nginx
from generator.envfiles import read_project_env
from generator.settings import load_settings
from tests.conftest import EXAMPLES, PROFILES, require_tool, write_tree
from tests.nginx_harness import BUILT_NGINX, DEBIAN_NGINX, NginxServer, RecordingUpstream, installed_nginx_version

OLD_NGINX_VERSION = (1, 22, 1)


@dataclass(frozen=True)
class Target:
    """An nginx binary and the NGINX_VERSION the vhost is rendered for (None: the default)."""

    binary: Path
    rendering: tuple[int, int, int] | None


TARGETS = [
    pytest.param(("built", None), id="nginx1.26-default"),
    pytest.param(("built", OLD_NGINX_VERSION), id="nginx1.26-render1.22"),
    pytest.param(("debian", OLD_NGINX_VERSION), id="nginx1.22-render1.22"),
]


@pytest.fixture(scope="session")
def debian_nginx() -> Path:
    require_tool(DEBIAN_NGINX, "nginx 1.22 (Debian package nginx)")
    version = installed_nginx_version(DEBIAN_NGINX)
    assert version < nginx.HTTP2_DIRECTIVE_SINCE, f"{DEBIAN_NGINX} is nginx {version}, not Debian 12's 1.22"
    return DEBIAN_NGINX


@pytest.fixture(scope="session")
def built_nginx() -> Path:
    require_tool(BUILT_NGINX, "nginx 1.26 (tools/build-nginx; `./run test` runs it as root)")
    version = installed_nginx_version(BUILT_NGINX)
    assert version >= nginx.HTTP2_DIRECTIVE_SINCE, f"{BUILT_NGINX} is nginx {version}, older than 1.25.1"
    return BUILT_NGINX


@pytest.fixture(scope="module", params=TARGETS)
def target(request) -> Target:
    which, rendering = request.param
    return Target(request.getfixturevalue(f"{which}_nginx"), rendering)


def settings_for(project_dir, nginx_version=None):
    settings = load_settings(read_project_env(project_dir))
    if nginx_version is not None:
        proxy = settings.proxy.model_copy(update={"nginx_version": nginx_version})
        settings = settings.model_copy(update={"proxy": proxy})
    return settings


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_passes_nginx_t(profile, target):
    settings = settings_for(EXAMPLES / profile, target.rendering)
    files = nginx.build(settings)
    vhost = files[nginx.VHOST_PATH].decode()
    # The rendering is the one this pair names.
    if target.rendering is None:
        assert "    listen 443 ssl;\n    http2 on;\n" in vhost
    else:
        assert "    listen 443 ssl http2;\n" in vhost and "http2 on;" not in vhost
    server = NginxServer(vhost, settings.public_host, "mlflow:5000", files.get(nginx.HTPASSWD_PATH),
                         binary=target.binary)
    # The upstream stays the unresolvable service name: nginx must accept it.
    server.upstream = "mlflow:5000"
    try:
        result = server.test_config()
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_fails_on_a_broken_vhost(target):
    settings = settings_for(EXAMPLES / "prod", target.rendering)
    broken = nginx.vhost(settings).decode().replace("proxy_read_timeout", "proxy_read_timeuot")
    server = NginxServer(broken, settings.public_host, "mlflow:5000", binary=target.binary)
    try:
        result = server.test_config()
    finally:
        server.stop()
    assert result.returncode != 0 and "proxy_read_timeuot" in result.stderr


def test_nginx_1_22_rejects_the_default_rendering(debian_nginx):
    """Why NGINX_VERSION matters, and proof that the nginx -t above can fail on the syntax."""
    settings = settings_for(EXAMPLES / "prod")
    vhost = nginx.vhost(settings).decode()
    assert "http2 on;" in vhost
    server = NginxServer(vhost, settings.public_host, "mlflow:5000", binary=debian_nginx)
    try:
        result = server.test_config()
    finally:
        server.stop()
    assert result.returncode != 0
    assert 'unknown directive "http2"' in result.stderr


def test_versions_differ_only_in_the_http2_syntax():
    old = nginx.vhost(settings_for(EXAMPLES / "prod", (1, 25, 0))).decode().splitlines()
    new = nginx.vhost(settings_for(EXAMPLES / "prod", (1, 25, 1))).decode().splitlines()
    removed = [line.strip() for line in old if line not in new]
    added = [line.strip() for line in new if line not in old]
    assert [line for line in removed if not line.startswith("#")] == ["listen 443 ssl http2;"]
    assert [line for line in added if not line.startswith("#")] == ["listen 443 ssl;", "http2 on;"]


def test_certificates_follow_nselfs_convention():
    assert nginx.certificate_dir("localhost") == "/etc/nginx/ssl/localhost"
    assert nginx.certificate_dir("app.localhost") == "/etc/nginx/ssl/localhost"
    assert nginx.certificate_dir("local.nself.org") == "/etc/nginx/ssl/nself-org"
    assert nginx.certificate_dir("example.com") == "/etc/nginx/ssl/example-com"
    assert nginx.certificate_dir("staging.example.co.uk") == "/etc/nginx/ssl/staging-example-co-uk"


@pytest.fixture(scope="module")
def upstream():
    server = RecordingUpstream()
    yield server
    server.stop()


def live(project_dir, upstream, target):
    settings = settings_for(project_dir, target.rendering)
    files = nginx.build(settings)
    return NginxServer(files[nginx.VHOST_PATH].decode(), settings.public_host, upstream.address,
                       files.get(nginx.HTPASSWD_PATH), binary=target.binary).start(), settings


@pytest.fixture(scope="module")
def staging(upstream, target):
    server, settings = live(EXAMPLES / "staging", upstream, target)
    yield server, settings
    server.stop()


def credentials(settings):
    return settings.auth.username, settings.auth.password.get_secret_value()


def test_basic_auth_guards_every_path(staging):
    server, settings = staging
    for path in ("/", "/api/2.0/mlflow/experiments/search?max_results=1", "/ajax-api/2.0/mlflow/runs/search",
                 "/get-artifact?path=x", "/api/2.0/mlflow-artifacts/artifacts/x", "/metrics", "/version",
                 "/api/2.0/mlflow/experiments/list", "/api/2.0/mlflow/registered-models/list"):
        assert server.request("GET", path)[0] == 401, path
        assert server.request("GET", path, auth=(settings.auth.username, "wrong-password"))[0] == 401, path
        assert server.request("GET", path, auth=credentials(settings))[0] == 200, path


def test_health_stays_open(staging):
    server, _settings = staging
    assert server.request("GET", "/health")[0] == 200


def test_only_health_itself_passes_without_credentials(staging, upstream):
    """A path nginx normalises to /health reaches MLflow as /health, never as written."""
    server, _settings = staging
    for path in ("/api/2.0/mlflow/experiments/search/../../../../../health?max_results=1",
                 "/get-artifact/%2e%2e/health?path=model"):
        status, _ = server.request("GET", path)
        assert status == 200
        assert upstream.requests[-1]["path"] == "/health", path


def test_headers_reach_the_upstream(staging, upstream):
    server, settings = staging
    server.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1", auth=credentials(settings))
    headers = {key.lower(): value for key, value in upstream.requests[-1]["headers"].items()}
    assert headers["host"] == settings.public_host
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert "127.0.0.1" in headers["x-forwarded-for"]


@pytest.mark.parametrize(
    ("request_path", "upstream_path"),
    [
        ("/api/2.0/mlflow/experiments/list", "/api/2.0/mlflow/experiments/search?max_results=1000"),
        ("/api/2.0/mlflow/experiments/list?view_type=ALL",
         "/api/2.0/mlflow/experiments/search?max_results=1000&view_type=ALL"),
        ("/api/2.0/mlflow/experiments/list?max_results=5&view_type=ALL",
         "/api/2.0/mlflow/experiments/search?max_results=5&view_type=ALL"),
        ("/api/2.0/mlflow/registered-models/list", "/api/2.0/mlflow/registered-models/search?max_results=1000"),
        ("/api/2.0/mlflow/registered-models/list?max_results=5",
         "/api/2.0/mlflow/registered-models/search?max_results=5"),
        ("/api/2.0/mlflow/registered-models/list?page_token=abc",
         "/api/2.0/mlflow/registered-models/search?max_results=1000&page_token=abc"),
    ],
)
def test_legacy_list_endpoints_reach_the_upstream_as_search(staging, upstream, request_path, upstream_path):
    server, settings = staging
    status, _body = server.request("GET", request_path, auth=credentials(settings))
    assert status == 200
    assert upstream.requests[-1]["path"] == upstream_path


def test_a_300_mb_upload_streams_through(staging, upstream):
    server, settings = staging
    size = 300 * 1024 * 1024
    chunk = b"\0" * (1 << 20)

    def body():
        for _ in range(size // len(chunk)):
            yield chunk

    connection = server.connection(timeout=120)
    import base64

    connection.request("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/big.bin", body=body(), headers={
        "Host": server.host, "Content-Length": str(size),
        "Authorization": "Basic " + base64.b64encode(":".join(credentials(settings)).encode()).decode(),
    })
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 200
    assert upstream.requests[-1]["received"] == size
    # nginx logs each request body it spools to a temporary file.
    assert "buffered to a temporary file" not in (server.prefix / "logs" / "error.log").read_text()


def test_security_headers_and_no_version(staging):
    server, settings = staging
    connection = server.connection()
    connection.request("GET", "/health", headers={"Host": server.host})
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.getheader("Server") == "nginx"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert response.getheader("X-Frame-Options") == "SAMEORIGIN"
    assert response.getheader("Referrer-Policy") == "strict-origin-when-cross-origin"
    assert response.getheader("Strict-Transport-Security")


def test_an_allowlist_that_excludes_loopback_answers_403(project, upstream, target):
    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=true\n"
                         "MLFLOW_ALLOWED_IPS=10.0.0.0/8, 192.168.1.7\n"})
    server, settings = live(project, upstream, target)
    try:
        assert server.request("GET", "/")[0] == 403
        assert server.request("GET", "/health")[0] == 403
    finally:
        server.stop()
    vhost = nginx.vhost(settings).decode()
    assert re.search(r"allow 10\.0\.0\.0/8;\n\s+allow 192\.168\.1\.7/32;\n\s+deny all;", vhost)


def test_an_allowlist_that_includes_loopback_lets_it_through(project, upstream, target):
    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=true\n"
                         "MLFLOW_ALLOWED_IPS=127.0.0.0/8\n"})
    server, _settings = live(project, upstream, target)
    try:
        assert server.request("GET", "/")[0] == 200
    finally:
        server.stop()


def test_nginx_starts_while_mlflow_does_not_resolve(project, target):
    settings = settings_for(project, target.rendering)
    server = NginxServer(nginx.vhost(settings).decode(), settings.public_host, "mlflow:5000",
                         binary=target.binary)
    try:
        server.start()
        started = time.monotonic()
        status, _ = server.request("GET", "/")
        assert status == 502  # up, and honest that the upstream is missing
        assert time.monotonic() - started < 10  # resolver_timeout, not nginx's default 30 s
    finally:
        server.stop()


def test_htpasswd_is_deterministic_and_changes_with_the_password():
    salt = "abcdefghijklmnopqrstuu"
    for scheme, rounds in (("sha512_crypt", 5000), ("bcrypt", 10)):
        first = nginx.htpasswd("ml-team", "pw-1-long-enough", scheme, rounds, salt)
        assert first == nginx.htpasswd("ml-team", "pw-1-long-enough", scheme, rounds, salt)
        assert first != nginx.htpasswd("ml-team", "pw-2-long-enough", scheme, rounds, salt)
        assert first.startswith(b"ml-team:") and b"pw-1" not in first


def test_bcrypt_htpasswd_works_in_nginx(project, upstream, target):
    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=true\nMINIO_ENABLED=true\n"
                         "MLFLOW_AUTH_ENABLED=true\nMLFLOW_AUTH_HASH=bcrypt\nMLFLOW_AUTH_HASH_ROUNDS=5\n"
                         "MLFLOW_AUTH_PASSWORD=bcrypt-user-password\nMLFLOW_AUTH_HASH_SALT=abcdefghijklmnopqrstuu\n"})
    server, settings = live(project, upstream, target)
    try:
        assert (server.prefix / "mlflow.htpasswd").read_bytes().startswith(b"admin:$2y$05$")
        assert server.request("GET", "/", auth=("admin", "bcrypt-user-password"))[0] == 200
        assert server.request("GET", "/", auth=("admin", "bcrypt-user-passwort"))[0] == 401
    finally:
        server.stop()
