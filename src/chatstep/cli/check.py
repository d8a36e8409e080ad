"""``chatstep check``: validate a step and estimate its cost over a dataset, sending nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chatstep.cli.common import parse_inputs, print_json, reports_errors

__all__ = ["register"]


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.6f}"


def check(
    step_file: Annotated[Path, typer.Argument(help="A step definition (.yaml, .yml or .json).")],
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", help="name=value, name:=JSON or name=@file; merged under every row."
        ),
    ] = None,
    rows: Annotated[
        Path | None,
        typer.Option("--rows", "-r", help="Dataset (JSONL, CSV, Parquet): one request per row."),
    ] = None,
    expect_output_tokens: Annotated[
        float | None,
        typer.Option(
            "--expect-output-tokens",
            help="Typical output tokens per request (default: the history's mean for the step).",
            min=0,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")] = False,
) -> None:
    """Validate and render STEP without sending; print its prompt tokens and cost.

    Renders the step for one or every row without sending, and prints its prompt tokens and
    its worst-case and typical cost, per row and for the dataset, on the realtime API and the
    Batch API. Exit 3 when the step or a row would not render.
    """
    from chatstep.accounting.estimate import estimate_cost

    with reports_errors():
        estimate = estimate_cost(
            step_file,
            rows,
            inputs=parse_inputs(inputs),
            expected_output_tokens=expect_output_tokens,
        )
    if as_json:
        print_json(estimate.to_dict())
        return
    out = typer.echo
    out(f"step {estimate.step_id or step_file.name}: valid; {estimate.rows:,} request(s)")
    out(
        f"prompt tokens: {estimate.prompt_tokens:,}; output allowance: "
        f"{estimate.max_output_tokens:,}; largest request: {estimate.largest_row_tokens:,}"
    )
    if estimate.local:
        out("runs on the embedded local model: it costs nothing")
    if estimate.unpriced:
        out(f"no price for: {', '.join(estimate.unpriced)} (add it to prices.toml)")
    if estimate.expected_output_tokens is None:
        out("typical: unknown (give --expect-output-tokens, or run the step a few times)")
    else:
        source = "given" if estimate.expected_from == "given" else "from the history"
        out(
            f"expected output tokens per request: {estimate.expected_output_tokens:,.1f} ({source})"
        )
    out(f"{'':22}{'per row':>16}{'dataset':>18}")
    for label, value in (
        ("worst case", estimate.worst_case_usd),
        ("typical", estimate.typical_usd),
        ("batch worst case", estimate.batch_worst_case_usd),
        ("batch typical", estimate.batch_typical_usd),
    ):
        out(f"{label:22}{_usd(estimate.per_row(value)):>16}{_usd(value):>18}")


def register(app: typer.Typer) -> None:
    """Add ``check`` to the app."""
    app.command("check")(check)
