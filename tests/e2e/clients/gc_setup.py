"""Two runs with artifacts in one experiment; the first is deleted (soft).

    python gc_setup.py
"""

import json

import mlflow

mlflow.set_experiment("gc-check")
runs = []
for name in ("deleted", "kept"):
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_param("which", name)
        mlflow.log_metric("value", 1.0)
        with open(f"{name}.txt", "w") as handle:
            handle.write(f"artifact of the {name} run\n")
        mlflow.log_artifact(f"{name}.txt")
        runs.append(run.info)

deleted, kept = runs
mlflow.delete_run(deleted.run_id)
print(json.dumps({
    "experiment_id": deleted.experiment_id,
    "deleted_run_id": deleted.run_id,
    "kept_run_id": kept.run_id,
}))
