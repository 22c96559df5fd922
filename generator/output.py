"""Writing out/: atomic, change-only, and only the files this generator owns.

A manifest lists what the generator wrote, so files it no longer produces can
be removed without touching anything else in out/.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from generator.fileio import write_atomically

MANIFEST = ".nself-mlflow-manifest.json"


@dataclass
class WriteReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _manifest_bytes(paths: list[str]) -> bytes:
    document = {"generator": "nself-mlflow", "files": sorted(paths)}
    return (json.dumps(document, indent=2) + "\n").encode()


def _is_owned_path(path: str) -> bool:
    pure = PurePosixPath(path)
    return bool(path) and not pure.is_absolute() and ".." not in pure.parts and path != MANIFEST


def read_manifest(out_dir: Path) -> list[str]:
    try:
        document = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        files = document["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [path for path in files if isinstance(path, str) and _is_owned_path(path)]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, content: bytes) -> None:
    # An existing file keeps its mode and group (say, an htpasswd made 0640 for nginx).
    write_atomically(path, content, mode=0o644, keep_existing_mode=True)


def _remove_empty_parents(path: Path, out_dir: Path) -> None:
    parent = path.parent
    while parent != out_dir and out_dir in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


def write_outputs(out_dir: Path, files: dict[str, bytes]) -> WriteReport:
    """Bring out/ to exactly `files` for the paths this generator owns."""
    report = WriteReport()
    previous = read_manifest(out_dir)
    stale = sorted(set(previous) - set(files))
    manifest_path = out_dir / MANIFEST

    # Record the union first: if this run stops half-way, the next one still
    # knows every file it may have to remove.
    if files or previous:
        union = _manifest_bytes(sorted(set(previous) | set(files)))
        if _read(manifest_path) != union:
            _write_atomically(manifest_path, union)

    for path, content in files.items():
        target = out_dir / path
        if _read(target) == content:
            report.unchanged.append(path)
        else:
            _write_atomically(target, content)
            report.written.append(path)

    for path in stale:
        target = out_dir / path
        if target.is_file() or target.is_symlink():
            target.unlink()
            report.removed.append(path)
            _remove_empty_parents(target, out_dir)

    if files:
        final = _manifest_bytes(list(files))
        if _read(manifest_path) != final:
            _write_atomically(manifest_path, final)
    elif manifest_path.exists():
        manifest_path.unlink()
    return report


def diff_outputs(out_dir: Path, files: dict[str, bytes]) -> str:
    """A unified diff from out/ as it is to what a build would write; '' if equal."""
    expected = dict(files)
    if files:
        expected[MANIFEST] = _manifest_bytes(list(files))
    owned = set(read_manifest(out_dir)) | set(expected)
    if (out_dir / MANIFEST).exists():
        owned.add(MANIFEST)
    chunks = []
    for path in sorted(owned):
        current = _read(out_dir / path)
        wanted = expected.get(path)
        if current == wanted:
            continue
        chunks.append(_unified(path, current, wanted))
    return "".join(chunks)


def _unified(path: str, current: bytes | None, wanted: bytes | None) -> str:
    before = [] if current is None else current.decode("utf-8", "replace").splitlines(keepends=True)
    after = [] if wanted is None else wanted.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(
        before,
        after,
        fromfile=f"a/{path}" if current is not None else "/dev/null",
        tofile=f"b/{path}" if wanted is not None else "/dev/null",
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
