"""What the server holds for some runs, read back through the public URL.

    python inspect_runs.py RUN_ID [RUN_ID ...]

Params, metrics with their full histories, every artifact file with the
sha256 of its downloaded bytes, and the registered model versions.
"""

import hashlib
import json
import sys
import tempfile

import mlflow

client = mlflow.MlflowClient()


def artifact_files(run_id, path=None):
    for entry in client.list_artifacts(run_id, path):
        if entry.is_dir:
            yield from artifact_files(run_id, entry.path)
        else:
            yield entry.path


def digest(run_id, path):
    target = tempfile.mkdtemp()
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=target)
    with open(local, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


runs = {}
for run_id in sys.argv[1:]:
    run = client.get_run(run_id)
    runs[run_id] = {
        "status": run.info.status,
        "lifecycle_stage": run.info.lifecycle_stage,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "histories": {
            key: [[m.step, m.value] for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
            for key in run.data.metrics
        },
        "artifacts": {path: digest(run_id, path) for path in sorted(artifact_files(run_id))},
    }

versions = sorted(
    (v.name, str(v.version), v.current_stage, v.run_id)
    for model in client.search_registered_models()
    for v in client.search_model_versions(f"name='{model.name}'")
)
print(json.dumps({"runs": runs, "model_versions": versions}, sort_keys=True))
