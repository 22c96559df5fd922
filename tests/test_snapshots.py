"""One golden file per artifact per profile, under snapshots/<profile>/."""

from __future__ import annotations

import pytest

from tests.conftest import EXAMPLES, PROFILES, build_profile
from tests.snapshot_files import ERRORS, SNAPSHOTS_DIR, artifact_extension

# The init program is copied verbatim into the image's build context; it is
# source code, reviewed as such, and checked against the package below.
COPIED_SOURCE_PREFIXES = ("mlflow/init/", "mlflow-serve/init/")

BUILDS = {profile: build_profile(EXAMPLES / profile) for profile in PROFILES}
CASES = [
    (profile, path)
    for profile, files in BUILDS.items()
    for path in files
    if not path.startswith(COPIED_SOURCE_PREFIXES)
]


@pytest.mark.parametrize(("profile", "artifact"), CASES, ids=[f"{p}/{a}" for p, a in CASES])
def test_artifact_matches_snapshot(profile, artifact, snapshot):
    content = BUILDS[profile][artifact].decode()
    assert content == snapshot(extension_class=artifact_extension(profile, artifact))


def test_snapshot_folder_holds_exactly_artifacts_times_profiles():
    expected = {f"{profile}/{artifact}" for profile, artifact in CASES}
    present = {
        path.relative_to(SNAPSHOTS_DIR).as_posix() for path in SNAPSHOTS_DIR.rglob("*")
        if path.is_file() and not path.relative_to(SNAPSHOTS_DIR).parts[0] == ERRORS
    }
    assert present == expected

