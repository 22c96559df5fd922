"""Time CALLS sequential log_metric calls to MLFLOW_TRACKING_URI.

    python log_metrics.py CALLS [START_FILE]

With START_FILE, waits until it exists before the timed calls, so that
several clients start together after their imports. Prints one JSON line:
start and end (epoch seconds), calls, errors.
"""

import json
import os
import sys
import time

import mlflow

calls = int(sys.argv[1])
start_file = sys.argv[2] if len(sys.argv) > 2 else None
client = mlflow.MlflowClient()
try:
    experiment = mlflow.set_experiment("bench-log-metric")
except mlflow.exceptions.MlflowException:  # another client created it at the same moment
    time.sleep(0.5)
    experiment = mlflow.set_experiment("bench-log-metric")
run = client.create_run(experiment.experiment_id)
client.log_metric(run.info.run_id, "warm-up", 0.0)  # connection and auth set up before timing
if start_file:
    print("ready", flush=True)
    while not os.path.exists(start_file):
        time.sleep(0.005)
errors = 0
started = time.time()
for step in range(calls):
    try:
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    except Exception as error:  # counted, not fatal: the benchmark reports errors
        errors += 1
        print(f"error: {error}", file=sys.stderr)
ended = time.time()
client.set_terminated(run.info.run_id)
print(json.dumps({"start": started, "end": ended, "calls": calls, "errors": errors}))
