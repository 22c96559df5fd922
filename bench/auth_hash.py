"""Requests per second through the generated nginx vhost, by htpasswd scheme.

Run: .venv/bin/python -m bench.auth_hash   (after ./run test has set up .venv)

nginx checks the htpasswd hash on every request, so the scheme's cost is
paid per API call. One upstream serves every variant; each variant gets the
same sequential keep-alive HTTPS requests, in interleaved rounds, and the
table shows the median rate and its ratio to the same vhost without auth.
"""

from __future__ import annotations

import base64
import statistics
import sys
import time

from generator.artifacts import nginx
from tests.nginx_harness import NginxServer, RecordingUpstream, installed_nginx_version

REQUESTS = 500
ROUNDS = 3
PASSWORD = "a-generated-password-of-43-characters-xxxxx"
SALT = "abcdefghijklmnopqrstuu"
PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
VARIANTS = [
    ("no auth", None),
    ("sha512_crypt, 1000 rounds (default)", ("sha512_crypt", 1000)),
    ("sha512_crypt, 5000 rounds", ("sha512_crypt", 5000)),
    ("bcrypt, cost 5", ("bcrypt", 5)),
    ("bcrypt, cost 10", ("bcrypt", 10)),
]


def vhost_text(auth: bool) -> str:
    from tests.conftest import EXAMPLES
    from generator.envfiles import read_project_env
    from generator.settings import load_settings

    settings = load_settings(read_project_env(EXAMPLES / "staging"))
    proxy = settings.proxy.model_copy(update={"nginx_version": installed_nginx_version()})
    auth_settings = settings.auth.model_copy(update={"enabled": auth})
    settings = settings.model_copy(update={"proxy": proxy, "auth": auth_settings})
    return nginx.vhost(settings).decode(), settings.public_host


def rate(server: NginxServer, credentials: str | None) -> float:
    connection = server.connection()
    headers = {"Host": server.host}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    started = time.perf_counter()
    for _ in range(REQUESTS):
        connection.request("GET", PATH, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"unexpected status {response.status}")
    elapsed = time.perf_counter() - started
    connection.close()
    return REQUESTS / elapsed


def main() -> None:
    upstream = RecordingUpstream()
    servers = []
    try:
        for name, scheme in VARIANTS:
            text, host = vhost_text(auth=scheme is not None)
            htpasswd = nginx.htpasswd("ml-team", PASSWORD, scheme[0], scheme[1], SALT) if scheme else None
            servers.append((name, NginxServer(text, host, upstream.address, htpasswd).start(),
                            f"ml-team:{PASSWORD}" if scheme else None))
        rates = {name: [] for name, _ in VARIANTS}
        for _ in range(ROUNDS):
            for name, server, credentials in servers:
                rates[name].append(rate(server, credentials))
                upstream.requests.clear()
    finally:
        for _name, server, _credentials in servers:
            server.stop()
        upstream.stop()
    baseline = statistics.median(rates["no auth"])
    width = max(len(name) for name, _ in VARIANTS)
    print(f"{REQUESTS} sequential keep-alive HTTPS calls per variant, median of {ROUNDS} interleaved rounds")
    print(f"{'htpasswd scheme':<{width}}  calls/s  vs no auth  added ms/call")
    for name, _scheme in VARIANTS:
        median = statistics.median(rates[name])
        added = (1 / median - 1 / baseline) * 1000
        print(f"{name:<{width}}  {median:7.0f}  {median / baseline:9.2f}x  {added:13.2f}")


if __name__ == "__main__":
    main()
