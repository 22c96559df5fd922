"""Read an nself project's env cascade into one mapping.

Files are parsed with python-dotenv's parser, without its interpolation:
python-dotenv would fill ``${VAR}`` from ``os.environ``, and the build must
depend on the project's files alone. Interpolation happens here instead,
against the merged files only.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from dotenv.parser import parse_stream

from generator.errors import UserError

ENVIRONMENTS = ("dev", "staging", "prod")
ENV_ALIASES = {"development": "dev", "production": "prod", "stage": "staging"}

# Read in every environment, just before .env: credentials live there, and
# generated passwords are saved to .env.secrets.
SECRETS_FILES = (".env.secrets", ".secrets")
SECRETS_FILE = ".env.secrets"

_CASCADES = {
    "dev": (".env.dev", ".env.local"),
    "staging": (".env.dev", ".env.staging"),
    "prod": (".env.dev", ".env.staging", ".env.prod"),
}

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


@dataclass(frozen=True)
class EnvValue:
    """One assignment as it was written, and where."""

    raw: str
    source: str
    line: int
    quoting: str  # "'", '"' or "" (unquoted)
    raw_text: str  # the value's text in the file, quotes removed, escapes kept
    written: str = ""  # the assignment's lines exactly as in the file


@dataclass(frozen=True)
class ProjectEnv:
    env: str
    files: tuple[str, ...]  # the cascade files that exist, in the order read
    values: dict[str, str]  # merged and interpolated
    origins: dict[str, EnvValue]  # the assignment that won, per variable


def normalise_env(value: str) -> str | None:
    name = value.strip().lower()
    name = ENV_ALIASES.get(name, name)
    return name if name in ENVIRONMENTS else None


def cascade(env: str) -> tuple[str, ...]:
    return (*_CASCADES[env], *SECRETS_FILES, ".env")


def read_project_env(project_dir: Path, env_override: str | None = None) -> ProjectEnv:
    """Merge the cascade for the chosen environment; later files win.

    ENV is taken from ``env_override``, else from the dev cascade's files
    (where ``.env`` has the last word), else ``dev``.
    """
    if env_override is not None:
        env = normalise_env(env_override)
        if env is None:
            raise UserError(_env_error("--env", env_override))
    else:
        first_pass = _merge(project_dir, cascade("dev"))
        chosen = first_pass[0].get("ENV")
        if chosen is None or not chosen.raw.strip():
            env = "dev"
        else:
            env = normalise_env(chosen.raw)
            if env is None:
                raise UserError(_env_error(f"ENV (in {chosen.source})", chosen.raw))
            if chosen.source not in cascade(env):
                raise UserError(
                    f"ENV (in {chosen.source} line {chosen.line}): selects {env}, whose cascade does not read "
                    f"{chosen.source}, so its other settings would be dropped; set ENV in .env instead"
                )

    origins, files = _merge(project_dir, cascade(env))
    values = _interpolate(origins)
    values["ENV"] = env
    return ProjectEnv(env=env, files=files, values=values, origins=origins)


def _env_error(where: str, value: str) -> str:
    accepted = ", ".join(ENVIRONMENTS + tuple(ENV_ALIASES))
    return f"{where}: unknown environment {value!r}; accepted: {accepted}"


def _merge(project_dir: Path, names: tuple[str, ...]) -> tuple[dict[str, EnvValue], tuple[str, ...]]:
    merged: dict[str, EnvValue] = {}
    found = []
    for name in names:
        path = project_dir / name
        if not path.is_file():
            if path.exists() or path.is_symlink():
                # A dangling link or a directory would otherwise read as an
                # empty file: MLflow would silently switch off.
                raise UserError(f"{name}: is not a readable file (a directory, or a link to nothing)")
            continue
        found.append(name)
        merged.update(parse_env_file(path, name))
    return merged, tuple(found)


def parse_env_file(path: Path, display_name: str) -> dict[str, EnvValue]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise UserError(f"{display_name} line {line}: is not UTF-8 text; save the file as UTF-8") from None
    except OSError as error:
        raise UserError(f"{display_name}: cannot be read ({error.strerror})") from None
    problems = []
    values: dict[str, EnvValue] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = _first_content_line(binding.original.string, binding.original.line)
        if binding.error:
            problems.append(
                f"{display_name} line {line}: cannot parse this line; "
                "expected NAME=value, a comment or a blank line"
            )
            continue
        if binding.key is None:
            continue
        if binding.value is None:
            # A bare NAME with no '=' assigns nothing, as in Docker Compose.
            continue
        quoting, raw_text = _quoting_of(binding.original.string, binding.key)
        values[binding.key] = EnvValue(
            raw=binding.value,
            source=display_name,
            line=line,
            quoting=quoting,
            raw_text=raw_text,
            written=binding.original.string.strip("\r\n"),
        )
    if problems:
        raise UserError("\n".join(problems))
    return values


def _first_content_line(original: str, line: int) -> int:
    """python-dotenv counts from the blank lines before a binding; skip them."""
    stripped = original.lstrip()
    return line + original[: len(original) - len(stripped)].count("\n")


def _quoting_of(original: str, key: str) -> tuple[str, str]:
    text = original.lstrip()
    if text.startswith("export"):
        text = text[len("export") :].lstrip()
    text = text[text.index("=") + 1 :].lstrip(" \t")
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = _closing_quote(text, quote)
        return quote, text[1:end]
    return "", text.split(" #", 1)[0].split("\t#", 1)[0].rstrip()


def _closing_quote(text: str, quote: str) -> int:
    index = 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == quote:
            return index
        index += 1
    return len(text)


def _interpolate(origins: dict[str, EnvValue]) -> dict[str, str]:
    """Expand ``${VAR}`` and ``${VAR:-default}`` from the merged files only.

    Single-quoted values stay literal, as in python-dotenv and Docker Compose.
    """
    resolved: dict[str, str] = {}
    resolving: list[str] = []

    def resolve(name: str) -> str:
        if name in resolved:
            return resolved[name]
        origin = origins.get(name)
        if origin is None:
            return ""
        if name in resolving:
            chain = " -> ".join([*resolving[resolving.index(name) :], name])
            raise UserError(
                f"{name} (in {origin.source} line {origin.line}): refers to itself through {chain}; "
                "break the cycle"
            )
        if origin.quoting == "'":
            resolved[name] = origin.raw
            return origin.raw
        resolving.append(name)

        def substitute(match: re.Match[str]) -> str:
            reference, operator, default = match.group(1), match.group(2), match.group(3)
            value = resolve(reference) if reference in origins else None
            if operator == ":-" and not value:
                return default
            if operator == "-" and value is None:
                return default
            return value or ""

        value = _REFERENCE.sub(substitute, origin.raw)
        resolving.pop()
        resolved[name] = value
        return value

    try:
        return {name: resolve(name) for name in origins}
    except RecursionError:
        raise UserError("${...} references nest too deeply (more than a few hundred levels); simplify them") from None
