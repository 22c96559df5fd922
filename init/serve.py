"""python -m init.serve: serve one registered model, as the mlflow-serve-<slug> service does.

    python -m init.serve --name NAME (--alias A | --stage S | --version N) [--host H] [--port P]

The reference is resolved once, at start, through the tracking server
(MLFLOW_TRACKING_URI), as `mlflow models serve` itself would: an alias moved
or a version promoted later is served after a restart (`service serve
reload`). The container logs one line naming the model, the reference and the
version it resolved to; `service serve status` reads it. It then compares the
model's logged requirements with the packages installed in the image, one
line per mismatch, and hands over to `mlflow models serve` for exactly that
version, with `--env-manager local`: nothing is installed at start.

Exit codes: 1 the reference cannot be resolved (one line says why), 2 bad
arguments; otherwise the scoring server's own.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

PREFIX = "mlflow-serve"
SERVING_LINE = "serving {reference}: version {version} ({uri})"


def log(message: str) -> None:
    print(f"{PREFIX}: {message}", flush=True)


@dataclass(frozen=True)
class Reference:
    name: str
    kind: str  # alias, stage or version
    target: str

    @property
    def text(self) -> str:
        return f"{self.name}@{self.target}" if self.kind == "alias" else f"{self.name}/{self.target}"


class ResolveError(Exception):
    """The reference names nothing the registry has; the message says what is missing."""


def resolve(client, reference: Reference) -> str:
    """The model version the reference names now."""
    from mlflow.exceptions import MlflowException

    try:
        if reference.kind == "alias":
            return str(client.get_model_version_by_alias(reference.name, reference.target).version)
        if reference.kind == "version":
            return str(client.get_model_version(reference.name, reference.target).version)
        versions = client.get_latest_versions(reference.name, stages=[reference.target])
    except MlflowException as error:
        # 2.9.2 answers a missing alias with INVALID_PARAMETER_VALUE, later versions RESOURCE_DOES_NOT_EXIST.
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ResolveError(_first_line(error.message)) from None
        raise
    if not versions:
        raise ResolveError(f"no version of registered model '{reference.name}' is in stage {reference.target}")
    return str(versions[0].version)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def requirement_mismatches(requirements_text: str, installed_version) -> list[str]:
    """One line per requirement of the model that the image's packages do not satisfy."""
    from packaging.requirements import InvalidRequirement, Requirement

    problems = []
    for raw in requirements_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            problems.append(f"requirement {line!r} of the model cannot be read")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        installed = installed_version(requirement.name)
        if installed is None:
            problems.append(f"requirement {line} of the model: not installed in the image "
                            "(add it to MLFLOW_SERVE_PIP_PACKAGES)")
        elif requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"requirement {line} of the model: the image has {requirement.name} {installed} "
                            "(pin it in MLFLOW_SERVE_PIP_PACKAGES)")
    return problems


def _installed_version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_requirements(model_uri: str) -> None:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri}/requirements.txt")
    except (MlflowException, OSError) as error:
        log(f"requirements: not checked, the model has no readable requirements.txt ({_first_line(error)})")
        return
    with open(path, encoding="utf-8") as file:
        problems = requirement_mismatches(file.read(), _installed_version)
    for problem in problems:
        log(problem)
    if not problems:
        log("requirements: every requirement of the model is installed")


def parse_arguments(argv: list[str]) -> tuple[Reference, str, str]:
    parser = argparse.ArgumentParser(prog="python -m init.serve", description="Serve one registered model.")
    parser.add_argument("--name", required=True)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--alias")
    target.add_argument("--stage")
    target.add_argument("--version")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", default="8080")
    args = parser.parse_args(argv)
    kind = next(kind for kind in ("alias", "stage", "version") if getattr(args, kind) is not None)
    return Reference(args.name, kind, getattr(args, kind)), args.host, args.port


def main(argv: list[str] | None = None) -> int:
    reference, host, port = parse_arguments(sys.argv[1:] if argv is None else argv)
    from mlflow.tracking import MlflowClient

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    try:
        version = resolve(MlflowClient(tracking_uri), reference)
    except ResolveError as error:
        log(f"{reference.text}: FAILED: {error}; nothing is served (check the name and the alias, stage or "
            "version in MLFLOW_SERVE_MODELS)")
        return 1
    except Exception as error:  # noqa: BLE001 - the tracking server's answer, whatever it is, in one line
        log(f"{reference.text}: FAILED: cannot ask the tracking server at {tracking_uri} ({_first_line(error)})")
        return 1
    uri = f"models:/{reference.name}/{version}"
    log(SERVING_LINE.format(reference=reference.text, version=version, uri=uri))
    check_requirements(uri)
    argv = ["mlflow", "models", "serve", "--model-uri", uri, "--env-manager", "local", "--host", host, "--port", port]
    sys.stdout.flush()
    # The scoring server takes this process's place, so signals reach it directly.
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
