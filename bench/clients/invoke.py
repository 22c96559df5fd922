"""POST one body CALLS times to a scoring server over one persistent connection; time each call.

    python invoke.py URL BODY_FILE CALLS [START_FILE]

URL is http://ADDRESS:PORT/PATH or https://ADDRESS:PORT/PATH. For https,
BENCH_CA names the CA file and BENCH_HOST the Host header (the connection
goes to ADDRESS; the certificate's name is not checked). BENCH_AUTH=USER:PASSWORD
adds basic auth. The connection is kept open for as long as the server
allows: a server that answers `Connection: close` costs a new one per call,
and the count of connections opened says so.

A few untimed calls come first (TLS handshake, the server's first request).
With START_FILE, prints "ready" after them and waits until the file exists, so
that several clients start together. Prints one JSON line: start and end
(epoch seconds), calls, errors, connections (opened during the timed calls),
cpu (this process's CPU seconds during them), latencies (milliseconds, one per call). Standard library only.
"""

import base64
import http.client
import json
import os
import ssl
import sys
import time
from urllib.parse import urlsplit

WARM_UP = 5

url, body_file, calls = urlsplit(sys.argv[1]), sys.argv[2], int(sys.argv[3])
start_file = sys.argv[4] if len(sys.argv) > 4 else None
body = open(body_file, "rb").read()
headers = {"Content-Type": "application/json"}
if os.environ.get("BENCH_HOST"):
    headers["Host"] = os.environ["BENCH_HOST"]
if os.environ.get("BENCH_AUTH"):
    headers["Authorization"] = "Basic " + base64.b64encode(os.environ["BENCH_AUTH"].encode()).decode()

if url.scheme == "https":
    context = ssl.create_default_context(cafile=os.environ["BENCH_CA"])
    context.check_hostname = False
    connection = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=60)
else:
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)

opened = 0


def call() -> bool:
    global opened
    if connection.sock is None:
        opened += 1  # request() connects again when the previous answer closed the connection
    try:
        connection.request("POST", url.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as error:
        print(f"error: {error!r}", file=sys.stderr)
        connection.close()
        return False
    if response.status != 200:
        print(f"error: HTTP {response.status}", file=sys.stderr)
        return False
    return True


for _ in range(WARM_UP):
    if not call():
        sys.exit("the warm-up calls failed")
if start_file:
    print("ready", flush=True)
    while not os.path.exists(start_file):
        time.sleep(0.002)

opened, errors, latencies = 0, 0, []
cpu = time.process_time()
started = time.time()
for _ in range(calls):
    before = time.perf_counter()
    if not call():
        errors += 1
    latencies.append((time.perf_counter() - before) * 1000)
ended = time.time()
cpu = time.process_time() - cpu
connection.close()
print(json.dumps({"start": started, "end": ended, "calls": calls, "errors": errors, "connections": opened, "cpu": cpu,
                  "latencies": [round(value, 3) for value in latencies]}))
