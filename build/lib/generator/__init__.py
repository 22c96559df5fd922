"""nself's MLflow service: settings from the env cascade, artifacts into out/."""
