"""``chatstep run``: run one step file and print its content or its whole result."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from chatstep.cli.common import echo_spend, parse_inputs, print_json, reports_errors

__all__ = ["register"]


def run(
    step_file: Annotated[Path, typer.Argument(help="A step definition (.yaml, .yml or .json).")],
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="name=value, name:=JSON or name=@file; repeatable."),
    ] = None,
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
    """Run a step and print its content (or, with --json, the whole result).

    A billed call's tokens and cost are printed on stderr at the end (in --json: usage, cost,
    cost_breakdown); a free one (embedded model, cache hit) prints nothing more.
    """
    from chatstep.core.calls import run_step
    from chatstep.core.result import EmbeddingResult, ModerationResult, StepResult
    from chatstep.core.streaming import Delta
    from chatstep.steps.loading import load_step

    with reports_errors():
        step = load_step(step_file)
        if local:
            step = step.model_copy(update={"backend": "local"})

        def on_delta(delta: Delta) -> None:
            if delta.choice == 0 and delta.content:
                sys.stdout.write(delta.content)
                sys.stdout.flush()

        printing_deltas = stream and not as_json
        result = run_step(
            step,
            parse_inputs(inputs),
            stream=True if stream else None,
            on_delta=on_delta if printing_deltas else None,
            max_cost=max_cost,
        )
        if as_json:
            print_json(result.to_dict())
        elif isinstance(result, StepResult):
            if printing_deltas:
                sys.stdout.write("\n")
            elif result.parsed is not None:
                print_json(result.parsed)
            elif result.content is not None:
                sys.stdout.write(result.content + "\n")
            else:
                calls: list[Any] = [
                    {"name": c.name, "arguments": c.arguments} for c in result.tool_calls
                ]
                print_json(calls)
        elif isinstance(result, ModerationResult):
            print_json(result.results)
        elif isinstance(result, EmbeddingResult):
            print_json(result.vectors)
        if not as_json:
            echo_spend(result.usage.get("total_tokens"), result.cost)


def register(app: typer.Typer) -> None:
    """Add ``run`` to the app."""
    app.command("run")(run)
