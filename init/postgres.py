"""The database steps: connect as the admin, then apply postgres/init/mlflow.sql."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import psycopg

from init.config import InitConfig
from init.psqlscript import StepResult, run_script
from init.wait import until_deadline

PASSWORD_VARIABLE = "mlflow_password"  # the psql variables the SQL file reads
GRAPHQL_PASSWORD_VARIABLE = "mlflow_graphql_password"

# SQLSTATEs that retrying cannot fix: bad password or role, no such database.
_PERMANENT_STATES = {"28P01", "28000", "3D000", "42501"}
_PERMANENT_TEXT = ("password authentication failed", "no pg_hba.conf entry", "does not exist")


def connect(config: InitConfig, deadline: float) -> psycopg.Connection:
    def attempt(seconds_left: float) -> psycopg.Connection:
        return psycopg.connect(
            host=config.pg_host,
            port=config.pg_port,
            user=config.admin_user,
            password=config.admin_password,
            dbname=config.admin_database,
            connect_timeout=max(2, min(10, int(seconds_left))),
            application_name="mlflow-init",
            autocommit=True,
        )

    return until_deadline(attempt, deadline, _describe, _is_permanent)


def _is_permanent(error: Exception) -> bool:
    if not isinstance(error, psycopg.Error):
        return False
    if error.sqlstate in _PERMANENT_STATES:
        return True
    text = str(error)
    return any(fragment in text for fragment in _PERMANENT_TEXT)


def _describe(error: Exception) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def apply(connection: psycopg.Connection, config: InitConfig, deadline: float, echo) -> list[StepResult]:
    """Run the SQL file; nothing in it may wait past the deadline (a held lock, say)."""
    script = config.sql_file.read_text(encoding="utf-8")
    set_deadline(connection, deadline)
    variables = {PASSWORD_VARIABLE: password_verifier(connection, config.db_user, config.db_password)}
    if config.graphql_enabled:
        variables[GRAPHQL_PASSWORD_VARIABLE] = password_verifier(connection, config.graphql_user, config.graphql_password)
    return run_script(connection, script, variables, echo=echo)


def set_deadline(connection: psycopg.Connection, deadline: float) -> None:
    """No statement, and no wait for a lock, may last past the deadline."""
    remaining_ms = max(int((deadline - time.monotonic()) * 1000), 1)
    connection.execute("SELECT set_config('lock_timeout', %s, false)", (str(remaining_ms),))
    connection.execute("SELECT set_config('statement_timeout', %s, false)", (str(remaining_ms),))


def password_verifier(connection: psycopg.Connection, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier to store: the current one if the password still matches.

    Reusing it keeps re-runs "unchanged"; a new password gets a fresh salt.
    The plain password never leaves this process.
    """
    row = connection.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
    stored = row[0] if row else None
    if stored and scram_matches(stored, password):
        return stored
    return connection.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


def scram_matches(verifier: str, password: str) -> bool:
    """Check a password against a stored 'SCRAM-SHA-256$iter:salt$StoredKey:ServerKey' (RFC 5802)."""
    try:
        scheme, rest = verifier.split("$", 1)
        iterations_salt, keys = rest.split("$", 1)
        iterations_text, salt_text = iterations_salt.split(":", 1)
        stored_key_text, server_key_text = keys.split(":", 1)
        if scheme != "SCRAM-SHA-256":
            return False
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt_text), int(iterations_text))
    except ValueError:
        return False
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored_key_text)) and (
        hmac.compare_digest(server_key, base64.b64decode(server_key_text))
    )
