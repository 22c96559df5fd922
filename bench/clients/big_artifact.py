"""Upload FILE as an artifact of a new run, then download it again, timing both.

    python big_artifact.py FILE

Prints one JSON line: upload and download seconds, and whether the
downloaded bytes equal the file (compared by sha256).
"""

import hashlib
import json
import os
import sys
import tempfile
import time

import mlflow


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


source = sys.argv[1]
mlflow.set_experiment("bench-large-artifact")
with mlflow.start_run() as run:
    started = time.monotonic()
    mlflow.log_artifact(source)
    upload = time.monotonic() - started
target = tempfile.mkdtemp(dir=os.path.dirname(source))
started = time.monotonic()
local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=os.path.basename(source),
                                            dst_path=target)
download = time.monotonic() - started
identical = sha256(local) == sha256(source)
os.remove(local)
print(json.dumps({"upload": upload, "download": download, "identical": identical, "run_id": run.info.run_id}))
