"""The stack the generated artifacts describe, run as local processes.

Everything is read from the generated files in out/: the services' argv and
environment from docker-compose.mlflow.yml (with Compose's substitution), the
packages from mlflow/Dockerfile, the vhost and htpasswd for nginx. Only what
exists in a container alone is changed: the hostnames postgres, minio and
mlflow become loopback addresses, the container port becomes a free port, and
the tmpfs becomes a fresh directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from generator.artifacts import compose as compose_artifact
from generator.artifacts import nginx as nginx_artifact
from tests.compose_values import service_environment
from tests.e2e.mlflow_venv import FROM_LINE
from tests.nginx_harness import NginxServer
from tests.services import PostgresServer, SeaweedS3, free_port

CLIENTS = Path(__file__).resolve().parent / "clients"
RESOLVER = Path(__file__).resolve().parent / "resolver"  # maps the public host to loopback
# Service names that exist only on the compose network.
CONTAINER_ADDRESS = re.compile(r"\b(postgres|minio|mlflow|mlflow-blackbox):\d+")
# What a user's training script sets, as the README says, so its MLflow client
# reports nothing either.
CLIENT_TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


class OutboundRecorder:
    """Stands where an HTTP proxy would, so every attempt to leave the stack is seen.

    Every process of the stack gets it as HTTP_PROXY and HTTPS_PROXY, with
    loopback and the stack's own names exempt. A request that arrives here was
    meant for the outside (MLflow's telemetry, say): its request line is
    written down and it is refused with 403. Nothing is ever forwarded.
    """

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Refuse(socketserver.StreamRequestHandler):
            timeout = 5

            def handle(self) -> None:
                try:
                    first = self.rfile.readline(8192).decode("latin-1").strip()
                    while self.rfile.readline(8192).strip():
                        pass
                except OSError:
                    return
                recorder.requests.append(first)
                self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Refuse)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def hosts(self) -> set[str]:
        """The hosts the recorded requests were for: `CONNECT host:443` or `GET http://host/…`."""
        found = set()
        for line in self.requests:
            target = line.split(" ")[1] if line.count(" ") >= 2 else line
            found.add(re.sub(r"^[a-z]+://", "", target).split("/")[0].rsplit(":", 1)[0])
        return found

    def environment(self, *direct: str) -> dict[str, str]:
        bypass = ",".join(["127.0.0.1", "localhost", *direct])
        return {"HTTP_PROXY": self.url, "HTTPS_PROXY": self.url, "http_proxy": self.url, "https_proxy": self.url,
                "NO_PROXY": bypass, "no_proxy": bypass}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _kill_group(process: subprocess.Popen, grace: float = 15) -> None:
    """`mlflow server` does not pass SIGTERM on to gunicorn: stop the whole tree."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    try:
        os.killpg(process.pid, signal.SIGKILL)  # workers that outlived their master
    except ProcessLookupError:
        pass


@dataclass
class Stack:
    out: Path
    values: dict[str, str]
    pg: PostgresServer
    s3: SeaweedS3
    venv: Path
    # The S3 address on the compose network that stands for self.s3 (MinIO's);
    # None when the store is an external S3 reached by a name in `hosts`.
    s3_address: str | None = "http://minio:9000"
    # Names the services resolve to loopback, as DNS would (an external S3's).
    hosts: dict[str, str] = field(default_factory=dict)
    outbound: OutboundRecorder = field(default_factory=OutboundRecorder)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nself-mlflow-e2e-")))
    mlflow_port: int = field(default_factory=free_port)
    mlflow_process: subprocess.Popen | None = None
    nginx: NginxServer | None = None

    # -- reading the generated files -------------------------------------
    @property
    def version(self) -> tuple[int, ...]:
        """The MLflow version of the generated image (its FROM line)."""
        base = FROM_LINE.search((self.out / "mlflow" / "Dockerfile").read_text())
        return tuple(int(part) for part in base["version"].split("."))

    @property
    def services(self) -> dict:
        return self.services_of(self.out)

    @staticmethod
    def services_of(out: Path) -> dict:
        return yaml.safe_load((out / compose_artifact.PATH).read_text())["services"]

    def localize(self, text: str) -> str:
        if self.s3_address:
            text = text.replace(self.s3_address, self.s3.endpoint)
        text = text.replace("postgres:5432", f"127.0.0.1:{self.pg.port}")
        text = text.replace("mlflow:5000", f"127.0.0.1:{self.mlflow_port}")
        assert not CONTAINER_ADDRESS.search(text), f"an address the harness does not map: {text!r}"
        return text

    def environment(self, service: str) -> dict[str, str]:
        environment = service_environment(self.out, self.services[service], self.values)
        if "PGHOST" in environment:
            assert (environment["PGHOST"], environment["PGPORT"]) == ("postgres", "5432")
            environment.update(PGHOST="127.0.0.1", PGPORT=str(self.pg.port))
        environment = {key: self.localize(value) for key, value in environment.items()}
        if "MLFLOW_AUTH_CONFIG_PATH" in environment:
            # MLflow's auth ini names the auth database by its compose address.
            ini = Path(environment["MLFLOW_AUTH_CONFIG_PATH"])
            local = self.root / "basic_auth.ini"
            local.write_text(self.localize(ini.read_text()))
            environment["MLFLOW_AUTH_CONFIG_PATH"] = str(local)
        return environment

    def command(self, service: str) -> list[str]:
        return [self.localize(str(word)) for word in self.services[service]["command"]]

    def process_environment(self, service: str) -> dict[str, str]:
        """A clean environment: the service's own plus the image's PATH and PYTHONPATH."""
        return {
            "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.out / "mlflow"),
            **self.hosts_environment(),
            **self.outbound.environment(*self.hosts),
            **self.environment(service),
        }

    def hosts_environment(self, pythonpath: str | None = None) -> dict[str, str]:
        """Resolve self.hosts to loopback in a Python process (the resolver is a sitecustomize)."""
        if not self.hosts:
            return {}
        return {
            "PYTHONPATH": os.pathsep.join([pythonpath or str(self.out / "mlflow"), str(RESOLVER)]),
            "NSELF_TEST_HOSTS": ",".join(f"{name}={address}" for name, address in self.hosts.items()),
        }

    # -- mlflow-init -------------------------------------------------------
    def run_init(self) -> subprocess.CompletedProcess:
        command = self.command("mlflow-init")
        assert command == ["python", "-m", "init"]
        return subprocess.run(
            [self.venv / "bin/python", *command[1:]], env=self.process_environment("mlflow-init"),
            capture_output=True, text=True, timeout=180,
        )

    # -- mlflow server -----------------------------------------------------
    def server_argv(self, metrics_dir: Path) -> list[str]:
        service = self.services["mlflow"]
        argv = self.command("mlflow")
        assert argv[:2] == ["mlflow", "server"]
        argv[0] = str(self.venv / "bin/mlflow")
        for option, value in (("--host", "127.0.0.1"), ("--port", str(self.mlflow_port))):
            argv[argv.index(option) + 1] = value
        tmpfs = service["tmpfs"][0]
        argv[argv.index(tmpfs)] = str(metrics_dir)
        return argv

    def start_mlflow(self, timeout: float = 180, without: tuple[str, ...] = ()) -> None:
        """The mlflow service (`without`: drop variables from its environment)."""
        # A fresh directory, as the tmpfs is empty at every container start.
        metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=self.root))
        log = open(self.root / "mlflow.log", "ab")
        environment = {key: value for key, value in self.process_environment("mlflow").items() if key not in without}
        self.mlflow_process = subprocess.Popen(
            self.server_argv(metrics_dir), env=environment, cwd=self.root,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.mlflow_process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.mlflow_process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.mlflow_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"mlflow server not healthy after {timeout} s:\n{self.log_tail()}")

    def stop_mlflow(self) -> None:
        if self.mlflow_process is not None:
            _kill_group(self.mlflow_process)

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def log_tail(self, lines: int = 40) -> str:
        path = self.root / "mlflow.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # -- nginx -------------------------------------------------------------
    def start_nginx(self) -> NginxServer:
        if self.nginx is None:
            self.nginx = self.nginx_for(self.out)
        return self.nginx.start()

    def nginx_for(self, out: Path, resolver: str | None = None) -> NginxServer:
        """An nginx with a build's vhost and htpasswd, in front of this stack's MLflow.

        `resolver` replaces Docker's DNS (for upstreams the vhost resolves by name).
        """
        vhost = (out / nginx_artifact.VHOST_PATH).read_text()
        host = re.search(r"server_name\s+(\S+);", vhost).group(1)
        if resolver is not None:
            docker_dns = f"resolver {nginx_artifact.DOCKER_RESOLVER} "
            assert docker_dns in vhost, "the vhost no longer resolves through Docker's DNS"
            vhost = vhost.replace(docker_dns, f"resolver {resolver} ")
        htpasswd = out / nginx_artifact.HTPASSWD_PATH
        return NginxServer(vhost, host, upstream=f"127.0.0.1:{self.mlflow_port}",
                           htpasswd=htpasswd.read_bytes() if htpasswd.exists() else None)

    @property
    def public_host(self) -> str:
        return self.nginx.host

    @property
    def public_url(self) -> str:
        """The public URL, as users type it; only the port is the harness's."""
        return f"https://{self.public_host}:{self.nginx.https_port}"

    def resolver_environment(self) -> dict[str, str]:
        """What a client process needs to find the public host on loopback."""
        return {"PYTHONPATH": str(RESOLVER), "NSELF_TEST_HOSTS": f"{self.public_host}=127.0.0.1"}

    def curl_resolve(self) -> list[str]:
        return ["--resolve", f"{self.public_host}:{self.nginx.https_port}:127.0.0.1"]

    @property
    def credentials(self) -> tuple[str, str]:
        return self.values["MLFLOW_AUTH_USERNAME"], self.values["MLFLOW_AUTH_PASSWORD"]

    # -- clients -----------------------------------------------------------
    def client_environment(self, credentials: tuple[str, str] | None = None) -> dict[str, str]:
        """What a user's training script sets to reach the stack through nginx (as `credentials`, or the admin)."""
        username, password = credentials or self.credentials
        return {
            "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "MLFLOW_TRACKING_URI": self.public_url,
            "MLFLOW_TRACKING_USERNAME": username,
            "MLFLOW_TRACKING_PASSWORD": password,
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.nginx.ca_file),
            **CLIENT_TELEMETRY_OFF,
            **self.outbound.environment(self.public_host),
            **self.resolver_environment(),
        }

    def run_client(self, script: str, *args: str, timeout: float = 600,
                   credentials: tuple[str, str] | None = None, env: dict[str, str] | None = None) -> dict:
        """Run tests/e2e/clients/SCRIPT in the image's venv; it prints one JSON object last."""
        result = self.run_client_process(script, *args, timeout=timeout, credentials=credentials, env=env)
        assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return json.loads(result.stdout.strip().splitlines()[-1])

    def run_client_process(self, script: str, *args: str, timeout: float = 600,
                           credentials: tuple[str, str] | None = None,
                           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        workdir = Path(tempfile.mkdtemp(prefix=f"{Path(script).stem}-", dir=self.root))
        return subprocess.run(
            [self.venv / "bin/python", CLIENTS / script, *args], cwd=workdir,
            env={**self.client_environment(credentials), **(env or {})},
            capture_output=True, text=True, timeout=timeout,
        )

    # -- mlflow-gc ---------------------------------------------------------
    def run_gc_once(self, without: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """The mlflow-gc service's command in run-once mode (`without`: drop variables)."""
        command = self.command("mlflow-gc")
        assert command[:4] == ["python", "-m", "init.gc", "--"]
        environment = {key: value for key, value in self.process_environment("mlflow-gc").items() if key not in without}
        return subprocess.run(
            [self.venv / "bin/python", "-m", "init.gc", "--once", *command[3:]],
            env={**environment, "MLFLOW_GC_STATUS_FILE": str(self.root / "gc.status")},
            cwd=self.root, capture_output=True, text=True, timeout=300,
        )

    def stop(self) -> None:
        self.stop_mlflow()
        if self.nginx is not None:
            self.nginx.stop()
        self.outbound.stop()
        shutil.rmtree(self.root, ignore_errors=True)
