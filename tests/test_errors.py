"""One place turns errors into messages and exit codes."""

from __future__ import annotations

import errno

import jinja2
import pytest

from generator.errors import NotEnabledError, ServiceError, UserError, describe_os_error, last_line, run_cli


@pytest.mark.parametrize("error, message, code", [
    (UserError("MLFLOW_PORT: must be a TCP port"), "Error: MLFLOW_PORT: must be a TCP port\n", 2),
    (NotEnabledError("MLFLOW_ENABLED: off"), "Error: MLFLOW_ENABLED: off\n", 2),
    (ServiceError("cannot reach http://localhost:5000"), "Error: cannot reach http://localhost:5000\n", 1),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "backup.tar"),
     "Error: backup.tar: No such file or directory\n", 2),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "out"), "Error: out: Is a directory\n", 2),
    (OSError(errno.ENOSPC, "No space left on device", "out/x", None), "Error: out/x: No space left on device\n", 1),
    (OSError(errno.EIO, "Input/output error"), "Error: Input/output error\n", 1),
    (OSError(), "Error: OSError\n", 1),
    # jinja2's TemplateNotFound is an OSError with neither file name nor cause: never "None: None".
    (jinja2.TemplateNotFound("mlflow/Dockerfile.j2"), "Error: mlflow/Dockerfile.j2\n", 1),
])
def test_run_cli_prints_one_line_and_the_exit_code(error, message, code, capsys):
    def fail():
        raise error

    with pytest.raises(SystemExit) as exited:
        run_cli(fail)
    assert exited.value.code == code
    captured = capsys.readouterr()
    assert captured.err == message and captured.out == ""
    assert "None" not in captured.err


def test_describe_os_error_names_both_files_of_a_rename():
    assert describe_os_error(OSError(errno.EXDEV, "Invalid cross-device link", "a.partial", None, "a")) == \
        "a.partial -> a: Invalid cross-device link"


@pytest.mark.parametrize("text, expected", [
    ("", "no output"), (None, "no output"), ("one\n\n  two  \n\n", "two"), (b"pg_dump: error: x\n", "pg_dump: error: x"),
])
def test_last_line_is_the_last_non_blank_line(text, expected):
    assert last_line(text) == expected
