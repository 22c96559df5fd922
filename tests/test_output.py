"""Writing out/: deterministic, change-only, owned files only, and --check."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from generator.output import MANIFEST
from tests.conftest import EXAMPLES, ROOT, run_generator, write_tree


def snapshot_tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        path.relative_to(root).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_building_twice_gives_identical_output_and_rewrites_nothing(tmp_path):
    out = tmp_path / "out"
    first = run_generator("build", "--project-dir", EXAMPLES / "dev", "--out", out)
    assert first.returncode == 0, first.stderr
    before = snapshot_tree(out)
    # Make any rewrite visible in mtimes even on coarse clocks.
    past = 1_000_000_000
    for path in out.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(past, past))
    before = snapshot_tree(out)

    second = run_generator("build", "--project-dir", EXAMPLES / "dev", "--out", out)

    assert second.returncode == 0, second.stderr
    assert "0 written" in second.stdout
    assert snapshot_tree(out) == before


@pytest.mark.parametrize("profile", ["prod", "kubernetes"])
def test_two_separate_builds_are_byte_identical(tmp_path, profile):
    """Separate processes (so different hash seeds), a clock second apart."""
    for name in ("a", "b"):
        time.sleep(1.1 if name == "b" else 0)
        result = run_generator("build", "--project-dir", EXAMPLES / profile, "--out", tmp_path / name)
        assert result.returncode == 0, result.stderr
    tree_a = {path: content for path, (content, _) in snapshot_tree(tmp_path / "a").items()}
    tree_b = {path: content for path, (content, _) in snapshot_tree(tmp_path / "b").items()}
    assert tree_a == tree_b


def test_committed_out_is_the_build_of_examples_dev():
    """out/ in the repository is what the README's first command produces."""
    result = run_generator("build", "--project-dir", EXAMPLES / "dev", "--out", ROOT / "out", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_passes_after_a_build_and_fails_with_a_diff_after_a_hand_edit(tmp_path):
    out = tmp_path / "out"
    assert run_generator("build", "--project-dir", EXAMPLES / "dev", "--out", out).returncode == 0
    clean = run_generator("build", "--project-dir", EXAMPLES / "dev", "--out", out, "--check")
    assert clean.returncode == 0, clean.stdout + clean.stderr

    compose_file = out / "docker-compose.mlflow.yml"
    compose_file.write_text(compose_file.read_text().replace("--workers", "--wrokers"))
    before = snapshot_tree(out)
    edited = run_generator("build", "--project-dir", EXAMPLES / "dev", "--out", out, "--check")

    assert edited.returncode == 1
    assert "--- a/docker-compose.mlflow.yml" in edited.stdout
    assert "-      - --wrokers" in edited.stdout and "+      - --workers" in edited.stdout
    assert snapshot_tree(out) == before  # --check writes nothing


def test_check_reports_a_missing_out_dir(tmp_path):
    result = run_generator("build", "--project-dir", EXAMPLES / "dev", "--out", tmp_path / "none", "--check")
    assert result.returncode == 1
    assert "+++ b/docker-compose.mlflow.yml" in result.stdout
    assert not (tmp_path / "none").exists()


def test_disabling_mlflow_removes_what_the_generator_made_and_nothing_else(project, tmp_path):
    out = tmp_path / "out"
    (out / "nginx").mkdir(parents=True)
    (out / "nginx" / "other.conf").write_text("not ours\n")
    (out / "docker-compose.yml").write_text("services: {}\n")
    assert run_generator("build", "--project-dir", project, "--out", out).returncode == 0
    assert (out / "docker-compose.mlflow.yml").exists()

    write_tree(project, {".env": "PROJECT_NAME=demo\nMLFLOW_ENABLED=false\n"})
    result = run_generator("build", "--project-dir", project, "--out", out)

    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "docker-compose.yml",
        "nginx/other.conf",
    ]
    assert "removed" in result.stdout
    check = run_generator("build", "--project-dir", project, "--out", out, "--check")
    assert check.returncode == 0, check.stdout


def test_files_no_longer_produced_are_removed_via_the_manifest(project, tmp_path):
    out = tmp_path / "out"
    assert run_generator("build", "--project-dir", project, "--out", out).returncode == 0
    # Pretend an earlier release generated a file this one no longer makes.
    (out / "legacy").mkdir()
    (out / "legacy" / "old.conf").write_text("old\n")
    manifest = (out / MANIFEST).read_text().replace('"files": [', '"files": [\n    "legacy/old.conf",')
    (out / MANIFEST).write_text(manifest)

    result = run_generator("build", "--project-dir", project, "--out", out)

    assert result.returncode == 0, result.stderr
    assert not (out / "legacy").exists()
    assert "1 removed" in result.stdout


def test_manifest_entries_outside_out_are_ignored(project, tmp_path):
    out = tmp_path / "out"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out.mkdir()
    (out / MANIFEST).write_text('{"files": ["../victim.txt", "/etc/hostname"]}\n')

    assert run_generator("build", "--project-dir", project, "--out", out).returncode == 0
    assert victim.read_text() == "keep me\n"


def test_output_uses_unix_newlines_and_ends_with_one(tmp_path):
    out = tmp_path / "out"
    assert run_generator("build", "--project-dir", EXAMPLES / "prod", "--out", out).returncode == 0
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert b"\r" not in content, path
            assert content.endswith(b"\n") and not content.endswith(b"\n\n"), path


def test_a_rewritten_file_keeps_the_mode_its_owner_gave_it(tmp_path):
    from generator.output import write_outputs

    out = tmp_path / "out"
    write_outputs(out, {"nginx/includes/mlflow.htpasswd": b"user:hash-1\n"})
    (out / "nginx/includes/mlflow.htpasswd").chmod(0o640)

    write_outputs(out, {"nginx/includes/mlflow.htpasswd": b"user:hash-2\n"})

    assert (out / "nginx/includes/mlflow.htpasswd").read_bytes() == b"user:hash-2\n"
    assert (out / "nginx/includes/mlflow.htpasswd").stat().st_mode & 0o777 == 0o640


def test_the_build_says_why_the_htpasswd_is_readable_until_it_is_narrowed(tmp_path):
    import shutil

    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "prod", project, ignore=shutil.ignore_patterns("out"))
    out = tmp_path / "out"
    note = "nginx/includes/mlflow.htpasswd: mode 0644, because nginx's workers read it on every request"

    first = run_generator("build", "--project-dir", project, "--out", out)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count(note) == 1
    assert (out / "nginx/includes/mlflow.htpasswd").stat().st_mode & 0o777 == 0o644

    (out / "nginx/includes/mlflow.htpasswd").chmod(0o640)
    second = run_generator("build", "--project-dir", project, "--out", out)
    assert second.returncode == 0 and note not in second.stderr


def test_private_files_are_private_whatever_the_umask(tmp_path):
    import os

    from generator.fileio import atomic_file, write_atomically
    from generator.projectfiles import append_secrets

    previous = os.umask(0)
    try:
        write_atomically(tmp_path / "dump.sql", b"-- data\n")
        with atomic_file(tmp_path / "backup.tar", temporary=tmp_path / "backup.tar.partial") as stream:
            stream.write(b"archive")
            assert (tmp_path / "backup.tar.partial").stat().st_mode & 0o777 == 0o600
        append_secrets(tmp_path / ".env.secrets", {"MLFLOW_DB_PASSWORD": "x" * 43})
    finally:
        os.umask(previous)
    for name in ("dump.sql", "backup.tar", ".env.secrets"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    assert not (tmp_path / "backup.tar.partial").exists()
