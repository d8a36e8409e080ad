"""ChatStepOperator in a real Airflow DAG run (SQLite metadata DB) against the test server.

Runs in its own virtualenv (``ci/integration.sh airflow``); skipped where Airflow is missing.
"""

from __future__ import annotations

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

from chatstep.errors import ConfigError
from chatstep.integrations.airflow import ChatStepOperator, answer_of
from chatstep.testing import Respond, TestServer

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
CONN_KEY = "sk-test-airflow-conn-0000-cnn1"
STEP_KEY = "sk-test-airflow-step-0000-stp9"

DAG_FILE = textwrap.dedent(
    """
    from datetime import datetime

    from airflow.sdk import DAG

    from chatstep.integrations.airflow import ChatStepOperator

    with DAG(
        "chatstep_test",
        start_date=datetime(2024, 1, 1),
        schedule=None,
        params={"topic": "owls"},
    ):
        first = ChatStepOperator(
            task_id="first",
            step={"id": "facts", "model": "gpt-4o-mini",
                  "prompt": "Facts about {{ inputs.topic }} on {{ inputs.day }}"},
            inputs={"topic": "{{ params.topic }}", "day": "{{ ds }}"},
        )
        second = ChatStepOperator(
            task_id="second",
            step={"model": "gpt-4o-mini", "temperature": 0,
                  "prompt": "Shorten: {{ outputs.facts.choices[0].message.content }}"},
            outputs_from={"facts": "first"},
        )
        third = ChatStepOperator(
            task_id="third",
            step={"model": "gpt-4o-mini", "prompt": "{{ inputs.n * 2 }}",
                  "apiKey": "{{ secret('STEP_OPENAI_KEY') }}",
                  "response_format": {"type": "json_object"}},
            inputs={"n": 21},
        )
        first >> second >> third
    """
)


def _airflow(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [AIRFLOW, *args], env=env, capture_output=True, text=True, check=False, timeout=900
    )
    assert done.returncode == 0, (
        f"airflow {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return done


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    (home / "dags").mkdir()
    (home / "dags" / "chatstep_dag.py").write_text(DAG_FILE)
    return home


def _env(home: Path, server: TestServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        # The Airflow connection, as Airflow's OpenAI provider reads it.
        AIRFLOW_CONN_OPENAI_DEFAULT=json.dumps(
            {"conn_type": "openai", "host": server.base_url, "password": CONN_KEY}
        ),
        STEP_OPENAI_KEY=STEP_KEY,
    )
    return env


def _xcoms(home: Path) -> dict[tuple[str, str], Any]:
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, key, value FROM xcom WHERE dag_id = 'chatstep_test'"
        ).fetchall()
    return {(task, key): json.loads(value) for task, key, value in rows}


def test_dag_run_pushes_content_and_response(airflow_home: Path, openai_server: TestServer) -> None:
    openai_server.enqueue(Respond(content="Owls fly silently."))
    openai_server.enqueue(Respond(content="Silent owls."))
    openai_server.enqueue(Respond(content='{"answer": 42}'))
    env = _env(airflow_home, openai_server)
    _airflow(airflow_home, env, "db", "migrate")
    _airflow(airflow_home, env, "dags", "reserialize")
    run = _airflow(airflow_home, env, "dags", "test", "chatstep_test", "2024-01-01")

    first, second, third = openai_server.requests
    # Airflow rendered inputs with its own context (params, ds); chatstep then rendered the step.
    assert first.body["messages"] == [{"role": "user", "content": "Facts about owls on 2024-01-01"}]
    assert second.body["messages"] == [{"role": "user", "content": "Shorten: Owls fly silently."}]
    assert second.body["temperature"] == 0
    assert third.body["messages"] == [{"role": "user", "content": "42"}]
    # Key from the Airflow connection; a key set in the step wins.
    assert first.headers["authorization"] == "Bearer ..." + CONN_KEY[-4:]
    assert second.headers["authorization"] == "Bearer ..." + CONN_KEY[-4:]
    assert third.headers["authorization"] == "Bearer ..." + STEP_KEY[-4:]

    xcoms = _xcoms(airflow_home)
    assert xcoms["first", "return_value"] == "Owls fly silently."
    assert xcoms["second", "return_value"] == "Silent owls."
    assert xcoms["third", "return_value"] == {"answer": 42}
    response = xcoms["first", "chatstep_response"]
    assert response["object"] == "chat.completion"
    assert response["choices"][0]["message"]["content"] == "Owls fly silently."
    assert response["usage"]["total_tokens"] > 0

    log = run.stdout + run.stderr
    assert log.count("chatstep usage: model=gpt-4o-mini prompt_tokens=") == 3
    assert CONN_KEY not in log
    assert STEP_KEY not in log


def test_a_broken_step_fails_when_the_dag_is_parsed() -> None:
    with DAG("broken", schedule=None), pytest.raises(ConfigError, match="temperature"):
        ChatStepOperator(
            task_id="t", step={"model": "gpt-4o-mini", "prompt": "x", "temperature": 9}
        )


def test_operator_keeps_the_step_and_templated_fields(tmp_path: Path) -> None:
    step_file = tmp_path / "step.yaml"
    step_file.write_text("id: s\nmodel: gpt-4o-mini\nprompt: 'hi {{ inputs.x }}'\n")
    with DAG("fields", schedule=None):
        op = ChatStepOperator(task_id="t", step=step_file, inputs={"x": "{{ ds }}"})
    assert op.step.id == "s"
    assert set(op.template_fields) == {"inputs", "outputs_from", "conn_id"}
    assert op.inputs == {"x": "{{ ds }}"}


def test_answer_of_each_kind(openai_env: TestServer) -> None:
    from chatstep.core.calls import run_step

    openai_env.enqueue(Respond(content='{"a": 1}'))
    parsed = run_step(
        {"model": "gpt-4o-mini", "prompt": "x", "response_format": {"type": "json_object"}}
    )
    assert answer_of(parsed) == {"a": 1}
    moderation = run_step({"type": "moderation", "input": "hello"})
    assert answer_of(moderation)[0]["flagged"] is False
    embedding = run_step(
        {"type": "embedding", "model": "text-embedding-3-small", "input": ["a", "b"]}
    )
    assert len(answer_of(embedding)) == 2


def test_hook_puts_the_connection_in_front_of_chatstep_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from airflow.sdk.exceptions import AirflowNotFoundException

    from chatstep.integrations.airflow import ChatStepHook

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment-0000")
    monkeypatch.setenv(
        "AIRFLOW_CONN_MY_OPENAI",
        json.dumps(
            {
                "conn_type": "openai",
                "host": "http://gateway.example/v1",
                "password": CONN_KEY,
                "extra": {"openai_client_kwargs": {"organization": "org-1"}},
            }
        ),
    )
    for store in (
        ChatStepHook("my_openai").secret_store(),
        asyncio.run(ChatStepHook("my_openai").asecret_store()),
    ):
        assert store.get("OPENAI_API_KEY") == CONN_KEY
        assert store.get("OPENAI_BASE_URL") == "http://gateway.example/v1"
        assert store.get("OPENAI_ORG_ID") == "org-1"
    # No openai_default connection: chatstep's own lookup; a named one that is missing: an error.
    assert ChatStepHook().secret_store().get("OPENAI_API_KEY") == "sk-from-the-environment-0000"
    assert ChatStepHook(None).secret_store().get("OPENAI_API_KEY") == (
        "sk-from-the-environment-0000"
    )
    with pytest.raises(AirflowNotFoundException):
        ChatStepHook("no_such_connection").secret_store()
