"""The one write outside out/: generated passwords saved to .env.secrets."""

from __future__ import annotations

from pathlib import Path

from generator.fileio import PRIVATE, write_atomically

SECRETS_HEADER = (
    "# Secrets for this nself project. Keep this file out of version control (mode 0600).\n"
)


def append_secrets(path: Path, new_values: dict[str, str]) -> None:
    """Append NAME=value lines, leaving every existing line as it was.

    The file is replaced atomically with mode 0600 whatever the umask, so a
    crash leaves either the old file or the complete new one.
    """
    existing = path.read_bytes() if path.exists() else SECRETS_HEADER.encode()
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    addition = "".join(f"{name}={value}\n" for name, value in new_values.items()).encode()
    write_atomically(path, existing + addition, mode=PRIVATE)
