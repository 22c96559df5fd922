"""mlflow-init: provisions PostgreSQL and the artifact bucket before MLflow starts."""
