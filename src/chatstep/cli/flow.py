"""``chatstep flow run`` and ``chatstep flow validate``: flow files from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatstep.cli.common import (
    echo_spend,
    exit_code_for,
    parse_inputs,
    print_json,
    reports_errors,
)
from chatstep.errors import redact

if TYPE_CHECKING:
    from chatstep.flows.api import FlowRun, TaskRun

__all__ = ["register"]

flow_app = typer.Typer(
    name="flow",
    help="Run Kestra-compatible flow files: tasks in order, in-process.",
    no_args_is_help=True,
)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _print_task(task: TaskRun, *, show_error: bool = True) -> None:
    attempts = f", {task.attempts} attempts" if task.attempts > task.calls else ""
    sys.stdout.write(f"== {task.id} ({task.state}{attempts}) {task.type}\n")
    for key, value in task.summary().items():
        if key == "error" and not show_error:
            continue  # reported on stderr, with the exit code
        if key == "tool_calls" and task.result is not None:
            for call in value:
                sys.stdout.write(f"tool call {call['name']}: {_text(call['arguments'])}\n")
        else:
            sys.stdout.write(f"{key}: {_text(value)}\n")
    for name, value in task.variables.items():
        sys.stdout.write(f"{name} = {_text(value)}\n")


def _report_failure(run: FlowRun) -> None:
    failed = run.failed_task
    if failed is None or failed.exception is None:
        return
    exc = failed.exception
    typer.echo(
        f"error: task {failed.id!r} failed: {type(exc).__name__}: {redact(str(exc))}", err=True
    )
    raise typer.Exit(exit_code_for(exc))


@flow_app.command("run")
def run(
    flow_file: Annotated[Path, typer.Argument(help="A flow file (.yaml, .yml or .json).")],
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="name=value, name:=JSON or name=@file; repeatable."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole run (every task) as JSON.")
    ] = False,
    max_cost: Annotated[
        float | None,
        typer.Option(
            "--max-cost",
            help="USD cap on the whole run: stop (exit 8) before a request that could pass it.",
            min=0,
        ),
    ] = None,
) -> None:
    """Run a flow's tasks in order and print each task's outputs, then the run's total
    tokens and cost (on stderr; in --json: usage and cost)."""
    from chatstep.flows.api import load_flow, run_flow

    with reports_errors():
        flow = load_flow(flow_file)
        flow_run = run_flow(flow, parse_inputs(inputs), raise_on_failure=False, max_cost=max_cost)
        if as_json:
            print_json(flow_run.to_dict())
        else:
            for task in flow_run.tasks:
                _print_task(task, show_error=task is not flow_run.failed_task)
            echo_spend(flow_run.usage.get("total_tokens"), flow_run.cost)
        _report_failure(flow_run)


@flow_app.command("validate")
def validate(
    flow_file: Annotated[Path, typer.Argument(help="A flow file (.yaml, .yml or .json).")],
) -> None:
    """Check a flow (types, properties, inputs, templates, references) without running it."""
    from chatstep.flows.api import load_flow

    with reports_errors():
        flow = load_flow(flow_file)
        inputs = ", ".join(i.id for i in flow.inputs) or "none"
        typer.echo(f"ok: flow {flow.id!r}, {len(flow.tasks)} tasks, inputs: {inputs}")


def register(app: typer.Typer) -> None:
    """Add the ``flow`` command group to the app."""
    app.add_typer(flow_app, name="flow")
