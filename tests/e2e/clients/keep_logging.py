"""Keep logging through the public URL until a file appears: writes during a backup.

    python keep_logging.py STOP_FILE

Prints the run id and how many steps and artifacts it logged.
"""

import json
import os
import sys
import time

import mlflow

stop_file = sys.argv[1]
mlflow.set_experiment("live-writes")
steps = artifacts = 0
with mlflow.start_run() as run:
    print(json.dumps({"started": run.info.run_id}), flush=True)
    while not os.path.exists(stop_file):
        mlflow.log_metric("live", steps * 0.5, step=steps)
        steps += 1
        if steps % 10 == 0:
            with open("note.txt", "w") as handle:
                handle.write(f"step {steps}\n")
            mlflow.log_artifact("note.txt", artifact_path=f"notes/{steps}")
            artifacts += 1
        time.sleep(0.01)
print(json.dumps({"run_id": run.info.run_id, "steps": steps, "artifacts": artifacts}))
