"""Flows run against the OpenAI-compatible test server: request bodies and outputs asserted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatstep.core.runner import AsyncRunner
from chatstep.errors import APITimeoutError, BadRequestError, InternalServerError
from chatstep.flows.api import FlowRun, MapRowsFailedError, arun_flow, load_flow, run_flow
from chatstep.flows.tasks import MapTask
from chatstep.storage.history import History
from chatstep.testing import Delay, Fail, Respond, TestServer

# The flow of issue 6, exactly as written there (Kestra's ChatCompletion with legacy functions).
ISSUE_FLOW = """
id: review-triage
namespace: company.team
inputs:
  - id: prompt
    type: STRING
    defaults: I love your product and would purchase it again!
tasks:
  - id: prioritize_response
    type: io.kestra.plugin.openai.ChatCompletion
    apiKey: "{{ secret('OPENAI_API_KEY') }}"
    model: gpt-4o
    messages:
      - role: user
        content: "{{ inputs.prompt }}"
    functions:
      - name: respond_to_review
        description: Decide how urgently to reply and draft the reply.
        parameters:
          - name: response_urgency
            type: string
            description: How urgently this review needs a reply.
            required: true
            enumValues: [reply_immediately, reply_later]
          - name: response_text
            type: string
            description: The reply to post.
            required: true
  - id: response_urgency
    type: io.kestra.plugin.core.debug.Return
    format: "{{ outputs.prioritize_response.choices[0].message.function_call.arguments.response_urgency }}"
"""  # noqa: E501 (the issue's flow, unchanged)

THREE_TASKS = """
id: three
inputs:
  - {id: topic, type: STRING}
tasks:
  - id: first
    type: chatstep.chat
    model: gpt-4o-mini
    prompt: "Name a fact about {{ inputs.topic }}"
  - id: second
    type: chatstep.chat
    model: gpt-4o-mini
    system_message: Rephrase.
    prompt: "Rephrase: {{ outputs.first.choices[0].message.content }}"
    temperature: 0.5
  - id: done
    type: io.kestra.plugin.core.debug.Return
    format: "{{ outputs.second.choices[0].message.content | upper }}"
"""


def _tool_answer(urgency: str, text: str) -> Respond:
    arguments = json.dumps({"response_urgency": urgency, "response_text": text})
    return Respond(tool_calls=[{"function": {"name": "respond_to_review", "arguments": arguments}}])


def _bodies(server: TestServer, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path == path]


def test_issue_flow_runs_unchanged(openai_env: TestServer) -> None:
    openai_env.enqueue(_tool_answer("reply_later", "Thank you!"))
    run = run_flow(ISSUE_FLOW)
    assert run.state == "SUCCESS"
    assert run.outputs["response_urgency"] == {"value": "reply_later"}
    assert run.task("response_urgency").output == {"value": "reply_later"}
    (body,) = _bodies(openai_env)
    assert body["model"] == "gpt-4o"
    assert body["messages"] == [
        {"role": "user", "content": "I love your product and would purchase it again!"}
    ]
    assert "functions" not in body
    (tool,) = body["tools"]
    assert tool["type"] == "function"
    fn = tool["function"]
    assert fn["name"] == "respond_to_review"
    assert fn["description"] == "Decide how urgently to reply and draft the reply."
    assert fn["parameters"]["properties"]["response_urgency"] == {
        "type": "string",
        "description": "How urgently this review needs a reply.",
        "enum": ["reply_immediately", "reply_later"],
    }
    assert fn["parameters"]["required"] == ["response_urgency", "response_text"]
    message = run.task("prioritize_response").output["choices"][0]["message"]
    assert message["function_call"]["name"] == "respond_to_review"
    assert json.loads(message["function_call"]["arguments"])["response_text"] == "Thank you!"


def test_issue_flow_input_overrides_default(openai_env: TestServer) -> None:
    openai_env.enqueue(_tool_answer("reply_immediately", "Sorry!"))
    run = run_flow(ISSUE_FLOW, {"prompt": "It broke on day one."})
    assert run.outputs["response_urgency"]["value"] == "reply_immediately"
    assert _bodies(openai_env)[0]["messages"][0]["content"] == "It broke on day one."
    assert run.inputs == {"prompt": "It broke on day one."}


def test_three_task_flow_passes_content_along(openai_env: TestServer) -> None:
    openai_env.enqueue(Respond(content="Owls can rotate their heads 270 degrees."))
    run = run_flow(THREE_TASKS, {"topic": "owls"})
    first, second = _bodies(openai_env)
    assert first["messages"] == [{"role": "user", "content": "Name a fact about owls"}]
    assert second["messages"] == [
        {"role": "system", "content": "Rephrase."},
        {"role": "user", "content": "Rephrase: Owls can rotate their heads 270 degrees."},
    ]
    assert second["temperature"] == 0.5
    # The test server echoes the last user message.
    expected = "echo: Rephrase: Owls can rotate their heads 270 degrees."
    assert run.outputs["done"] == {"value": expected.upper()}
    assert [t.state for t in run.tasks] == ["SUCCESS"] * 3
    assert run.usage["total_tokens"] > 0
    assert run.task("first").result is not None
    assert run.task("first").result.content == "Owls can rotate their heads 270 degrees."


def test_flow_from_file_and_json_roundtrip(openai_env: TestServer, tmp_path: Path) -> None:
    path = tmp_path / "three.yaml"
    path.write_text(THREE_TASKS)
    flow = load_flow(path)
    assert flow.id == "three"
    assert flow.source == path
    run = run_flow(flow, {"topic": "bees"})
    data = json.loads(json.dumps(run.to_dict()))
    assert data["flow"] == {"id": "three", "namespace": None}
    assert data["state"] == "SUCCESS"
    assert [t["id"] for t in data["tasks"]] == ["first", "second", "done"]
    assert data["outputs"]["done"]["value"].startswith("ECHO: REPHRASE: ECHO: NAME A FACT")


def test_flow_from_mapping(openai_env: TestServer) -> None:
    run = run_flow(yaml.safe_load(THREE_TASKS), {"topic": "cats"})
    assert run.state == "SUCCESS"


def test_async_api_with_own_runner(openai_env: TestServer) -> None:
    async def main() -> FlowRun:
        async with AsyncRunner(history=False) as runner:
            run = await arun_flow(THREE_TASKS, {"topic": "ants"}, runner=runner)
            assert runner.run_id is None  # restored after the run
            return run

    run = asyncio.run(main())
    assert run.outputs["done"]["value"].endswith("ANTS")


def test_every_call_is_in_the_history_under_the_run_id(openai_env: TestServer) -> None:
    run = run_flow(THREE_TASKS, {"topic": "frogs"})
    with History() as history:
        entries = history.recent(run_id=run.id)
    assert sorted(e.step or "" for e in entries) == ["first", "second"]
    assert {e.model for e in entries} == {"gpt-4o-mini"}


def test_result_variable_and_result_expression(openai_env: TestServer) -> None:
    openai_env.enqueue(_tool_answer("reply_immediately", "We are on it."))
    flow = yaml.safe_load(ISSUE_FLOW)
    triage = flow["tasks"][0]
    triage["result_variable"] = "triage"
    call = "response.choices[0].message.function_call"
    triage["resultExpression"] = {
        "urgency": "{{ " + call + ".arguments.response_urgency }}",
        "arguments": "{{ response.choices[0].message.tool_calls[0].function.arguments }}",
        "label": "urgency={{ response['choices'][0].message.function_call"
        ".arguments.response_urgency }}",
        "literal": "{{ 'response' }}",
    }
    flow["tasks"][1]["format"] = "{{ outputs.urgency }}/{{ outputs.triage.model }}"
    run = run_flow(flow)
    variables = run.task("prioritize_response").variables
    assert variables["urgency"] == "reply_immediately"
    assert variables["arguments"] == {
        "response_urgency": "reply_immediately",
        "response_text": "We are on it.",
    }
    assert variables["label"] == "urgency=reply_immediately"
    assert variables["literal"] == "response"  # a string literal is not the task's response
    assert variables["triage"]["choices"][0]["message"]["tool_calls"]
    assert run.outputs["response_urgency"]["value"] == "reply_immediately/gpt-4o"
    json.dumps(run.to_dict())  # output mappings are JSON-able


def test_retry_kestra_style_retries_then_succeeds(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(503), Fail(500), Respond(content="third time"))
    flow = {
        "id": "r",
        "tasks": [
            {
                "id": "ask",
                "type": "chatstep.chat",
                "model": "gpt-4o-mini",
                "prompt": "hi",
                "retry": {"type": "constant", "interval": "10ms", "maxAttempt": 3},
            }
        ],
    }
    run = run_flow(flow)
    assert run.task("ask").attempts == 3
    assert run.task("ask").result is not None
    assert run.task("ask").result.content == "third time"
    assert len(_bodies(openai_env)) == 3


def test_retry_exhausted_fails_with_the_api_error(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(503), Fail(503))
    flow = {
        "id": "r",
        "tasks": [
            {
                "id": "ask",
                "type": "chatstep.chat",
                "model": "gpt-4o-mini",
                "prompt": "hi",
                "retry": {"max_retries": 1, "interval": 0.01},
            }
        ],
    }
    with pytest.raises(InternalServerError) as caught:
        run_flow(flow)
    assert caught.value.status_code == 503
    assert len(_bodies(openai_env)) == 2


def test_retry_does_not_repeat_a_refused_request(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(400))
    flow = {
        "id": "r",
        "tasks": [
            {
                "id": "ask",
                "type": "chatstep.chat",
                "model": "gpt-4o-mini",
                "prompt": "hi",
                "retry": {"maxAttempt": 5, "type": "constant", "interval": "PT0.01S"},
            }
        ],
    }
    run = run_flow(flow, raise_on_failure=False)
    assert run.state == "FAILED"
    assert isinstance(run.task("ask").exception, BadRequestError)
    assert len(_bodies(openai_env)) == 1


def test_timeout_fails_the_task(openai_env: TestServer) -> None:
    openai_env.enqueue(Delay(1.5, Respond(content="too late")))
    flow = {
        "id": "t",
        "tasks": [
            {
                "id": "slow",
                "type": "chatstep.chat",
                "model": "gpt-4o-mini",
                "prompt": "hi",
                "timeout": "200ms",
                "maxRetries": 0,
            }
        ],
    }
    with pytest.raises(APITimeoutError):
        run_flow(flow)
    # Retries included, the task as a whole is cut off at its timeout too.
    openai_env.enqueue(Delay(1.5, Respond(content="too late")))
    flow["tasks"][0]["clientTimeout"] = 30
    with pytest.raises(APITimeoutError, match=r"tasks\[0\]\(slow\): the task did not finish"):
        run_flow(flow)


def test_allow_failure_goes_on(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(400, message="no such thing"))
    flow = {
        "id": "a",
        "tasks": [
            {
                "id": "shaky",
                "type": "chatstep.chat",
                "model": "gpt-4o-mini",
                "prompt": "hi",
                "allowFailure": True,
            },
            {
                "id": "after",
                "type": "io.kestra.plugin.core.debug.Return",
                "format": "went on",
            },
        ],
    }
    run = run_flow(flow)
    assert run.state == "WARNING"
    assert run.task("shaky").state == "FAILED"
    assert "no such thing" in (run.task("shaky").error or "")
    assert run.outputs == {"after": {"value": "went on"}}


def test_failure_stops_the_run(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(401))
    run = run_flow(THREE_TASKS, {"topic": "x"}, raise_on_failure=False)
    assert run.state == "FAILED"
    assert [t.id for t in run.tasks] == ["first"]
    assert run.failed_task is run.tasks[0]
    assert len(_bodies(openai_env)) == 1


def test_disabled_task_is_skipped(openai_env: TestServer) -> None:
    flow = yaml.safe_load(THREE_TASKS)
    flow["tasks"].insert(0, {**flow["tasks"][0], "id": "off", "disabled": True})
    run = run_flow(flow, {"topic": "y"})
    assert run.task("off").state == "SKIPPED"
    assert len(_bodies(openai_env)) == 2


def test_moderation_and_embedding_tasks(openai_env: TestServer) -> None:
    flow = {
        "id": "m",
        "inputs": [{"id": "texts", "type": "JSON"}],
        "tasks": [
            {"id": "mod", "type": "chatstep.moderation", "input": "{{ inputs.texts }}"},
            {
                "id": "emb",
                "type": "chatstep.embedding",
                "model": "text-embedding-3-small",
                "input": "{{ inputs.texts }}",
                "dimensions": 8,
            },
            {
                "id": "report",
                "type": "io.kestra.plugin.core.debug.Return",
                "format": "{{ outputs.mod.results[1].flagged }} {{ outputs.emb.data | length }}",
            },
        ],
    }
    run = run_flow(flow, {"texts": '["a kind word", "I will attack you"]'})
    assert run.outputs["report"]["value"] == "True 2"
    assert _bodies(openai_env, "/v1/moderations")[0]["input"] == [
        "a kind word",
        "I will attack you",
    ]
    assert _bodies(openai_env, "/v1/embeddings")[0]["dimensions"] == 8
    assert run.task("mod").summary()["flagged"] is True
    assert run.task("emb").summary() == {"vectors": 2, "dimensions": 8}


def test_map_task_over_inline_rows_and_template_rows(openai_env: TestServer) -> None:
    flow = {
        "id": "map",
        "inputs": [{"id": "greeting", "type": "STRING", "defaults": "Hello"}],
        "tasks": [
            {
                "id": "names",
                "type": "chatstep.map",
                "rows": [{"name": "Ada"}, {"name": "Alan"}],
                "step": {
                    "model": "gpt-4o-mini",
                    "prompt": "{{ inputs.greeting }} {{ inputs.name }}",
                },
            },
            {
                "id": "again",
                "type": "chatstep.map",
                "rows": "{{ outputs.names.contents }}",
                "concurrency": 1,
                "step": {"model": "gpt-4o-mini", "prompt": "Shout: {{ inputs.item }}"},
            },
            {
                "id": "joined",
                "type": "io.kestra.plugin.core.debug.Return",
                "format": "{{ outputs.again.contents | join(' | ') }}",
            },
        ],
    }
    run = run_flow(flow)
    assert run.task("names").output["contents"] == ["echo: Hello Ada", "echo: Hello Alan"]
    assert run.task("names").output["count"] == 2
    assert run.task("names").calls == 2
    prompts = sorted(b["messages"][-1]["content"] for b in _bodies(openai_env))
    assert prompts == [
        "Hello Ada",
        "Hello Alan",
        "Shout: echo: Hello Ada",
        "Shout: echo: Hello Alan",
    ]
    assert (
        run.outputs["joined"]["value"]
        == "echo: Shout: echo: Hello Ada | echo: Shout: echo: Hello Alan"
    )
    with History() as history:
        steps = {e.step for e in history.recent(run_id=run.id)}
    assert steps == {"names", "again"}


def test_map_task_keeps_its_concurrency() -> None:
    task = {
        "id": "each",
        "type": "chatstep.map",
        "rows": [{"x": 1}],
        "step": {"model": "m", "prompt": "p"},
    }
    limited = load_flow({"id": "map", "tasks": [{**task, "concurrency": 3}]}).tasks[0]
    assert isinstance(limited, MapTask)
    assert limited.concurrency == 3
    default = load_flow({"id": "map", "tasks": [task]}).tasks[0]
    assert isinstance(default, MapTask)
    assert default.concurrency is None


def test_map_task_rows_from_files(openai_env: TestServer, tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"n": "one"}\n{"n": "two"}\n')
    (tmp_path / "rows.json").write_text('[{"n": "three"}]')
    (tmp_path / "rows.csv").write_text("n\nfour\nfive\n")
    tasks = [
        {
            "id": f"from_{suffix}",
            "type": "chatstep.map",
            "file": f"rows.{suffix}",
            "step": {"model": "gpt-4o-mini", "prompt": "{{ inputs.n }}"},
        }
        for suffix in ("jsonl", "json", "csv")
    ]
    flow_file = tmp_path / "flow.yaml"
    flow_file.write_text(yaml.safe_dump({"id": "files", "tasks": tasks}))
    run = run_flow(flow_file)
    assert run.task("from_jsonl").output["contents"] == ["echo: one", "echo: two"]
    assert run.task("from_json").output["contents"] == ["echo: three"]
    assert run.task("from_csv").output["contents"] == ["echo: four", "echo: five"]


def test_map_task_with_a_failed_row_fails_and_keeps_the_rows(openai_env: TestServer) -> None:
    def handler(path: str, body: Any) -> Any:
        if "bad" in body["messages"][-1]["content"]:
            return Fail(400, message="refused row")
        return None

    openai_env.handler = handler
    flow = {
        "id": "map",
        "tasks": [
            {
                "id": "rows",
                "type": "chatstep.map",
                "rows": ["good", "bad", "good too"],
                "step": {"model": "gpt-4o-mini", "prompt": "{{ inputs.item }}"},
                "allow_failure": True,
            }
        ],
    }
    run = run_flow(flow)
    task = run.task("rows")
    assert task.state == "FAILED"
    assert isinstance(task.exception, MapRowsFailedError)
    assert "1 of 3 rows failed" in (task.error or "")
    assert "rows[1]" in (task.error or "")
    assert task.output["contents"] == ["echo: good", None, "echo: good too"]
    assert "refused row" in task.output["rows"][1]["error"]
