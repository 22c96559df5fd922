"""Unit tests of generator.envfiles.read_project_env: cascade, ENV, interpolation.

The core reads the project's files and nothing else: the process environment
must never change what it reads or what a build produces.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from generator import artifacts
from generator.envfiles import read_project_env
from generator.errors import UserError
from generator.settings import VARIABLES, load_settings
from tests.conftest import MINIMAL_ENV, MINIMAL_SECRETS, run_generator, write_tree

ALL_FILES = (".env.dev", ".env.local", ".env.staging", ".env.prod", ".env.secrets", ".secrets", ".env")

# The documented cascade per environment, in reading order: later files win.
CASCADES = {
    "dev": (".env.dev", ".env.local", ".env.secrets", ".secrets", ".env"),
    "staging": (".env.dev", ".env.staging", ".env.secrets", ".secrets", ".env"),
    "prod": (".env.dev", ".env.staging", ".env.prod", ".env.secrets", ".secrets", ".env"),
}


def _probe_files(names) -> dict[str, str]:
    """Each file assigns PROBE to its own name."""
    return {name: f"PROBE={name}\n" for name in names}


# --- cascade -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "name"),
    [(env, name) for env in CASCADES for name in ALL_FILES],
    ids=[f"{env}:{name}" for env in CASCADES for name in ALL_FILES],
)
def test_each_file_is_read_only_in_its_environments(tmp_path, env, name):
    project = write_tree(tmp_path, _probe_files([name]))

    result = read_project_env(project, env)

    read = name in CASCADES[env]
    assert ("PROBE" in result.values) == read
    assert result.files == ((name,) if read else ())
    if read:
        assert result.values["PROBE"] == name
        assert result.origins["PROBE"].source == name


@pytest.mark.parametrize(
    ("env", "depth"),
    [(env, depth) for env, order in CASCADES.items() for depth in range(len(order))],
    ids=[f"{env}:{name}" for env, order in CASCADES.items() for name in order],
)
def test_each_file_beats_every_file_read_before_it(tmp_path, env, depth):
    order = CASCADES[env]
    present = order[: depth + 1]
    outsiders = [name for name in ALL_FILES if name not in order]
    project = write_tree(tmp_path, _probe_files([*present, *outsiders]))

    result = read_project_env(project, env)

    assert result.values["PROBE"] == order[depth]
    assert result.origins["PROBE"].source == order[depth]
    assert result.files == present


@pytest.mark.parametrize("env", sorted(CASCADES))
def test_all_files_present_reads_exactly_the_cascade_in_order(tmp_path, env):
    project = write_tree(tmp_path, _probe_files(ALL_FILES))

    result = read_project_env(project, env)

    assert result.files == CASCADES[env]
    assert result.values["PROBE"] == ".env"


# Readable statements of the rules the tables above prove exhaustively.
NAMED_RULES = [
    ("local-not-read-in-staging", "staging", {".env.dev": "X=dev\n", ".env.local": "X=local\n"}, "dev"),
    ("local-not-read-in-prod", "prod", {".env.dev": "X=dev\n", ".env.local": "X=local\n"}, "dev"),
    ("prod-not-read-in-dev", "dev", {".env.dev": "X=dev\n", ".env.prod": "X=prod\n"}, "dev"),
    ("prod-not-read-in-staging", "staging", {".env.staging": "X=staging\n", ".env.prod": "X=prod\n"}, "staging"),
    ("staging-not-read-in-dev", "dev", {".env.dev": "X=dev\n", ".env.staging": "X=staging\n"}, "dev"),
    ("staging-read-in-prod", "prod", {".env.dev": "X=dev\n", ".env.staging": "X=staging\n"}, "staging"),
    ("prod-beats-staging", "prod", {".env.staging": "X=staging\n", ".env.prod": "X=prod\n"}, "prod"),
    ("local-beats-dev", "dev", {".env.dev": "X=dev\n", ".env.local": "X=local\n"}, "local"),
    ("secrets-beat-local", "dev", {".env.local": "X=local\n", ".env.secrets": "X=secrets\n"}, "secrets"),
    ("secrets-beat-prod", "prod", {".env.prod": "X=prod\n", ".env.secrets": "X=secrets\n"}, "secrets"),
    ("dot-secrets-beats-env-secrets", "dev", {".env.secrets": "X=env-secrets\n", ".secrets": "X=secrets\n"}, "secrets"),
    ("dot-secrets-beats-env-secrets-prod", "prod", {".secrets": "X=secrets\n", ".env.secrets": "X=env-secrets\n"}, "secrets"),
    ("env-beats-dot-secrets", "staging", {".secrets": "X=secrets\n", ".env": "X=env\n"}, "env"),
    (
        "env-beats-everything",
        "prod",
        {name: f"X={name}\n" for name in ALL_FILES} | {".env": "X=env\n"},
        "env",
    ),
]


@pytest.mark.parametrize(("env", "files", "expected"), [r[1:] for r in NAMED_RULES], ids=[r[0] for r in NAMED_RULES])
def test_named_cascade_rules(tmp_path, env, files, expected):
    assert read_project_env(write_tree(tmp_path, files), env).values["X"] == expected


def test_later_files_override_only_the_variables_they_set(tmp_path):
    project = write_tree(
        tmp_path,
        {".env.dev": "A=dev\nB=dev\nC=dev\n", ".env.secrets": "B=secrets\n", ".env": "C=env\n"},
    )

    values = read_project_env(project, "dev").values

    assert (values["A"], values["B"], values["C"]) == ("dev", "secrets", "env")


def test_the_last_assignment_in_one_file_wins(tmp_path):
    project = write_tree(tmp_path, {".env": "A=first\nA=second\n"})

    result = read_project_env(project)

    assert result.values["A"] == "second"
    assert result.origins["A"].line == 2


def test_missing_files_are_skipped_and_no_files_means_dev(tmp_path):
    result = read_project_env(tmp_path)

    assert result.env == "dev"
    assert result.files == ()
    assert result.values == {"ENV": "dev"}


# --- ENV -------------------------------------------------------------------


def test_env_override_wins_over_the_files(tmp_path):
    project = write_tree(
        tmp_path,
        {".env": "ENV=prod\n", ".env.staging": "X=staging\n", ".env.prod": "X=prod\n"},
    )

    result = read_project_env(project, "staging")

    assert result.env == "staging"
    assert result.values["ENV"] == "staging"
    assert result.values["X"] == "staging"
    assert ".env.prod" not in result.files


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({".env": "ENV=prod\n"}, "prod"),
        ({".env": "ENV=staging\n"}, "staging"),
        ({".env.local": "ENV=dev\n"}, "dev"),
        ({".env.dev": "ENV=prod\n"}, "prod"),
        ({".env.secrets": "ENV=prod\n"}, "prod"),
        ({".secrets": "ENV=staging\n"}, "staging"),
        # .env has the last word in the dev cascade
        ({".env.local": "ENV=staging\n", ".env": "ENV=prod\n"}, "prod"),
        ({".secrets": "ENV=prod\n", ".env.secrets": "ENV=staging\n"}, "prod"),
        # files outside the dev cascade cannot choose the environment
        ({".env.prod": "ENV=prod\n"}, "dev"),
        ({".env.staging": "ENV=staging\n"}, "dev"),
        # unset or empty: dev
        ({".env": "OTHER=1\n"}, "dev"),
        ({".env": "ENV=\n"}, "dev"),
        ({".env": "ENV=''\n"}, "dev"),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else value,
)
def test_env_from_the_files(tmp_path, files, expected):
    result = read_project_env(write_tree(tmp_path, files))

    assert result.env == expected
    assert result.values["ENV"] == expected


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_env_chosen_in_env_local_for_a_cascade_that_skips_it_is_refused(tmp_path, env):
    """.env.local is read in dev only: choosing another ENV there would drop its other values."""
    with pytest.raises(UserError, match=r"ENV \(in \.env\.local line 1\): selects"):
        read_project_env(write_tree(tmp_path, {".env.local": f"ENV={env}\nMLFLOW_WORKERS=7\n"}))


def test_env_chosen_from_files_selects_that_cascade(tmp_path):
    project = write_tree(
        tmp_path,
        {".env": "ENV=prod\n", ".env.local": "X=local\n", ".env.prod": "X=prod\nY=prod\n"},
    )

    result = read_project_env(project)

    assert result.env == "prod"
    assert result.files == (".env.prod", ".env")
    assert (result.values["X"], result.values["Y"]) == ("prod", "prod")


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("dev", "dev"),
        ("staging", "staging"),
        ("prod", "prod"),
        ("development", "dev"),
        ("production", "prod"),
        ("stage", "staging"),
        ("PROD", "prod"),
        ("Production", "prod"),
    ],
)
def test_env_aliases_normalise(tmp_path, written, expected):
    from_file = read_project_env(write_tree(tmp_path / "file", {".env": f"ENV={written}\n"}))
    from_override = read_project_env(write_tree(tmp_path / "override", {".env": "A=1\n"}), written)

    assert from_file.env == from_override.env == expected
    assert from_file.values["ENV"] == from_override.values["ENV"] == expected


@pytest.mark.parametrize("bad", ["qa", "test", "produc", "dev staging"])
def test_unknown_env_in_files_is_a_user_error_naming_env(tmp_path, bad):
    project = write_tree(tmp_path, {".env": f"ENV='{bad}'\n"})

    with pytest.raises(UserError) as caught:
        read_project_env(project)

    message = caught.value.message
    assert "ENV" in message
    assert ".env" in message
    assert repr(bad) in message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("bad", ["qa", "", "Sandbox"])
def test_unknown_env_override_is_a_user_error(tmp_path, bad):
    project = write_tree(tmp_path, {".env": "ENV=dev\n"})

    with pytest.raises(UserError) as caught:
        read_project_env(project, bad)

    assert "--env" in caught.value.message
    assert repr(bad) in caught.value.message


# --- interpolation and syntax ----------------------------------------------------


def _values(tmp_path: Path, text: str) -> dict[str, str]:
    return read_project_env(write_tree(tmp_path, {".env": text}), "dev").values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B=x\nA=${B}\n", "x"),
        ("A=${B}\nB=x\n", "x"),  # order within the file does not matter
        ("B=x\nA=pre-${B}-post\n", "pre-x-post"),
        ("B=x\nC=y\nA=${B}${C}\n", "xy"),
        ("A=${UNSET}\n", ""),
        ("A=${UNSET:-fallback}\n", "fallback"),
        ("B=\nA=${B:-fallback}\n", "fallback"),
        ("B=x\nA=${B:-fallback}\n", "x"),
        ("A=${UNSET-fallback}\n", "fallback"),
        ("B=\nA=${B-fallback}\n", ""),
        ("A=${UNSET:-}\n", ""),
        ("C=z\nB=${C}\nA=${B}\n", "z"),  # chains resolve
        ('B=x\nA="${B} y"\n', "x y"),  # double quotes expand
        ("B=x\nA='${B}'\n", "${B}"),  # single quotes stay literal
        ("A='${UNSET:-fallback}'\n", "${UNSET:-fallback}"),
        ("B='${C}'\nC=x\nA=${B}\n", "${C}"),  # a literal is not re-expanded
        ("A=cost$5\n", "cost$5"),  # a lone '$' is not a reference
        ("export A=exported\n", "exported"),
        ("B=x\nexport A=${B}\n", "x"),
        ("export A='lit ${B}'\n", "lit ${B}"),
        ("A=value # a comment\n", "value"),
        ("A=value\t# a comment\n", "value"),
        ("A=value   # a comment\n", "value"),
        ("A=val#ue\n", "val#ue"),  # no whitespace before '#': part of the value
        ("A=http://host/#frag\n", "http://host/#frag"),
        ('A="quoted # not a comment"\n', "quoted # not a comment"),
        ("A='quoted # not a comment' # comment\n", "quoted # not a comment"),
        ("# a comment line\n\nA=1\n", "1"),
        ("A=  padded  \n", "padded"),
    ],
)
def test_value_syntax_and_interpolation(tmp_path, text, expected):
    assert _values(tmp_path, text)["A"] == expected


def test_references_resolve_against_the_merged_winner(tmp_path):
    project = write_tree(
        tmp_path,
        {
            ".env.dev": "HOST=dev-host\nURL=http://${HOST}:${PORT}\n",
            ".env.secrets": "PORT=5001\n",
            ".env": "HOST=final-host\n",
        },
    )

    values = read_project_env(project, "dev").values

    assert values["URL"] == "http://final-host:5001"


def test_references_ignore_files_outside_the_cascade(tmp_path):
    project = write_tree(
        tmp_path,
        {".env": "A=${ONLY_IN_PROD:-none}\n", ".env.prod": "ONLY_IN_PROD=prod\n"},
    )

    assert read_project_env(project, "dev").values["A"] == "none"
    assert read_project_env(project, "prod").values["A"] == "prod"


def test_origins_record_the_line_of_each_assignment(tmp_path):
    # .env files group settings in blank-line separated sections; errors
    # quote "(in FILE line N)", so N must be the assignment's own line.
    project = write_tree(tmp_path, {".env": "A=1\n# comment\nB=2\n\n\nC=3\n\n   D=4\nexport E=5\n"})

    origins = read_project_env(project).origins

    assert {name: origins[name].line for name in "ABCDE"} == {"A": 1, "B": 3, "C": 6, "D": 8, "E": 9}
    assert all(origin.source == ".env" for origin in origins.values())


def test_comment_stripping_is_recorded_in_raw_text(tmp_path):
    origin = read_project_env(write_tree(tmp_path, {".env": "A=value # note\n"})).origins["A"]

    assert (origin.raw, origin.quoting, origin.raw_text) == ("value", "", "value")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("A=${A}\n", ["A"]),
        ("A=${B}\nB=${A}\n", ["A", "B"]),
        ("A=${B}\nB=${C}\nC=${A}\n", ["A", "B", "C"]),
        ("A=${B:-x}\nB=${A:-y}\n", ["A", "B"]),
        ('A="${B}"\nB=${A}\n', ["A", "B"]),
    ],
)
def test_reference_cycle_is_a_user_error(tmp_path, text, names):
    with pytest.raises(UserError) as caught:
        _values(tmp_path, text)

    message = caught.value.message
    for name in names:
        assert name in message
    assert "cycle" in message


def test_reference_cycle_across_files(tmp_path):
    project = write_tree(tmp_path, {".env.dev": "A=${B}\n", ".env": "B=${A}\n"})

    with pytest.raises(UserError, match="cycle"):
        read_project_env(project, "dev")


def test_single_quotes_break_a_cycle(tmp_path):
    assert _values(tmp_path, "A='${B}'\nB=${A}\n")["B"] == "${B}"


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        (".env", "A=1\nthis is not valid\nB=2\n", 2),
        (".env", "MLFLOW_PORT 5000\n", 1),
        (".env", "A=1\nB=2\nC='unterminated\n", 3),
        (".env.secrets", "# header\nPOSTGRES_PASSWORD=ok\n=novalue\n", 3),
        (".secrets", "# header\n\nA='x' trailing\n", 3),
        (".env.dev", "A=1\nB C=3\n", 2),
        # blank lines before the bad line must not shift the reported line
        (".env", "A=1\n\n\nthis is not valid\n", 4),
        (".env", "# section\nA=1\n\n# section\nB=2\n\nMLFLOW_PORT 5000\n", 7),
    ],
)
def test_malformed_line_is_a_user_error_naming_file_and_line(tmp_path, name, text, line):
    project = write_tree(tmp_path, {name: text})

    with pytest.raises(UserError) as caught:
        read_project_env(project, "dev")

    assert f"{name} line {line}" in caught.value.message


def test_every_malformed_line_is_reported(tmp_path):
    project = write_tree(tmp_path, {".env": "bad one\nA=1\nbad two\n"})

    with pytest.raises(UserError) as caught:
        read_project_env(project)

    assert ".env line 1" in caught.value.message
    assert ".env line 3" in caught.value.message


def test_malformed_file_outside_the_cascade_is_not_read(tmp_path):
    project = write_tree(tmp_path, {".env": "A=1\n", ".env.prod": "this is not valid\n"})

    assert read_project_env(project, "dev").values["A"] == "1"
    with pytest.raises(UserError, match=r"\.env\.prod line 1"):
        read_project_env(project, "prod")


def test_malformed_line_error_does_not_echo_the_line(tmp_path):
    project = write_tree(tmp_path, {".env.secrets": "POSTGRES_PASSWORD='Sup3r-Secret-Value-unterminated\n"})

    with pytest.raises(UserError) as caught:
        read_project_env(project)

    assert ".env.secrets line 1" in caught.value.message
    assert "Sup3r-Secret-Value" not in caught.value.message


# --- the process environment is never read ----------------------------------------

ISOLATION_ENV = MINIMAL_ENV + (
    "BASE_DOMAIN=${FROM_OS:-local.nself.org}\n"
    "MLFLOW_ROUTE=ml${FROM_OS}\n"
    "MLFLOW_AUTH_ENABLED=true\n"
    "MLFLOW_AUTH_USERNAME=admin${FROM_OS}\n"
    "MLFLOW_GC_SCHEDULE=${GC_FROM_OS:-0 3 * * 0}\n"
)
ISOLATION_SECRETS = MINIMAL_SECRETS + "MLFLOW_AUTH_PASSWORD=auth-secret-from-files-1\nMLFLOW_AUTH_HASH_SALT=abcdefghijklmnopqrstuu\n"
# Each would change the result if the core read os.environ.
CONFLICTING_PROCESS_ENV = {
    "ENV": "prod",
    "MLFLOW_PORT": "9999",
    "MLFLOW_WORKERS": "7",
    "MLFLOW_VERSION": "3.1.0",
    "MLFLOW_ENABLED": "false",
    "PROJECT_NAME": "fromprocess",
    "BASE_DOMAIN": "process.example.com",
    "POSTGRES_PASSWORD": "process-secret-1",
    "MLFLOW_DB_PASSWORD": "process-secret-2",
    "MLFLOW_AUTH_PASSWORD": "process-secret-3",
    "MLFLOW_GC_ENABLED": "false",
    "FROM_OS": "fromos",
    "GC_FROM_OS": "5 5 * * 5",
    "ONLY_IN_PROCESS": "process",
}


def _isolation_project(root: Path) -> Path:
    return write_tree(
        root,
        {
            ".env": ISOLATION_ENV,
            ".env.secrets": ISOLATION_SECRETS,
            # Read only if ENV=prod leaked in from the process environment.
            ".env.prod": "MLFLOW_WORKERS=4\n",
        },
    )


def _clear_process_env(monkeypatch):
    for name in {*VARIABLES, *CONFLICTING_PROCESS_ENV}:
        monkeypatch.delenv(name, raising=False)


def test_process_environment_does_not_change_read_project_env(tmp_path, monkeypatch):
    project = _isolation_project(tmp_path)
    _clear_process_env(monkeypatch)
    clean = read_project_env(project)

    for name, value in CONFLICTING_PROCESS_ENV.items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)
    polluted = read_project_env(project)

    assert polluted == clean
    assert clean.env == "dev"
    assert clean.values["MLFLOW_ROUTE"] == "ml"
    assert clean.values["BASE_DOMAIN"] == "local.nself.org"
    assert "MLFLOW_PORT" not in clean.values
    assert "ONLY_IN_PROCESS" not in clean.values
    assert dict(os.environ) == before  # and it does not write to it either


def test_process_environment_does_not_change_the_build(tmp_path, monkeypatch):
    project = _isolation_project(tmp_path)
    _clear_process_env(monkeypatch)
    clean = artifacts.build(load_settings(read_project_env(project)))

    for name, value in CONFLICTING_PROCESS_ENV.items():
        monkeypatch.setenv(name, value)
    polluted = artifacts.build(load_settings(read_project_env(project)))

    assert clean, "the project must build something for this test to mean anything"
    assert polluted == clean
    everything = b"".join(clean.values())
    for value in ("9999", "fromos", "fromprocess", "process-secret", "process.example.com"):
        assert value.encode() not in everything


def test_process_environment_does_not_change_the_cli_build(tmp_path):
    project = _isolation_project(tmp_path / "project")
    secrets_before = (project / ".env.secrets").read_bytes()
    scrubbed = {name: "" for name in (*VARIABLES, *CONFLICTING_PROCESS_ENV)}

    clean = run_generator("build", "--project-dir", project, "--out", tmp_path / "clean", env=scrubbed)
    polluted = run_generator(
        "build", "--project-dir", project, "--out", tmp_path / "polluted", env=CONFLICTING_PROCESS_ENV
    )

    assert clean.returncode == 0, clean.stderr
    assert polluted.returncode == 0, polluted.stderr
    assert _tree(tmp_path / "polluted") == _tree(tmp_path / "clean")
    assert (project / ".env.secrets").read_bytes() == secrets_before


def _tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}
