"""The mlflow-serve-<slug> services of a build, run as local processes behind the generated vhost.

Each endpoint runs the service's own command (`python -m init.serve …`) with
its environment from docker-compose.mlflow.yml, in the serving image's venv.
Only what exists in a container alone is changed: the tracking server's
address, and the address the scoring server listens on. The vhost keeps its
`mlflow-serve-<slug>:8080` upstreams and its resolver: a small DNS server on
loopback answers for the service names, as Docker's does, so a reload can run
two processes under one name exactly as two containers of one service would.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from generator.artifacts import serving as serving_artifact
from tests.compose_values import service_environment
from tests.e2e.stack import Stack, _kill_group
from tests.nginx_harness import NginxServer



def loopback_network() -> str:
    """A /24 of its own on loopback for one harness's processes: one address per process, so each can
    listen on the service's own port (8080) as a container does, beside any other harness running."""
    return f"127.{random.randint(64, 254)}.{random.randint(0, 255)}."


DNS_SERVER = """
import json, os, socket, struct, sys
names_file = sys.argv[1]
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
while True:
    query, client = server.recvfrom(512)
    try:
        identifier = struct.unpack("!H", query[:2])[0]
        offset, labels = 12, []
        while query[offset]:
            labels.append(query[offset + 1:offset + 1 + query[offset]].decode().lower())
            offset += 1 + query[offset]
        question, qtype = query[12:offset + 5], struct.unpack("!H", query[offset + 1:offset + 3])[0]
        with open(names_file) as file:
            addresses = json.load(file).get(".".join(labels))
        if addresses is None:
            answer = struct.pack("!HHHHHH", identifier, 0x8183, 1, 0, 0, 0) + question
        else:
            records = addresses if qtype == 1 else []
            answer = struct.pack("!HHHHHH", identifier, 0x8180, 1, len(records), 0, 0) + question + b"".join(
                struct.pack("!HHHLH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(a) for a in records)
        server.sendto(answer, client)
    except (OSError, ValueError, struct.error, IndexError):
        continue
"""


class ServiceNames:
    """A DNS server on loopback answering A queries for the compose service names it is told.

    It runs in a process of its own, as Docker's DNS does, so clients busy in
    the test's process never delay its answers past nginx's resolver_timeout.
    """

    def __init__(self, directory: Path) -> None:
        self.file = directory / "service-names.json"
        self.names: dict[str, list[str]] = {}
        self._write()
        self.process = subprocess.Popen([sys.executable, "-c", DNS_SERVER, str(self.file)], stdout=subprocess.PIPE,
                                        text=True, start_new_session=True)
        self.port = int(self.process.stdout.readline())

    def set(self, name: str, addresses: list[str]) -> None:
        self.names[name] = list(addresses)
        self._write()

    def _write(self) -> None:
        partial = self.file.with_suffix(".partial")
        partial.write_text(json.dumps(self.names))
        partial.replace(self.file)  # the server never reads half a file

    def stop(self) -> None:
        _kill_group(self.process, grace=2)


@dataclass
class Endpoint:
    """One process of an mlflow-serve-<slug> service."""

    service: str
    address: str
    stack: Stack
    out: Path
    venv: Path
    log: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{serving_artifact.SCORING_PORT}"

    def argv(self) -> list[str]:
        command = [str(word) for word in self.stack.services_of(self.out)[self.service]["command"]]
        assert command[:3] == ["python", "-m", "init.serve"], command
        command[command.index("--host") + 1] = self.address
        return [str(self.venv / "bin/python"), *command[1:]]

    def environment(self) -> dict[str, str]:
        service = self.stack.services_of(self.out)[self.service]
        environment = {key: self.stack.localize(value)
                       for key, value in service_environment(self.out, service, self.stack.values).items()}
        return {
            "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}",
            "HOME": str(self.stack.root),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.out / serving_artifact.BUILD_CONTEXT),
            **environment,
        }

    def start(self) -> "Endpoint":
        output = open(self.log, "ab")
        self.process = subprocess.Popen(self.argv(), env=self.environment(), cwd=self.stack.root, stdout=output,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 240) -> bool:
        """True once /ping answers 200; False when the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.service} not ready after {timeout} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, grace: float = 15) -> None:
        if self.process is not None:
            _kill_group(self.process, grace)


@dataclass
class Serving:
    """Every endpoint of a build, a DNS server for their names, and nginx with the build's vhost."""

    stack: Stack
    out: Path
    venv: Path
    names: ServiceNames | None = None
    endpoints: dict[str, list[Endpoint]] = field(default_factory=dict)
    nginx: NginxServer | None = None
    next_address: int = 2
    network: str = field(default_factory=loopback_network)

    def __post_init__(self) -> None:
        if self.names is None:
            self.names = ServiceNames(self.stack.root)

    def services(self) -> list[str]:
        return [name for name in self.stack.services_of(self.out) if name.startswith("mlflow-serve-")]

    def add_process(self, service: str) -> Endpoint:
        address = f"{self.network}{self.next_address}"
        self.next_address += 1
        endpoint = Endpoint(service, address, self.stack, self.out, self.venv,
                            self.stack.root / f"{service}-{address}.log").start()
        self.endpoints.setdefault(service, []).append(endpoint)
        return endpoint

    def publish(self, service: str) -> None:
        """What Docker's DNS answers for the service: the addresses of its running containers."""
        self.names.set(service, [endpoint.address for endpoint in self.endpoints.get(service, [])
                                 if endpoint.process is not None and endpoint.process.poll() is None])

    def start(self) -> "Serving":
        for service in self.services():
            self.add_process(service)
        for service in self.services():
            for endpoint in self.endpoints[service]:
                endpoint.wait_ready()
            self.publish(service)
        self.start_nginx()
        return self

    def start_nginx(self) -> NginxServer:
        self.nginx = self.stack.nginx_for(self.out, resolver=f"127.0.0.1:{self.names.port}")
        return self.nginx.start()

    @property
    def public_url(self) -> str:
        return f"https://{self.nginx.host}:{self.nginx.https_port}"

    def nginx_errors(self) -> list[str]:
        log = self.nginx.prefix / "logs" / "error.log"
        return [line for line in log.read_text(errors="replace").splitlines() if "[error]" in line] if log.exists() else []

    def stop(self) -> None:
        for endpoints in self.endpoints.values():
            for endpoint in endpoints:
                endpoint.stop()
        if self.nginx is not None:
            self.nginx.stop()
        self.names.stop()

    def reload(self, service: str, resolver_valid: float) -> Endpoint:
        """What `service serve reload` does with docker, with processes: start a second process of the
        service, wait until it answers /ping and nginx's resolver has seen it, then stop the old one."""
        old = list(self.endpoints[service])
        replacement = self.add_process(service)
        if not replacement.wait_ready():
            raise RuntimeError(f"the new {service} ended:\n{replacement.log_text()[-3000:]}")
        self.publish(service)  # Docker's DNS lists a container once it runs
        time.sleep(resolver_valid + 2)
        for endpoint in old:
            endpoint.stop()
            self.endpoints[service].remove(endpoint)
        self.publish(service)
        return replacement


@dataclass
class Load:
    """Clients sending predictions through nginx for as long as it runs; every answer is recorded."""

    send: Callable[[], int]
    clients: int = 4
    statuses: list[int] = field(default_factory=list)
    running: bool = True
    threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> "Load":
        for _ in range(self.clients):
            thread = threading.Thread(target=self._loop, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _loop(self) -> None:
        deadline = time.monotonic() + 600  # bounded, whatever happens to the test
        while self.running and time.monotonic() < deadline:
            try:
                self.statuses.append(self.send())
            except OSError:
                self.statuses.append(0)

    def __exit__(self, *exc) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(120)

    @property
    def failed(self) -> int:
        return sum(1 for status in self.statuses if status != 200)

    @property
    def by_status(self) -> dict[int, int]:
        return {status: self.statuses.count(status) for status in sorted(set(self.statuses))}
