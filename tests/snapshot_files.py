"""Golden files with syrupy: snapshots/<profile>/<artifact path>, one file each.

Each artifact gets its own extension class whose location is exactly the
artifact's path under snapshots/<profile>/, so the golden file keeps the
artifact's real name and extension and reads like the artifact in review.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path, PurePosixPath

from syrupy.data import Snapshot, SnapshotCollection
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

SNAPSHOTS_DIR = Path(__file__).resolve().parent.parent / "snapshots"


@cache
def artifact_extension(profile: str, artifact: str) -> type[SingleFileSnapshotExtension]:
    location = SNAPSHOTS_DIR / profile / PurePosixPath(artifact)

    class ArtifactSnapshot(SingleFileSnapshotExtension):
        _write_mode = WriteMode.TEXT
        file_extension = location.suffix.lstrip(".")

        @classmethod
        def dirname(cls, *, test_location):  # type: ignore[no-untyped-def]
            return str(location.parent)

        @classmethod
        def discovery_dirname(cls, *, test_location):  # type: ignore[no-untyped-def]
            return str(location.parent)

        @classmethod
        def get_location(cls, *, test_location, index):  # type: ignore[no-untyped-def]
            return str(location)

        def is_snapshot_location(self, *, location: str) -> bool:  # type: ignore[override]
            return Path(location) == ArtifactSnapshot._location

        def owns_snapshot_collection(self, *, filepath: str, test_location) -> bool:  # type: ignore[no-untyped-def]
            return Path(filepath) == ArtifactSnapshot._location

        @classmethod
        def get_snapshot_name(cls, *, test_location, index=0):  # type: ignore[no-untyped-def]
            return location.name

        def read_snapshot_collection(self, *, snapshot_location: str) -> SnapshotCollection:
            collection = SnapshotCollection(location=snapshot_location)
            collection.add(Snapshot(name=location.name))
            return collection

    ArtifactSnapshot._location = location  # type: ignore[attr-defined]
    ArtifactSnapshot.__name__ = f"ArtifactSnapshot[{profile}/{artifact}]"
    return ArtifactSnapshot


ERRORS = "errors"  # snapshots/errors/<command>/<case>.txt: the whole stderr of each refusal


def error_extension(command: str, case: str) -> type[SingleFileSnapshotExtension]:
    return artifact_extension(ERRORS, f"{command}/{case}.txt")


def error_golden(stderr: str, *scratch: Path) -> str:
    """A refusal's stderr with this run's scratch paths replaced, so the golden file is stable."""
    for path in scratch:
        stderr = stderr.replace(str(path), "<tmp>")
    return stderr
