"""`service serve …`: what each model endpoint serves, what its reference names now, reloading it.

An endpoint resolves its reference once, at start, and logs the line
`mlflow-serve: serving REF: version N (models:/NAME/N)`; that line is the
record of what it serves. The registry is asked what the reference names now.
A reload starts a second container of the endpoint's service, waits until it
is healthy and until nginx's resolver has seen it, then stops the old one:
nginx sends a request that meets the stopping container to the new one.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from generator.artifacts import nginx as nginx_artifact
from generator.artifacts import serving as serving_artifact
from generator.errors import ServiceError, UserError, last_line
from generator.settings.validators import ModelReference, model_reference
from service.api import ARTIFACTS_API, MlflowApi
from service.compose import ComposeProject

SERVING_LINE = re.compile(r"^mlflow-serve: serving (?P<reference>\S+): version (?P<version>\d+) ")
FAILED_LINE = re.compile(r"^mlflow-serve: (?P<reference>\S+): FAILED: (?P<reason>.*)$")
# nginx keeps a resolved address for `valid=` seconds: wait that long, plus a
# margin, before stopping the old container, so nginx knows the new one.
RESOLVER_VALID_SECONDS = nginx_artifact.RESOLVER_VALID_SECONDS
READY_TIMEOUT = 300


def parse_reference(text: str) -> ModelReference:
    from pydantic_core import PydanticCustomError

    try:
        return model_reference(text.strip())
    except PydanticCustomError as error:
        raise UserError(f"REFERENCE: {error.message()}") from None


# -- the registry ------------------------------------------------------------------

def resolve(api: MlflowApi, reference: ModelReference) -> str | None:
    """The version the reference names now, or None when it names nothing."""
    name = reference.name
    if reference.kind == "alias":
        # 2.9.2 answers 400 for an alias (or model) that does not exist; later versions 404.
        found = api.optional("GET", "registered-models/alias", (400, 404), name=name, alias=reference.target)
        return None if found is None else str(found["model_version"]["version"])
    if reference.kind == "version":
        found = api.get_optional("model-versions/get", name=name, version=reference.target)
        return None if found is None else str(found["model_version"]["version"])
    found = api.optional("POST", "registered-models/get-latest-versions",
                         body={"name": name, "stages": [reference.target]})
    if found is None:
        return None
    versions = found.get("model_versions", [])
    return str(versions[0]["version"]) if versions else None


def requirements_text(api: MlflowApi, reference: ModelReference) -> tuple[str, str]:
    """The version the reference names now, and that version's logged requirements.txt."""
    version = resolve(api, reference)
    if version is None:
        raise ServiceError(f"{reference.text}: names no model version in the registry")
    location = api.get("model-versions/get-download-uri", name=reference.name, version=version)["artifact_uri"]
    prefix = "mlflow-artifacts:"
    if not location.startswith(prefix):
        raise ServiceError(f"{reference.text}: version {version} is stored at {location}, not behind the server's "
                           "artifact proxy; read its requirements.txt there")
    path = urllib.parse.urlsplit(location[len(prefix):]).path.strip("/")
    with api.open("GET", f"{ARTIFACTS_API}/{urllib.parse.quote(path)}/requirements.txt") as response:
        return version, response.read().decode(errors="replace")


# -- the endpoints -----------------------------------------------------------------

@dataclass
class EndpointState:
    reference: ModelReference
    serving: str | None  # the version its log line names; None before it logged one
    failure: str | None  # the reason of its last FAILED line, when that is its latest line
    resolves_to: str | None
    health: str  # healthy, unhealthy, starting, not running, or unknown (no docker)

    @property
    def service(self) -> str:
        return serving_artifact.service_name(self.reference)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.failure:
            found.append(f"failed: {self.failure}")
        if self.health not in ("healthy", "unknown"):
            found.append(self.health)
        if self.resolves_to is None:
            found.append(f"{self.reference.text} names no model version")
        elif self.serving is not None and self.serving != self.resolves_to:
            found.append(f"stale: run `service serve reload {self.reference.slug}`")
        return found


def latest_log_state(log: str) -> tuple[str | None, str | None]:
    """(version served, failure) from an endpoint's log: its latest serving or FAILED line wins."""
    serving = failure = None
    for line in log.splitlines():
        if match := SERVING_LINE.match(line):
            serving, failure = match["version"], None
        elif match := FAILED_LINE.match(line):
            serving, failure = None, match["reason"]
    return serving, failure


def endpoint_states(references: tuple[ModelReference, ...], api: MlflowApi, compose: ComposeProject | None,
                    run: Callable = subprocess.run) -> list[EndpointState]:
    states = []
    for reference in references:
        service = serving_artifact.service_name(reference)
        serving = failure = None
        health = "unknown"
        if compose is not None:
            logs = run(compose.argv("logs", "--no-color", "--no-log-prefix", service), capture_output=True, text=True,
                       timeout=60)
            serving, failure = latest_log_state(logs.stdout)
            health = container_health(compose, service, run)
        states.append(EndpointState(reference, serving, failure, resolve(api, reference), health))
    return states


def container_health(compose: ComposeProject, service: str, run: Callable = subprocess.run) -> str:
    result = run(compose.argv("ps", "--format", "json", service), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return f"unknown ({last_line(result.stderr)})"
    from service.compose import parse_ps

    containers = parse_ps(result.stdout)
    if not containers:
        return "not running"
    states = {item.get("Health") or item.get("State", "?") for item in containers}
    if "healthy" in states and len(containers) == 1:
        return "healthy"
    return ", ".join(sorted(states))


# -- reload --------------------------------------------------------------------------

def reload_endpoint(compose: ComposeProject, reference: ModelReference, echo: Callable[[str], None],
                    run: Callable = subprocess.run, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> str:
    """Replace the endpoint's container by one that resolves the reference anew; returns the new log line."""
    service = serving_artifact.service_name(reference)
    before = _container_ids(compose, service, run)
    if not before:
        raise ServiceError(f"{service}: not running; start the stack (nself start)")
    _docker(run, compose.argv("up", "-d", "--no-deps", "--no-recreate", "--scale", f"{service}={len(before) + 1}",
                              service), f"starting a second {service}")
    new = [identifier for identifier in _container_ids(compose, service, run) if identifier not in before]
    if len(new) != 1:
        raise ServiceError(f"{service}: expected one new container, found {len(new)}")
    (replacement,) = new
    echo(f"{service}: started {replacement[:12]}, waiting until it is healthy")
    deadline = clock() + READY_TIMEOUT
    while True:
        health = _docker(run, ["docker", "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}",
                               replacement], f"inspecting {replacement[:12]}").strip()
        if health.endswith(" healthy"):
            break
        if not health.startswith("running") or health.endswith(" unhealthy") or clock() > deadline:
            reason = last_line(_docker(run, ["docker", "logs", "--tail", "20", replacement], "reading its log"))
            _docker(run, ["docker", "rm", "-f", replacement], f"removing {replacement[:12]}")
            raise ServiceError(f"{service}: the new container did not become healthy ({health}): {reason}; "
                               "the old one keeps serving")
        sleep(2)
    echo(f"{service}: healthy; waiting {RESOLVER_VALID_SECONDS + 2} s so nginx's resolver knows it")
    sleep(RESOLVER_VALID_SECONDS + 2)
    _docker(run, ["docker", "stop", "--time", "30", *before], f"stopping the old {service}")
    _docker(run, ["docker", "rm", *before], f"removing the old {service}")
    serving, _failure = latest_log_state(_docker(run, ["docker", "logs", replacement], "reading its log"))
    return f"{service}: now serving {reference.text}: version {serving}"


def _container_ids(compose: ComposeProject, service: str, run: Callable) -> list[str]:
    return _docker(run, compose.argv("ps", "--quiet", service), f"listing {service}").split()


def _docker(run: Callable, argv: list[str], what: str) -> str:
    try:
        result = run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise ServiceError(f"{argv[0]}: not installed; the command needs the docker CLI with Compose v2") from None
    if result.returncode != 0:
        raise ServiceError(f"{what} failed: {last_line(result.stderr)}")
    return result.stdout


def states_as_json(states: list[EndpointState]) -> str:
    return json.dumps([{"endpoint": state.service, "reference": state.reference.text, "serving": state.serving,
                        "resolves_to": state.resolves_to, "health": state.health, "problems": state.problems}
                       for state in states], indent=2, sort_keys=True)
