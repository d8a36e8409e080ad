"""ChatStepBatchOperator: a real DAG run (deferred and polled) against the test server's Batch API.

Runs in its own virtualenv (``ci/integration.sh airflow``); skipped where Airflow is missing.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("airflow.sdk", reason="needs the [airflow] extra")

from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowException

from chatstep.batch.api import PollSchedule, apoll_batch, asubmit_batch
from chatstep.errors import ConfigError
from chatstep.integrations.airflow import ChatStepBatchOperator, ChatStepBatchTrigger
from chatstep.testing import TestServer

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
CONN_KEY = "sk-test-airflow-batch-0000-bt42"
STEP = {
    "id": "describe",
    "model": "gpt-4o-mini",
    "prompt": "Describe {{ inputs.item }} on {{ inputs.day }}",
}

DAG_FILE = textwrap.dedent(
    """
    import os
    from datetime import datetime

    from airflow.sdk import DAG

    from chatstep.integrations.airflow import ChatStepBatchOperator

    OUT = os.environ["CHATSTEP_TEST_OUT"]
    STEP = {"id": "describe", "model": "gpt-4o-mini",
            "prompt": "Describe {{ inputs.item }} on {{ inputs.day }}"}

    with DAG("chatstep_batch_test", start_date=datetime(2024, 1, 1), schedule=None):
        deferred = ChatStepBatchOperator(
            task_id="deferred",
            step=STEP,
            rows=[{"item": "a teapot", "day": "{{ ds }}"}, {"item": "a kite", "day": "{{ ds }}"}],
            output_file=OUT + "/deferred-{{ ds }}.jsonl",
            poll_interval=0.2,
        )
        polled = ChatStepBatchOperator(
            task_id="polled",
            step=STEP,
            rows=OUT + "/rows.jsonl",
            output_file=OUT + "/polled.jsonl",
            deferrable=False,
            poll_interval=0.2,
        )
        deferred >> polled
    """
)


def _airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [AIRFLOW, *args], env=env, capture_output=True, text=True, check=False, timeout=900
    )
    assert done.returncode == 0, (
        f"airflow {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return done


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dag_run_defers_then_joins_the_results(tmp_path: Path, openai_server: TestServer) -> None:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "batch_dag.py").write_text(DAG_FILE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "rows.jsonl").write_text(json.dumps({"item": "a lamp", "day": "monday"}) + "\n")
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW_CONN_OPENAI_DEFAULT=json.dumps(
            {"conn_type": "openai", "host": openai_server.base_url, "password": CONN_KEY}
        ),
        CHATSTEP_TEST_OUT=str(out),
        CHATSTEP_HOME=str(tmp_path / "chatstep-home"),
    )
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    _airflow(env, "db", "migrate")
    _airflow(env, "dags", "reserialize")
    run = _airflow(env, "dags", "test", "chatstep_batch_test", "2024-01-01")

    deferred = _rows(out / "deferred-2024-01-01.jsonl")
    assert [r["content"] for r in deferred] == [
        "echo: Describe a teapot on 2024-01-01",
        "echo: Describe a kite on 2024-01-01",
    ]
    assert all(r["ok"] for r in deferred)
    assert _rows(out / "polled.jsonl")[0]["content"] == "echo: Describe a lamp on monday"
    created = [r for r in openai_server.requests if r.path == "/v1/batches" and r.method == "POST"]
    assert len(created) == 2
    assert all(r.headers["authorization"] == "Bearer ..." + CONN_KEY[-4:] for r in created)

    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, key, value FROM xcom WHERE dag_id = 'chatstep_batch_test'"
        ).fetchall()
    xcoms = {(task, key): json.loads(value) for task, key, value in rows}
    summary = xcoms["deferred", "return_value"]
    assert summary["rows"] == 2
    assert summary["succeeded"] == 2
    assert summary["failed"] == 0
    assert summary["output"] == str(out / "deferred-2024-01-01.jsonl")
    assert summary["job_id"] == xcoms["deferred", "chatstep_batch_job"]
    assert xcoms["polled", "return_value"]["succeeded"] == 1

    log = run.stdout + run.stderr
    assert "running trigger in line" in log  # the deferred task really deferred
    assert CONN_KEY not in log


def test_the_trigger_polls_to_the_end_and_stores_no_key(
    openai_env: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATSTEP_HOME", str(tmp_path))
    rows = [{"item": "a cup", "day": "today"}]
    job = asyncio.run(asubmit_batch(STEP, rows))
    trigger = ChatStepBatchTrigger(job.to_dict(), conn_id=None, poll_interval=0.05)
    path, kwargs = trigger.serialize()
    assert path == "chatstep.integrations.airflow.triggers.ChatStepBatchTrigger"
    # Triggers Airflow stored before the package split name the old module: it still loads.
    for classpath in (path, "chatstep.integrations.airflow.batch.ChatStepBatchTrigger"):
        module, _, name = classpath.rpartition(".")
        assert getattr(importlib.import_module(module), name) is ChatStepBatchTrigger
    assert os.environ["OPENAI_API_KEY"] not in json.dumps(kwargs)

    async def first_event() -> Any:
        async for event in ChatStepBatchTrigger(**kwargs).run():
            return event.payload
        return None

    event = asyncio.run(first_event())
    assert event["status"] == "completed"
    assert event["job"]["id"] == job.id


def test_an_expired_batch_fails_the_task_naming_the_job(
    openai_env: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATSTEP_HOME", str(tmp_path))
    openai_env.configure(batch_expire_after_lines=1)
    rows = [{"item": "a cup", "day": "today"}, {"item": "a mug", "day": "today"}]
    with DAG("expiry", schedule=None):
        op = ChatStepBatchOperator(task_id="t", step=STEP, rows=rows, conn_id=None)
    job = asyncio.run(asubmit_batch(STEP, rows))
    job = asyncio.run(apoll_batch(job, poll=PollSchedule(initial=0.05), timeout=60))
    assert job.status == "expired"
    with pytest.raises(AirflowException, match=rf"batch job {job.id} is expired: 1/2 rows done"):
        op.execute_complete({}, {"status": job.status, "job": job.to_dict()})
    with pytest.raises(AirflowException, match="may still be running"):
        op.execute_complete({}, {"status": "error", "message": "boom", "job": job.to_dict()})


def test_a_broken_step_fails_when_the_dag_is_parsed() -> None:
    with DAG("broken", schedule=None), pytest.raises(ConfigError, match="temperature"):
        ChatStepBatchOperator(
            task_id="t", step={"model": "gpt-4o-mini", "prompt": "x", "temperature": 9}, rows=[]
        )


def test_the_example_dag_runs(tmp_path: Path, openai_server: TestServer) -> None:
    examples = Path(__file__).resolve().parents[3] / "examples"
    home = tmp_path / "airflow"
    home.mkdir()
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(examples / "airflow"),
        AIRFLOW_CONN_OPENAI_DEFAULT=json.dumps(
            {"conn_type": "openai", "host": openai_server.base_url, "password": CONN_KEY}
        ),
        CHATSTEP_HOME=str(tmp_path / "chatstep-home"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    _airflow(env, "db", "migrate")
    _airflow(env, "dags", "reserialize")
    _airflow(env, "dags", "test", "review_triage", "2024-01-01")

    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, value FROM xcom WHERE dag_id = 'review_triage' "
            "AND key = 'return_value'"
        ).fetchall()
    xcoms = {task: json.loads(value) for task, value in rows}
    assert set(xcoms["triage_one"]) == {"response_urgency", "response_text"}
    summary = xcoms["triage_all"]
    assert (summary["rows"], summary["succeeded"]) == (5, 5)
    joined = _rows(Path(summary["output"]))
    assert [r["input"]["id"] for r in joined] == [1, 2, 3, 4, 5]
    assert all(
        r["parsed"]["response_urgency"] in ("reply_immediately", "reply_later") for r in joined
    )
    first = openai_server.requests[0]
    assert "The lid cracked on day one" in first.body["messages"][-1]["content"]
