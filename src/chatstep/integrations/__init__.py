"""Orchestrator homes: Flyte, Airflow, Prefect, each imported lazily behind its extra."""
