"""Atomic writes: a reader sees the old file or the complete new one, never a part."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PRIVATE = 0o600


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = PRIVATE, keep_existing_mode: bool = False,
                temporary: Path | None = None) -> Iterator[IO[bytes]]:
    """Write `path` through a stream; it appears, fsynced, only when the block ends without error.

    The temporary file is created with `mode` before any byte is written, so
    a private file is never readable by others, whatever the umask. With
    `keep_existing_mode`, a file being replaced keeps its mode and group
    (say, an htpasswd an operator made 0640 for nginx). `temporary` names the
    partial file (for example FILE.partial, which a user may see during a
    long backup); by default it is hidden beside the target.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if temporary is None:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        partial = Path(name)
    else:
        partial = temporary
        handle = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        if keep_existing_mode:
            _copy_mode_and_group(path, partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _copy_mode_and_group(existing: Path, partial: Path) -> None:
    try:
        status = existing.stat()
    except FileNotFoundError:
        return
    # Without membership of that group the chown fails; the mode still carries over.
    with contextlib.suppress(PermissionError):
        os.chown(partial, -1, status.st_gid)
    os.chmod(partial, stat.S_IMODE(status.st_mode))


def write_atomically(path: Path, content: bytes, mode: int = PRIVATE, keep_existing_mode: bool = False) -> None:
    with atomic_file(path, mode, keep_existing_mode) as stream:
        stream.write(content)
