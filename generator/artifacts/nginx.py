"""out/nginx/sites/mlflow.conf and, with auth, out/nginx/includes/mlflow.htpasswd."""

from __future__ import annotations

from passlib.hash import bcrypt, sha256_crypt, sha512_crypt

from generator.artifacts import serving
from generator.artifacts.compose import CONTAINER_PORT
from generator.render import render_template
from generator.settings import Settings

VHOST_PATH = "nginx/sites/mlflow.conf"
HTPASSWD_PATH = "nginx/includes/mlflow.htpasswd"
# nself mounts nginx/includes/ at /etc/nginx/includes/.
HTPASSWD_IN_CONTAINER = "/etc/nginx/includes/mlflow.htpasswd"
# Docker's embedded DNS, which knows the compose service names.
DOCKER_RESOLVER = "127.0.0.11"
# How long nginx keeps a resolved address; `service serve reload` waits this long.
RESOLVER_VALID_SECONDS = 10
# 1.25.1: `http2 on;` replaces the http2 parameter of `listen`.
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)
LEGACY_ENDPOINTS = [
    ("/api/2.0/mlflow/experiments/list", "/api/2.0/mlflow/experiments/search"),
    ("/api/2.0/mlflow/registered-models/list", "/api/2.0/mlflow/registered-models/search"),
]
LEGACY_MAX_RESULTS = 1000


def certificate_dir(base_domain: str) -> str:
    """nself's convention for /etc/nginx/ssl/<dir>/."""
    if base_domain == "localhost" or base_domain.endswith(".localhost"):
        name = "localhost"
    elif base_domain == "nself.org" or base_domain.endswith(".nself.org"):
        name = "nself-org"
    else:
        name = base_domain.replace(".", "-")
    return f"/etc/nginx/ssl/{name}"


def uses_http2_directive(nginx_version: tuple[int, int, int]) -> bool:
    return nginx_version >= HTTP2_DIRECTIVE_SINCE


def vhost(settings: Settings) -> bytes:
    proxy = settings.proxy
    return render_template(
        VHOST_PATH,
        host=settings.public_host,
        nginx_version=".".join(map(str, proxy.nginx_version)),
        http2_directive=uses_http2_directive(proxy.nginx_version),
        certificate_dir=certificate_dir(settings.stack.base_domain),
        allowed_ips=proxy.allowed_ips,
        nginx_auth=settings.auth.nginx_mode,
        mlflow_auth=settings.auth.mlflow_mode,
        htpasswd_path=HTPASSWD_IN_CONTAINER,
        read_timeout=proxy.read_timeout,
        send_timeout=proxy.send_timeout,
        resolver=DOCKER_RESOLVER,
        resolver_valid=RESOLVER_VALID_SECONDS,
        upstream=f"mlflow:{CONTAINER_PORT}",
        legacy_endpoints=LEGACY_ENDPOINTS,
        legacy_max_results=LEGACY_MAX_RESULTS,
        serving_endpoints=[
            {"reference": reference.text, "service": serving.service_name(reference),
             "path": serving.public_path(reference),
             "upstream": f"{serving.service_name(reference)}:{serving.SCORING_PORT}"}
            for reference in settings.serving.models
        ],
    )


def htpasswd(username: str, password: str, scheme: str, rounds: int, salt: str) -> bytes:
    """One htpasswd line. The salt is saved input, so the same password gives the same file."""
    if scheme == "bcrypt":
        hashed = bcrypt.using(rounds=rounds, salt=salt, ident="2y").hash(password)
    else:
        handler = {"sha512_crypt": sha512_crypt, "sha256_crypt": sha256_crypt}[scheme]
        hashed = handler.using(rounds=rounds, salt=salt[:16]).hash(password)
    return f"{username}:{hashed}\n".encode()


def build(settings: Settings) -> dict[str, bytes]:
    files = {VHOST_PATH: vhost(settings)}
    auth = settings.auth
    # In mlflow mode nginx still guards the model endpoints, which check no credentials themselves.
    if auth.nginx_mode or (auth.mlflow_mode and settings.serving.models):
        assert auth.password is not None and auth.hash_salt is not None, "the CLI generates these before a build"
        files[HTPASSWD_PATH] = htpasswd(
            auth.username, auth.password.get_secret_value(), auth.hash_scheme, auth.hash_rounds, auth.hash_salt
        )
    return files
