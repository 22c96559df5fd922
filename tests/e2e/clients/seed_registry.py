"""The seed's "Registering a Model" example: register a run's model, stage it, alias it.

    python seed_registry.py RUN_ID
"""

import json
import sys

import mlflow

run_id = sys.argv[1]

# Register a model from a run
result = mlflow.register_model(
    model_uri=f"runs:/{run_id}/model",
    name="production-classifier",
)

# Transition model stage
client = mlflow.MlflowClient()
client.transition_model_version_stage(
    name="production-classifier",
    version=result.version,
    stage="Production",
)

# Aliases (2.3 and later): the way 3.x points at a version, since stages are deprecated.
client.set_registered_model_alias("production-classifier", "champion", result.version)

print(json.dumps({"version": str(result.version)}))
