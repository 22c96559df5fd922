"""The seed's tracking examples, as documented, with a real trained model.

"Tracking Experiments": a run with log_param, log_metric, sklearn.log_model and
two log_artifact files (on 3.x, log_model needs serialization_format="cloudpickle"
for a RandomForest: its default, skops, refuses to load tree models); then the PyTorch example's loop (log_params and
per-epoch steps; its model needs PyTorch, which the image does not carry).
Prints one JSON object with what the test checks against the server.
"""

import csv
import hashlib
import json
import os

import matplotlib

matplotlib.use("Agg")

import mlflow
import mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "http://mlflow:5000"))
mlflow.set_experiment("my-classification-model")

features, labels = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(features, labels, test_size=0.3, random_state=0, stratify=labels)

with mlflow.start_run(run_name="random-forest-v1") as run:
    mlflow.log_param("n_estimators", 100)
    mlflow.log_param("max_depth", 10)
    mlflow.log_param("learning_rate", 0.01)

    model = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0).fit(X_train, y_train)
    predicted = model.predict(X_test)

    metrics = {
        "accuracy": accuracy_score(y_test, predicted),
        "f1_score": f1_score(y_test, predicted, average="macro"),
        "auc": roc_auc_score(y_test, model.predict_proba(X_test), multi_class="ovr"),
    }
    mlflow.log_metric("accuracy", metrics["accuracy"])
    mlflow.log_metric("f1_score", metrics["f1_score"])
    mlflow.log_metric("auc", metrics["auc"])

    if int(mlflow.__version__.split(".")[0]) >= 3:
        # 3.x saves with skops by default, which refuses to load tree models
        # ("untrusted types"); the seed's example predates that.
        model_info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
    else:
        model_info = mlflow.sklearn.log_model(model, "model")

    ConfusionMatrixDisplay.from_predictions(y_test, predicted).figure_.savefig("confusion_matrix.png")
    with open("feature_importance.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["feature", "importance"])
        for name, importance in zip(load_iris().feature_names, model.feature_importances_):
            writer.writerow([name, f"{importance:.6f}"])
    mlflow.log_artifact("confusion_matrix.png")
    mlflow.log_artifact("feature_importance.csv")

mlflow.set_experiment("pytorch-image-classifier")
with mlflow.start_run() as loop_run:
    mlflow.log_params({
        "epochs": 50,
        "batch_size": 32,
        "optimizer": "Adam",
        "learning_rate": 0.001,
    })
    losses = [round(2.0 / (epoch + 1), 6) for epoch in range(50)]
    for epoch in range(50):
        mlflow.log_metric("train_loss", losses[epoch], step=epoch)
        mlflow.log_metric("val_accuracy", round(0.5 + epoch / 100, 6), step=epoch)

print(json.dumps({
    "run_id": run.info.run_id,
    "experiment_id": run.info.experiment_id,
    "artifact_uri": run.info.artifact_uri,
    "model_uri": model_info.model_uri,
    "metrics": metrics,
    "artifact_sha256": {name: sha256(name) for name in ("confusion_matrix.png", "feature_importance.csv")},
    "test_inputs": X_test.tolist(),
    "predictions": predicted.tolist(),
    "loop_run_id": loop_run.info.run_id,
    "train_loss": losses,
}))
