"""One budget mechanism (max_cost / --max-cost) on every entry point, over real HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chatstep import AsyncRunner, BudgetExceededError, run_flow, run_step
from chatstep.accounting import pricing
from chatstep.accounting.budget import worst_case_cost
from chatstep.batch.api import submit_batch
from chatstep.cli.app import app
from chatstep.cli.common import EXIT_CODES
from chatstep.testing import TestServer

cli = CliRunner()
# A tenth of a cent per token, so caps bite after a few small calls.
DEAR = {"input": 1000.0, "output": 1000.0}
STEP: dict[str, Any] = {"id": "greet", "model": "gpt-4o-mini", "prompt": "hi", "max_tokens": 10}


@pytest.fixture
def dear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pricing.PriceTable:
    """gpt-4o-mini at DEAR prices, through the user's price file (as the CLI reads it)."""
    home = tmp_path / "chatstep-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "prices.json").write_text(json.dumps({"models": {"gpt-4o-mini": DEAR}}))
    monkeypatch.setattr(pricing, "_default_table", [])
    return pricing.default_price_table()


def _chat_requests(server: TestServer) -> int:
    return len([r for r in server.requests if r.path == "/v1/chat/completions"])


def test_runner_stops_before_the_request_that_would_pass_the_cap(
    openai_env: TestServer, dear: pricing.PriceTable
) -> None:
    async def go() -> tuple[int, BudgetExceededError, AsyncRunner]:
        runner = AsyncRunner(max_cost=0.1, history=False)
        done = 0
        async with runner:
            try:
                while True:
                    await runner.run(STEP)
                    done += 1
            except BudgetExceededError as exc:
                return done, exc, runner

    done, error, runner = asyncio.run(go())
    assert done >= 1
    assert _chat_requests(openai_env) == done  # the refused request was never sent
    assert error.spent == pytest.approx(runner.budget.spent)
    assert error.spent <= 0.1
    assert error.next_cost is not None
    assert error.spent + error.next_cost > 0.1
    assert "spent" in str(error)
    assert "may cost up to" in str(error)


def test_worst_case_counts_every_choice(openai_env: TestServer, dear: pricing.PriceTable) -> None:
    one = AsyncRunner(history=False).prepare(STEP)
    eight = AsyncRunner(history=False).prepare({**STEP, "n": 8})
    single = worst_case_cost(dear, one[1], one[2])
    assert worst_case_cost(dear, eight[1], eight[2]) == pytest.approx(single + 70 * 0.001)
    # n: 8 needs eight completions' room: a cap that fits one call refuses it.
    with pytest.raises(BudgetExceededError):
        run_step({**STEP, "n": 8}, max_cost=single * 2)
    assert _chat_requests(openai_env) == 0
    run_step(STEP, max_cost=single * 2)
    assert _chat_requests(openai_env) == 1


def test_unpriced_model_cannot_be_capped(openai_env: TestServer) -> None:
    from chatstep import ConfigError

    with pytest.raises(ConfigError, match="no price"):
        run_step({**STEP, "model": "acme-unknown"}, max_cost=1.0)
    assert _chat_requests(openai_env) == 0


def test_cli_run_max_cost_exit_8(
    openai_env: TestServer, dear: pricing.PriceTable, tmp_path: Path
) -> None:
    step = tmp_path / "s.yaml"
    step.write_text("id: greet\nmodel: gpt-4o-mini\nprompt: hi\nmax_tokens: 10\nn: 8\n")
    out = cli.invoke(app, ["run", str(step), "--max-cost", "0.02"])
    assert out.exit_code == EXIT_CODES["budget"] == 8, out.output
    assert "BudgetExceededError" in out.stderr
    assert "$0.0000 spent" in out.stderr
    assert "may cost up to" in out.stderr
    assert _chat_requests(openai_env) == 0
    ok = cli.invoke(app, ["run", str(step), "--max-cost", "1"])
    assert ok.exit_code == 0, ok.output
    assert "spent:" in ok.stderr
    assert "$" in ok.stderr


FLOW = """
id: two
tasks:
  - id: first
    type: chatstep.chat
    model: gpt-4o-mini
    prompt: "one"
    max_tokens: 10
  - id: second
    type: chatstep.chat
    model: gpt-4o-mini
    prompt: "two {{ outputs.first.choices[0].message.content }}"
    max_tokens: 100
"""


def test_flow_total_cost_is_the_sum_of_its_tasks(
    openai_env: TestServer, dear: pricing.PriceTable
) -> None:
    run = run_flow(FLOW)
    first, second = run.task("first").cost, run.task("second").cost
    assert first is not None
    assert second is not None
    assert run.cost == pytest.approx(first + second)
    assert run.to_dict()["cost"] == pytest.approx(first + second)


def test_flow_max_cost_stops_before_the_second_task(
    openai_env: TestServer, dear: pricing.PriceTable, tmp_path: Path
) -> None:
    first_cap = run_flow(FLOW).task("first").cost
    openai_env.reset()
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    # Room for the first task's worst case (about 20 tokens), not the second's (over 100).
    out = cli.invoke(app, ["flow", "run", str(flow), "--max-cost", "0.035"])
    assert out.exit_code == 8, out.output
    assert "BudgetExceededError" in out.stderr
    assert _chat_requests(openai_env) == 1
    assert first_cap is not None
    as_json = cli.invoke(app, ["flow", "run", str(flow), "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["cost"] == pytest.approx(sum(t["cost"] for t in data["tasks"]))


def test_batch_submit_refuses_up_front(
    openai_env: TestServer, dear: pricing.PriceTable, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("CHATSTEP_HISTORY", "off")
    step = tmp_path / "s.yaml"
    step.write_text("model: gpt-4o-mini\nprompt: 'Item {{ inputs.n }}'\nmax_tokens: 10\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"n": {n}}}\n' for n in range(100)))
    out = cli.invoke(app, ["batch", "submit", str(step), "--rows", str(rows), "--max-cost", "0.5"])
    assert out.exit_code == 8, out.output
    assert "may cost up to" in out.stderr
    assert openai_env.requests == []  # nothing uploaded, no batch created
    with pytest.raises(BudgetExceededError):
        submit_batch(step, rows, max_cost=0.5)
    assert openai_env.requests == []
    # Batch prices are half: 100 rows of ~20 tokens at $0.0005 fit in $1.5.
    job = submit_batch(step, rows, max_cost=1.5)
    assert job.row_count == 100


def test_map_with_a_capped_runner_stops_like_max_cost(
    openai_env: TestServer, dear: pricing.PriceTable
) -> None:
    from chatstep import map_step

    capped = AsyncRunner(max_cost=0.1, history=False)
    out = map_step(STEP, [{"n": n} for n in range(50)], runner=capped, select=["content", "error"])
    assert out.stats.stop_reason is not None
    assert "max_cost" in out.stats.stop_reason
    finished = [r for r in out if r.get("error") is None and r.get("content")]
    assert 0 < len(finished) < 50
    assert _chat_requests(openai_env) == len(finished)
