"""The backup archive's verification, on archives made here (no servers).

The live backup and restore are tested in tests/e2e/test_backup.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from generator.errors import UserError
from service.backup import BackupError, ByteProgress, verify_archive

DUMP = b"PGDMP dump bytes"
OBJECTS = {"1/run/artifacts/model.pkl": b"model", "1/run/artifacts/dir/plot.png": b"\x89PNG"}


def manifest(**changes) -> dict:
    entries = [{"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
               for key, data in OBJECTS.items()]
    document = {
        "format": "nself-mlflow-backup", "format_version": 1, "created": "2026-01-01T00:00:00Z",
        "mlflow": {"version": "2.9.2", "schema_revision": "acf3f17fdcc7"},
        "postgres": {"version": "15.8", "database": "mlflow",
                     "dump": {"path": "database.pgdump", "size": len(DUMP), "sha256": hashlib.sha256(DUMP).hexdigest()}},
        "bucket": {"name": "mlflow-artifacts", "count": len(entries), "bytes": sum(e["size"] for e in entries),
                   "objects": entries},
    }
    document.update(changes)
    return document


def write_archive(path: Path, members: list[tuple[str, bytes, dict]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, data, headers in members:
            member = tarfile.TarInfo(name)
            member.size, member.pax_headers = len(data), headers
            archive.addfile(member, io.BytesIO(data))
    return path


def members(document: dict | None = None, objects: dict[str, bytes] = OBJECTS) -> list[tuple[str, bytes, dict]]:
    found = [("database.pgdump", DUMP, {})]
    found += [(f"objects/{key}", data, {"NSELF.key": key}) for key, data in objects.items()]
    return found + [("manifest.json", json.dumps(document or manifest()).encode(), {})]


def test_a_whole_archive_verifies(tmp_path):
    assert verify_archive(write_archive(tmp_path / "a.tar", members())) == manifest()


@pytest.mark.parametrize("case,message", [
    ("missing", "object '1/run/artifacts/model.pkl' is missing from the archive"),
    ("extra", "object '1/run/extra.txt' is not in the manifest"),
    ("changed", "object '1/run/artifacts/dir/plot.png' does not match its checksum"),
    ("dump", "the database dump does not match its checksum"),
    ("newer format", "has format_version 2; this tool reads 1: restore it with a newer nself"),
    ("other format", "is not an nself MLflow backup"),
    ("after manifest", "follows the manifest"),
    ("no manifest", "it ends before its manifest"),
    ("stray member", "unexpected member 'notes.txt'"),
])
def test_an_archive_that_does_not_match_its_manifest_is_refused(tmp_path, case, message):
    found = members()
    if case == "missing":
        found = [m for m in found if m[0] != "objects/1/run/artifacts/model.pkl"]
    elif case == "extra":
        found.insert(1, ("objects/1/run/extra.txt", b"extra", {"NSELF.key": "1/run/extra.txt"}))
    elif case == "changed":
        found = [(n, b"\x89PNH" if n.endswith("plot.png") else d, h) for n, d, h in found]
    elif case == "dump":
        found[0] = ("database.pgdump", DUMP + b"!", {})
    elif case == "newer format":
        found = members(manifest(format_version=2))
    elif case == "other format":
        found = members(manifest(format="something-else"))
    elif case == "after manifest":
        found.append(("objects/late", b"late", {}))
    elif case == "no manifest":
        found = found[:-1]
    elif case == "stray member":
        found.insert(1, ("notes.txt", b"notes", {}))
    with pytest.raises(BackupError) as refused:
        verify_archive(write_archive(tmp_path / "bad.tar", found))
    assert message in refused.value.message


def test_the_key_comes_from_the_pax_header(tmp_path):
    """Keys that a file name would mangle (a trailing slash, '..') survive."""
    odd = {"1/run/artifacts/dir/": b"marker", "1/run/../x": b"dots"}
    document = manifest(bucket={"name": "b", "count": 2, "bytes": 10, "objects": [
        {"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for key, data in odd.items()]})
    verified = verify_archive(write_archive(tmp_path / "odd.tar", members(document, odd)))
    assert [entry["key"] for entry in verified["bucket"]["objects"]] == list(odd)


def test_a_missing_file_is_bad_input(tmp_path):
    with pytest.raises(UserError) as refused:
        verify_archive(tmp_path / "absent.tar")
    assert refused.value.exit_code == 2 and "does not exist" in refused.value.message


def test_byte_progress_reports_about_once_a_mebibyte_and_ends_at_the_total():
    reports = []
    counter = ByteProgress(lambda done, total, label: reports.append((done, total, label)), 3 << 20, "backup")
    for _ in range(3 * 16):
        counter(64 << 10)
    counter.finish()
    assert [done for done, _, _ in reports] == [1 << 20, 2 << 20, 3 << 20, 3 << 20]
    assert {(total, label) for _, total, label in reports} == {(3 << 20, "backup")}
