"""``chatstep run``: run one step file and print its content or its whole result."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatstep.cli.common import (
    InputOption,
    SetOption,
    apply_overrides,
    echo_spend,
    parse_inputs,
    print_json,
    reports_errors,
)

if TYPE_CHECKING:
    from chatstep.core.result import AnyResult
    from chatstep.steps.definitions import Step

__all__ = ["print_result", "register", "run_and_print"]


def print_result(result: AnyResult, *, as_json: bool, streamed: bool) -> None:
    """Print what ``run`` prints: the content (unless ``streamed`` already printed it), the
    parsed JSON, and any tool calls as a JSON list of ``{"name", "arguments"}``; or, with
    ``as_json``, the whole result."""
    from chatstep.core.result import EmbeddingResult, ModerationResult, StepResult

    if as_json:
        print_json(result.to_dict())
    elif isinstance(result, StepResult):
        if streamed:
            if result.content:
                sys.stdout.write("\n")
        elif result.parsed is not None:
            print_json(result.parsed)
        elif result.content is not None:
            sys.stdout.write(result.content + "\n")
        if result.tool_calls or (result.content is None and result.parsed is None):
            calls: list[Any] = [
                {"name": c.name, "arguments": c.arguments} for c in result.tool_calls
            ]
            print_json(calls)
    elif isinstance(result, ModerationResult):
        print_json(result.results)
    elif isinstance(result, EmbeddingResult):
        print_json(result.vectors)


def run_and_print(
    step: Step,
    inputs: dict[str, Any],
    *,
    as_json: bool,
    stream: bool,
    max_cost: float | None = None,
) -> None:
    """Run ``step`` once and print its result as ``run`` does (text streamed with ``stream``);
    a billed call's tokens and cost go to stderr at the end."""
    from chatstep.core.calls import run_step
    from chatstep.core.streaming import Delta

    def on_delta(delta: Delta) -> None:
        if delta.choice == 0 and delta.content:
            sys.stdout.write(delta.content)
            sys.stdout.flush()

    printing_deltas = stream and not as_json
    result = run_step(
        step,
        inputs,
        stream=True if stream else None,
        on_delta=on_delta if printing_deltas else None,
        max_cost=max_cost,
    )
    print_result(result, as_json=as_json, streamed=printing_deltas)
    if not as_json:
        echo_spend(result.usage.get("total_tokens"), result.cost)


def run(
    step_file: Annotated[Path, typer.Argument(help="A step definition (.yaml, .yml or .json).")],
    inputs: InputOption = None,
    overrides: SetOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole result as JSON.")
    ] = False,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print text as it is generated.")
    ] = False,
    local: Annotated[bool, typer.Option("--local", help="Use the embedded local model.")] = False,
    max_cost: Annotated[
        float | None,
        typer.Option(
            "--max-cost",
            help="USD cap: refuse the call (exit 8) if its worst case could pass it.",
            min=0,
        ),
    ] = None,
) -> None:
    """Run a step and print its content, parsed JSON or tool calls (--json: the whole result).

    A billed call's tokens and cost are printed on stderr at the end (in --json: usage, cost,
    cost_breakdown); a free one (embedded model, cache hit) prints nothing more.
    """
    with reports_errors():
        step = apply_overrides(step_file, overrides)
        if local:
            step = step.model_copy(update={"backend": "local"})
        run_and_print(step, parse_inputs(inputs), as_json=as_json, stream=stream, max_cost=max_cost)


def register(app: typer.Typer) -> None:
    """Add ``run`` to the app."""
    app.command("run")(run)
