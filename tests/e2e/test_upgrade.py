"""Bumping MLFLOW_VERSION from the seed's 2.9.2 to 3.x keeps every run.

One project, one PostgreSQL and one S3 server of its own: data is logged on
2.9.2 through nginx, MLFLOW_VERSION is changed in .env and the project
rebuilt, init migrates the schema with the new image's MLflow, and the 3.x
server, started from the new artifacts, serves everything as before.
"""

from __future__ import annotations

import json

from generator.envfiles import read_project_env
from tests.e2e.conftest import DEFAULT_VERSION, NEWEST_3X, build_out, fresh_servers, make_project
from tests.e2e.mlflow_venv import image_venv
from tests.e2e.stack import Stack
from tests.e2e.test_backup import service
from tests.test_init import outcomes


def start(project, out, postgres, s3):
    stack = Stack(out, read_project_env(project).values, postgres, s3, image_venv(out / "mlflow" / "Dockerfile"))
    init = stack.run_init()
    assert init.returncode == 0, init.stdout + init.stderr
    stack.start_mlflow()
    stack.start_nginx()
    return stack, init


def test_upgrade_from_2_9_2_to_3x_keeps_runs_metrics_artifacts_and_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("upgrade")
    project = make_project(root, DEFAULT_VERSION)
    out = root / "out"
    postgres, s3 = fresh_servers()
    try:
        old, _ = start(project, build_out(project, out), postgres, s3)
        try:
            assert old.version == (2, 9, 2)
            tracking = old.run_client("seed_tracking.py")
            inputs = root / "inputs.json"
            inputs.write_text(json.dumps(tracking["test_inputs"]))
            old.run_client("seed_registry.py", tracking["run_id"])
            run_ids = [tracking["run_id"], tracking["loop_run_id"]]
            before = old.run_client("inspect_runs.py", *run_ids)
            archive = root / "mlflow-2.9.2.tar"
            backed_up = service(old, project, "backup", "--output", archive)
            assert backed_up.returncode == 0, backed_up.stderr
        finally:
            old.stop()

        with open(project / ".env", "a") as env:
            env.write(f"MLFLOW_VERSION={NEWEST_3X}\n")
        new, init = start(project, build_out(project, out), postgres, s3)
        try:
            assert new.version == tuple(int(part) for part in NEWEST_3X.split("."))
            assert outcomes(init)["mlflow schema"] == "updated"
            reminder = [line for line in init.stdout.splitlines() if "back up the database first" in line]
            assert len(reminder) == 1 and "migrating from revision " in reminder[0], init.stdout
            assert reminder[0].endswith(f"with MLflow {NEWEST_3X}")

            # Through nginx, with the 3.x client: everything is still there.
            assert new.run_client("inspect_runs.py", *run_ids) == before
            loaded = new.run_client("load_production_model.py", str(inputs))
            for uri, predictions in loaded["by_uri"].items():
                assert predictions == tracking["predictions"], uri

            # A second init finds the schema current and leaves it alone.
            again = new.run_init()
            assert again.returncode == 0 and outcomes(again)["mlflow schema"] == "unchanged", again.stdout

            # A 2.9.2 backup restored on 3.x takes the same path: init migrates it.
            new.stop_mlflow()
            restored = service(new, project, "restore", "--input", archive, "--force")
            assert restored.returncode == 0, restored.stderr
            assert f"older than MLflow {NEWEST_3X}'s" in restored.stdout and "mlflow-init migrates it" in restored.stdout
            migrated = new.run_init()
            assert migrated.returncode == 0 and outcomes(migrated)["mlflow schema"] == "updated", migrated.stdout
            new.start_mlflow()
            assert new.run_client("inspect_runs.py", *run_ids) == before
        finally:
            new.stop()

        # Going back is refused: MLflow cannot downgrade a schema.
        with open(project / ".env", "a") as env:
            env.write(f"MLFLOW_VERSION={DEFAULT_VERSION}\n")
        back = build_out(project, out)
        downgrade = Stack(back, read_project_env(project).values, postgres, s3,
                          image_venv(back / "mlflow" / "Dockerfile")).run_init()
        assert downgrade.returncode == 1
        assert "which MLflow 2.9.2 does not know: a newer MLflow wrote it" in downgrade.stdout
    finally:
        s3.stop()
        postgres.remove()

