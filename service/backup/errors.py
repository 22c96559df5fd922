"""The one error of backup and restore."""

from __future__ import annotations

from generator.errors import ServiceError


class BackupError(ServiceError):
    """The backup or restore cannot go on; exit code 1, one line saying why."""
