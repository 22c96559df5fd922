"""The operator commands (`python -m generator service …`, also `python -m service …`): what `nself service mlflow …` runs."""
