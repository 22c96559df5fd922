"""Real servers on loopback for the tests: PostgreSQL 15 and a SeaweedFS S3 server.

Each is started from its real binary in a throwaway directory, on free high
ports, and stopped by PID (its whole process group) when the test is done.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_postgres() -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class PostgresServer:
    """A throwaway cluster: scram-sha-256 on loopback, superuser `postgres`."""

    admin_password: str = "admin-Password-1"
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nself-mlflow-pg-")))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def initdb(self) -> "PostgresServer":
        self.root.chmod(0o755)
        password_file = self.root / "pwfile"
        password_file.write_text(self.admin_password + "\n")
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
            os.chown(password_file, postgres.pw_uid, postgres.pw_gid)
        subprocess.run(
            [*_as_postgres(), PG_BIN / "initdb", "-D", self.data_dir, "-U", "postgres", "--pwfile", password_file,
             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"],
            check=True, capture_output=True, timeout=60,
        )
        password_file.unlink()
        return self

    def start(self) -> "PostgresServer":
        subprocess.run(
            [*_as_postgres(), PG_BIN / "pg_ctl", "-D", self.data_dir, "-l", self.root / "server.log", "-w", "-t", "30",
             "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
            check=True, capture_output=True, timeout=60,
        )
        return self

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                [*_as_postgres(), PG_BIN / "pg_ctl", "-D", self.data_dir, "-m", "immediate", "-w", "stop"],
                capture_output=True, timeout=60,
            )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, user: str = "postgres", password: str | None = None, dbname: str = "postgres") -> dict:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": user,
            "password": self.admin_password if password is None else password,
            "dbname": dbname,
            "connect_timeout": 5,
        }


@dataclass
class SeaweedS3:
    """`weed server -s3`: checks signatures, keys and bucket policies like a real S3."""

    access_key: str
    secret_key: str
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nself-mlflow-s3-")))
    port: int = 0
    process: subprocess.Popen | None = None

    @staticmethod
    def binary() -> Path | None:
        found = shutil.which("weed", path=str(Path(sys.executable).parent))
        return Path(found) if found else None

    def start(self) -> "SeaweedS3":
        config = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.root / "s3.json").write_text(json.dumps(config))
        (self.root / "data").mkdir()
        ports = [free_port() for _ in range(8)]
        self.port = ports[6]
        # Every port explicitly: the default gRPC port is port+10000, which
        # overflows for high ports.
        command = [
            self.binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.root / 'data'}",
            f"-master.port={ports[0]}", f"-master.port.grpc={ports[1]}",
            f"-volume.port={ports[2]}", f"-volume.port.grpc={ports[3]}",
            "-filer", f"-filer.port={ports[4]}", f"-filer.port.grpc={ports[5]}",
            "-s3", f"-s3.port={ports[6]}", f"-s3.port.grpc={ports[7]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.root / 's3.json'}", "-master.telemetry=false", "-volume.max=300", "-master.volumeSizeLimitMB=64",
        ]
        log = open(self.root / "weed.log", "wb")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for_port(self.port, 60, self.process)
        self._wait_until_serving(60)
        return self

    def _wait_until_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/", timeout=2)
                return
            except urllib.error.HTTPError:
                return  # it answers (403 to anonymous): ready
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout} s; see {self.root / 'weed.log'}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # weed may ignore SIGTERM: a short grace, then the whole group.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
