"""Flow tasks: what each ``tasks:`` entry of a flow file is, parsed and validated.

Every task has an ``id`` and a ``type``. Step types (``io.kestra.plugin.openai.ChatCompletion``,
``chatstep.chat``, ``chatstep.moderation``, ``chatstep.embedding``) take the step's own properties
(Kestra's camelCase names included); ``io.kestra.plugin.core.debug.Return`` takes ``format``;
``chatstep.map`` takes a ``step`` and its ``rows`` (inline, a template, or a ``file``).

Every task also takes the common options ``timeout`` (the whole task, retries included; a step's
per-attempt limit is ``clientTimeout``), ``retry``, ``allow_failure`` (``allowFailure``),
``disabled``, and Camunda-style output mapping: ``result_variable`` stores the task's output under
another name, ``result_expression`` maps names to templates over ``response`` (the task's output).
Both kinds of names are read later as ``outputs.<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from chatstep.core.retry import RetryPolicy
from chatstep.durations import Duration, parse_duration
from chatstep.errors import ConfigError
from chatstep.steps.definitions import ChatCompletion, Completion, Embedding, Moderation, Step
from chatstep.steps.loading import step_class_for, step_from_dict, validate_step
from chatstep.steps.strict import StrictModel

__all__ = [
    "MAP_TYPE",
    "RETURN_TYPE",
    "FlowTask",
    "MapTask",
    "ReturnTask",
    "StepTask",
    "TaskOptions",
    "TaskRetry",
    "known_task_types",
    "parse_duration",
    "parse_task",
]

RETURN_TYPE = "io.kestra.plugin.core.debug.Return"
MAP_TYPE = "chatstep.map"
_RETURN_TYPES = (RETURN_TYPE, "chatstep.return")

# Options every task takes, whatever its type (Kestra's spelling and chatstep's).
_COMMON_KEYS = frozenset(
    {
        "timeout",
        "retry",
        "allow_failure",
        "allowFailure",
        "disabled",
        "result_variable",
        "resultVariable",
        "result_expression",
        "resultExpression",
    }
)
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


class TaskRetry(StrictModel):
    """A task's retry: chatstep's ``max_retries`` or Kestra's ``maxAttempt`` plus its backoff.

    Retried are the failures that can pass: connection errors, timeouts, 408, 409, 429, 5xx.
    """

    max_retries: int | None = Field(default=None, ge=0, alias="maxRetries")
    """Retries after the first attempt."""
    max_attempt: int | None = Field(default=None, ge=1, alias="maxAttempt")
    """Attempts in all, the first included (Kestra)."""
    type: Literal["constant", "exponential", "random"] | None = None
    interval: Duration | None = None
    """constant: the wait between attempts; exponential: the first wait."""
    min_interval: Duration | None = Field(default=None, alias="minInterval")
    max_interval: Duration | None = Field(default=None, alias="maxInterval")
    delay_factor: float | None = Field(default=None, ge=1, alias="delayFactor")
    max_duration: Duration | None = Field(default=None, alias="maxDuration")
    """No retry starts after this long since the task started."""
    warning_on_retry: bool = Field(default=False, alias="warningOnRetry")
    """Log each retry as a warning."""

    @model_validator(mode="before")
    @classmethod
    def _count_alone(cls, data: Any) -> Any:
        if isinstance(data, int) and not isinstance(data, bool):
            return {"max_retries": data}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TaskRetry:
        if self.max_retries is None and self.max_attempt is None:
            raise ValueError("say how many times: maxAttempt (attempts) or max_retries (retries)")
        if self.max_retries is not None and self.max_attempt is not None:
            raise ValueError("set maxAttempt or max_retries, not both")
        if self.type == "constant" and self.interval is None:
            raise ValueError("type constant needs interval")
        if self.type == "random" and (self.min_interval is None or self.max_interval is None):
            raise ValueError("type random needs minInterval and maxInterval")
        if (
            self.min_interval is not None
            and self.max_interval is not None
            and self.min_interval > self.max_interval
        ):
            raise ValueError("minInterval is longer than maxInterval")
        return self

    @property
    def retries(self) -> int:
        if self.max_retries is not None:
            return self.max_retries
        return max((self.max_attempt or 1) - 1, 0)

    def policy(self) -> RetryPolicy:
        """The retry policy these settings describe."""
        n = self.retries
        if self.type == "constant":
            assert self.interval is not None
            return RetryPolicy(
                max_retries=n,
                initial_delay=self.interval,
                max_delay=self.interval,
                multiplier=1.0,
                jitter=0.0,
            )
        if self.type == "random":
            assert self.min_interval is not None
            assert self.max_interval is not None
            middle = (self.min_interval + self.max_interval) / 2
            spread = (self.max_interval - self.min_interval) / (2 * middle)
            return RetryPolicy(
                max_retries=n,
                initial_delay=middle,
                max_delay=self.max_interval,
                multiplier=1.0,
                jitter=spread,
            )
        if self.type == "exponential":
            return RetryPolicy(
                max_retries=n,
                initial_delay=self.interval or 0.5,
                max_delay=self.max_interval or 30.0,
                multiplier=self.delay_factor or 2.0,
                jitter=0.0,
            )
        defaults = RetryPolicy()
        return RetryPolicy(
            max_retries=n,
            initial_delay=self.interval or defaults.initial_delay,
            max_delay=self.max_interval or defaults.max_delay,
            multiplier=self.delay_factor or defaults.multiplier,
        )


class TaskOptions(StrictModel):
    """Options every task takes."""

    timeout: Duration | None = None
    """The whole task, retries included (Kestra's ``timeout``)."""
    retry: TaskRetry | None = None
    allow_failure: bool = Field(default=False, alias="allowFailure")
    """When the task fails, record the failure and go on with the next task."""
    disabled: bool = False
    """Skip the task."""
    result_variable: str | None = Field(
        default=None, alias="resultVariable", pattern=VARIABLE_NAME.pattern
    )
    """Camunda: also store the task's whole output as ``outputs.<name>``."""
    result_expression: dict[str, Any] | None = Field(default=None, alias="resultExpression")
    """Camunda: ``{name: template}``; each template reads ``response`` (the task's output)."""

    @model_validator(mode="after")
    def _names(self) -> TaskOptions:
        for name in self.result_expression or {}:
            if not VARIABLE_NAME.match(name):
                raise ValueError(
                    f"result_expression name {name!r} is not a valid name "
                    "(letters, digits and _, not starting with a digit)"
                )
        return self

    def variable_names(self) -> list[str]:
        """The names this task's output mapping defines."""
        names = [self.result_variable] if self.result_variable else []
        return names + list(self.result_expression or {})


@dataclass(frozen=True, kw_only=True)
class FlowTask:
    """A task of a flow: its id, type, position and common options."""

    id: str
    type: str
    index: int
    options: TaskOptions
    properties: dict[str, Any] = field(repr=False)
    """The task's own properties as written (what the reference checks read)."""

    @property
    def where(self) -> str:
        """How errors name the task: ``tasks[0](prioritize_response)``."""
        return f"tasks[{self.index}]({self.id})"


@dataclass(frozen=True, kw_only=True)
class StepTask(FlowTask):
    """A chat, moderation or embedding call."""

    step: Step = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class ReturnTask(FlowTask):
    """Kestra's Return: renders ``format``; its output is ``{"value": ...}``."""

    format: str = ""


@dataclass(frozen=True, kw_only=True)
class MapTask(FlowTask):
    """A step run once per row; each row's columns are the step's inputs."""

    step: Step = field(repr=False)
    rows: list[Any] | str | None = None
    """Inline rows, or a template rendering to a list."""
    file: Path | None = None
    """Rows from a .jsonl, .json (a list), .csv or .parquet file."""
    concurrency: int | None = None
    """Rows in flight at once (default: chatstep.mapping.run's)."""


class _ReturnProps(StrictModel):
    id: str
    description: str | None = None
    format: str


class _MapProps(StrictModel):
    id: str
    description: str | None = None
    step: dict[str, Any]
    rows: list[Any] | str | None = None
    file: str | None = None
    concurrency: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> _MapProps:
        if (self.rows is None) == (self.file is None):
            raise ValueError("give the rows: rows (a list or a template) or file, exactly one")
        return self


def known_task_types() -> list[str]:
    """Every task type a flow may use."""
    names = [RETURN_TYPE, MAP_TYPE]
    for cls in (ChatCompletion, Moderation, Embedding, Completion):
        names += [n for n in cls.type_names if "." in n]
    return sorted(names)


def _task_id(data: Mapping[str, Any], index: int) -> str:
    task_id = data.get("id")
    if task_id is None:
        raise ConfigError(f"tasks[{index}].id", "is required", "give every task a unique id")
    if not isinstance(task_id, str) or not TASK_ID.match(task_id):
        raise ConfigError(
            f"tasks[{index}].id",
            f"{task_id!r} is not a valid task id",
            "use letters, digits, _ and -, starting with a letter or digit",
        )
    return task_id


def parse_task(data: Any, index: int, base_dir: Path) -> FlowTask:
    """One ``tasks:`` entry as a FlowTask; errors name ``tasks[i](id).property``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"tasks[{index}]", f"must be a mapping, not {type(data).__name__}")
    task_id = _task_id(data, index)
    where = f"tasks[{index}]({task_id})"
    task_type = data.get("type")
    if not isinstance(task_type, str):
        raise ConfigError(
            f"{where}.type",
            "is required" if task_type is None else "must be a string",
            f"use one of: {', '.join(known_task_types())}",
        )
    common = {k: v for k, v in data.items() if k in _COMMON_KEYS}
    props = {k: v for k, v in data.items() if k not in _COMMON_KEYS}
    options: TaskOptions = validate_step(TaskOptions, common, prefix=where)
    if task_type in _RETURN_TYPES:
        ret: _ReturnProps = validate_step(
            _ReturnProps, {k: v for k, v in props.items() if k != "type"}, prefix=where
        )
        return ReturnTask(
            id=task_id,
            type=task_type,
            index=index,
            options=options,
            properties=props,
            format=ret.format,
        )
    if task_type == MAP_TYPE:
        mapped: _MapProps = validate_step(
            _MapProps, {k: v for k, v in props.items() if k != "type"}, prefix=where
        )
        step = _step(mapped.step, f"{where}.step")
        _check_step_options(step, options, where)
        file = None if mapped.file is None else (base_dir / mapped.file)
        return MapTask(
            id=task_id,
            type=task_type,
            index=index,
            options=options,
            properties=props,
            step=step,
            rows=mapped.rows,
            file=file,
            concurrency=mapped.concurrency,
        )
    try:
        step_class_for(task_type)
    except ConfigError:
        raise ConfigError(
            f"{where}.type",
            f"unknown task type {task_type!r}",
            f"use one of: {', '.join(known_task_types())}",
        ) from None
    step = step_from_dict(props, prefix=where)
    _check_step_options(step, options, where)
    return StepTask(
        id=task_id, type=task_type, index=index, options=options, properties=props, step=step
    )


def _step(data: Mapping[str, Any], where: str) -> Step:
    if "type" not in data:
        data = {**data, "type": "chatstep.chat"}
    return step_from_dict(data, prefix=where)


def _check_step_options(step: Step, options: TaskOptions, where: str) -> None:
    if options.retry is not None and "max_retries" in step.model_fields_set:
        raise ConfigError(
            f"{where}.retry",
            "is set together with the step's own maxRetries",
            "keep one: retry (the task's) or maxRetries (the step's)",
        )
