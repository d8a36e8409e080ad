"""``retrieve:`` on a chat step: chunks in the template, recorded on the result; run, map, flows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.core.calls import run_step
from chatstep.core.result import StepResult
from chatstep.errors import ConfigError
from chatstep.flows.api import run_flow
from chatstep.mapping.run import map_step
from chatstep.retrieval.store import VectorIndex
from chatstep.steps.definitions import ChatCompletion
from chatstep.steps.loading import load_step
from chatstep.testing import Respond, TestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

ANSWER = {
    "model": "gpt-4o-mini",
    "retrieve": {"index": "handbook", "query": "{{ inputs.question }}", "top_k": 1},
    "system_message": (
        "Answer from these excerpts.{% for c in retrieved %}\n[{{ c.source }}] {{ c.text }}"
        "{% endfor %}"
    ),
    "prompt": "{{ inputs.question }}",
}


@pytest.fixture
def handbook(tmp_path: Path, openai_env: TestServer) -> TestServer:
    docs = shutil.copytree(EXAMPLES / "rag" / "handbook", tmp_path / "handbook")
    out = CliRunner().invoke(
        app, ["index", "build", str(docs), "--step", str(EXAMPLES / "embed.yaml")]
    )
    assert out.exit_code == 0, out.output
    openai_env.reset()
    return openai_env


def _chat_bodies(server: TestServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path.endswith("/chat/completions")]


def _embedding_bodies(server: TestServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path.endswith("/embeddings")]


def test_run_puts_the_best_chunk_in_the_template_and_on_the_result(
    handbook: TestServer,
) -> None:
    result = run_step(ChatCompletion(**ANSWER), {"question": "Is a kettle under warranty?"})
    assert isinstance(result, StepResult)
    (embedded,) = _embedding_bodies(handbook)
    assert embedded["input"] == ["Is a kettle under warranty?"]  # the rendered query
    assert embedded["model"] == "text-embedding-3-small"  # the index's own embedding step
    (body,) = _chat_bodies(handbook)
    system = body["messages"][0]["content"]
    assert "[warranty.txt] Warranty" in system
    assert "two-year warranty" in system
    assert "refunds.md" not in system  # top_k: 1
    assert result.retrieved is not None
    assert [c["source"] for c in result.retrieved] == ["warranty.txt"]
    assert result.to_dict()["retrieved"][0]["chunk"] == 0


def test_example_step_runs_from_the_cli(handbook: TestServer) -> None:
    question = "How long does express delivery take?"
    out = CliRunner().invoke(
        app, ["run", str(EXAMPLES / "rag" / "answer.yaml"), "-i", f"question={question}", "--json"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert next(c["source"] for c in result["retrieved"]) == "shipping.md"
    assert "[shipping.md]" in _chat_bodies(handbook)[0]["messages"][0]["content"]


def test_chunk_text_is_data_never_a_template(tmp_path: Path, openai_env: TestServer) -> None:
    docs = tmp_path / "tricky"
    docs.mkdir()
    (docs / "jinja.md").write_text("Braces {{ secret('OPENAI_API_KEY') }} stay braces.\n")
    out = CliRunner().invoke(
        app, ["index", "build", str(docs), "--step", str(EXAMPLES / "embed.yaml")]
    )
    assert out.exit_code == 0, out.output
    result = run_step(
        ChatCompletion(**{**ANSWER, "retrieve": {**ANSWER["retrieve"], "index": "tricky"}}),
        {"question": "braces"},
    )
    assert isinstance(result, StepResult)
    system = _chat_bodies(openai_env)[-1]["messages"][0]["content"]
    assert "{{ secret('OPENAI_API_KEY') }}" in system


def test_map_opens_the_index_once_and_retrieves_per_row(
    handbook: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Path] = []
    original = VectorIndex.open.__func__  # type: ignore[attr-defined]

    def counting_open(cls: type[VectorIndex], path: Path, **kwargs: Any) -> VectorIndex:
        opened.append(path)
        index: VectorIndex = original(cls, path, **kwargs)
        return index

    monkeypatch.setattr(VectorIndex, "open", classmethod(counting_open))
    questions = [
        "Is a kettle under warranty?",
        "How long does express delivery take?",
        "Can I get a refund for an opened product?",
    ]
    map_step(
        ChatCompletion(**ANSWER),
        [{"question": q} for q in questions],
        concurrency=3,
        history=False,
    )
    assert len(opened) == 1
    assert len(_embedding_bodies(handbook)) == 3
    systems = {
        b["messages"][1]["content"]: b["messages"][0]["content"] for b in _chat_bodies(handbook)
    }
    assert "[warranty.txt]" in systems[questions[0]]
    assert "[shipping.md]" in systems[questions[1]]
    assert "[refunds.md]" in systems[questions[2]]


def test_flow_task_retrieves(handbook: TestServer) -> None:
    flow = {
        "id": "support",
        "inputs": [{"id": "question", "type": "STRING"}],
        "tasks": [{"id": "answer", "type": "chatstep.chat", **ANSWER}],
    }
    run = run_flow(flow, {"question": "Is a kettle under warranty?"})
    result = run.task("answer").result
    assert isinstance(result, StepResult)
    assert result.retrieved is not None
    assert result.retrieved[0]["source"] == "warranty.txt"
    assert "[warranty.txt]" in _chat_bodies(handbook)[0]["messages"][0]["content"]


def test_missing_index_is_a_config_error_naming_the_field(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError) as caught:
        run_step(ChatCompletion(**ANSWER), {"question": "hi"})
    assert caught.value.field == "retrieve.index"
    assert "chatstep index build" in caught.value.fix
    assert openai_env.requests == []


def test_map_with_a_missing_index_fails_once_not_per_row(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError) as caught:
        map_step(ChatCompletion(**ANSWER), [{"question": "a"}, {"question": "b"}], history=False)
    assert caught.value.field == "retrieve.index"
    assert openai_env.requests == []


@pytest.mark.parametrize("top_k", [0, 101, "many"])
def test_bad_top_k_is_refused_at_load(top_k: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        load_step({**ANSWER, "retrieve": {**ANSWER["retrieve"], "top_k": top_k}})
    assert caught.value.field == "retrieve.top_k"


def test_retrieved_without_retrieve_names_the_fix(openai_env: TestServer) -> None:
    step = ChatCompletion(model="gpt-4o-mini", prompt="{{ retrieved[0].text }}")
    with pytest.raises(ConfigError) as caught:
        run_step(step)
    assert "retrieve" in caught.value.fix


def test_empty_query_is_refused(handbook: TestServer) -> None:
    with pytest.raises(ConfigError) as caught:
        run_step(ChatCompletion(**ANSWER), {"question": "  "})
    assert caught.value.field == "retrieve.query"
    assert handbook.requests == []


def test_a_query_vector_of_another_size_is_refused(handbook: TestServer) -> None:
    vector = [0.5, 0.5, 0.5, 0.5]
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    handbook.enqueue(Respond(body=body), path="/v1/embeddings")
    with pytest.raises(ConfigError) as caught:
        run_step(ChatCompletion(**ANSWER), {"question": "refund"})
    assert caught.value.field == "retrieve.index"
    assert "4 dimensions" in caught.value.problem
    assert "256" in caught.value.problem
    assert _chat_bodies(handbook) == []


def test_batch_refuses_retrieve(tmp_path: Path) -> None:
    from chatstep.batch.submit import _refuse_per_call_features

    with pytest.raises(ConfigError) as caught:
        _refuse_per_call_features(ChatCompletion(**ANSWER))
    assert caught.value.field == "retrieve"


def test_cost_estimate_counts_top_k_chunks_without_calling(handbook: TestServer) -> None:
    from chatstep import estimate_cost

    with_chunks = estimate_cost(ChatCompletion(**ANSWER), inputs={"question": "refund?"})
    bigger = estimate_cost(
        ChatCompletion(**{**ANSWER, "retrieve": {**ANSWER["retrieve"], "top_k": 3}}),
        inputs={"question": "refund?"},
    )
    assert bigger.prompt_tokens > with_chunks.prompt_tokens > 200  # 1000-character chunks
    assert handbook.requests == []


def test_map_can_select_the_retrieved_sources(handbook: TestServer, tmp_path: Path) -> None:
    rows = tmp_path / "questions.jsonl"
    rows.write_text(json.dumps({"question": "Is a kettle under warranty?"}) + "\n")
    step = tmp_path / "answer.yaml"
    step.write_text(json.dumps(ANSWER))
    out = CliRunner().invoke(
        app,
        [
            "map",
            str(step),
            "--rows",
            str(rows),
            "--select",
            "content",
            "--select",
            "retrieved[0].source",
            "-o",
            str(tmp_path / "out.jsonl"),
        ],
    )
    assert out.exit_code == 0, out.output
    (row,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert row["retrieved[0].source"] == "warranty.txt"
