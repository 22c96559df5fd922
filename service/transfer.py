"""Export an experiment to a directory, and import such a directory.

Layout (format_version 1), all JSON sorted and indented:

    OUTPUT/experiment.json          {"format", "format_version", "experiment": {name, tags},
                                     "source": {experiment_id, server_version}, "runs": [run ids in order]}
    OUTPUT/runs/<run_id>/run.json   {run_name, status, start_time, end_time, params, tags,
                                     metrics: {key: [[step, timestamp, value], ...]}}  (every step)
    OUTPUT/runs/<run_id>/artifacts.json   [{"path", "size"}]
    OUTPUT/runs/<run_id>/artifacts/<the run's artifact tree>

Only active runs are exported. An export can be resumed: an artifact whose
file already has the listed size is not downloaded again; run.json and
artifacts.json are always refreshed. An import can be resumed too: the new
experiment and runs carry `nself.import.*` tags, and a rerun into the same
experiment skips the runs it finished and redoes an unfinished one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from generator.errors import UserError
from generator.fileio import write_atomically
from service.api import MlflowApi, ServiceError

FORMAT = "nself-mlflow-experiment"
FORMAT_VERSION = 1
IMPORT_TAG = "nself.import."
SOURCE_TAG = IMPORT_TAG + "source"
SOURCE_RUN_TAG = IMPORT_TAG + "source_run_id"
HISTORY_PAGE = 25000
# log-batch limits of every supported version.
BATCH_METRICS = 1000
BATCH_PARAMS = 100
TERMINAL = ("FINISHED", "FAILED", "KILLED")

Progress = Callable[[int, int, str], None] | None


def _write_json(path: Path, data: Any) -> None:
    write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _tags(items: list[dict]) -> dict[str, str]:
    return {tag["key"]: tag.get("value", "") for tag in items if not tag["key"].startswith(IMPORT_TAG)}


def _safe_relative(path: str) -> Path:
    relative = Path(path)
    if relative.is_absolute() or ".." in relative.parts:
        raise ServiceError(f"refusing the artifact path {path!r}: it leaves the export directory")
    return relative


# -- export --------------------------------------------------------------------

def metric_history(api: MlflowApi, run_id: str, key: str) -> list[list]:
    history, token = [], None
    while True:
        page = api.get("metrics/get-history", run_id=run_id, metric_key=key, max_results=HISTORY_PAGE,
                       **({"page_token": token} if token else {}))
        history += [[int(m.get("step", 0)), int(m["timestamp"]), m["value"]] for m in page.get("metrics", [])]
        token = page.get("next_page_token")
        if not token:
            break
    return sorted(history, key=lambda item: (item[0], item[1]))


def export_experiment(api: MlflowApi, name: str, output: Path, progress: Progress = None) -> str:
    found = api.get_optional("experiments/get-by-name", experiment_name=name)
    if found is None:
        raise UserError(f"--experiment: no experiment named {name!r} on {api.base_url}")
    experiment = found["experiment"]
    runs = list(api.search("runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                           "run_view_type": "ACTIVE_ONLY",
                                           "order_by": ["attributes.start_time ASC"]}, "runs"))
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    downloaded = skipped = 0
    total_bytes = 0
    for index, run in enumerate(runs):
        if progress:
            progress(index, len(runs), "exporting runs")
        info, data = run["info"], run.get("data", {})
        run_id = info["run_id"]
        run_dir = output / "runs" / run_id
        metrics = {item["key"]: metric_history(api, run_id, item["key"]) for item in data.get("metrics", [])}
        artifacts = [{"path": entry["path"], "size": int(entry.get("file_size", 0))}
                     for entry in api.list_artifacts(run_id)]
        for artifact in artifacts:
            target = run_dir / "artifacts" / _safe_relative(artifact["path"])
            total_bytes += artifact["size"]
            if target.is_file() and target.stat().st_size == artifact["size"]:
                skipped += 1
                continue
            api.download_artifact(run_id, artifact["path"], target)
            downloaded += 1
        _write_json(run_dir / "artifacts.json", sorted(artifacts, key=lambda a: a["path"]))
        _write_json(run_dir / "run.json", {
            "run_name": info.get("run_name", ""),
            "status": info.get("status", "FINISHED"),
            "start_time": int(info.get("start_time", 0)),
            "end_time": int(info["end_time"]) if info.get("end_time") else None,
            "params": {p["key"]: p.get("value", "") for p in data.get("params", [])},
            "tags": _tags(data.get("tags", [])),
            "metrics": metrics,
        })
    if progress:
        progress(len(runs), len(runs), "exporting runs")
    _write_json(output / "experiment.json", {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "experiment": {"name": experiment["name"], "tags": _tags(experiment.get("tags", []))},
        "source": {"experiment_id": experiment["experiment_id"], "server_version": _version(api)},
        "runs": [run["info"]["run_id"] for run in runs],
    })
    return (f"{len(runs)} runs, {downloaded} artifact files downloaded, {skipped} already there, "
            f"{total_bytes / 1e6:.1f} MB in {time.monotonic() - started:.1f} s")


def _version(api: MlflowApi) -> str:
    try:
        return api.text("/version")
    except ServiceError:
        return "unknown"


# -- import ----------------------------------------------------------------------

def read_export(input_dir: Path) -> dict:
    path = input_dir / "experiment.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--input: {path} is missing; point --input at a directory written by export") from None
    except ValueError as error:
        raise UserError(f"--input: {path} is not valid JSON ({error})") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"--input: {path} is not an nself MLflow export")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"--input: {path} has format_version {manifest.get('format_version')}; "
                        f"this version reads {FORMAT_VERSION}")
    return manifest


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _target_experiment(api: MlflowApi, name: str, source: str) -> tuple[str, dict[str, dict]]:
    """The experiment to import into (created or resumed), and its runs by source run id."""
    found = api.get_optional("experiments/get-by-name", experiment_name=name)
    if found is None:
        created = api.post("experiments/create", {"name": name, "tags": [{"key": SOURCE_TAG, "value": source}]})
        return created["experiment_id"], {}
    experiment = found["experiment"]
    tags = {tag["key"]: tag.get("value") for tag in experiment.get("tags", [])}
    if tags.get(SOURCE_TAG) != source or experiment.get("lifecycle_stage") != "active":
        raise UserError(f"--experiment: an experiment named {name!r} already exists on {api.base_url}; "
                        "pass --experiment with a new name")
    runs = {}
    for run in api.search("runs/search", {"experiment_ids": [experiment["experiment_id"]]}, "runs"):
        run_tags = {tag["key"]: tag.get("value") for tag in run.get("data", {}).get("tags", [])}
        if SOURCE_RUN_TAG in run_tags:
            runs[run_tags[SOURCE_RUN_TAG]] = run["info"]
    return experiment["experiment_id"], runs


def import_experiment(api: MlflowApi, input_dir: Path, new_name: str | None, progress: Progress = None) -> str:
    manifest = read_export(input_dir)
    name = new_name or manifest["experiment"]["name"]
    source = f"{manifest['source']['experiment_id']}:{manifest['experiment']['name']}"
    experiment_id, existing = _target_experiment(api, name, source)
    for key, value in manifest["experiment"]["tags"].items():
        api.post("experiments/set-experiment-tag", {"experiment_id": experiment_id, "key": key, "value": value})
    started = time.monotonic()
    imported = resumed = 0
    uploaded_bytes = 0
    for index, source_run_id in enumerate(manifest["runs"]):
        if progress:
            progress(index, len(manifest["runs"]), "importing runs")
        run_dir = input_dir / "runs" / source_run_id
        record = json.loads((run_dir / "run.json").read_text())
        previous = existing.get(source_run_id)
        if previous is not None and previous.get("status") in TERMINAL:
            resumed += 1
            continue
        if previous is not None:  # an interrupted import of this run: start it again
            api.post("runs/delete", {"run_id": previous["run_id"]})
        uploaded_bytes += _import_run(api, experiment_id, source_run_id, record, run_dir)
        imported += 1
    if progress:
        progress(len(manifest["runs"]), len(manifest["runs"]), "importing runs")
    return (f"experiment {name!r} (id {experiment_id}): {imported} runs imported, {resumed} already there, "
            f"{uploaded_bytes / 1e6:.1f} MB of artifacts in {time.monotonic() - started:.1f} s")


def _import_run(api: MlflowApi, experiment_id: str, source_run_id: str, record: dict, run_dir: Path) -> int:
    tags = [{"key": key, "value": value} for key, value in sorted(record["tags"].items())]
    tags.append({"key": SOURCE_RUN_TAG, "value": source_run_id})
    body = {"experiment_id": experiment_id, "start_time": record["start_time"], "tags": tags}
    if record.get("run_name"):
        body["run_name"] = record["run_name"]
    info = api.post("runs/create", body)["run"]["info"]
    run_id = info["run_id"]

    params = [{"key": key, "value": value} for key, value in sorted(record["params"].items())]
    for batch in _batches(params, BATCH_PARAMS):
        api.post("runs/log-batch", {"run_id": run_id, "params": batch})
    metrics = [{"key": key, "step": step, "timestamp": timestamp, "value": value}
               for key, history in sorted(record["metrics"].items()) for step, timestamp, value in history]
    for batch in _batches(metrics, BATCH_METRICS):
        api.post("runs/log-batch", {"run_id": run_id, "metrics": batch})

    uploaded = 0
    artifacts = json.loads((run_dir / "artifacts.json").read_text())
    for artifact in artifacts:
        source = run_dir / "artifacts" / _safe_relative(artifact["path"])
        if not source.is_file() or source.stat().st_size != artifact["size"]:
            raise UserError(f"--input: {source} is missing or incomplete; rerun the export to complete it")
        api.upload_artifact(info["artifact_uri"], artifact["path"], source)
        uploaded += artifact["size"]

    # The status is set last: a run that has it was imported completely.
    update = {"run_id": run_id, "status": record["status"]}
    if record.get("end_time"):
        update["end_time"] = record["end_time"]
    api.post("runs/update", update)
    return uploaded
