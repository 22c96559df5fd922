"""What the read-only commands ask MLflow's REST API: health, experiments with run counts, models."""

from __future__ import annotations

from service.api import MlflowApi, ServiceError


def health(api: MlflowApi) -> tuple[bool, str]:
    try:
        answer = api.text("/health")
    except ServiceError as error:
        return False, error.message
    return answer == "OK", answer if answer == "OK" else f"unexpected answer {answer!r}"


RUN_COUNT_BATCH = 100  # experiments per runs/search


def list_experiments(api: MlflowApi) -> list[dict]:
    experiments = list(api.search("experiments/search", {"view_type": "ALL"}, "experiments"))
    counts: dict[str, int] = {}
    ids = [experiment["experiment_id"] for experiment in experiments]
    for start in range(0, len(ids), RUN_COUNT_BATCH):
        body = {"experiment_ids": ids[start:start + RUN_COUNT_BATCH], "run_view_type": "ALL"}
        for run in api.search("runs/search", body, "runs"):
            experiment_id = run["info"]["experiment_id"]
            counts[experiment_id] = counts.get(experiment_id, 0) + 1
    return [
        {
            "experiment_id": experiment["experiment_id"],
            "name": experiment["name"],
            "lifecycle_stage": experiment.get("lifecycle_stage", "active"),
            "runs": counts.get(experiment["experiment_id"], 0),
            "last_update_time": experiment.get("last_update_time"),
        }
        for experiment in sorted(experiments, key=lambda e: int(e["experiment_id"]) if e["experiment_id"].isdigit() else 0)
    ]


def list_models(api: MlflowApi) -> list[dict]:
    models = []
    for model in api.search_get("registered-models/search", "registered_models"):
        models.append({
            "name": model["name"],
            "latest_versions": {
                version.get("current_stage", "None"): version["version"]
                for version in sorted(model.get("latest_versions", []), key=lambda v: int(v["version"]))
            },
            "aliases": {alias["alias"]: alias["version"] for alias in model.get("aliases", [])},
            "last_updated_timestamp": model.get("last_updated_timestamp"),
        })
    return sorted(models, key=lambda m: m["name"])

