"""One client of the fault suite's load: a training job logging through the public URL.

    python load_client.py CLIENT EXPERIMENT_ID RECORDS READY GO SECONDS PAUSE

Runs in the image's virtualenv with MLflow's own client and its own retry
settings (MLFLOW_HTTP_REQUEST_* from the environment). After importing, it
creates READY and waits for GO; then for SECONDS it logs batches of metrics,
params and tags, small artifacts, and now and then starts a new run, pausing
PAUSE seconds between calls. Every call is appended to RECORDS as one JSON
line: what it sent, when it started and ended (wall clock), whether it was
acknowledged, the error it raised, and every retry the HTTP layer made below
it (the status or exception urllib3 saw), so a duplicate can be told from a
loss.
"""

import hashlib
import json
import os
import random
import sys
import time

import urllib3.util.retry
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

client_id, experiment_id, records_path, ready, go = sys.argv[1:6]
seconds, pause = float(sys.argv[6]), float(sys.argv[7])
RUN_LENGTH = 40  # calls per run: runs are created (and retried) during faults too
ARTIFACT_EVERY = 4

retries: list[dict] = []
_increment = urllib3.util.retry.Retry.increment


def _recording_increment(self, method=None, url=None, response=None, error=None, *args, **kwargs):
    seen = {"at": time.time()}
    if response is not None:
        seen["status"] = response.status
    if error is not None:
        seen["error"] = type(error).__name__
    retries.append(seen)
    return _increment(self, method, url, response, error, *args, **kwargs)


urllib3.util.retry.Retry.increment = _recording_increment

client = MlflowClient()
records = open(records_path, "a")
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.02)
deadline = time.time() + seconds
randomness = random.Random(f"{client_id}")


def call(operation: str, content: dict, function) -> object:
    retries.clear()
    record = {"client": client_id, "op": operation, "start": time.time(), **content}
    result = None
    try:
        result = function()
        record["ok"] = True
        if operation == "create_run":
            record["run_id"] = result.info.run_id
    except Exception as error:  # every failure is recorded, whatever it is
        record["ok"] = False
        record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    record["end"] = time.time()
    record["retries"] = list(retries)
    records.write(json.dumps(record) + "\n")
    records.flush()
    return result, record["ok"]


run_id, calls, step = None, 0, 0
workdir = os.getcwd()
while time.time() < deadline:
    if run_id is None or calls % RUN_LENGTH == 0:
        if run_id is not None:
            call("set_terminated", {"run_id": run_id}, lambda: client.set_terminated(run_id))
        run, ok = call("create_run", {"experiment_id": experiment_id},
                       lambda: client.create_run(experiment_id, tags={"load.client": client_id}))
        calls += 1
        if not ok:
            run_id = None
            time.sleep(pause)
            continue
        run_id = run.info.run_id
        step = 0
    calls += 1
    if calls % ARTIFACT_EVERY == 0:
        data = randomness.randbytes(randomness.randint(256, 4096))
        name = f"c{client_id}-{calls}.bin"
        path = os.path.join(workdir, name)
        with open(path, "wb") as handle:
            handle.write(data)
        artifact_path = f"load/{calls}"
        call("log_artifact", {"run_id": run_id, "path": f"{artifact_path}/{name}",
                              "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
             lambda: client.log_artifact(run_id, path, artifact_path))
        os.unlink(path)
    else:
        now = int(time.time() * 1000)
        metrics = [[f"m{index}", randomness.random(), now, step] for index in range(5)]
        params = [[f"p{calls}", f"value-{client_id}-{calls}"]] if calls % 5 == 0 else []
        tags = [[f"t{calls}", f"tag-{client_id}-{calls}"]] if calls % 7 == 0 else []
        call("log_batch", {"run_id": run_id, "metrics": metrics, "params": params, "tags": tags},
             lambda: client.log_batch(run_id, metrics=[Metric(*m) for m in metrics],
                                      params=[Param(*p) for p in params], tags=[RunTag(*t) for t in tags]))
        step += 1
    time.sleep(pause)
if run_id is not None:
    call("set_terminated", {"run_id": run_id}, lambda: client.set_terminated(run_id))
records.close()
