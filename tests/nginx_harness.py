"""A private nginx master serving the generated vhost on loopback.

The vhost is used as generated, except for what only a container has: the
listen ports, the certificate directory, the htpasswd path and the upstream
address. Each of those lines must be present to be replaced, or the harness fails,
so a template change cannot silently slip past the tests.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from generator.artifacts import nginx as nginx_artifact
from tests.services import _wait_for_port, free_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
# Debian 12's own nginx (1.22): it predates `http2 on;`.
DEBIAN_NGINX = Path("/usr/sbin/nginx")
# nginx 1.26, which reads the default rendering (`http2 on;`). Debian 12 has
# no package for it: `./run test` builds it once with tools/build-nginx, here.
BUILT_NGINX = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
               / "nself-mlflow" / "nginx-1.26" / "sbin" / "nginx")


def installed_nginx_version(binary: Path | str | None = None) -> tuple[int, int, int]:
    output = subprocess.run([binary or NGINX, "-v"], capture_output=True, text=True).stderr
    major, minor, patch = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", output).groups()
    return int(major), int(minor), int(patch)


def _replace_present(text: str, old: str, new: str) -> str:
    count = text.count(old)
    assert count >= 1, f"the vhost no longer contains {old!r}"
    return text.replace(old, new)


def make_certificate(directory: Path, host: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=DNS:{host},IP:127.0.0.1",
         "-keyout", directory / "privkey.pem", "-out", directory / "fullchain.pem"],
        check=True, capture_output=True, timeout=60,
    )


@dataclass
class NginxServer:
    vhost: str
    host: str
    upstream: str  # host:port the vhost proxies to
    htpasswd: bytes | None = None
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    prefix: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nself-mlflow-nginx-")))
    started: bool = False
    binary: Path | str | None = None  # the nginx to run; NGINX when not given

    @property
    def nginx(self) -> Path | str:
        return self.binary or NGINX

    def prepare(self) -> Path:
        # Workers run as an unprivileged user and re-read the htpasswd on
        # every request: everything they read must be reachable by them.
        self.prefix.chmod(0o755)
        certificates = self.prefix / "ssl"
        if not (certificates / "fullchain.pem").exists():  # kept across a restart
            make_certificate(certificates, self.host)
        text = self.vhost
        text = _replace_present(text, "listen 443 ssl", f"listen 127.0.0.1:{self.https_port} ssl")
        text = _replace_present(text, "listen 80;", f"listen 127.0.0.1:{self.http_port};")
        certificate_dir = re.search(r"ssl_certificate\s+(\S+)/fullchain\.pem;", text).group(1)
        text = _replace_present(text, f"{certificate_dir}/", f"{certificates}/")
        text = _replace_present(text, "set $mlflow_upstream mlflow:5000;", f"set $mlflow_upstream {self.upstream};")
        if self.htpasswd is not None:
            (self.prefix / "mlflow.htpasswd").write_bytes(self.htpasswd)
            (self.prefix / "mlflow.htpasswd").chmod(0o644)
            text = _replace_present(text, nginx_artifact.HTPASSWD_IN_CONTAINER, str(self.prefix / "mlflow.htpasswd"))
        (self.prefix / "mlflow.conf").write_text(text)
        for name in ("logs", "temp"):
            (self.prefix / name).mkdir(exist_ok=True)
        main = f"""
worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {self.prefix}/logs/access.log;
    client_body_temp_path {self.prefix}/temp/body;
    proxy_temp_path {self.prefix}/temp/proxy;
    fastcgi_temp_path {self.prefix}/temp/fastcgi;
    uwsgi_temp_path {self.prefix}/temp/uwsgi;
    scgi_temp_path {self.prefix}/temp/scgi;
    include {self.prefix}/mlflow.conf;
}}
"""
        (self.prefix / "nginx.conf").write_text(main)
        return self.prefix / "nginx.conf"

    def test_config(self) -> subprocess.CompletedProcess:
        config = self.prepare()
        return subprocess.run([self.nginx, "-t", "-c", config, "-p", self.prefix], capture_output=True, text=True, timeout=30)

    def start(self) -> "NginxServer":
        config = self.prepare()
        subprocess.run([self.nginx, "-c", config, "-p", self.prefix], check=True, capture_output=True, timeout=30)
        self.started = True
        _wait_for_port(self.https_port, 10)
        return self

    @property
    def ca_file(self) -> Path:
        return self.prefix / "ssl" / "fullchain.pem"

    def halt(self) -> None:
        """Stop the master and its workers; the prefix stays for a restart."""
        pid_file = self.prefix / "nginx.pid"
        if self.started and pid_file.exists():
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and pid_file.exists():
                time.sleep(0.05)
        self.started = False

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def connection(self, timeout: float = 30) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.check_hostname = False  # we connect to 127.0.0.1; the Host header names the vhost
        return http.client.HTTPSConnection("127.0.0.1", self.https_port, context=context, timeout=timeout)

    def request(self, method: str, path: str, body=None, headers: dict | None = None, auth: tuple | None = None):
        connection = self.connection()
        headers = {"Host": self.host, **(headers or {})}
        if auth is not None:
            import base64

            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, data


class RecordingUpstream:
    """A stand-in for MLflow: answers 200 and records what reached it."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                received = 0
                length = self.headers.get("Content-Length")
                if length is not None:
                    remaining = int(length)
                    while remaining:
                        chunk = self.rfile.read(min(remaining, 1 << 20))
                        if not chunk:
                            break
                        received += len(chunk)
                        remaining -= len(chunk)
                elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        remaining = size
                        while remaining:
                            chunk = self.rfile.read(min(remaining, 1 << 20))
                            received += len(chunk)
                            remaining -= len(chunk)
                        self.rfile.readline()
                record = {"method": self.command, "path": self.path, "headers": dict(self.headers),
                          "received": received}
                recorder.requests.append(record)
                body = json.dumps({"ok": True, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
