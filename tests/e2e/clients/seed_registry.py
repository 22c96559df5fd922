"""The seed's Model Registry examples: register, stage to Production, load, predict.

    python seed_registry.py RUN_ID INPUTS_JSON
"""

import json
import sys

import mlflow

run_id, inputs_file = sys.argv[1], sys.argv[2]
test_inputs = json.load(open(inputs_file))

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

# Load the latest production model
model = mlflow.pyfunc.load_model("models:/production-classifier/Production")
predictions = model.predict(test_inputs)

print(json.dumps({"version": str(result.version), "predictions": [int(value) for value in predictions]}))
