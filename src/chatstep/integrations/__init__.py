"""Orchestrator homes: Flyte, Airflow, Prefect. Each imports its orchestrator lazily, behind an extra."""
