"""Settings: validators (the rules), models (one declaration per variable) and loading."""

from generator.settings.loading import (
    COMPOSE_SUBSTITUTED,
    MLFLOW_CLIENT_VARIABLES,
    SettingsError,
    compose_quoting_problem,
    hidden_variables,
    load_settings,
    mlflow_enabled,
    require_enabled,
)
from generator.settings.models import SECRET_VARIABLES, VARIABLES, Settings, Variable, settings_table
from generator.settings.validators import HASH_SCHEMES, SALT_ALPHABET

__all__ = [
    "COMPOSE_SUBSTITUTED",
    "HASH_SCHEMES",
    "MLFLOW_CLIENT_VARIABLES",
    "SALT_ALPHABET",
    "SECRET_VARIABLES",
    "VARIABLES",
    "Settings",
    "SettingsError",
    "Variable",
    "compose_quoting_problem",
    "hidden_variables",
    "load_settings",
    "mlflow_enabled",
    "require_enabled",
    "settings_table",
]
