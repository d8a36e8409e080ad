"""Loading flow files: a flow's inputs and tasks, validated before anything runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chatstep.errors import ConfigError
from chatstep.flows.inputs import FlowInput
from chatstep.flows.refs import check_references
from chatstep.flows.tasks import FlowTask, MapTask, parse_task
from chatstep.steps.limits import load_yaml
from chatstep.steps.loading import read_step_file, validate_step

__all__ = ["Flow", "flow_from_dict", "load_flow"]

_FLOW_KEYS = ("id", "namespace", "description", "labels", "inputs", "tasks")
_FLOW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Flow:
    """A validated flow: its inputs and its tasks, in order."""

    id: str
    tasks: tuple[FlowTask, ...]
    inputs: tuple[FlowInput, ...] = ()
    namespace: str | None = None
    description: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    source: Path | None = None
    """The file the flow was loaded from, if any (``file:`` paths are relative to it)."""

    def task(self, task_id: str) -> FlowTask:
        """The task with this id."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(f"flow {self.id!r} has no task {task_id!r}")


def _labels(value: Any) -> dict[str, str]:
    # Kestra writes labels as a mapping or as a list of {key, value}.
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list) and all(
        isinstance(item, Mapping) and set(item) == {"key", "value"} for item in value
    ):
        return {str(item["key"]): str(item["value"]) for item in value}
    raise ConfigError("labels", "must be a mapping or a list of {key, value}")


def _flow_inputs(value: Any) -> tuple[FlowInput, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("inputs", f"must be a list of inputs, not {type(value).__name__}")
    declared: list[FlowInput] = []
    for i, item in enumerate(value):
        name = item.get("id", item.get("name")) if isinstance(item, Mapping) else None
        where = f"inputs[{i}]({name})" if isinstance(name, str) else f"inputs[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(where, f"must be a mapping, not {type(item).__name__}")
        spec: FlowInput = validate_step(FlowInput, item, prefix=where)
        if any(d.id == spec.id for d in declared):
            raise ConfigError(f"{where}.id", f"input {spec.id!r} is declared twice")
        if spec.defaults is not None:
            spec.convert(spec.defaults, f"{where}.defaults")
        declared.append(spec)
    return tuple(declared)


def flow_from_dict(data: Mapping[str, Any], *, source: Path | None = None) -> Flow:
    """A flow from a mapping; errors name the task and property (``tasks[1](x).model``)."""
    if not isinstance(data, Mapping):
        raise ConfigError("", f"a flow must be a mapping, not {type(data).__name__}")
    for key in data:
        if key not in _FLOW_KEYS:
            raise ConfigError(
                str(key),
                "is not a known flow property",
                f"use {', '.join(_FLOW_KEYS)}; task properties go under tasks:",
            )
    flow_id = data.get("id", source.stem if source is not None else "flow")
    if not isinstance(flow_id, str) or not _FLOW_ID.match(flow_id):
        raise ConfigError(
            "id", f"{flow_id!r} is not a valid flow id", "use letters, digits, ., _, -"
        )
    namespace = data.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ConfigError("namespace", "must be a string")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise ConfigError("description", "must be a string")
    inputs = _flow_inputs(data.get("inputs"))
    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise ConfigError("tasks", "is required: a list of at least one task", "add tasks:")
    base_dir = source.parent if source is not None else Path.cwd()
    tasks: list[FlowTask] = []
    for i, raw in enumerate(raw_tasks):
        task = parse_task(raw, i, base_dir)
        earlier = next((t for t in tasks if t.id == task.id), None)
        if earlier is not None:
            raise ConfigError(
                f"{task.where}.id",
                f"repeats the id of {earlier.where}",
                "give every task its own id",
            )
        if isinstance(task, MapTask) and task.file is not None and not task.file.is_file():
            raise ConfigError(f"{task.where}.file", f"{str(task.file)!r} does not exist")
        tasks.append(task)
    check_references(tasks, [i.id for i in inputs])
    return Flow(
        id=flow_id,
        tasks=tuple(tasks),
        inputs=inputs,
        namespace=namespace,
        description=description,
        labels=_labels(data.get("labels")),
        source=source,
    )


def load_flow(source: str | Path | Mapping[str, Any] | Flow) -> Flow:
    """Load a flow from a ``.yaml``/``.yml``/``.json`` file, YAML text, or a mapping."""
    if isinstance(source, Flow):
        return source
    if isinstance(source, Mapping):
        return flow_from_dict(source)
    text = str(source)
    path: Path | None = None
    # A Path is always a file; a string is one when it names a .yaml/.yml/.json file.
    if isinstance(source, Path) or (
        "\n" not in text and Path(text).suffix.lower() in (".yaml", ".yml", ".json")
    ):
        path = Path(source)
        if not path.is_file():
            raise ConfigError("", f"flow file {str(path)!r} does not exist")
        text = read_step_file(path)
    where = f" {path}" if path is not None else ""
    try:
        data = load_yaml(text)  # JSON is YAML too; aliases counted expanded
    except yaml.YAMLError as exc:
        raise ConfigError("", f"the flow{where} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError("", f"the flow{where} is nested too deep", "flatten it") from None
    except ConfigError as exc:
        raise ConfigError(exc.field, f"the flow{where} {exc.problem}", exc.fix) from None
    except ValueError as exc:
        raise ConfigError("", f"the flow{where} holds an invalid value: {exc}") from None
    return flow_from_dict(data, source=path)
