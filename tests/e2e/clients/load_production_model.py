"""The seed's "Loading a Registered Model" example, by stage and by alias.

    python load_production_model.py INPUTS_JSON
"""

import json
import sys

import mlflow

inputs = json.load(open(sys.argv[1]))
predictions = {}
for uri in ("models:/production-classifier/Production", "models:/production-classifier@champion"):
    model = mlflow.pyfunc.load_model(uri)
    predictions[uri] = [int(value) for value in model.predict(inputs)]
print(json.dumps({"predictions": predictions["models:/production-classifier/Production"], "by_uri": predictions}))
