"""gixy-ng, a maintained nginx security analyzer, reads every profile's vhost.

The vhost is read as nself includes it: inside nginx's http block. A HIGH
finding fails; a finding of lower severity fails too unless the README's nginx
section says why it is kept (KEPT below).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from generator.artifacts import nginx
from tests.conftest import EXAMPLES, PROFILES, build_profile, require_tool

# (check, severity) findings the README explains: ciphers are nself's main nginx.conf's choice.
KEPT = {("weak_ssl_tls", "MEDIUM")}


@pytest.fixture(scope="session")
def gixy_installed() -> None:
    spec = importlib.util.find_spec("gixy")
    require_tool(spec.origin if spec else None, "gixy-ng (PyPI, in the test extra)")


def gixy(vhost: str, directory: Path) -> list[dict]:
    """gixy's findings for the vhost, included at http level as nself's nginx.conf does."""
    (directory / "mlflow.conf").write_text(vhost)
    main = directory / "nginx.conf"
    main.write_text(f"http {{\n    include {directory / 'mlflow.conf'};\n}}\n")
    result = subprocess.run([sys.executable, "-m", "gixy", "--format", "json", str(main)],
                            capture_output=True, text=True, timeout=60)
    try:
        findings = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"gixy gave no report (exit {result.returncode}): {result.stdout}{result.stderr}")
    return findings


def summary(findings: list[dict]) -> list[str]:
    return [f"{item['severity']} {item['plugin']}: {item['reason']} (line {item['line']})" for item in findings]


@pytest.mark.parametrize("profile", PROFILES)
def test_gixy_finds_no_high_and_nothing_unexplained(profile, gixy_installed, tmp_path):
    vhost = build_profile(EXAMPLES / profile)[nginx.VHOST_PATH].decode()
    findings = gixy(vhost, tmp_path)
    assert not [item for item in findings if item["severity"] == "HIGH"], summary(findings)
    unexplained = [item for item in findings if (item["plugin"], item["severity"]) not in KEPT]
    assert not unexplained, f"fix these, or say in the README why they are kept: {summary(unexplained)}"


def test_gixy_reports_if_with_set_in_a_location_as_high(gixy_installed, tmp_path):
    """The check can fail: the vhost's old legacy mapping, `set` inside `if` in a location."""
    vhost = build_profile(EXAMPLES / "prod")[nginx.VHOST_PATH].decode()
    location = "    location = /api/2.0/mlflow/experiments/list {\n"
    assert location in vhost
    evil = vhost.replace(location, location + '        if ($arg_max_results = "") {\n'
                                              '            set $mlflow_test_args "max_results=1";\n'
                                              "        }\n")
    findings = gixy(evil, tmp_path)
    assert ("if_is_evil", "HIGH") in {(item["plugin"], item["severity"]) for item in findings}, summary(findings)
