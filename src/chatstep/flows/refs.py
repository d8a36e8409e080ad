"""Checks a flow's templates before anything runs, and binds ``response`` in output mappings.

Every ``outputs.X`` must name an earlier task (or a name an earlier task's output mapping
defines), every ``inputs.X`` a declared input, and every template must parse, so a typo fails at
load time with the task and property named, not after paying for the first calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from jinja2 import TemplateSyntaxError, nodes

from chatstep.errors import ConfigError
from chatstep.flows.tasks import FlowTask, MapTask, ReturnTask
from chatstep.templating.sandbox import _env, _key_path, is_template
from chatstep.templating.variables import collect_input_names

__all__ = ["OutputRef", "bind_response", "check_references", "output_references", "template_leaves"]


@dataclass(frozen=True)
class OutputRef:
    """``outputs.<name>.<member>`` read by a template (``member`` is None when not constant)."""

    name: str
    member: str | int | None


def template_leaves(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """``(path, template)`` for every string holding a template in nested dicts and lists."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from template_leaves(item, _key_path(path, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from template_leaves(item, f"{path}[{i}]")


def _constant_key(node: nodes.Getattr | nodes.Getitem) -> str | int | None:
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
        return node.arg.value
    return None


def _walk(node: nodes.Node, parent: nodes.Node | None, found: list[OutputRef]) -> None:
    if (
        isinstance(node, nodes.Getattr | nodes.Getitem)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "outputs"
        and node.node.ctx == "load"
    ):
        name = _constant_key(node)
        if isinstance(name, str):
            member = None
            if isinstance(parent, nodes.Getattr | nodes.Getitem) and parent.node is node:
                member = _constant_key(parent)
            found.append(OutputRef(name, member))
    for child in node.iter_child_nodes():
        _walk(child, node, found)


def output_references(source: str) -> list[OutputRef]:
    """The ``outputs.X`` a template reads (``outputs.X``, ``outputs['X']``), in order."""
    if not is_template(source):
        return []
    found: list[OutputRef] = []
    _walk(_env.parse(source), None, found)
    return found


def _check_inputs(source: str, field: str, declared: Sequence[str]) -> None:
    # Also raises TemplateError for a template that does not parse, naming the field.
    for name in sorted(collect_input_names(source, field=field)):
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise ConfigError(
                field,
                f"uses inputs.{name}, but the flow declares no input {name!r} "
                f"(declared inputs: {known})",
                f"declare it under inputs: (- id: {name}), or fix the name",
            )


def _check_outputs(
    source: str,
    field: str,
    task: FlowTask,
    available: Mapping[str, FlowTask],
    tasks: Mapping[str, FlowTask],
) -> None:
    try:
        refs = output_references(source)
    except TemplateSyntaxError as exc:  # pragma: no cover - collect_input_names reports it first
        raise ConfigError(field, f"template syntax error: {exc.message}") from None
    for ref in refs:
        owner = available.get(ref.name)
        if owner is None:
            later = tasks.get(ref.name)
            if later is task:
                why = "a task cannot read its own outputs (result_expression reads response)"
            elif later is not None:
                why = f"task {ref.name!r} runs after this one ({later.where})"
            else:
                known = ", ".join(available) or "none: this is the first task"
                why = f"no earlier task has that id (available outputs: {known})"
            raise ConfigError(
                field,
                f"uses outputs.{ref.name}, but {why}",
                "read the outputs of a task that runs before this one",
            )
        if (
            isinstance(owner, ReturnTask)
            and owner.id == ref.name
            and ref.member is not None
            and ref.member != "value"
        ):
            raise ConfigError(
                field,
                f"uses outputs.{ref.name}.{ref.member}, but a Return task's only output is value",
                f"use outputs.{ref.name}.value",
            )


def _no_outputs_in_mapped_step(source: str, field: str) -> None:
    refs = output_references(source)
    if refs:
        raise ConfigError(
            field,
            f"uses outputs.{refs[0].name}, but a mapped step's templates see only its row "
            "(over the flow's inputs) as inputs",
            f'pass what it needs through the rows, e.g. rows: "{{{{ outputs.{refs[0].name} }}}}"',
        )


def check_references(tasks: Sequence[FlowTask], declared_inputs: Sequence[str]) -> None:
    """Raise ConfigError for the first template that reads something that will not be there."""
    by_id = {t.id: t for t in tasks}
    available: dict[str, FlowTask] = {}
    for task in tasks:
        props = {k: v for k, v in task.properties.items() if k not in ("id", "type")}
        for path, source in template_leaves(props):
            field = f"{task.where}.{path}"
            # A mapped step's inputs are its rows' columns, unknown until the rows are read.
            if isinstance(task, MapTask) and path.startswith("step"):
                _no_outputs_in_mapped_step(source, field)
            else:
                _check_inputs(source, field, declared_inputs)
            _check_outputs(source, field, task, available, by_id)
        mapping = task.options.result_expression or {}
        with_self = {**available, task.id: task}
        for path, source in template_leaves(mapping, "result_expression"):
            field = f"{task.where}.{path}"
            _check_inputs(source, field, declared_inputs)
            _check_outputs(source, field, task, with_self, by_id)
        available[task.id] = task
        for name in task.options.variable_names():
            clash = by_id.get(name) or available.get(name)
            if clash is not None:
                what = "the id of task" if name in by_id else "already defined by task"
                option = (
                    "result_variable"
                    if name == task.options.result_variable
                    else (f"result_expression.{name}")
                )
                raise ConfigError(
                    f"{task.where}.{option}",
                    f"{name!r} is {what} {clash.where}; outputs.{name} would be ambiguous",
                    "choose another name",
                )
            available[name] = task


# `response` as a whole name inside {{ }} / {% %}, outside string literals and attribute access.
_BLOCK = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"', re.DOTALL)
_RESPONSE = re.compile(r"(?<![\w.])response\b")


def bind_response(source: str, task_id: str) -> str:
    """``source`` with the name ``response`` read as ``outputs.<task_id>``.

    The template sandbox sees only inputs, outputs and secrets, so an output mapping reads the
    task's own output through ``outputs`` under its id.
    """
    target = f"outputs.{task_id}" if task_id.isidentifier() else f"outputs[{json.dumps(task_id)}]"

    def in_block(match: re.Match[str]) -> str:
        block = match.group(0)
        out: list[str] = []
        last = 0
        for literal in _STRING.finditer(block):
            out.append(_RESPONSE.sub(target, block[last : literal.start()]))
            out.append(literal.group(0))
            last = literal.end()
        out.append(_RESPONSE.sub(target, block[last:]))
        return "".join(out)

    return _BLOCK.sub(in_block, source)
