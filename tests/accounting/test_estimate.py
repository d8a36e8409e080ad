"""The dry run: estimate_cost and ``chatstep check``, which send nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chatstep import ConfigError, estimate_cost, run_step
from chatstep.accounting.pricing import PriceTable
from chatstep.accounting.tokens import estimate_prompt_tokens
from chatstep.cli.app import app
from chatstep.testing import Respond, TestServer

cli = CliRunner()
STEP: dict[str, Any] = {
    "id": "describe",
    "model": "gpt-4o-mini",
    "prompt": "Item {{ inputs.n }}: {{ inputs.text }}",
    "max_tokens": 50,
}


@pytest.mark.slow
def test_100k_rows_prompt_total_is_the_sum_of_each_rows_count(
    openai_env: TestServer, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.jsonl"
    with rows.open("w", encoding="utf-8") as out:
        for n in range(100_000):
            out.write(json.dumps({"n": n, "text": f"text {n % 997} " * (n % 5)}) + "\n")
    estimate = estimate_cost(STEP, rows, expected_output_tokens=20)
    expected = 0
    with rows.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            content = f"Item {row['n']}: {row['text']}"
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
            expected += estimate_prompt_tokens(body)
    assert estimate.rows == 100_000
    assert estimate.prompt_tokens == expected
    assert estimate.max_output_tokens == 100_000 * 50
    table = PriceTable()
    worst = table.estimate_cost("gpt-4o-mini", expected, 100_000 * 50)
    assert worst is not None
    assert estimate.worst_case_usd == pytest.approx(worst.total_usd)
    assert estimate.batch_worst_case_usd == pytest.approx(worst.total_usd / 2)
    typical = table.cost("gpt-4o-mini", {"prompt_tokens": expected, "completion_tokens": 2_000_000})
    assert typical is not None
    assert estimate.typical_usd == pytest.approx(typical.total_usd)
    assert openai_env.requests == []


def test_expected_output_comes_from_the_history(openai_env: TestServer) -> None:
    for completion in (10, 30):
        usage = {
            "prompt_tokens": 5,
            "completion_tokens": completion,
            "total_tokens": 5 + completion,
        }
        openai_env.enqueue(Respond(content="x", usage=usage))
        run_step(STEP, {"n": 1, "text": "t"})
    sent = len(openai_env.requests)
    estimate = estimate_cost(STEP, [{"n": 1, "text": "t"}, {"n": 2, "text": "u"}])
    assert estimate.expected_from == "history"
    assert estimate.expected_output_tokens == pytest.approx(20)
    assert estimate.typical_usd is not None
    assert estimate.per_row(estimate.typical_usd) == pytest.approx(estimate.typical_usd / 2)
    assert len(openai_env.requests) == sent  # the dry run sent nothing
    unknown = estimate_cost({**STEP, "id": "never-ran"}, [{"n": 1, "text": "t"}])
    assert unknown.expected_from is None
    assert unknown.typical_usd is None
    assert unknown.worst_case_usd is not None


def test_a_row_that_does_not_render_names_its_index(openai_env: TestServer) -> None:
    step = {**STEP, "max_tokens": "{{ inputs.limit }}"}
    with pytest.raises(ConfigError) as info:
        estimate_cost(step, [{"n": 1, "text": "t", "limit": 5}, {"n": 2, "text": "t", "limit": -1}])
    assert info.value.field.startswith("rows[1]")


def test_check_cli(openai_env: TestServer, tmp_path: Path) -> None:
    step = tmp_path / "s.yaml"
    step.write_text(
        "id: describe\nmodel: gpt-4o-mini\nprompt: 'Item {{ inputs.n }} of {{ inputs.shop }}'\n"
        "max_tokens: 50\n"
    )
    rows = tmp_path / "rows.csv"
    rows.write_text("n\n1\n2\n3\n")
    out = cli.invoke(
        app,
        ["check", str(step), "-r", str(rows), "-i", "shop=acme", "--expect-output-tokens", "10"],
    )
    assert out.exit_code == 0, out.output
    assert "3 request(s)" in out.stdout
    assert "batch typical" in out.stdout
    as_json = cli.invoke(app, ["check", str(step), "-i", "n=1", "-i", "shop=x", "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["rows"] == 1
    assert data["dataset"]["worst_case_usd"] > data["dataset"]["batch_worst_case_usd"] > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model: gpt-4o-mini\nprompt: x\nresponse_format:\n  type: json_schema\n"
        "  json_schema: {name: t, schema: {type: objectz}}\n"
    )
    refused = cli.invoke(app, ["check", str(bad)])
    assert refused.exit_code == 3, refused.output
    assert "response_format.json_schema.schema.type" in refused.stderr
    assert openai_env.requests == []
