"""Running a flow: tasks in order, each task's output in ``outputs`` for the tasks after it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from chatstep.core.blocking import sync_twin
from chatstep.core.deadlines import within
from chatstep.core.render import make_context
from chatstep.core.result import AnyResult, EmbeddingResult, ModerationResult, StepResult
from chatstep.core.retry import RetryLoop, RetryPolicy
from chatstep.core.runner import AsyncRunner
from chatstep.errors import (
    APIError,
    APITimeoutError,
    ConfigError,
    MapRowsFailedError,
    redact,
)
from chatstep.flows.inputs import resolve_inputs
from chatstep.flows.loading import Flow, load_flow
from chatstep.flows.refs import bind_response
from chatstep.flows.tasks import MAP_TYPE, FlowTask, MapTask, ReturnTask, StepTask
from chatstep.steps.definitions import DEFAULT_TIMEOUT, Step
from chatstep.templating.sandbox import TemplateContext, render_value

__all__ = ["FlowRun", "MapRowsFailedError", "TaskRun", "arun_flow", "run_flow"]

logger = logging.getLogger("chatstep.flows")

TaskState = Literal["SUCCESS", "FAILED", "SKIPPED"]
FlowState = Literal["SUCCESS", "WARNING", "FAILED"]


@dataclass
class TaskRun:
    """What one task did: its state, its output (``outputs.<id>``) and its output mapping."""

    id: str
    type: str
    state: TaskState
    output: Any = None
    """The JSON-able value later tasks read as ``outputs.<id>`` (a step's whole response)."""
    variables: dict[str, Any] = field(default_factory=dict)
    """Names set by result_variable / result_expression."""
    error: str | None = None
    calls: int = 0
    """Calls made (one per row for a map task)."""
    attempts: int = 0
    """Attempts made, retries included."""
    duration_ms: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)
    cost: float | None = None
    results: list[AnyResult] = field(default_factory=list, repr=False)
    """The step result of a step task (a map task keeps its rows in ``output``)."""
    exception: BaseException | None = field(default=None, repr=False)

    @property
    def result(self) -> AnyResult | None:
        """The step result of a step task (None for Return and map tasks)."""
        return self.results[0] if len(self.results) == 1 else None

    def summary(self) -> dict[str, Any]:
        """The task's output in short: what ``chatstep flow run`` prints."""
        if self.state != "SUCCESS":
            return {"error": self.error} if self.error else {}
        result = self.result
        if isinstance(result, StepResult):
            out: dict[str, Any] = {}
            if result.parsed is not None:
                out["parsed"] = result.parsed
            elif result.content is not None:
                out["content"] = result.content
            calls = result.tool_calls
            if calls:
                out["tool_calls"] = [{"name": c.name, "arguments": c.arguments} for c in calls]
            return out
        if isinstance(result, ModerationResult):
            flagged = {
                str(i): sorted(k for k, v in (r.get("categories") or {}).items() if v)
                for i, r in enumerate(result.results)
                if r.get("flagged")
            }
            return {"flagged": result.flagged, "flagged_categories": flagged}
        if isinstance(result, EmbeddingResult):
            vectors = result.vectors
            size = len(vectors[0]) if vectors and isinstance(vectors[0], list) else None
            return {"vectors": len(vectors), "dimensions": size}
        if self.type == MAP_TYPE and isinstance(self.output, Mapping):
            return {k: v for k, v in self.output.items() if k != "rows"}
        return dict(self.output) if isinstance(self.output, Mapping) else {"value": self.output}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {
            "id": self.id,
            "type": self.type,
            "state": self.state,
            "output": self.output,
            "variables": self.variables,
            "error": self.error,
            "calls": self.calls,
            "attempts": self.attempts,
            "duration_ms": self.duration_ms,
            "usage": self.usage,
            "cost": self.cost,
        }


@dataclass
class FlowRun:
    """One run of a flow: its inputs and, in order, what each task did."""

    id: str
    flow_id: str
    namespace: str | None
    inputs: dict[str, Any]
    tasks: list[TaskRun] = field(default_factory=list)
    state: FlowState = "SUCCESS"
    started: str = ""
    duration_ms: float = 0.0

    @property
    def outputs(self) -> dict[str, Any]:
        """Every task's output by id, plus the names set by output mappings."""
        out: dict[str, Any] = {}
        for task in self.tasks:
            if task.state == "SUCCESS":
                out[task.id] = task.output
                out.update(task.variables)
        return out

    def task(self, task_id: str) -> TaskRun:
        """The run of the task with this id."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        ran = ", ".join(t.id for t in self.tasks) or "none"
        raise KeyError(f"task {task_id!r} did not run in this flow run (ran: {ran})")

    @property
    def failed_task(self) -> TaskRun | None:
        """The task that stopped the run, if one did."""
        if self.state != "FAILED":
            return None
        return next((t for t in reversed(self.tasks) if t.state == "FAILED"), None)

    @property
    def usage(self) -> dict[str, int]:
        """Token usage summed over every task."""
        total: dict[str, int] = {}
        for task in self.tasks:
            _add_usage(total, task.usage)
        return total

    @property
    def cost(self) -> float | None:
        """USD summed over every task (paid answers that failed included); None when no task
        was priced."""
        costs = [t.cost for t in self.tasks if t.cost is not None]
        return sum(costs) if costs else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the whole run."""
        return {
            "id": self.id,
            "flow": {"id": self.flow_id, "namespace": self.namespace},
            "state": self.state,
            "started": self.started,
            "duration_ms": self.duration_ms,
            "inputs": self.inputs,
            "tasks": [t.to_dict() for t in self.tasks],
            "outputs": self.outputs,
            "usage": self.usage,
            "cost": self.cost,
        }


def _add_usage(total: dict[str, int], usage: Mapping[str, Any]) -> None:
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = usage.get(key)
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value


def _plain(value: Any) -> Any:
    """A JSON-able copy: template views (decoded tool-call arguments) become plain values."""
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _plain(to_json())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _bind_leaves(value: Any, task_id: str) -> Any:
    if isinstance(value, str):
        return bind_response(value, task_id)
    if isinstance(value, Mapping):
        return {k: _bind_leaves(v, task_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_bind_leaves(v, task_id) for v in value]
    return value


def _read_rows(path: Path, where: str) -> list[Any]:
    if not path.is_file():
        raise ConfigError(f"{where}.file", f"{str(path)!r} does not exist")
    if path.suffix.lower() != ".json":
        from chatstep.mapping.datasets import read_rows

        return list(read_rows(path, option=f"{where}.file"))
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}.file", f"{path.name} is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where}.file", f"{path.name} is not valid UTF-8 (byte {exc.start + 1})"
        ) from None
    except RecursionError:
        raise ConfigError(f"{where}.file", f"{path.name} is nested too deeply") from None
    except ValueError as exc:  # an integer over Python's 4,300-digit limit
        raise ConfigError(f"{where}.file", f"{path.name}: {exc}") from None
    if not isinstance(rows, list):
        raise ConfigError(f"{where}.file", f"{path.name} must hold a JSON list of rows")
    return rows


def _prefixed(exc: ConfigError, where: str) -> ConfigError:
    """``exc`` with its field path under ``where`` (``tasks[0](ask).messages[0].content``)."""
    exc.field = f"{where}.{exc.field}" if exc.field else where
    hint = f" ({exc.fix})" if exc.fix else ""
    exc.args = (redact(f"{exc.field}: {exc.problem}{hint}"),)
    return exc


# What a map task keeps of each row's record (see chatstep.mapping.columns).
_ROW_FIELDS: dict[str, tuple[str, ...]] = {
    "chat": ("content", "parsed", "tool_calls", "finish_reason"),
    "embedding": ("embedding",),
    "moderation": ("flagged", "results"),
    "completion": ("content", "finish_reason"),
}
_COMMON_ROW_FIELDS = ("usage", "cost", "cached", "attempts", "response", "error")
_ROW_PREFIX = "chatstep_output."


class _Execution:
    """The state of one flow run: inputs, the ``outputs`` namespace so far, the runner."""

    def __init__(self, inputs: dict[str, Any], runner: AsyncRunner) -> None:
        self.inputs = inputs
        self.runner = runner
        self.outputs: dict[str, Any] = {}

    def context(self) -> TemplateContext:
        return make_context(self.inputs, self.outputs, self.runner.secrets)

    async def run(self, task: FlowTask) -> TaskRun:
        run = TaskRun(task.id, task.type, "SKIPPED")
        if task.options.disabled:
            return run
        started = time.perf_counter()
        try:
            if task.options.timeout is None:
                await self._run(task, run)
            else:
                await self._with_timeout(task, run, task.options.timeout)
            run.variables = self._map_output(task, run.output)
            run.state = "SUCCESS"
        except Exception as exc:
            run.state = "FAILED"
            run.exception = exc
            run.error = f"{type(exc).__name__}: {exc}"
            received = getattr(exc, "result", None)  # a paid answer that failed its checks
            if run.cost is None and isinstance(getattr(received, "cost", None), int | float):
                run.cost = float(received.cost)  # type: ignore[union-attr]
                _add_usage(run.usage, received.usage)  # type: ignore[union-attr]
        finally:
            run.duration_ms = (time.perf_counter() - started) * 1000
        if run.state == "SUCCESS":
            self.outputs[task.id] = run.output
            self.outputs.update(run.variables)
        return run

    async def _with_timeout(self, task: FlowTask, run: TaskRun, timeout: float) -> None:
        try:
            await within(timeout, self._run(task, run))
        except asyncio.TimeoutError:
            raise APITimeoutError(
                f"{task.where}: the task did not finish within its timeout of {timeout:g} s"
            ) from None

    async def _run(self, task: FlowTask, run: TaskRun) -> None:
        if isinstance(task, ReturnTask):
            value = render_value(task.format, self.context(), f"{task.where}.format")
            run.output = {"value": value}
        elif isinstance(task, StepTask):
            result = await self._call(task, run)
            run.results.append(result)
            run.output = result.response
            _add_usage(run.usage, result.usage)
            run.cost = result.cost
        elif isinstance(task, MapTask):
            await self._map(task, run)
        else:  # pragma: no cover - parse_task makes only the kinds above
            raise TypeError(f"unknown task kind {type(task).__name__}")

    def _step_for(self, task: FlowTask, step: Step) -> Step:
        update: dict[str, Any] = {}
        if step.id is None:
            update["id"] = task.id  # names the calls in the history
        retry = task.options.retry
        if retry is not None:
            # A step task retries in its own loop (with the task's backoff); a map task's rows
            # are retried by the pipeline, with the task's count.
            update["max_retries"] = 0 if isinstance(task, StepTask) else retry.retries
        timeout = task.options.timeout
        if timeout is not None and "timeout" not in step.model_fields_set:
            update["timeout"] = min(DEFAULT_TIMEOUT, timeout)
        return step.model_copy(update=update) if update else step

    async def _call(self, task: StepTask, run: TaskRun) -> AnyResult:
        """Render, build and send the task's step, retrying as the task's ``retry`` says."""
        runner = self.runner
        try:
            rendered, request, conn = await runner.prepare_async(
                self._step_for(task, task.step), self.inputs, self.outputs
            )
        except ConfigError as exc:
            raise _prefixed(exc, task.where) from None
        retry = task.options.retry

        def log_retry(exc: APIError, attempt: int, delay: float) -> None:
            warn = retry is not None and retry.warning_on_retry
            (logger.warning if warn else logger.info)(
                "%s: attempt %d failed (%s); retrying in %.2f s", task.where, attempt, exc, delay
            )

        deadline = None
        if retry is not None and retry.max_duration is not None:
            deadline = time.monotonic() + retry.max_duration
        loop: RetryLoop[AnyResult] = RetryLoop(
            retry.policy() if retry is not None else RetryPolicy(max_retries=0),
            sleep=runner.sleep,
            deadline=deadline,
            on_retry=log_retry,
        )
        try:
            result = await loop.run(lambda: runner.execute(rendered, request, conn))
        except APIError:
            run.calls += 1
            run.attempts += loop.attempts
            raise
        if retry is not None:
            result.attempts = loop.attempts
        run.calls += 1
        run.attempts += result.attempts
        return result

    async def _rows(self, task: MapTask) -> list[dict[str, Any]]:
        if task.file is not None:
            rows: Any = _read_rows(task.file, task.where)
        else:
            rows = render_value(task.rows, self.context(), f"{task.where}.rows", native=True)
            if not isinstance(rows, list):
                raise ConfigError(
                    f"{task.where}.rows",
                    f"rendered to a {type(rows).__name__}, not a list of rows",
                    "make it a list (a JSON input, or an earlier output that is a list)",
                )
        # Each row's columns (or `item`, for a row that is not a mapping) join the flow's inputs.
        return [
            {**self.inputs, **(dict(row) if isinstance(row, Mapping) else {"item": _plain(row)})}
            for row in rows
        ]

    async def _map(self, task: MapTask, run: TaskRun) -> None:
        from chatstep.mapping.run import amap_step

        step = self._step_for(task, task.step)
        fields = (*_ROW_FIELDS[step.kind], *_COMMON_ROW_FIELDS)
        options: dict[str, Any] = {"select": list(fields), "prefix": _ROW_PREFIX}
        if task.concurrency is not None:
            options["concurrency"] = task.concurrency
        records: list[dict[str, Any]] = []
        async for row in amap_step(step, await self._rows(task), runner=self.runner, **options):
            records.append(
                {
                    k.removeprefix(_ROW_PREFIX): v
                    for k, v in row.items()
                    if k.startswith(_ROW_PREFIX)
                }
            )
        costs = [r.get("cost") for r in records]
        run.calls = len(records)
        for record in records:
            _add_usage(run.usage, record.get("usage") or {})
            run.attempts += int(record.get("attempts") or 0)
        run.cost = sum(c for c in costs if isinstance(c, float | int)) if records else None
        failed = [(i, r["error"]) for i, r in enumerate(records) if r.get("error")]
        output: dict[str, Any] = {"count": len(records), "failed": len(failed), "rows": records}
        for name in _ROW_FIELDS[step.kind]:
            if name == "finish_reason":
                continue  # in each row; a list of them says little
            values = [r.get(name) for r in records]
            if name in _ALWAYS_LISTED or any(v is not None for v in values):
                output[_PLURAL.get(name, name)] = values
        run.output = output
        if failed:
            index, error = failed[0]
            raise MapRowsFailedError(
                f"{task.where}: {len(failed)} of {len(records)} rows failed; "
                f"the first, rows[{index}]: {error}"
            )

    def _map_output(self, task: FlowTask, output: Any) -> dict[str, Any]:
        options = task.options
        variables: dict[str, Any] = {}
        if options.result_variable:
            variables[options.result_variable] = output
        if options.result_expression:
            ctx = make_context(self.inputs, {**self.outputs, task.id: output}, self.runner.secrets)
            for name, expression in options.result_expression.items():
                value = render_value(
                    _bind_leaves(expression, task.id),
                    ctx,
                    f"{task.where}.result_expression.{name}",
                    native=True,
                )
                variables[name] = _plain(value)
        return variables


_ALWAYS_LISTED = frozenset({"content", "embedding", "flagged"})
_PLURAL = {
    "content": "contents",
    "embedding": "embeddings",
    "flagged": "flagged",
    "results": "results",
}


async def arun_flow(
    flow: Flow | str | Path | Mapping[str, Any],
    inputs: Mapping[str, Any] | None = None,
    *,
    runner: AsyncRunner | None = None,
    raise_on_failure: bool = True,
    max_cost: float | None = None,
) -> FlowRun:
    """Run a flow's tasks in order and return the run.

    ``max_cost`` (USD) caps the whole run: a request whose worst case does not fit in what is
    left fails its task with BudgetExceededError, which stops the run (see :class:`Runner`).
    With a ``runner``, the runner's own ``max_cost`` applies instead.
    A failing task stops the run unless it has ``allow_failure``. With ``raise_on_failure``
    (the default) the failing task's own error is raised (``except RateLimitError`` works);
    otherwise the run is returned with state ``FAILED`` and the error on its task. Calls are
    logged in the runner's history under the run's id; a runner given here is used by this run
    alone while it lasts (its ``run_id`` is set to the run's).
    """
    from chatstep.storage.history import new_id

    definition = load_flow(flow)
    values = resolve_inputs(definition.inputs, dict(inputs or {}))
    run = FlowRun(
        id=new_id(),
        flow_id=definition.id,
        namespace=definition.namespace,
        inputs=values,
        started=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    )
    active = AsyncRunner(max_cost=max_cost) if runner is None else runner
    saved_run_id, active.run_id = active.run_id, run.id
    started = time.perf_counter()
    try:
        execution = _Execution(values, active)
        for task in definition.tasks:
            task_run = await execution.run(task)
            run.tasks.append(task_run)
            if task_run.state == "FAILED":
                if not task.options.allow_failure:
                    run.state = "FAILED"
                    break
                run.state = "WARNING"
                logger.warning("%s failed and allows failure: %s", task.where, task_run.error)
    finally:
        run.duration_ms = (time.perf_counter() - started) * 1000
        active.run_id = saved_run_id
        if runner is None:
            await active.aclose()
    failed = run.failed_task
    if raise_on_failure and failed is not None and failed.exception is not None:
        exc = failed.exception
        add_note = getattr(exc, "add_note", None)
        if callable(add_note):
            add_note(f"in task {failed.id!r} of flow {definition.id!r} (run {run.id})")
        raise exc
    return run


run_flow = sync_twin(
    arun_flow, "Synchronous :func:`arun_flow` (from inside an event loop, it runs in a thread)."
)
