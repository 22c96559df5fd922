"""The seed's "Loading a Registered Model" example.

    python load_production_model.py INPUTS_JSON
"""

import json
import sys

import mlflow

model = mlflow.pyfunc.load_model("models:/production-classifier/Production")
predictions = model.predict(json.load(open(sys.argv[1])))
print(json.dumps({"predictions": [int(value) for value in predictions]}))
