"""`python -m generator service …`: what `nself service mlflow …` runs."""
