"""Upload one large artifact through the public URL and download it again.

    python large_artifact.py SIZE_MIB
"""

import hashlib
import json
import os
import sys
import time

import mlflow

size = int(sys.argv[1]) * 1024 * 1024
digest = hashlib.sha256()
with open("large.bin", "wb") as handle:
    written = 0
    while written < size:
        chunk = os.urandom(min(8 << 20, size - written))
        digest.update(chunk)
        handle.write(chunk)
        written += len(chunk)

mlflow.set_experiment("large-artifacts")
with mlflow.start_run() as run:
    started = time.monotonic()
    mlflow.log_artifact("large.bin")
    upload_seconds = time.monotonic() - started
os.remove("large.bin")

started = time.monotonic()
local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="large.bin", dst_path="download")
download_seconds = time.monotonic() - started
downloaded = hashlib.sha256()
with open(local, "rb") as handle:
    while chunk := handle.read(8 << 20):
        downloaded.update(chunk)

print(json.dumps({
    "run_id": run.info.run_id,
    "experiment_id": run.info.experiment_id,
    "size": size,
    "downloaded_size": os.path.getsize(local),
    "uploaded_sha256": digest.hexdigest(),
    "downloaded_sha256": downloaded.hexdigest(),
    "upload_seconds": round(upload_seconds, 2),
    "download_seconds": round(download_seconds, 2),
}))
