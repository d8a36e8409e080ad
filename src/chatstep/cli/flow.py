"""``chatstep flow run`` and ``chatstep flow validate``: flow files from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatstep.cli.common import (
    InputOption,
    echo_spend,
    exit_code_for,
    parse_inputs,
    parse_overrides,
    print_json,
    reports_errors,
)
from chatstep.errors import redact

if TYPE_CHECKING:
    from chatstep.flows.api import Flow, FlowRun, TaskRun

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


def _with_overrides(flow: Flow, pairs: list[str] | None) -> Flow:
    """``flow`` with ``--set TASK.field=value`` applied to the step of task TASK."""
    import dataclasses

    from chatstep.errors import ConfigError
    from chatstep.flows.tasks import MapTask, StepTask
    from chatstep.steps.overrides import override_step

    changes: dict[str, dict[str, Any]] = {}
    for path, value in parse_overrides(pairs).items():
        task_id, dot, field = path.partition(".")
        if not dot:
            raise ConfigError(
                f"--set {path}", "names no task", "write --set TASK.field=value in a flow"
            )
        changes.setdefault(task_id, {})[field] = value
    with_step = {t.id for t in flow.tasks if isinstance(t, StepTask | MapTask)}
    for task_id in changes:
        if task_id not in with_step:
            raise ConfigError(
                f"--set {task_id}",
                "is not a task of the flow with a step",
                f"tasks with a step: {', '.join(sorted(with_step)) or 'none'}",
            )
    tasks = []
    for task in flow.tasks:
        if isinstance(task, StepTask | MapTask) and task.id in changes:
            label = f"--set {task.id}:"
            task = dataclasses.replace(
                task, step=override_step(task.step, changes[task.id], label=label)
            )
        tasks.append(task)
    return dataclasses.replace(flow, tasks=tuple(tasks))


@flow_app.command("run")
def run(
    flow_file: Annotated[Path, typer.Argument(help="A flow file (.yaml, .yml or .json).")],
    inputs: InputOption = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a field of one task's step: TASK.field=value, TASK.field:=JSON, "
            "=@file or =@-; dotted paths reach nested fields; repeatable.",
        ),
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
        flow = _with_overrides(load_flow(flow_file), overrides)
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
