"""What Compose hands a generated service: its environment after substitution.

Tests run the generated services as local processes, so they need the values
Compose would give the container: `${NAME:?message}` filled in from the env
files, `$$` turned into `$`, and mounted files found in out/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_TOKEN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::\?[^}]*)?\}")


def substitute(value: str, values: dict[str, str]) -> str:
    return _TOKEN.sub(lambda m: "$" if m.group(0) == "$$" else values[m.group(1)], value)


def service_environment(out: Path, service: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    environment = {key: substitute(str(value), values) for key, value in service.get("environment", {}).items()}
    # Mounted files: the container path in the environment becomes the file in out/.
    for mount in service.get("volumes", []):
        source, target, _mode = mount.split(":")
        for key, value in environment.items():
            if value == target:
                environment[key] = str(out / source.removeprefix("./"))
    return environment
