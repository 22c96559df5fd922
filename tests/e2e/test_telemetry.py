"""No telemetry leaves the stack unless the user asks (MLFLOW_TELEMETRY_ENABLED, default false).

MLflow 3.x reports usage from the server, the clients and the UI. Every
process of the stack runs with an HTTP(S) proxy that only records and refuses
(tests/e2e/stack.py, OutboundRecorder), so any attempt to reach the outside
is seen and nothing is sent. The clients set the switches as the README tells
users to.

Two signals, both through the generated vhost:
- the UI's endpoint, /ajax-api/3.0/mlflow/ui-telemetry: GET is what the UI
  reads (`disable_ui_telemetry`), and POST answers {"status": "disabled"}
  only while the server's telemetry is off (mlflow/server/handlers.py);
- the recorder: with telemetry on, the server fetches its telemetry config
  at start and the UI's config on that GET, from mlflow-telemetry.io and
  CloudFront.

The second test removes the switches from the generated mlflow service and
shows that both signals then change, so the first one can fail. MLflow 2.9.2
has no telemetry: it stays silent either way, and the switches are harmless.
"""

from __future__ import annotations

import json
import time

from generator.artifacts.compose import TELEMETRY_OFF
from tests.e2e.stack import Stack
from tests.e2e.test_stack import curl

UI_TELEMETRY = "/ajax-api/3.0/mlflow/ui-telemetry"
TELEMETRY_HOSTS = ("mlflow-telemetry.io", "cloudfront.net")


def ui_telemetry(stack: Stack) -> tuple[tuple[int, str], tuple[int, str]]:
    """GET and an empty POST of the UI's telemetry endpoint, through nginx."""
    url = f"{stack.public_url}{UI_TELEMETRY}"
    read = curl(stack, url)
    report = curl(stack, "-X", "POST", "-H", "Content-Type: application/json", "-d", '{"records": []}', url)
    return read, report


def telemetry_hosts(stack: Stack) -> set[str]:
    return {host for host in stack.outbound.hosts() if host.endswith(TELEMETRY_HOSTS)}


def test_no_telemetry_leaves_the_stack_by_default(stack, seeded):
    """After the seed's workload (server, clients, registry) and every earlier test on this stack."""
    (read_status, read), (report_status, report) = ui_telemetry(stack)
    if stack.version >= (3,):
        assert read_status == 200 and json.loads(read)["disable_ui_telemetry"] is True, read
        assert (report_status, json.loads(report)) == (200, {"status": "disabled"}), report
    else:
        assert read_status == report_status == 404  # 2.9.2 has no telemetry
    assert stack.outbound.requests == [], "something tried to leave the stack"
    service = stack.services["mlflow"]["environment"]
    assert {key: service.get(key) for key in TELEMETRY_OFF} == TELEMETRY_OFF


def test_without_the_switch_the_server_reports_telemetry_and_tries_to_send(stack, seeded):
    stack.stop_mlflow()
    stack.outbound.requests.clear()
    try:
        stack.start_mlflow(without=tuple(TELEMETRY_OFF))
        (read_status, read), (report_status, report) = ui_telemetry(stack)
        if stack.version >= (3,):
            assert (report_status, json.loads(report)) == (200, {"status": "success"}), report
            # The GET fetched the UI's config through the "proxy" before answering;
            # the server's own config fetch at start runs in a thread.
            deadline = time.monotonic() + 30
            while len(telemetry_hosts(stack)) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert {host.split(".", 1)[1] for host in telemetry_hosts(stack)} == {
                "mlflow-telemetry.io", "cloudfront.net"}, stack.outbound.requests
        else:
            assert read_status == report_status == 404
            time.sleep(2)
            assert stack.outbound.requests == []
    finally:
        stack.stop_mlflow()
        stack.outbound.requests.clear()
        stack.start_mlflow()
