"""The errors a user sees, and the one place that turns them into exit codes.

Every command raises; only `run_cli` prints and exits. Messages are shown as
they are and must never hold a secret's value.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input: a setting, an option or a file the user gave. Exit code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotEnabledError(UserError):
    """MLFLOW_ENABLED is not true in the project: nothing to build or operate."""


class ServiceError(UserError):
    """A server or a tool could not be used, or refused; exit code 1 (2 stays for bad input)."""

    exit_code = 1


def last_line(text: str | bytes | None, empty: str = "no output") -> str:
    """The last non-blank line of a tool's stderr: where tools put the reason they stopped."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else empty


def describe_os_error(error: OSError) -> str:
    """`FILE: cause` for an OSError, never `None: None`."""
    cause = error.strerror or str(error) or type(error).__name__
    names = [str(name) for name in (error.filename, error.filename2) if name is not None]
    return f"{' -> '.join(names)}: {cause}" if names else cause


# An OSError on one of these is the user's input (a path that is missing,
# a directory, or unreadable), not a failure of the machine or a server.
_BAD_INPUT_ERRNOS = frozenset({"ENOENT", "ENOTDIR", "EISDIR", "EACCES", "EPERM", "ENAMETOOLONG", "ELOOP"})


def os_error_exit_code(error: OSError) -> int:
    import errno

    name = errno.errorcode.get(error.errno or 0, "")
    return 2 if name in _BAD_INPUT_ERRNOS else 1


def run_cli(main: Callable[[], object]) -> None:
    """Run a typer app; every expected error becomes `Error: …` on stderr and its exit code."""
    try:
        main()
    except UserError as error:
        print(f"Error: {error.message}", file=sys.stderr)
        sys.exit(error.exit_code)
    except OSError as error:
        print(f"Error: {describe_os_error(error)}", file=sys.stderr)
        sys.exit(os_error_exit_code(error))
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        sys.exit(130)
