"""A second version of production-classifier that predicts differently, and the alias champion moved to it.

    python register_challenger.py INPUTS_JSON
"""

import json
import os
import sys

import mlflow
import mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
mlflow.set_experiment("my-classification-model")
inputs = json.load(open(sys.argv[1]))
features, labels = load_iris(return_X_y=True)
# A stump: one split, so its predictions differ from the forest's.
model = DecisionTreeClassifier(max_depth=1, random_state=0).fit(features, labels)
with mlflow.start_run(run_name="decision-stump") as run:
    if int(mlflow.__version__.split(".")[0]) >= 3:
        mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
    else:
        mlflow.sklearn.log_model(model, "model")
version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "production-classifier").version
mlflow.MlflowClient().set_registered_model_alias("production-classifier", "champion", version)
print(json.dumps({"version": str(version), "predictions": [int(value) for value in model.predict(inputs)]}))
