"""Triage product reviews in Airflow: one review right away, then all of them through the
OpenAI Batch API at half the price, the waiting done by a deferred trigger, not a worker.

Put this file in your DAGs folder (the step and the rows are read from ``examples/``), create
the ``openai_default`` connection (password = API key; host = a base URL for an
OpenAI-compatible server), then: ``airflow dags test review_triage``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from chatstep.integrations.airflow import ChatStepBatchOperator, ChatStepOperator

EXAMPLES = Path(__file__).resolve().parents[1]
STEP = EXAMPLES / "review_triage.yaml"

with DAG(
    "review_triage",
    start_date=datetime(2024, 1, 1),
    schedule=None,
    params={"review": "The lid cracked on day one and support never called back."},
):
    urgent = ChatStepOperator(
        task_id="triage_one",
        step=STEP,
        inputs={"review": "{{ params.review }}"},
    )
    every_review = ChatStepBatchOperator(
        task_id="triage_all",
        step=STEP,
        rows=str(EXAMPLES / "reviews.jsonl"),
        poll_interval="30s",
    )
    urgent >> every_review
