"""Run the psql subset that postgres/init/mlflow.sql is written in.

The generated SQL file is the single source of the database steps, and it is
plain psql so that an operator can apply it by hand. The MLflow image has no
psql, so this module runs the same file through psycopg, with psql's meaning:

- a statement ends with a line ending in ';', and runs in autocommit mode;
- ``\\gexec`` runs the query above it, then runs every non-null value of its
  result as a statement of its own (how CREATE DATABASE runs conditionally
  outside any transaction or DO block);
- ``:'name'`` is the psql variable ``name`` as a quoted literal;
- ``\\if :{?name}`` / ``\\else`` / ``\\endif`` test whether a variable is set;
- ``\\echo text`` prints text.

A comment ``-- step: NAME [created]`` (or ``[updated]``) names the
``\\gexec`` step below it, and says what it did if it ran any statement.
Two steps in a row may share a NAME: one that creates, then one that brings
up to date. They report once, with what ran first (created, say, rather than
the update that completed the creation).
Anything else psql would understand is refused rather than guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import psycopg
from psycopg import sql

_STEP = re.compile(r"--\s*step:\s*(?P<name>.+?)\s*\[(?P<verb>created|updated)\]\s*$")
_VARIABLE = re.compile(r":'([A-Za-z_][A-Za-z0-9_]*)'")
_IS_SET = re.compile(r"\\if\s+:\{\?([A-Za-z_][A-Za-z0-9_]*)\}\s*$")


class ScriptError(Exception):
    """The script uses psql that this runner does not support, or is malformed."""


@dataclass(frozen=True)
class StepResult:
    name: str
    outcome: str  # created / updated / unchanged


def run_script(
    connection: psycopg.Connection,
    script: str,
    variables: dict[str, str],
    echo: Callable[[str], None] = print,
) -> list[StepResult]:
    if not connection.autocommit:
        raise ScriptError("the connection must be in autocommit mode, as psql runs a script")
    results: list[StepResult] = []
    buffer: list[str] = []
    step: tuple[str, str] | None = None
    active: list[bool] = []  # one entry per open \if: is this branch running?

    def running() -> bool:
        return all(active)

    for number, line in enumerate(script.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("\\"):
            if buffer and stripped != "\\gexec":
                raise ScriptError(f"line {number}: a meta-command inside an unfinished statement")
            command = stripped.split(None, 1)[0]
            if command == "\\if":
                match = _IS_SET.match(stripped)
                if not match:
                    raise ScriptError(f"line {number}: only `\\if :{{?name}}` is supported")
                active.append(match.group(1) in variables)
            elif command == "\\else":
                if not active:
                    raise ScriptError(f"line {number}: \\else without \\if")
                active[-1] = not active[-1]
            elif command == "\\endif":
                if not active:
                    raise ScriptError(f"line {number}: \\endif without \\if")
                active.pop()
            elif command == "\\echo":
                if running():
                    echo(_unquote(stripped[len("\\echo") :].strip()))
            elif command == "\\gexec":
                if not buffer:
                    raise ScriptError(f"line {number}: \\gexec without a query")
                query = "\n".join(buffer)
                buffer = []
                if running():
                    executed = _gexec(connection, _substitute(query, variables, connection, number))
                    if step is not None:
                        _report(results, StepResult(step[0], step[1] if executed else "unchanged"))
                step = None
            else:
                raise ScriptError(f"line {number}: psql meta-command {command} is not supported")
            continue
        if not buffer and stripped.startswith("--"):
            match = _STEP.match(stripped)
            if match:
                step = (match.group("name"), match.group("verb"))
            continue
        if not buffer and not stripped:
            continue
        buffer.append(line)
        if stripped.endswith(";"):
            statement = "\n".join(buffer)
            buffer = []
            if running():
                connection.execute(_substitute(statement, variables, connection, number))
    if buffer:
        raise ScriptError("the script ends inside an unfinished statement")
    if active:
        raise ScriptError("the script ends inside an \\if")
    return results


def _report(results: list[StepResult], result: StepResult) -> None:
    if results and results[-1].name == result.name:
        if results[-1].outcome == "unchanged":
            results[-1] = result
        return
    results.append(result)


def _gexec(connection: psycopg.Connection, query: str) -> int:
    statements = [value for row in connection.execute(query).fetchall() for value in row if value is not None]
    for statement in statements:
        connection.execute(statement)
    return len(statements)


def _substitute(text: str, variables: dict[str, str], connection: psycopg.Connection, number: int) -> str:
    def literal(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise ScriptError(f"line {number}: psql variable {name} is not set")
        return sql.Literal(variables[name]).as_string(connection)

    return _VARIABLE.sub(literal, text)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text
